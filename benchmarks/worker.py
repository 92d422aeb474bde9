"""Runs ONE implementation of ONE meta-step configuration in this process and prints a JSON line.

The harnesses (``meta_step.py``, ``peers.py``) start one worker process per
measurement, so peak memory and compile caches never leak between rows.

Implementations: ``jaxmeta`` (options ``batching``, ``conv_impl``, ``remat``,
``learner`` in maml|fomaml|meta_sgd|anil|protonet|imaml, ``dtype``, ``host_devices``:
the episode axis sharded over that many forced CPU host devices), ``l2l``
(learn2learn's MAML, per-task loop), ``torchfunc_vmap`` and ``torchfunc_loop``
(torch.func MAML with vmap over tasks, or a loop).
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import re
import resource
import sys
import tempfile
import threading
import time

import numpy as np


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB.

    Read from ``VmHWM`` in ``/proc/self/status`` on Linux: ``getrusage``'s
    ``ru_maxrss`` carries the parent's resident set over ``fork`` + ``exec``, so in
    a worker started by a harness that has itself run JAX it reports at least
    the harness's size (every row read about 510 MB that way until
    2026-11-22). Elsewhere ``ru_maxrss`` (kilobytes on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


class PeakRSS:
    """Samples the resident set size every 2 ms in a thread; ``peak - baseline`` is working memory."""

    def __init__(self):
        self.baseline = rss_bytes()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.002)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def time_steps(run_once, cfg: dict) -> list:
    """Seconds per call of ``run_once`` (which must block until its result is ready), ``cfg["steps"]`` times.

    With ``cfg["time_budget_s"]`` the timing stops early once that many seconds have been spent and at
    least ``cfg.get("min_steps", 3)`` steps are timed, so one slow configuration of a sweep cannot take
    hours; the row's ``steps_timed`` says how many were.

    Example:
      >>> len(time_steps(lambda: None, {"steps": 5, "time_budget_s": 0.0, "min_steps": 2}))
      2
    """
    budget, least = cfg.get("time_budget_s"), cfg.get("min_steps", 3)
    times, start = [], time.perf_counter()
    for _ in range(cfg["steps"]):
        t = time.perf_counter()
        run_once()
        times.append(time.perf_counter() - t)
        if budget is not None and len(times) >= least and time.perf_counter() - start >= budget:
            break
    return times


def make_data(cfg: dict):
    """The same random data for every implementation: ``(sx, sy, qx, qy)`` NumPy arrays."""
    rng = np.random.default_rng(cfg.get("data_seed", 0))
    e = cfg["meta_batch"]
    if cfg["task"] == "sinusoid":
        amp = rng.uniform(0.1, 5.0, (e, 1, 1))
        phase = rng.uniform(0, np.pi, (e, 1, 1))
        xs = rng.uniform(-5, 5, (e, cfg["shots"], 1))
        xq = rng.uniform(-5, 5, (e, cfg["queries"], 1))
        return tuple(a.astype(np.float32) for a in (xs, amp * np.sin(xs - phase), xq, amp * np.sin(xq - phase)))
    n, k, q = cfg["ways"], cfg["shots"], cfg["queries"]
    size = cfg.get("image_size", 28)
    sx = rng.random((e, n * k, size, size, 1), dtype=np.float32)
    qx = rng.random((e, n * q, size, size, 1), dtype=np.float32)
    sy = np.tile(np.repeat(np.arange(n), k), (e, 1)).astype(np.int32)
    qy = np.tile(np.repeat(np.arange(n), q), (e, 1)).astype(np.int32)
    return sx, sy, qx, qy


def _summary(times, cfg, extra):
    t = np.asarray(times)
    out = {
        "step_s_median": float(np.median(t)),
        "step_s_p25": float(np.percentile(t, 25)),
        "step_s_p75": float(np.percentile(t, 75)),
        "step_s_min": float(t.min()),
        "steps_timed": int(t.size),
        "tasks_per_s": cfg["meta_batch"] / float(np.median(t)),
    }
    out.update(extra)
    return out


# ----------------------------------------------------------------------------------------------- jaxmeta


def jax_learner(cfg: dict):
    import jax.numpy as jnp

    from jaxmeta import learners, losses, nets

    dtype = {"float32": None, "bfloat16": jnp.bfloat16}[cfg.get("dtype", "float32")]
    regression = cfg["task"] == "sinusoid"
    learner_name = cfg.get("learner", "maml")
    if regression:
        net = nets.mlp((40, 40), 1, dtype=dtype)
        loss = losses.squared_error
    elif learner_name == "protonet":
        net = nets.conv4(downsample=cfg.get("downsample", "max_pool"), conv_impl=cfg.get("conv_impl", "xla"),
                         dtype=dtype)
        return learners.protonet(net, num_ways=cfg["ways"]), net
    else:
        net = nets.conv4(out=cfg["ways"], downsample=cfg.get("downsample", "max_pool"),
                         conv_impl=cfg.get("conv_impl", "xla"), dtype=dtype)
        loss = losses.softmax_cross_entropy
    common = dict(inner_lr=cfg["inner_lr"], inner_steps=cfg["inner_steps"])
    if learner_name == "maml":
        return learners.maml(net, loss, first_order=cfg.get("first_order", False), remat=cfg.get("remat", False),
                             **common), net
    if learner_name == "fomaml":
        return learners.fomaml(net, loss, **common), net
    if learner_name == "meta_sgd":
        return learners.meta_sgd(net, loss, **common), net
    if learner_name == "anil":
        return learners.anil(net, loss, **common), net
    if learner_name == "imaml":
        return learners.imaml(net, loss, reg=cfg.get("reg", 1.0), inner_lr=cfg["inner_lr"],
                              inner_steps=cfg["inner_steps"], cg_steps=cfg.get("cg_steps", 5)), net
    raise ValueError(f"unknown learner {learner_name!r}")


def hlo_ops(hlo_text: str) -> dict:
    """``{instruction name: (result shape, source op_name)}`` from a compiled module's HLO text."""
    ops = {}
    for line in hlo_text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\([^)]*\)|\S+) ", line)
        if m:
            source = re.search(r'op_name="([^"]*)"', line)
            ops[m.group(1)] = (m.group(2), source.group(1) if source else "")
    return ops


