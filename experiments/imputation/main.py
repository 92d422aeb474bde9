"""Missing-data imputation on UCI Letter with GAIN's protocol (Yoon et al., 2018, Table 2).

Protocol: the 20,000 x 16 Letter table is min-max scaled to [0, 1] with the
complete data; cells are hidden completely at random (MCAR) at each missing
rate; every method imputes the table from its observed cells only; its output
is rounded back to integers (GAIN's ``rounding``: every Letter column has fewer
than 20 distinct values) and scored by RMSE over the hidden cells in the
[0, 1] scale. Mean and std over masks (``masks_main`` masks at 20%,
``masks_other`` at the other rates), every method on the same masks.

Methods: ``MetaImputer`` with ``cnp`` (model-based) and ``maml``
(gradient-based), meta-trained once on synthetic tables (random clustered
tables from ``scenarios.synthetic_table``, never Letter; meta-training time
reported separately) and adapted to each masked table in ``fit`` on its own
observed cells. Baselines on the same masks: column mean, kNN (k=10, uniform;
``jaxmeta.impute.knn_impute``), iterative ridge regression
(``jaxmeta.impute.iterative_ridge_impute``, MICE-style), scikit-learn's
``IterativeImputer`` when scikit-learn is installed (``pip install
'jaxmeta[baselines]'``), and GAIN's published 0.1198 at 20%.
At 20% also: the meta-trained CNP without adaptation (``cnp_zero_shot``) and
the CNP trained on the table alone from a random initialisation
(``cnp_scratch``, same adaptation steps), to show what meta-training adds.

Outputs under ``--workdir``: ``results.json`` (per method and rate: RMSE mean,
std, 95% t-interval half-width, per-mask values, fit+transform wall and process
CPU seconds; rewritten after every rate), ``rmse_vs_rate.png``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Tuple

import jax
import numpy as np

from experiments import common
from jaxmeta import scenarios, train
from jaxmeta.data.uci import load_letter
from jaxmeta.impute import MetaImputer, iterative_ridge_impute, knn_impute, mean_impute

GAIN_PAPER_LETTER_20 = 0.1198  # Yoon et al. 2018, Table 2, Letter, 20% MCAR
META = ("cnp", "maml")
BASELINES = ("mean", "knn", "iterative_ridge", "sklearn_iterative")


@dataclasses.dataclass(frozen=True)
class Config:
    rates: Tuple[float, ...] = dataclasses.field(default=(0.2, 0.1, 0.3, 0.5, 0.8), metadata={"help": "MCAR rates"})
    masks_main: int = dataclasses.field(default=10, metadata={"help": "masks at 20% (GAIN: 10)"})
    masks_other: int = dataclasses.field(default=2, metadata={"help": "masks at the other rates"})
    methods: Tuple[str, ...] = dataclasses.field(default=META + BASELINES, metadata={"help": "methods to run"})
    ablations: bool = dataclasses.field(default=True, metadata={"help": "cnp_zero_shot and cnp_scratch at 20%"})
    ablation_masks: int = dataclasses.field(default=3, metadata={"help": "masks at 20% that also run the ablations"})
    k: int = dataclasses.field(default=32, metadata={"help": "neighbours per cell (MetaImputer)"})
    knn_k: int = dataclasses.field(default=10, metadata={"help": "k of the kNN baseline"})
    hidden: Tuple[int, ...] = dataclasses.field(default=(), metadata={"help": "network widths (empty: "
                                                "impute.DEFAULT_HIDDEN per method)"})
    meta_tables: int = dataclasses.field(default=12, metadata={"help": "synthetic tables for meta-training"})
    meta_rows: int = dataclasses.field(default=2000, metadata={"help": "rows per synthetic table"})
    meta_task_rows: int = dataclasses.field(default=300, metadata={"help": "rows per (table, rate) made into tasks"})
    meta_steps: int = dataclasses.field(default=1000, metadata={"help": "meta-training steps"})
    adapt_steps: int = dataclasses.field(default=1000, metadata={"help": "adaptation steps in fit (cnp)"})
    maml_adapt_steps: int = dataclasses.field(default=300, metadata={"help": "adaptation steps in fit (maml)"})
    adapt_rows: int = dataclasses.field(default=3000, metadata={"help": "rows drawn for adaptation tasks"})
    data_dir: str = dataclasses.field(default="", metadata={"help": "data folder (default: $JAXMETA_DATA)"})
    seed: int = dataclasses.field(default=0, metadata={"help": "PRNG seed"})


QUICK = {"rates": (0.2, 0.5), "masks_main": 1, "masks_other": 1, "meta_tables": 2, "meta_rows": 300,
         "meta_task_rows": 100,
         "meta_steps": 20, "adapt_steps": 10, "maml_adapt_steps": 10, "adapt_rows": 300, "methods": ("cnp", "maml", "mean", "knn"),
         "ablations": False}


def sklearn_iterative(X):
    """scikit-learn's IterativeImputer (BayesianRidge, 10 rounds), or None when scikit-learn is missing."""
    try:
        from sklearn.experimental import enable_iterative_imputer  # noqa: F401
        from sklearn.impute import IterativeImputer
    except ImportError:
        return None
    return IterativeImputer(max_iter=10, random_state=0).fit_transform(X)


