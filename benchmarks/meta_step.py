"""Throughput, compile time, FLOPs and memory of jaxmeta's compiled meta-step.

Suites (each prints a Markdown table and is saved in benchmarks/results/meta_step_<backend>.json):

* ``reference``: MAML, first-order MAML, Meta-SGD, ANIL and ProtoNets on the
  reference configuration (Omniglot Conv-4, 5-way 1-shot, 15 queries per class,
  meta-batch 32, one inner SGD step at lr 0.4, Adam outer), with XLA's FLOP
  count and the achieved fraction of the measured matmul peak.
* ``lowering``: how the episode batch is mapped (vmap / map / unroll /
  accumulate) times how convolutions are lowered (XLA conv / im2col / XLA conv
  with its gradients written out), for second-order MAML.
* ``sweep``: one factor at a time from the reference: meta-batch, ways, shots,
  inner steps, first vs second order.
* ``memory``: working memory of second-order MAML over 1, 5, 10, 20 inner
  steps: plain, with ``remat=True``, iMAML, and learn2learn (when installed).
* ``loop``: ProtoNets at meta-batch 4, a training loop compiled as one call
  with on-device sampling against the host-sampled loop (one jitted step per
  host iteration).
* ``precision``: bfloat16 compute (float32 meta-parameters) against float32.
* ``scaling``: the meta-step sharded over 1, 2 and 4 devices, with ``vmap``
  and with ``accumulate`` (each device maps its own episodes); on a CPU host
  these are forced host devices sharing the same cores: a check of what
  sharding costs (and, for ``accumulate``, buys: 15-25% on 2 cores).

Usage: ``python -m benchmarks.meta_step [--suites reference lowering ...] [--quick]``
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

import numpy as np

from benchmarks import harness
from benchmarks.peers import JAXMETA_CPU, REFERENCE

SUITES = ("reference", "lowering", "sweep", "memory", "loop", "precision", "scaling")
BEST = JAXMETA_CPU["omniglot"]


def _ref(**overrides) -> dict:
    cfg = dict(REFERENCE["omniglot"])
    cfg.update(BEST)
    cfg.update(overrides)
    return cfg


def _rows(configs, quick, timeout=1800):
    rows = []
    for label, impl, cfg in configs:
        if quick:
            cfg = dict(cfg, steps=2, warmup=1, meta_batch=min(cfg["meta_batch"], 2))
        cfg = dict(cfg)
        row = harness.run_worker(impl, cfg, timeout=timeout, env=cfg.pop("env", None))
        row.update(label=label, **{k: cfg.get(k) for k in ("batching", "conv_impl", "meta_batch", "ways", "shots",
                                                            "inner_steps", "first_order", "learner", "remat")})
        if "error" in row:
            print(f"  {label}: {row['error'][:400]}", file=sys.stderr)
        rows.append(row)
    return rows


COLUMNS = [("configuration", "label", "s"), ("s/step", "step_s_median", ".3g"), ("tasks/s", "tasks_per_s", ".3g"),
           ("compile s", "compile_s", ".3g"), ("GFLOP/step", "gflop", ".3g"), ("GFLOP/s", "gflops_per_s", ".3g"),
           ("% peak", "pct_peak", ".0f"), ("working mem MB", "working_mem_mb", ".0f"),
           ("XLA temp MB", "xla_temp_mb", ".0f")]


def _finish(rows, peak):
    for row in rows:
        if row.get("flops_per_step"):
            row["gflop"] = row["flops_per_step"] / 1e9
        if row.get("gflops_per_s"):
            row["pct_peak"] = 100 * row["gflops_per_s"] / peak
    return rows


def suite_reference(quick, peak):
    # every learner, ProtoNet included, in the CPU setting of benchmarks/peers.py (accumulate + xla_vjp;
    # for ProtoNet on 2026-11-22 accumulate + im2col took 1.32 s per step, against 2.55 s with vmap +
    # im2col and 3.88 s with vmap + XLA's convolutions)
    configs = [(name, "jaxmeta", _ref(learner=name)) for name in ("maml", "fomaml", "meta_sgd", "anil", "protonet")]
    rows = _finish(_rows(configs, quick), peak)
    harness.print_table(rows, COLUMNS, "reference configuration, per learner")
    return rows


# the lowering suite's slow corners (XLA:CPU's own convolutions under vmap or in a loop) took 29-88 s per
# step on the 2-core dev VM: each row times at most LOWERING_BUDGET_S seconds of steps (at least 3) and is
# abandoned after LOWERING_TIMEOUT_S in all, so the suite ends in under an hour (18.5 min there)
LOWERING_BUDGET_S, LOWERING_TIMEOUT_S = 120, 600
YNN_DEFAULTS = "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"  # adds what is there already


def suite_lowering(quick, peak):
    configs = []
    for batching in ("vmap", "map", "unroll", "accumulate"):
        for conv in ("xla", "im2col", "xla_vjp"):
            configs.append((f"{batching} + {conv}", "jaxmeta",
                            _ref(batching=batching, conv_impl=conv, warmup=1, time_budget_s=LOWERING_BUDGET_S)))
    # jaxmeta compiles its steps on CPU with convolutions kept off YNNPACK's one-thread path
    # (train.compiler_options); with the flag below in XLA_FLAGS it yields to XLA's own defaults
    configs.append((f"accumulate + xla_vjp, XLA's default YNNPACK fusions (XLA_FLAGS={YNN_DEFAULTS})", "jaxmeta",
                    _ref(batching="accumulate", conv_impl="xla_vjp", warmup=1, time_budget_s=LOWERING_BUDGET_S,
                         env={"XLA_FLAGS": YNN_DEFAULTS})))
    rows = _finish(_rows(configs, quick, timeout=LOWERING_TIMEOUT_S), peak)
    for row in rows:
        if "error" in row and "timed out" in row["error"]:
            row["label"] += f" (no result in {LOWERING_TIMEOUT_S} s: compile + warm-up + 3 steps)"
    harness.print_table(rows, COLUMNS[:2] + [("steps timed", "steps_timed", "d")] + COLUMNS[2:],
                        "second-order MAML: episode batching x conv lowering")
    return rows


def suite_sweep(quick, peak):
    configs = []
    for e in (4, 8, 16, 64):
        configs.append((f"meta-batch {e}", "jaxmeta", _ref(meta_batch=e)))
    configs.append(("20-way 1-shot", "jaxmeta", _ref(ways=20)))
    configs.append(("5-way 5-shot", "jaxmeta", _ref(shots=5)))
    configs.append(("20-way 5-shot", "jaxmeta", _ref(ways=20, shots=5)))
    for s in (2, 5):
        configs.append((f"{s} inner steps", "jaxmeta", _ref(inner_steps=s)))
    configs.append(("first order", "jaxmeta", _ref(first_order=True)))
    rows = _finish(_rows(configs, quick), peak)
    harness.print_table(rows, COLUMNS, "one factor at a time from the reference (second-order MAML)")
    return rows


def suite_memory(quick, peak):
    configs = []
    steps_list = (1, 5) if quick else (1, 5, 10, 20)
    for steps in steps_list:
        base = _ref(inner_steps=steps, steps=3, warmup=1, meta_batch=8)
        configs.append((f"maml {steps} steps", "jaxmeta", base))
        configs.append((f"maml+remat {steps} steps", "jaxmeta", dict(base, remat=True)))
        configs.append((f"imaml {steps} steps", "jaxmeta", dict(base, learner="imaml", inner_lr=0.1, reg=1.0)))
        configs.append((f"learn2learn {steps} steps", "l2l", dict(base, steps=2)))
    rows = _finish(_rows(configs, quick), peak)
    for row in rows:
        row["mem_mb"] = row.get("working_mem_mb")
    harness.print_table(rows, COLUMNS, "memory over inner steps (second order, meta-batch 8, 15 queries)")
    growth = _memory_growth(rows)
    print("growth from 1 to", steps_list[-1], "inner steps (jaxmeta: XLA temporaries; learn2learn: working memory):",
          {k: round(v, 2) for k, v in growth.items()})
    return {"rows": rows, "growth": growth}


def _memory_growth(rows) -> dict:
    """Last over first memory per variant: XLA's planned temporaries for jaxmeta's rows (its resident set
    barely moves during a step: the buffers are reused), the resident set's growth during a step for
    learn2learn's (PyTorch allocates and frees per tensor)."""
    growth = {}
    for prefix, key in (("maml", "xla_temp_mb"), ("maml+remat", "xla_temp_mb"), ("imaml", "xla_temp_mb"),
                        ("learn2learn", "working_mem_mb")):
        mems = [r.get(key) for r in rows if r["label"].startswith(prefix + " ")]
        if len(mems) >= 2 and mems[0] and mems[-1] is not None:
            growth[prefix] = mems[-1] / mems[0]
    return growth