def profile_ops(run_once, hlo_text: str, steps: int) -> list:
    """Time per XLA instruction over ``steps`` calls of ``run_once``, from a ``jax.profiler`` trace.

    Returns rows ``{"op", "ms_per_step", "share", "shape", "source"}``, slowest
    first; ``share`` is the fraction of the summed time of every instruction
    (the step's wall time also holds the gaps between instructions).
    """
    import jax

    ops = hlo_ops(hlo_text)
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            for _ in range(steps):
                run_once()
        paths = glob.glob(os.path.join(folder, "**", "*.trace.json.gz"), recursive=True)
        if not paths:
            raise RuntimeError(f"profile: jax.profiler wrote no perfetto trace under {folder}.")
        with gzip.open(paths[0]) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    totals: dict = {}
    for e in events:
        if e.get("ph") == "X" and e.get("name") in ops:
            totals[e["name"]] = totals.get(e["name"], 0.0) + float(e.get("dur", 0.0))
    whole = sum(totals.values()) or 1.0
    return [{"op": name, "ms_per_step": us / steps / 1e3, "share": us / whole, "shape": ops[name][0],
             "source": ops[name][1]} for name, us in sorted(totals.items(), key=lambda kv: -kv[1])]


def _force_host_devices(n: int) -> None:
    """Splits this CPU process into ``n`` XLA host devices (before jax is imported)."""
    if "jax" in sys.modules:
        raise RuntimeError("host_devices must be set before jax is imported (the worker runs one config per process)")
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    os.environ["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={n}"])