def rmse(filled, complete_scaled, observed, lo, hi) -> float:
    """GAIN's RMSE: rounded output, min-max scale of the complete data, over the hidden cells."""
    scaled = (np.round(filled) - lo) / (hi - lo)
    miss = ~observed
    return float(np.sqrt(np.sum((scaled - complete_scaled)[miss] ** 2) / miss.sum()))


def train_and_evaluate(config: Config, workdir: str, *, progress: bool = True, fresh: bool = False,
                       mesh=None) -> dict:
    """Runs every method at every missing rate on shared masks; writes ``results.json`` and the plot.

    ``mesh`` must be ``None``: ``MetaImputer`` trains on one device.
    """
    if mesh is not None:
        raise ValueError("--devices: this experiment meta-trains jaxmeta.impute.MetaImputer, which runs on one "
                         "device; run it with --devices 1.")
    for m in config.methods:
        if m not in META + BASELINES:
            raise ValueError(f"methods: unknown method {m!r}; choose from {META + BASELINES}.")
    os.makedirs(workdir, exist_ok=True)
    X = load_letter(config.data_dir or None).astype(np.float64)
    lo, hi = X.min(0), X.max(0)
    Xs = (X - lo) / (hi - lo)
    key = jax.random.key(config.seed)
    k_meta, k_tables, k_masks = jax.random.split(key, 3)
    base_settings = dict(k=config.k, hidden=tuple(config.hidden) or None, adapt_rows=config.adapt_rows)
    steps_of = {"cnp": config.adapt_steps, "maml": config.maml_adapt_steps}

    def settings_for(m):
        return dict(base_settings, adapt_steps=steps_of[m])

    meta = {}
    meta_seconds = {}
    wanted_meta = [m for m in META if m in config.methods]
    if wanted_meta:
        tables = [scenarios.synthetic_table(jax.random.fold_in(k_tables, i), config.meta_rows, X.shape[1],
                                            levels=(None, 8, 16)[i % 3]) for i in range(config.meta_tables)]
        for m in wanted_meta:
            imp = MetaImputer.meta_train(tables, key=k_meta, steps=config.meta_steps, method=m,
                                       rows_per_table=config.meta_task_rows, **settings_for(m))
            meta[m], meta_seconds[m] = imp.meta_params, imp.timings_["meta_train_s"]
            print(f"meta-trained {m} on {len(tables)} synthetic tables ({imp.timings_['meta_train_tasks']} tasks) "
                  f"in {meta_seconds[m]:.1f}s", flush=True)

    def imputers(rate, mask_index):
        out = {}
        for m in config.methods:
            if m in META:
                out[m] = lambda Xn, m=m: MetaImputer(m, meta_params=meta[m], **settings_for(m)).fit_transform(Xn)
        if (config.ablations and abs(rate - 0.2) < 1e-9 and "cnp" in config.methods
                and mask_index < config.ablation_masks):
            out["cnp_zero_shot"] = lambda Xn: MetaImputer("cnp", meta_params=meta["cnp"],
                                                          **dict(settings_for("cnp"), adapt_steps=0)).fit_transform(Xn)
            out["cnp_scratch"] = lambda Xn: MetaImputer("cnp", **settings_for("cnp")).fit_transform(Xn)
        base = {"mean": mean_impute, "knn": lambda Xn: knn_impute(Xn, config.knn_k),
                "iterative_ridge": iterative_ridge_impute, "sklearn_iterative": sklearn_iterative}
        out.update({m: base[m] for m in BASELINES if m in config.methods})
        return out

    results = {}
    for r_i, rate in enumerate(config.rates):
        n_masks = config.masks_main if abs(rate - 0.2) < 1e-9 else config.masks_other
        per = {}
        for i in range(n_masks):
            observed = np.asarray(scenarios.mcar_mask(jax.random.fold_in(jax.random.fold_in(k_masks, r_i), i),
                                                      X.shape, rate))
            Xn = np.where(observed, X, np.nan)
            for name, fn in imputers(rate, i).items():
                start, cpu_start = time.perf_counter(), time.process_time()
                filled = fn(Xn)
                seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
                if filled is None:  # scikit-learn not installed
                    continue
                if not np.array_equal(filled[observed], X[observed]):
                    raise AssertionError(f"{name} changed observed cells")
                value = rmse(filled, Xs, observed, lo, hi)
                rec = per.setdefault(name, {"rmse": [], "seconds": [], "cpu_seconds": []})
                rec["rmse"].append(value)
                rec["seconds"].append(seconds)
                rec["cpu_seconds"].append(cpu)
                print(f"rate {rate:.1f} mask {i}: {name:>18} RMSE {value:.4f}  ({seconds:.1f}s wall, {cpu:.1f}s cpu)",
                      flush=True)
        for rec in per.values():
            rec["mean"], rec["std"] = float(np.mean(rec["rmse"])), float(np.std(rec["rmse"]))
            rec["mean_seconds"] = float(np.mean(rec["seconds"]))
            rec["ci95"] = _ci95(rec["rmse"])
        results[f"{rate:.1f}"] = per
        print(f"== rate {rate:.1f}: " + ", ".join(f"{n} {v['mean']:.4f}±{v['std']:.4f}" for n, v in per.items()),
              flush=True)
        train.write_json(os.path.join(workdir, "results.json"), _output(config, meta_seconds, results))
    output = _output(config, meta_seconds, results)
    train.write_json(os.path.join(workdir, "results.json"), output)
    plot(results, os.path.join(workdir, "rmse_vs_rate.png"))
    return output