LOOP_SCRIPT = r"""
import functools, json, sys, time
import jax, jax.numpy as jnp, numpy as np, optax
from jaxmeta import learners, nets, scenarios, train
from jaxmeta import Episode, losses
steps, chunk, quick, config = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
setting = json.loads(sys.argv[5])  # batching (and conv_impl for ProtoNet): the reference suite's CPU setting
rng = np.random.default_rng(0)
opt = optax.adam(1e-3)
if config == "protonet":  # ProtoNet, Omniglot-sized random images, 5-way 1-shot 15 queries, meta-batch 4
    data_np = rng.random((136 * 4, 20, 28, 28, 1), dtype=np.float32)
    data = jnp.asarray(data_np)
    ways, shots, queries, batch = 5, 1, 15, 4
    learner = learners.protonet(nets.conv4(conv_impl=setting["conv_impl"]), num_ways=ways)
    host_sample = functools.partial(scenarios.fewshot_episodes_numpy, data=data_np, num_tasks=batch, ways=ways, shots=shots, queries=queries)
    dev_sample = functools.partial(scenarios.fewshot_episodes, data=data, num_tasks=batch, ways=ways, shots=shots, queries=queries)
else:  # sinusoid MAML: MLP 1-40-40-1, meta-batch 25, 10-shot, 5 inner steps, second order
    learner = learners.maml(nets.mlp((40, 40), 1), losses.squared_error, inner_lr=0.01, inner_steps=5)
    dev_sample = functools.partial(scenarios.sinusoid, num_tasks=25, support_shots=10, query_shots=10)

    def host_sample(key):  # the same distribution drawn with NumPy on the host
        r = scenarios.numpy_rng(key)
        amp, phase = r.uniform(0.1, 5.0, (25, 1, 1)), r.uniform(0.0, np.pi, (25, 1, 1))
        xs, xq = r.uniform(-5, 5, (25, 10, 1)), r.uniform(-5, 5, (25, 10, 1))
        f = lambda x: (amp * np.sin(x - phase)).astype(np.float32)
        return Episode(xs.astype(np.float32), f(xs), xq.astype(np.float32), f(xq))
episodes0 = dev_sample(jax.random.key(1))
state0 = train.init_state(learner, opt, jax.random.key(0), episodes0)
out = {}
# FLOPs of one meta-step (XLA's cost analysis, every episode counted): the step's floor at the matmul peak
from benchmarks.worker import step_flops
out["flops_per_step"] = step_flops(learner, opt, state0, episodes0, jax.random.key(3))
# host-sampled loop: NumPy sampler on the host, one jitted meta-step per iteration
step = train.make_meta_step(learner, opt, batching=setting["batching"])
keys = jax.jit(train.step_keys)
state = state0
for t in range(3):
    sk, tk = keys(jax.random.key(2), t)
    state, m = step(state, host_sample(sk), tk)
jax.block_until_ready(state)
t0 = time.perf_counter()
for t in range(steps):
    sk, tk = keys(jax.random.key(2), t)
    state, m = step(state, host_sample(sk), tk)
jax.block_until_ready(state)
out["host_s_per_step"] = (time.perf_counter() - t0) / steps


def time_loop(per_call, unroll=None):  # on-device sampling, `per_call` meta-steps per compiled call
    loop = train.make_train_loop(learner, opt, dev_sample, steps=per_call, batching=setting["batching"], unroll=unroll)
    t0 = time.perf_counter()
    state, m = loop(state0, jax.random.key(2)); jax.block_until_ready(state)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(steps // per_call):
        state, m = loop(state, jax.random.key(2))
    jax.block_until_ready(state)
    return first, (time.perf_counter() - t0) / (steps // per_call * per_call)


# the compiled loop (on CPU: unrolled chunks); the same as one rolled lax.scan (unroll=1, the GPU/TPU
# default); one call per step (no host data, one dispatch per step)
out["compiled_first_call_s"], out["compiled_s_per_step"] = time_loop(chunk)
out["rolled_first_call_s"], out["rolled_s_per_step"] = time_loop(chunk, unroll=1)
out["device_per_step_jit_first_call_s"], out["device_per_step_jit_s_per_step"] = time_loop(1)
print("RESULT " + json.dumps(out))
"""


