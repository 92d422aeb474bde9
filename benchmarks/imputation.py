"""Wall-clock time of MetaImputer's fit + transform on the 20,000 x 16 UCI Letter table.

The imputation issue's speed target is "fit + transform of the Letter table under
60 s on the 2-core CPU" (meta-training is reported separately by
``experiments/imputation``). This script masks 20% of the cells completely at
random, then times ``MetaImputer(method).fit_transform`` (``fit``'s adaptation
steps included, the imputer's defaults otherwise) once per mask, in one process:
the first mask includes compilation, the later ones reuse the compiled programs.
The kNN baseline is timed on the same masks for scale. The fit does not depend
on meta-training for its cost (the same number of adaptation steps runs from
any starting point), so no meta-trained parameters are needed here.

Usage: ``JAXMETA_DATA=/path/to/data python -m benchmarks.imputation [--methods cnp maml] [--masks 2]``;
prints a table and writes ``benchmarks/results/imputation_<backend>.json``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from benchmarks import harness

COLUMNS = (("method", "method", "s"), ("mask", "mask", "d"), ("wall s", "wall_s", ".1f"), ("CPU s", "cpu_s", ".1f"),
           ("compiled in this call", "first", "s"))


def run(methods, masks: int, quick: bool) -> dict:
    import jax

    from jaxmeta import scenarios
    from jaxmeta.data.uci import load_letter
    from jaxmeta.impute import MetaImputer, knn_impute

    X = load_letter().astype(np.float64)
    if quick:
        X = X[:1000]
    rows = []
    for i in range(masks):
        observed = np.asarray(scenarios.mcar_mask(jax.random.fold_in(jax.random.key(0), i), X.shape, 0.2))
        Xn = np.where(observed, X, np.nan)
        for method in list(methods) + ["knn"]:
            if method == "knn":
                fn = lambda A: knn_impute(A, 10)  # noqa: E731
            else:
                kw = dict(adapt_steps=20, adapt_rows=300) if quick else {}
                fn = lambda A, m=method, kw=kw: MetaImputer(m, **kw).fit_transform(A)  # noqa: E731
            start, cpu0 = time.perf_counter(), time.process_time()
            filled = fn(Xn)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
            if np.isnan(filled).any() or not np.array_equal(filled[observed], X[observed]):
                raise AssertionError(f"{method}: imputation left NaNs or changed observed cells")
            rows.append({"method": method, "mask": i, "wall_s": wall, "cpu_s": cpu, "first": "yes" if i == 0 else "no"})
    harness.print_table(rows, COLUMNS, f"fit + transform, Letter {X.shape[0]} x {X.shape[1]}, 20% MCAR")
    return {"machine": harness.machine_info(), "table_shape": list(X.shape), "missing_rate": 0.2, "rows": rows,
            "note": "wall_s of mask 0 includes compilation; later masks reuse the compiled programs"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["cnp", "maml"], choices=["cnp", "maml"])
    parser.add_argument("--masks", type=int, default=2, help="masks timed (the first includes compilation)")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (numbers mean nothing)")
    parser.add_argument("--name", default=None, help="results file name (default imputation_<backend>)")
    args = parser.parse_args(argv)
    result = run(args.methods, args.masks, args.quick)
    name = args.name or ("imputation_quick" if args.quick else f"imputation_{result['machine']['backend']}")
    harness.write_results(name, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