def run_jaxmeta(cfg: dict, profile_steps: int = 0) -> dict:
    devices = int(cfg.get("host_devices", 1))
    if devices > 1:  # the episode axis sharded over this many CPU host devices (a mesh in the same step)
        _force_host_devices(devices)
    import jax
    import optax

    from jaxmeta import Episode, train

    learner, _ = jax_learner(cfg)
    sx, sy, qx, qy = make_data(cfg)
    episodes = Episode(*(jax.numpy.asarray(a) for a in (sx, sy, qx, qy)))
    opt = optax.adam(cfg.get("outer_lr", 1e-3))
    state = train.init_state(learner, opt, jax.random.key(0), episodes)
    batching = cfg.get("batching", "vmap")
    flops_args = (state, episodes)  # unsharded: the FLOP count compiles its own single-device step
    mesh = None
    if devices > 1:
        mesh = train.episode_mesh()
        state, episodes = train.replicate(state, mesh), train.shard_episodes(episodes, mesh)
    step = train.make_meta_step(learner, opt, batching=batching, mesh=mesh)
    key = jax.random.key(1)
    t0 = time.perf_counter()
    compiled = step.lower(state, episodes, key).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    xla_temp = int(getattr(mem, "temp_size_in_bytes", 0)) if mem is not None else 0
    for _ in range(cfg.get("warmup", 2)):
        state, m = compiled(state, episodes, key)
    jax.block_until_ready(state)

    def run_once():
        nonlocal state, m
        state, m = jax.block_until_ready(compiled(state, episodes, key))

    with PeakRSS() as mem_rss:
        times = time_steps(run_once, cfg)
    med = float(np.median(times))
    extra = {}
    if profile_steps:
        rows = profile_ops(lambda: jax.block_until_ready(compiled(state, episodes, key)), compiled.as_text(),
                           profile_steps)
        extra = {"profile_steps": profile_steps, "profiled_ms_per_step": sum(r["ms_per_step"] for r in rows),
                 "dot_general_ms_per_step": sum(r["ms_per_step"] for r in rows if "dot_general" in r["source"]),
                 "top_ops": rows[:25]}
        print(f"{'ms/step':>9} {'share':>6}  {'XLA instruction':<28} {'shape':<34} source", file=sys.stderr)
        for r in rows[:25]:
            print(f"{r['ms_per_step']:9.1f} {100 * r['share']:5.1f}%  {r['op'][:28]:<28} {r['shape'][:34]:<34} "
                  f"{r['source'][-70:]}", file=sys.stderr)
        print(f"all instructions {extra['profiled_ms_per_step']:.1f} ms/step, of which matrix products (dot_general) "
              f"{extra['dot_general_ms_per_step']:.1f}", file=sys.stderr)
    peak_rss = peak_rss_mb()
    # compiled after the memory reading above, so it cannot inflate the peak
    flops = step_flops(learner, opt, *flops_args, key)
    return _summary(times, cfg, {**extra,
        "compile_s": compile_s,
        "flops_per_step": flops,
        "gflops_per_s": flops / med / 1e9 if np.isfinite(flops) else None,
        "working_mem_mb": (mem_rss.peak - mem_rss.baseline) / 2**20,
        "xla_temp_mb": xla_temp / 2**20,
        "peak_rss_mb": peak_rss,
        "loss": float(m["loss"]),
        "devices": jax.device_count(),
    })


def step_flops(learner, opt, state, episodes, key) -> float:
    """FLOPs of one meta-step over ``episodes`` from XLA's cost analysis, loops over episodes counted in full.

    XLA's cost analysis counts a loop body once, and most batchings loop over episodes somewhere
    (``map``, ``accumulate``; under ``vmap``, conv3x3's kernel-gradient rule). So count the step
    with its episodes unrolled (``batching="unroll"``, no such loop) for one and for two episodes,
    and extend the line to the meta-batch: the difference is one episode's cost, the rest the
    per-step cost of the optimizer update. (Loops inside one episode, a rolled inner loop under
    ``remat`` or iMAML's conjugate gradient, are still counted once.)
    """
    import jax

    from jaxmeta import train

    def count(n):
        part = jax.tree_util.tree_map(lambda a: a[:n], episodes)
        return _flops(train.make_meta_step(learner, opt, batching="unroll").lower(state, part, key).compile())

    batch = len(jax.tree_util.tree_leaves(episodes)[0])
    one = count(1)
    return one if batch == 1 else one + (batch - 1) * (count(2) - one)


def _flops(compiled) -> float:
    """FLOPs of a compiled computation from XLA's cost analysis (NaN when the backend gives none)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan"))) if cost else float("nan")


def jax_meta_gradient(cfg: dict):
    """jaxmeta's meta-gradient and initial params for the gradient check of the peers."""
    import jax

    from jaxmeta import Episode, train

    learner, _ = jax_learner(cfg)
    eps = Episode(*(jax.numpy.asarray(a) for a in make_data(cfg)))
    params = learner.init(jax.random.key(0), jax.tree_util.tree_map(lambda a: a[0], eps))

    def objective(p):
        return train.episode_metrics(learner, p, eps, jax.random.key(1), "vmap")[0].mean()

    return params["net"], jax.jit(jax.grad(objective))(params)["net"]


# ----------------------------------------------------------------------------------------------- torch peers