def suite_loop(quick, peak):
    out = {}
    for config, title, (steps, chunk) in (
            ("protonet", "ProtoNet 5-way 1-shot 15q, meta-batch 4", (20, 10) if quick else (200, 20)),
            ("sinusoid", "sinusoid MAML, meta-batch 25, 5 inner steps", (20, 10) if quick else (2000, 100))):
        setting = BEST if config == "protonet" else JAXMETA_CPU["sinusoid"]
        r = harness.run_for_result(["-c", LOOP_SCRIPT, steps, chunk, int(quick), config, json.dumps(setting)], timeout=3600)
        if "error" in r:
            print(r["error"], file=sys.stderr)
            out[config] = {"error": r["error"]}
            continue
        rows = []
        for label, key in (("host-sampled loop (NumPy sampler, jitted step)", "host_s_per_step"),
                           ("on-device sampling, one jitted call per step", "device_per_step_jit_s_per_step"),
                           (f"compiled loop: {chunk} steps per call, on-device sampling", "compiled_s_per_step"),
                           ("the same, one rolled lax.scan (unroll=1)", "rolled_s_per_step")):
            first = {"compiled_s_per_step": "compiled_first_call_s", "rolled_s_per_step": "rolled_first_call_s"}.get(key)
            rows.append({"label": label, "step_s": r[key], "speedup": r["host_s_per_step"] / r[key],
                         "first_call_s": r.get(first) if first else None,
                         "pct_peak": 100 * r["flops_per_step"] / r[key] / 1e9 / peak})
        harness.print_table(rows, [(title, "label", "s"), ("s/step", "step_s", ".3g"),
                                   ("speed-up vs host loop", "speedup", ".2f"), ("first call s", "first_call_s", ".3g"),
                                   ("% peak", "pct_peak", ".0f")],
                            "training loop: compiled with on-device sampling vs host-sampled")
        # no loop can make the step itself faster than its FLOPs at the matmul peak: the ceiling on its speed-up
        floor_s = r["flops_per_step"] / 1e9 / peak
        bound = {"gflop_per_step": r["flops_per_step"] / 1e9, "step_s_at_peak": floor_s,
                 "speedup_ceiling_at_peak": r["host_s_per_step"] / floor_s}
        print(f"{bound['gflop_per_step']:.3g} GFLOP per step: {1e3 * floor_s:.3g} ms at the {peak:.0f} GFLOP/s peak, "
              f"so no loop can be more than {bound['speedup_ceiling_at_peak']:.2f}x the host loop here")
        out[config] = {"rows": rows, "raw": r, "setting": setting, "bound": bound}
    return out


