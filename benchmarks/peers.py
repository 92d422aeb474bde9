"""jaxmeta's compiled meta-step against learn2learn and torch.func MAML, in the same run.

Reference configurations (same random data and the same initial weights for
every implementation; each peer's meta-gradient is compared with jaxmeta's
before timing):

* ``omniglot``: Conv-4 (4 x [conv3x3 64, batch norm, ReLU, 2x2 max-pool]),
  5-way 1-shot, 15 queries per class, meta-batch 32, one inner SGD step
  (lr 0.4), second order, Adam outer. Compute-bound.
* ``sinusoid``: MLP 1-40-40-1, meta-batch 25, 10-shot, 10 queries, 5 inner
  steps (lr 0.01), second order, Adam outer. Overhead-bound.

On a CPU with several cores, jaxmeta also runs with the episode axis sharded
over one forced XLA host device per core (``XLA_FLAGS=
--xla_force_host_platform_device_count=N`` and ``mesh=train.episode_mesh()``).

Each implementation runs in its own process; the table reports the median
seconds per meta-step after warm-up (and the interquartile range), tasks per
second, compile / first-step time, working memory during the timed steps
(resident-set growth), and the peer's time divided by jaxmeta's.

Usage: ``python -m benchmarks.peers [--configs omniglot sinusoid] [--cores 0]``
(``--cores`` pins every process to the listed CPUs, e.g. ``0`` for one core).
"""

from __future__ import annotations

import argparse
import os
import sys

from benchmarks import harness

REFERENCE = {
    "omniglot": {"task": "omniglot", "ways": 5, "shots": 1, "queries": 15, "meta_batch": 32, "inner_steps": 1,
                 "inner_lr": 0.4, "first_order": False, "outer_lr": 1e-3, "steps": 20, "warmup": 2},
    "sinusoid": {"task": "sinusoid", "shots": 10, "queries": 10, "meta_batch": 25, "inner_steps": 5,
                 "inner_lr": 0.01, "first_order": False, "outer_lr": 1e-3, "steps": 50, "warmup": 3},
}
# jaxmeta's fastest settings per configuration on CPU (see meta_step.py's batching x conv table)
JAXMETA_CPU = {"omniglot": {"batching": "accumulate", "conv_impl": "xla_vjp"}, "sinusoid": {"batching": "vmap"}}
PEERS = ("l2l", "torchfunc_loop", "torchfunc_vmap")


def run(configs, cores=None, quick=False) -> dict:
    machine = harness.machine_info()
    peak = harness.matmul_peak(cores=cores)  # on the cores the rows run on
    out = {"machine": machine, "matmul_peak": peak, "cores": cores, "configs": {}}
    for name in configs:
        cfg = dict(REFERENCE[name])
        if quick:
            cfg.update(steps=3, warmup=1, meta_batch=4)
        if cores is not None:
            cfg["threads"] = len(cores)
        rows = []
        ours = harness.run_worker("jaxmeta", dict(cfg, **JAXMETA_CPU[name]), cores=cores)
        ours.update(impl="jaxmeta", setting=str(JAXMETA_CPU[name]))
        rows.append(ours)
        devices = len(cores) if cores is not None else (os.cpu_count() or 1)
        if machine["backend"] == "cpu" and devices > 1 and cfg["meta_batch"] % devices == 0:
            # the same step with the episode axis sharded over one forced host device per core
            setting = dict(JAXMETA_CPU[name], host_devices=devices)
            row = harness.run_worker("jaxmeta", dict(cfg, **setting), cores=cores)
            row.update(impl=f"jaxmeta, {devices} host devices", setting=str(setting))
            rows.append(row)
        for impl in PEERS:
            check = harness.run_worker(impl, dict(cfg, steps=1), cores=cores, check_gradient=True)
            row = harness.run_worker(impl, cfg, cores=cores)
            row.update(impl=impl, grad_check=check.get("max_abs_diff_over_max_grad", check.get("error")))
            rows.append(row)
        base = ours.get("step_s_median")
        for row in rows:
            if base and row.get("step_s_median"):
                row["ratio_vs_jaxmeta"] = row["step_s_median"] / base
                row["iqr"] = f"{row['step_s_p25']:.3g}-{row['step_s_p75']:.3g}"
            if row.get("gflops_per_s"):
                row["pct_of_matmul_peak"] = 100 * row["gflops_per_s"] / peak["peak_gflops"]
        harness.print_table(rows, [
            ("implementation", "impl", "s"), ("s/step (median)", "step_s_median", ".3g"), ("IQR", "iqr", "s"),
            ("tasks/s", "tasks_per_s", ".3g"), ("compile or 1st step s", "compile_s", ".3g"),
            ("working mem MB", "working_mem_mb", ".0f"), ("peak RSS MB", "peak_rss_mb", ".0f"),
            ("grad check (rel.)", "grad_check", ".1e"), ("time / jaxmeta", "ratio_vs_jaxmeta", ".2f"),
            ("% matmul peak", "pct_of_matmul_peak", ".0f"),
        ], title=f"{name} reference, {'all cores' if cores is None else f'cores {cores}'} "
                 f"(matmul peak {peak['peak_gflops']:.0f} GFLOP/s)")
        for row in rows:
            if "error" in row:
                print(f"  {row['impl']}: {row['error'][:300]}", file=sys.stderr)
        out["configs"][name] = {"config": cfg, "rows": rows}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(REFERENCE), choices=list(REFERENCE))
    parser.add_argument("--cores", type=int, nargs="+", default=None, help="pin every process to these CPUs")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (numbers mean nothing)")
    parser.add_argument("--name", default=None, help="results file name (default peers_<backend>[_<n>core])")
    args = parser.parse_args(argv)
    result = run(args.configs, args.cores, args.quick)
    name = args.name or ("peers_quick" if args.quick else
                         f"peers_{result['machine']['backend']}" + (f"_{len(args.cores)}core" if args.cores else ""))
    harness.write_results(name, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