def torch_setup(cfg: dict, impl: str, params):
    import torch

    import benchmarks.peers_torch as pt

    torch.manual_seed(0)
    regression = cfg["task"] == "sinusoid"
    model = pt.TorchMLP() if regression else pt.TorchConv4(cfg["ways"], downsample=cfg.get("downsample", "max_pool"))
    if params is not None:
        pt.load_jax_params(model, params)
    kw = dict(inner_lr=cfg["inner_lr"], inner_steps=cfg["inner_steps"], first_order=cfg.get("first_order", False),
              outer_lr=cfg.get("outer_lr", 1e-3), regression=regression)
    if impl == "l2l":
        step, meta_gradient = pt.make_l2l_step(model, **kw)
    else:
        step, meta_gradient = pt.make_torchfunc_step(model, use_vmap=impl == "torchfunc_vmap", **kw)
    sx, sy, qx, qy = make_data(cfg)
    if not regression:  # NHWC -> NCHW, int labels
        sx, qx = (np.ascontiguousarray(np.transpose(a, (0, 1, 4, 2, 3))) for a in (sx, qx))
        batch = (torch.from_numpy(sx), torch.from_numpy(sy).long(), torch.from_numpy(qx), torch.from_numpy(qy).long())
    else:
        batch = tuple(torch.from_numpy(a) for a in (sx, sy, qx, qy))
    return step, meta_gradient, batch


def run_torch(cfg: dict, impl: str) -> dict:
    import torch

    torch.set_num_threads(int(cfg.get("threads", os.cpu_count())))
    step, _, batch = torch_setup(cfg, impl, None)
    t0 = time.perf_counter()
    step(batch)
    first_s = time.perf_counter() - t0
    for _ in range(cfg.get("warmup", 2) - 1):
        step(batch)
    with PeakRSS() as mem_rss:
        times = time_steps(lambda: step(batch), cfg)
    return _summary(times, cfg, {
        "compile_s": first_s,
        "working_mem_mb": (mem_rss.peak - mem_rss.baseline) / 2**20,
        "peak_rss_mb": peak_rss_mb(),
        "torch": torch.__version__,
    })


def check_gradient(cfg: dict, impl: str) -> dict:
    """Max relative difference between a peer's meta-gradient and jaxmeta's (same weights, same data)."""
    import torch

    params, jgrad = jax_meta_gradient(cfg)
    _, meta_gradient, batch = torch_setup(cfg, impl, params)
    tgrad = meta_gradient(batch)
    # map torch names back to jaxmeta leaves
    ref, got = [], []
    if cfg["task"] == "sinusoid":
        names = {f"hidden.{i}": f"hidden_{i}" for i in range(2)}
        names["head"] = "head"
        for tname, g in tgrad.items():
            module, kind = tname.rsplit(".", 1)
            jl = jgrad[names[module]]["kernel" if kind == "weight" else "bias"]
            got.append(g.numpy().T if kind == "weight" else g.numpy())
            ref.append(np.asarray(jl))
    else:
        for tname, g in tgrad.items():
            module, kind = tname.rsplit(".", 1)
            if module == "head":
                jl = jgrad["head"]["kernel" if kind == "weight" else "bias"]
                got.append(g.numpy().T if kind == "weight" else g.numpy())
            else:
                idx = int(module.split(".")[1])
                layer = f"conv_{idx // 2}" if idx % 2 == 0 else f"norm_{idx // 2}"
                leaf = {"conv": {"weight": "kernel", "bias": "bias"}, "norm": {"weight": "scale", "bias": "bias"}}
                jl = jgrad[layer][leaf[layer.split("_")[0]][kind]]
                arr = g.numpy()
                got.append(np.transpose(arr, (2, 3, 1, 0)) if arr.ndim == 4 else arr)
            ref.append(np.asarray(jl))
    from benchmarks.harness import relative_max_diff

    return {"max_abs_diff_over_max_grad": relative_max_diff(got, ref)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", required=True, help="jaxmeta | l2l | torchfunc_vmap | torchfunc_loop")
    parser.add_argument("--config", required=True, help="JSON configuration")
    parser.add_argument("--check-gradient", action="store_true", help="compare the meta-gradient with jaxmeta's")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="jaxmeta: after timing, trace STEPS more steps with jax.profiler and report the time per "
                             "XLA instruction (a table on stderr, the top 25 rows in the JSON). On several cores "
                             "XLA runs plain `dot` instructions asynchronously and the trace under-counts them; "
                             "pin the worker to one core (taskset -c 0) to see each instruction's own time")
    args = parser.parse_args(argv)
    cfg = json.loads(args.config)
    if args.check_gradient:
        out = check_gradient(cfg, args.impl)
    elif args.impl == "jaxmeta":
        out = run_jaxmeta(cfg, profile_steps=args.profile)
    else:
        out = run_torch(cfg, args.impl)
    print("RESULT " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