def suite_precision(quick, peak):
    configs = []
    for dtype in ("float32", "bfloat16"):
        configs.append((f"maml {dtype}", "jaxmeta", _ref(dtype=dtype)))
        configs.append((f"protonet {dtype}", "jaxmeta", _ref(learner="protonet", dtype=dtype)))
    rows = _finish(_rows(configs, quick), peak)
    harness.print_table(rows, COLUMNS, "bfloat16 compute vs float32 (reference configuration)")
    return rows


SCALING_SCRIPT = r"""
import json, sys, time
import jax, jax.numpy as jnp, numpy as np, optax
from jaxmeta import Episode, learners, losses, nets, train
from benchmarks.harness import relative_max_diff
from benchmarks.worker import make_data
cfg = json.loads(sys.argv[1])
learner = learners.maml(nets.conv4(out=5, conv_impl=cfg["conv_impl"]), losses.softmax_cross_entropy, inner_lr=0.4, inner_steps=1)
eps = Episode(*(jnp.asarray(a) for a in make_data(cfg)))
opt = optax.adam(1e-3)
state = train.init_state(learner, opt, jax.random.key(0), eps)
mesh = train.episode_mesh()
step = train.make_meta_step(learner, opt, batching=cfg["batching"], mesh=mesh)
sharded = train.shard_episodes(eps, mesh)  # eps itself stays on the first device, for the no-mesh step below
t0 = time.perf_counter(); s, m = step(train.replicate(state, mesh), sharded, jax.random.key(1)); jax.block_until_ready(s); compile_s = time.perf_counter() - t0
first_loss = float(m["loss"])
# the meta-gradient itself, compared across meshes by the harness: one SGD step of size 1 from the same start
# (across processes with different device counts XLA:CPU's thread use, hence float32 rounding, differs), and
# here with the same step run without a mesh in this process, which isolates what the sharding changes
def meta_gradient(mesh):
    sgd_state = train.init_state(learner, optax.sgd(1.0), jax.random.key(0), eps)
    start, inputs = (sgd_state, eps) if mesh is None else (train.replicate(sgd_state, mesh), train.shard_episodes(eps, mesh))
    after = train.make_meta_step(learner, optax.sgd(1.0), batching=cfg["batching"], mesh=mesh)(start, inputs, jax.random.key(1))[0].params
    return [np.asarray(a) - np.asarray(b) for a, b in zip(jax.tree_util.tree_leaves(sgd_state.params), jax.tree_util.tree_leaves(after))]
grads, unsharded = meta_gradient(mesh), meta_gradient(None)
np.savez(sys.argv[2], *grads)
vs_unsharded = relative_max_diff(grads, unsharded)
times = []
for i in range(cfg["steps"]):
    t0 = time.perf_counter(); s, m = step(s, sharded, jax.random.key(1)); jax.block_until_ready(s); times.append(time.perf_counter() - t0)
print("RESULT " + json.dumps({"devices": jax.device_count(), "step_s_median": float(np.median(times)), "compile_s": compile_s, "loss": first_loss, "grad_diff_vs_unsharded": vs_unsharded}))
"""