def _ci95(values) -> float:
    """Half-width of the 95% t-interval of the mean (0 for a single value)."""
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return 0.0
    t = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}.get(len(v), 1.96)
    return float(t * v.std(ddof=1) / np.sqrt(len(v)))


def _output(config, meta_seconds, results) -> dict:
    return {
        "experiment": "UCI Letter imputation, GAIN protocol (MCAR, min-max scale of the complete data, rounded, "
                      "RMSE over missing cells)",
        "config": dataclasses.asdict(config),
        "gain_paper_rmse_20": GAIN_PAPER_LETTER_20,
        "meta_train_seconds": meta_seconds,
        "results": results,
        "metadata": common.run_metadata(),
    }


def plot(results: dict, path: str) -> None:
    plt = common.pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    names = sorted({n for per in results.values() for n in per})
    for name in names:
        pts = [(float(r), per[name]["mean"], per[name]["std"]) for r, per in results.items() if name in per]
        if not pts:
            continue
        r, m, s = map(np.array, zip(*sorted(pts)))
        ax.errorbar(r * 100, m, yerr=s, marker="o", capsize=3, label=name)
    ax.scatter([20], [GAIN_PAPER_LETTER_20], marker="*", s=150, color="k", zorder=5, label="GAIN (paper)")
    ax.set_xlabel("missing rate (%)")
    ax.set_ylabel("RMSE (min-max scale)")
    ax.set_title("UCI Letter, MCAR")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = common.parser_for(Config, __doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    config = common.config_from_args(Config, args, QUICK)
    workdir = args.workdir or os.path.join("runs", "imputation-quick" if args.quick else "imputation")
    start = time.perf_counter()
    train_and_evaluate(config, workdir, progress=not args.no_progress, fresh=args.fresh)
    print(f"total {time.perf_counter() - start:.1f}s; results in {os.path.join(workdir, 'results.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
