"""Missing-data imputation tasks: masks, neighbour context sets, and synthetic tables.

An imputation *task* is one missing cell ``(row q, column j)`` of a table. Its
support (context) set is the ``K`` rows nearest to ``q`` (mean squared
difference over the cells both rows observe), each giving its value in column
``j`` when it observes it (``support_mask`` marks that); its single query point
is the cell itself. Every learner sees the same arrays:

* ``support_x [K, F]`` per-neighbour features (:data:`FEATURES`): distance to
  ``q``, overlap (shared observed cells / D), rank / K, the column's observed
  mean and std, the fraction of ``q``'s cells observed, and the mean and std
  of the first 10 neighbours that observe column ``j`` (the kNN estimate,
  column mean when none does);
* ``support_y [K, 1]`` the neighbour's value in column ``j`` (0 when missing);
* ``query_x [1, F]`` the same features for ``q`` itself (distance 0, rank 0);
* ``query_y [1, 1]`` the held-out truth (0 where unknown);
* ``aux`` the task description: ``column`` (int32), ``missing_rate`` (of the
  table), ``column_mean``, ``column_std``, and ``offset``: the value subtracted
  from every target (0, or with ``centre=True`` the kNN estimate, so that a
  learner predicts a *correction* of kNN and predicting 0 is plain kNN;
  add ``offset`` back to a prediction).

Masks are boolean ``observed`` arrays (``True`` = the cell is seen):
:func:`mcar_mask` (missing completely at random), :func:`mar_mask` (missing at
random: a cell's chance depends on an always-observed driver column of the same
row), :func:`mnar_mask` (missing not at random: it depends on the cell's own
value). Self-supervised training tasks on an incomplete table
(:func:`masked_cell_tasks`) hide extra *observed* cells and score only those,
so nothing hidden by the table's own mask is ever used as a target.

Scenario code builds arrays and nothing else (no learner imports).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxmeta.episodes import Episode

__all__ = [
    "FEATURES",
    "Neighbours",
    "mcar_mask",
    "mar_mask",
    "mnar_mask",
    "column_stats",
    "nearest_rows",
    "imputation_episodes",
    "masked_cell_tasks",
    "synthetic_table",
]

FEATURES = ("distance", "overlap", "rank", "column_mean", "column_std", "row_observed", "knn_mean", "knn_std")
KNN = 10  # neighbours behind the knn_mean / knn_std features


class Neighbours(NamedTuple):
    """The ``K`` nearest rows of some query rows: ``index``, ``distance``, ``overlap``, each ``[Rq, K]``.

    ``overlap`` is the share of the columns that both rows observe. Built by :func:`nearest_rows`.

    Example:
      >>> import numpy as np
      >>> nb = nearest_rows(np.array([[0.0, 0.0], [0.1, 0.0], [1.0, 1.0]]), np.ones((3, 2), bool), 1)
      >>> nb.index[:, 0].tolist(), nb.overlap[:, 0].tolist()
      ([1, 0, 1], [1.0, 1.0, 1.0])
    """

    index: jax.Array
    distance: jax.Array
    overlap: jax.Array


def _check_rate(rate, name="rate", high=1.0):
    rate = float(rate)
    if not 0.0 <= rate < high:
        raise ValueError(f"{name}: expected a missing rate in [0, {high}), got {rate}.")
    return rate


def _check_values(X, name="X"):
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D table [rows, columns], got shape {X.shape}.")
    if not np.issubdtype(X.dtype, np.number) or np.iscomplexobj(X):
        raise TypeError(f"{name}: expected a real numeric array, got dtype {X.dtype}.")
    return X.astype(np.float32)


def mcar_mask(key: jax.Array, shape, rate: float) -> jax.Array:
    """Missing completely at random: every cell is hidden independently with probability ``rate``.

    Args:
      key: PRNG key.
      shape: ``(rows, columns)``.
      rate: probability that a cell is missing, in ``[0, 1)``.

    Returns:
      ``observed [rows, columns]`` bool (``True`` = seen). The same key gives the same mask.

    Example:
      >>> import jax
      >>> m = mcar_mask(jax.random.key(0), (1000, 10), 0.2)
      >>> round(1 - float(m.mean()), 2)
      0.2
    """
    rate = _check_rate(rate)
    return jax.random.uniform(key, tuple(shape)) >= rate


def _calibrated(scores: np.ndarray, rate: float) -> np.ndarray:
    """Per-column offsets b so that mean(sigmoid(scores + b)) == rate (bisection)."""
    lo, hi = np.full(scores.shape[1], -30.0), np.full(scores.shape[1], 30.0)
    for _ in range(60):
        mid = (lo + hi) / 2
        p = (1 / (1 + np.exp(-(scores + mid)))).mean(0)
        lo, hi = np.where(p < rate, mid, lo), np.where(p < rate, hi, mid)
    return 1 / (1 + np.exp(-(scores + (lo + hi) / 2)))


def _standardised(X):
    return (X - X.mean(0)) / np.maximum(X.std(0), 1e-8)


def mar_mask(key: jax.Array, X, rate: float, *, strength: float = 2.0) -> jax.Array:
    """Missing at random: half the columns (drawn at random) are always observed and drive the others.

    Each other column ``j`` gets a driver among the observed columns; the cell
    ``(i, j)`` is missing with probability ``sigmoid(strength * z_i + b_j)``
    where ``z`` is the standardised driver value, and ``b_j`` is set so that
    ``rate`` of *all* cells are missing (so ``rate`` must be below the share of
    driven columns, about one half).

    Args:
      key: PRNG key.
      X: ``[rows, columns]`` complete table (needs at least 2 columns).
      rate: overall fraction of missing cells.
      strength: how strongly the driver moves the probability.

    Returns:
      ``observed`` bool ``[rows, columns]``.

    Example:
      >>> import jax, numpy as np
      >>> X = np.random.default_rng(0).normal(size=(2000, 6))
      >>> m = mar_mask(jax.random.key(0), X, 0.2)
      >>> round(1 - float(m.mean()), 2), int((m.all(axis=0)).sum())
      (0.2, 3)
    """
    X = _check_values(X)
    rows, cols = X.shape
    if cols < 2:
        raise ValueError(f"X: MAR needs at least 2 columns (drivers and driven), got {cols}.")
    k_cols, k_drv, k_u = jax.random.split(key, 3)
    perm = np.asarray(jax.random.permutation(k_cols, cols))
    n_obs = cols // 2
    observed_cols, driven = perm[:n_obs], perm[n_obs:]
    share = len(driven) / cols
    rate = _check_rate(rate, "rate", high=share)
    drivers = observed_cols[np.asarray(jax.random.randint(k_drv, (len(driven),), 0, n_obs))]
    z = _standardised(X)[:, drivers]
    p = np.zeros((rows, cols), np.float32)
    p[:, driven] = _calibrated(strength * z, rate / share) if rate > 0 else 0.0
    return jax.random.uniform(k_u, (rows, cols)) >= jnp.asarray(p)


def mnar_mask(key: jax.Array, X, rate: float, *, strength: float = 2.0) -> jax.Array:
    """Missing not at random (self-masking): large values of a column are more often missing.

    The cell ``(i, j)`` is missing with probability ``sigmoid(strength * z_ij +
    b_j)``, ``z`` the column-standardised value of the cell itself, ``b_j`` set
    so that each column loses ``rate`` of its cells.

    Args:
      key: PRNG key.
      X: ``[rows, columns]`` complete table.
      rate: fraction of missing cells, in ``[0, 1)``.
      strength: dependence of the probability on the value.

    Returns:
      ``observed`` bool ``[rows, columns]``.

    Example:
      >>> import jax, numpy as np
      >>> X = np.random.default_rng(0).normal(size=(2000, 3))
      >>> m = np.asarray(mnar_mask(jax.random.key(0), X, 0.3))
      >>> round(1 - float(m.mean()), 2), bool(X[~m].mean() > X[m].mean())
      (0.3, True)
    """
    X = _check_values(X)
    rate = _check_rate(rate)
    p = _calibrated(strength * _standardised(X), rate) if rate > 0 else np.zeros(X.shape)
    return jax.random.uniform(key, X.shape) >= jnp.asarray(p, jnp.float32)


def column_stats(values, observed):
    """Observed mean and std of every column: ``(mean [D], std [D])`` (0 and 1 for an empty column).

    Example:
      >>> import numpy as np
      >>> column_stats(np.array([[1.0, 2.0], [3.0, 0.0]]), np.array([[True, True], [True, False]]))
      (Array([2., 2.], dtype=float32), Array([1., 1.], dtype=float32))
    """
    v, m = jnp.asarray(values, jnp.float32), jnp.asarray(observed, jnp.float32)
    n = m.sum(0)
    mean = (v * m).sum(0) / jnp.maximum(n, 1.0)
    var = (((v - mean) ** 2) * m).sum(0) / jnp.maximum(n, 1.0)
    std = jnp.sqrt(var)
    return jnp.where(n > 0, mean, 0.0), jnp.where((n > 0) & (std > 0), std, 1.0)


def nearest_rows(values, observed, k: int, *, query_rows=None, chunk: int = 1024) -> Neighbours:
    """The ``k`` nearest rows of each query row, by mean squared difference over co-observed cells.

    ``d(q, n) = sum_c o_qc o_nc (x_qc - x_nc)^2 / sum_c o_qc o_nc``; pairs with
    no co-observed cell are at infinity (``inf`` distance, overlap 0). A row is
    never its own neighbour. Computed in jitted chunks of query rows (three
    matrix products and a ``top_k`` per chunk), so memory is ``chunk x rows``.

    Args:
      values: ``[R, D]`` table (missing cells may hold anything finite).
      observed: ``[R, D]`` bool mask.
      k: neighbours per row (``k < R``).
      query_rows: optional ``[Rq]`` row indices (default: every row).
      chunk: query rows per compiled call.

    Returns:
      :class:`Neighbours` with ``[Rq, k]`` arrays, nearest first.

    Example:
      >>> import numpy as np
      >>> X = np.array([[0.0, 0.0], [0.1, 0.0], [1.0, 1.0], [0.9, 1.0]])
      >>> nb = nearest_rows(X, np.ones_like(X, bool), 1)
      >>> nb.index[:, 0].tolist()
      [1, 0, 3, 2]
    """
    v = jnp.asarray(np.where(np.asarray(observed), np.asarray(values, np.float32), 0.0))
    m = jnp.asarray(observed, jnp.float32)
    R = v.shape[0]
    k = int(k)
    if not 1 <= k < R:
        raise ValueError(f"k: expected 1 <= k < rows ({R}), got {k}.")
    rows = np.arange(R) if query_rows is None else np.asarray(query_rows, np.int64)
    sq = v * v
    out = []
    for s in range(0, len(rows), chunk):
        r = rows[s : s + chunk]
        pad = chunk - len(r) if len(rows) > chunk else 0
        rp = np.concatenate([r, np.zeros(pad, r.dtype)])
        idx, dist, ov = _nearest_topk(v, m, sq, jnp.asarray(rp, jnp.int32), k)
        out.append((idx[: len(r)], dist[: len(r)], ov[: len(r)]))
    return Neighbours(*(jnp.concatenate(a) for a in zip(*out)))


@partial(jax.jit, static_argnums=4)
def _nearest_topk(v, m, sq, rows, k):
    R = v.shape[0]
    # sum over co-observed cells of (a - b)^2 = a^2 * o_b + o_a * b^2 - 2 a b, as one fused product
    A = jnp.concatenate([sq[rows], m[rows], v[rows]], axis=1)  # [C, 3D]
    B = jnp.concatenate([m, sq, -2.0 * v], axis=1)  # [R, 3D]
    ssd = A @ B.T
    cnt = m[rows] @ m.T  # [C, R] co-observed cells
    d = jnp.where(cnt > 0, jnp.maximum(ssd, 0.0) / jnp.maximum(cnt, 1.0), jnp.inf)
    d = jnp.where(rows[:, None] == jnp.arange(R)[None, :], jnp.inf, d)  # never its own neighbour
    neg, idx = jax.lax.top_k(-d, k)
    ov = jnp.take_along_axis(cnt, idx, axis=1) / v.shape[1]
    return idx.astype(jnp.int32), -neg, ov


def imputation_episodes(values, observed, rows, cols, neighbours: Neighbours, *, targets=None,
                        centre: bool = False) -> Episode:
    """The imputation tasks of cells ``(rows[e], cols[e])`` as a batch of episodes (see the module docstring).

    Args:
      values: ``[R, D]`` table as the imputer sees it.
      observed: ``[R, D]`` bool mask the imputer sees.
      rows, cols: ``[E]`` cell coordinates.
      neighbours: :class:`Neighbours` of ``rows`` (row ``e`` of it belongs to ``rows[e]``).
      targets: optional ``[E]`` truth for ``query_y`` (zeros otherwise).
      centre: subtract the kNN estimate (the ``knn_mean`` feature) from
        ``support_y`` and ``query_y``; ``aux["offset"]`` holds what was subtracted.

    Returns:
      An :class:`~jaxmeta.Episode` batch: ``support_x [E, K, F]``,
      ``support_y [E, K, 1]``, ``query_x [E, 1, F]``, ``query_y [E, 1, 1]``,
      ``support_mask [E, K]`` (1 where the neighbour observes the column),
      ``aux`` with ``column``, ``missing_rate``, ``column_mean``, ``column_std``, ``offset`` (each ``[E]``).

    Example:
      >>> import numpy as np
      >>> X = np.random.default_rng(0).uniform(size=(50, 4)); M = X > 0.2
      >>> nb = nearest_rows(X, M, 5, query_rows=[0, 1])
      >>> ep = imputation_episodes(X, M, np.array([0, 1]), np.array([2, 3]), nb)
      >>> ep.support_x.shape, ep.support_y.shape, ep.query_x.shape, ep.aux["column"].tolist()
      ((2, 5, 8), (2, 5, 1), (2, 1, 8), [2, 3])
    """
    m = jnp.asarray(observed)
    v = jnp.where(m, jnp.asarray(values, jnp.float32), 0.0)
    return _episodes(v, m, jnp.asarray(rows, jnp.int32), jnp.asarray(cols, jnp.int32), neighbours,
                     jnp.zeros(len(rows), jnp.float32) if targets is None else jnp.asarray(targets, jnp.float32),
                     bool(centre))


@partial(jax.jit, static_argnums=6)
def _episodes(v, m, rows, cols, nb: Neighbours, targets, centre):
    mean, std = column_stats(v, m)
    K = nb.index.shape[1]
    D = v.shape[1]
    rate = 1.0 - jnp.mean(m.astype(jnp.float32))
    mf = m.astype(jnp.float32)
    y = v[nb.index, cols[:, None]]  # [E, K]
    smask = mf[nb.index, cols[:, None]]
    finite = jnp.isfinite(nb.distance)
    dist = jnp.where(finite, nb.distance, 0.0)
    smask = smask * finite
    E = rows.shape[0]
    row_obs = jnp.sum(mf[rows], axis=1) / D
    col_m, col_s = mean[cols], std[cols]
    near = smask * (jnp.cumsum(smask, axis=1) <= KNN)  # the first KNN neighbours observing the column
    n_near = jnp.sum(near, axis=1)
    knn_mean = jnp.where(n_near > 0, jnp.sum(near * y, 1) / jnp.maximum(n_near, 1.0), col_m)
    knn_var = jnp.sum(near * (y - knn_mean[:, None]) ** 2, 1) / jnp.maximum(n_near, 1.0)
    per_task = jnp.stack([col_m, col_s, row_obs, knn_mean, jnp.sqrt(knn_var)], -1)  # [E, 5]
    rank = jnp.broadcast_to(jnp.arange(K, dtype=jnp.float32) / K, (E, K))
    sx = jnp.concatenate([jnp.stack([dist, nb.overlap, rank], -1),
                          jnp.broadcast_to(per_task[:, None], (E, K, per_task.shape[1]))], -1)
    qx = jnp.concatenate([jnp.stack([jnp.zeros(E), row_obs, jnp.zeros(E)], -1), per_task], -1)[:, None]
    offset = knn_mean if centre else jnp.zeros(E)
    aux = {"column": cols, "missing_rate": jnp.full((E,), rate), "column_mean": col_m, "column_std": col_s,
           "offset": offset}
    sy = (y - offset[:, None]) * smask  # 0 where the neighbour does not observe the column
    qy = targets - offset
    return Episode(sx, sy[..., None], qx, qy[:, None, None], support_mask=smask, aux=aux)


def masked_cell_tasks(key: jax.Array, values, observed, *, k: int, num_rows: int, extra_rate: float = 0.2,
                      chunk: int = 1024, centre: bool = False) -> Episode:
    """Self-supervised imputation tasks from an incomplete table: hide observed cells and predict them.

    Draws ``num_rows`` rows, hides each of their *observed* cells with
    probability ``extra_rate`` (on top of the table's own mask), finds the
    rows' neighbours under the reduced mask, and returns one task per hidden
    cell with its true value as ``query_y``. Cells missing in ``observed`` are
    never targets, so the truth of a real missing cell is never used.

    Args:
      key: PRNG key.
      values: ``[R, D]`` table (missing cells may hold anything).
      observed: ``[R, D]`` bool mask of the table.
      k: neighbours per task.
      num_rows: rows to draw (without replacement; at most ``R``).
      extra_rate: probability of hiding an observed cell of a drawn row.
      chunk: query rows per compiled neighbour search.
      centre: targets relative to the kNN estimate (see :func:`imputation_episodes`).

    Returns:
      An :class:`~jaxmeta.Episode` batch (as :func:`imputation_episodes`), one
      episode per hidden cell (a data-dependent number, computed on the host).

    Example:
      >>> import jax, numpy as np
      >>> X = np.random.default_rng(0).uniform(size=(200, 5)); M = np.ones_like(X, bool)
      >>> ep = masked_cell_tasks(jax.random.key(0), X, M, k=8, num_rows=100, extra_rate=0.2)
      >>> ep.support_x.shape[1:], 50 < ep.query_y.shape[0] < 150
      ((8, 8), True)
    """
    values = _check_values(values, "values")
    observed = np.asarray(observed, bool)
    extra_rate = _check_rate(extra_rate, "extra_rate")
    R = values.shape[0]
    if not 1 <= int(num_rows) <= R:
        raise ValueError(f"num_rows: expected 1..{R} (rows of the table), got {num_rows}.")
    k_rows, k_hide = jax.random.split(key)
    rows = np.sort(np.asarray(jax.random.choice(k_rows, R, (int(num_rows),), replace=False)))
    hide = np.zeros_like(observed)
    hide[rows] = np.asarray(jax.random.uniform(k_hide, (len(rows), values.shape[1])) < extra_rate) & observed[rows]
    seen = observed & ~hide
    nb = nearest_rows(values, seen, k, query_rows=rows, chunk=chunk)
    pos = {r: i for i, r in enumerate(rows)}
    cell_r, cell_c = np.nonzero(hide)
    sel = np.array([pos[r] for r in cell_r], np.int64)
    nb_cells = Neighbours(*(a[sel] for a in nb))
    return imputation_episodes(values, seen, cell_r, cell_c, nb_cells, targets=values[cell_r, cell_c], centre=centre)


def synthetic_table(key: jax.Array, rows: int, cols: int, *, clusters: int = 8, latent: int = 3,
                    levels: Optional[int] = None) -> np.ndarray:
    """A random table with clustered, nonlinear structure (for meta-training imputers on many tables).

    Rows are drawn from a mixture of ``clusters`` Gaussians in a ``latent``-dim
    space, pushed through a random 2-layer tanh network to ``cols`` columns,
    plus noise; each column is min-max scaled to ``[0, 1]`` and, with
    ``levels``, rounded to that many equally spaced values (integer-coded columns).

    Args:
      key: PRNG key.
      rows, cols: table size.
      clusters: mixture components.
      latent: latent dimension.
      levels: optional number of distinct values per column.

    Returns:
      ``[rows, cols]`` float32 in ``[0, 1]``.

    Example:
      >>> import jax
      >>> T = synthetic_table(jax.random.key(0), 100, 5, levels=16)
      >>> T.shape, float(T.min()), float(T.max()), len(set(T[:, 0].tolist())) <= 16
      ((100, 5), 0.0, 1.0, True)
    """
    ks = jax.random.split(key, 7)
    centres = jax.random.normal(ks[0], (clusters, latent)) * 2.0
    which = jax.random.randint(ks[1], (rows,), 0, clusters)
    z = centres[which] + 0.5 * jax.random.normal(ks[2], (rows, latent))
    w1 = jax.random.normal(ks[3], (latent, 32)) / np.sqrt(latent)
    w2 = jax.random.normal(ks[4], (32, cols)) / np.sqrt(32)
    h = jnp.tanh(z @ w1 + jax.random.normal(ks[5], (32,)))
    x = h @ w2 + 0.1 * jax.random.normal(ks[6], (rows, cols))
    x = np.asarray(x, np.float32)
    x = (x - x.min(0)) / np.maximum(x.max(0) - x.min(0), 1e-8)
    if levels is not None:
        x = np.round(x * (int(levels) - 1)) / (int(levels) - 1)
    return x.astype(np.float32)