def suite_scaling(quick, peak):
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # each device maps its own episodes (jax.shard_map) and one psum adds the meta-gradient sums; vmap: one
        # vectorised computation per device; accumulate: a loop summing per-episode meta-gradients
        for batching in ("vmap", "accumulate"):
            cfg = _ref(steps=3 if quick else 10, meta_batch=4 if quick else 32, batching=batching)
            first = None
            for n in (1, 2, 4):
                path = os.path.join(tmp, f"grads_{batching}_{n}.npz")
                r = harness.run_for_result(["-c", SCALING_SCRIPT, json.dumps(cfg), path], timeout=3600,
                                           env={"XLA_FLAGS": f"--xla_force_host_platform_device_count={n}",
                                                "JAX_PLATFORMS": "cpu"})
                r.update(label=f"{batching}, {n} device(s)", batching=batching)
                if "error" not in r:
                    with np.load(path) as f:
                        grads = [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]
                    first = (r, grads) if n == 1 else first
                    r["episodes_per_device"] = cfg["meta_batch"] // n
                    r["tasks_per_s"] = cfg["meta_batch"] / r["step_s_median"]
                    if first is not None:  # compared with the single device only when that run succeeded
                        r["speedup_vs_1"] = first[0]["step_s_median"] / r["step_s_median"]
                        r["grad_diff_vs_1"] = harness.relative_max_diff(grads, first[1])
                else:
                    print(r["error"], file=sys.stderr)
                rows.append(r)
    harness.print_table(rows, [("mesh", "label", "s"), ("episodes / device", "episodes_per_device", "d"),
                               ("s/step", "step_s_median", ".3g"), ("tasks/s", "tasks_per_s", ".3g"),
                               ("vs 1 device", "speedup_vs_1", ".2f"), ("compile s", "compile_s", ".3g"),
                               ("first-step loss", "loss", ".7g"),
                               ("meta-gradient vs 1-device run (max abs diff / max abs)", "grad_diff_vs_1", ".1e"),
                               ("vs no mesh, same process", "grad_diff_vs_unsharded", ".1e")],
                        "sharded meta-step over forced host devices (same 2 cores: overhead check)")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suites", nargs="+", default=list(SUITES), choices=SUITES)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (numbers mean nothing)")
    parser.add_argument("--name", default=None, help="results file name")
    args = parser.parse_args(argv)
    machine = harness.machine_info()
    peak = harness.matmul_peak()
    print(f"machine: {machine['cpu']} x{machine['cpu_count']}, jax {machine['jax']} ({machine['backend']}); "
          f"measured matmul peak {peak['peak_gflops']:.0f} GFLOP/s")
    results = {"machine": machine, "matmul_peak": peak, "reference": _ref(), "suites": {}, "suite_runs": {}}
    name = args.name or ("meta_step_quick" if args.quick else f"meta_step_{machine['backend']}")
    path = os.path.join(harness.RESULTS, f"{name}.json")
    if os.path.exists(path) and not args.quick:  # keep suites measured earlier, replace those run now
        with open(path) as f:
            earlier = json.load(f)
        results["suites"] = earlier.get("suites", {})
        # where and when each kept suite was measured (files from before suite_runs: the file's own header)
        results["suite_runs"] = {suite: earlier.get("suite_runs", {}).get(suite) or
                                 {"machine": earlier.get("machine"), "matmul_peak": earlier.get("matmul_peak")}
                                 for suite in results["suites"]}
    for suite in args.suites:
        results["suites"][suite] = globals()[f"suite_{suite}"](args.quick, peak["peak_gflops"])
        results["suite_runs"][suite] = {"machine": machine, "matmul_peak": peak}
        harness.write_results(name, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
