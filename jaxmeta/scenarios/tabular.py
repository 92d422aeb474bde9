"""Few-shot tasks from any table ``(X, y)``: the data-mining scenario.

Two builders, each returning a pure-JAX sampler ``sample(key) -> Episode``
(a batch with a leading ``E`` axis), deterministic per key and usable inside a
compiled training loop (``fit(..., device_sampling=True)``):

* :func:`tabular_classification`: ``N``-way ``K``-shot tasks: ``N`` classes
  drawn without replacement, ``K`` support and ``Q`` query rows per class
  (disjoint), labels remapped to ``[0, N)`` in a random order per task.
* :func:`tabular_regression`: tasks are groups of rows (rows sharing a value
  of ``groups``: a customer, a site, a segment, ...) or, without groups,
  random subsets of all rows; ``K`` support and ``Q`` query rows per task
  (disjoint).

The table is preprocessed once on the host (class / group index tables); the
sampler only gathers rows. Scenario code builds arrays and nothing else.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxmeta.episodes import Episode

__all__ = ["tabular_classification", "tabular_regression"]


def _check_table(X, y, y_name: str = "y"):
    try:
        X = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError):
        raise TypeError("X: expected a numeric array [R, ...] (one row per example).") from None
    y = np.asarray(y)
    if X.ndim < 1 or X.shape[0] < 1:
        raise ValueError(f"X: expected at least one row, got shape {X.shape}.")
    if X.ndim == 1:
        X = X[:, None]
    if y.ndim < 1 or y.shape[0] != X.shape[0]:
        raise ValueError(f"{y_name}: expected one entry per row of X ({X.shape[0]}), got shape {y.shape}.")
    if not np.isfinite(X).all():
        raise ValueError(f"X: holds {int((~np.isfinite(X)).sum())} NaN/inf value(s); impute or drop those rows first.")
    return X, y


def _check_sizes(**sizes) -> None:
    for name, value in sizes.items():
        if int(value) < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value}.")


def _index_table(codes: np.ndarray, num: int, needed: int):
    """Rows of each category padded into a table: ``(table [C, M], counts [C])``."""
    counts = np.bincount(codes, minlength=num)
    table = np.zeros((num, max(int(counts.max()), needed)), np.int32)
    order = np.argsort(codes, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for c in range(num):
        table[c, : counts[c]] = order[starts[c] : starts[c] + counts[c]]
    return table, counts


def _draw_rows(key, table_row, count, n: int):
    """``n`` distinct entries of ``table_row[:count]``, uniformly at random and in random order.

    Floyd's algorithm: ``n`` steps whatever the size of the row (a sort over a
    large group would dominate a training step), then a shuffle of the ``n``.
    """
    k_floyd, k_perm = jax.random.split(key)
    keys = jax.random.split(k_floyd, n)
    slots = jnp.arange(n)

    def body(i, chosen):
        j = count - n + i
        t = jax.random.randint(keys[i], (), 0, j + 1)
        taken = jnp.any((chosen == t) & (slots < i))
        return chosen.at[i].set(jnp.where(taken, j, t))

    chosen = jax.lax.fori_loop(0, n, body, jnp.full((n,), -1, jnp.int32))
    return table_row[jax.random.permutation(k_perm, chosen)]


def tabular_classification(X, y, *, ways: int, shots: int, queries: int, num_tasks: int) -> Callable[[jax.Array], Episode]:
    """A sampler of ``N``-way ``K``-shot classification episodes from the rows of ``(X, y)``.

    Classes with fewer than ``shots + queries`` rows are never drawn.

    Args:
      X: ``[R, ...]`` features (any numeric array; cast to float32).
      y: ``[R]`` class of each row (any values: ints, strings, ...).
      ways: ``N``, classes per episode.
      shots: ``K``, support rows per class.
      queries: query rows per class.
      num_tasks: ``E``, episodes per call.

    Returns:
      ``sample(key) -> Episode`` with ``support_x [E, N*K, ...]``,
      ``support_y [E, N*K]`` (int32 in ``[0, N)``, class-major),
      ``query_x [E, N*Q, ...]``, ``query_y [E, N*Q]``. The same key gives the
      same episodes; support and query rows are disjoint.

    Raises:
      ValueError: fewer than ``ways`` classes have ``shots + queries`` rows
        (the message says how many do and what the largest class holds).

    Example:
      >>> import jax, numpy as np
      >>> X, y = np.random.default_rng(0).normal(size=(60, 3)), np.repeat(["a", "b", "c", "d"], 15)
      >>> sample = tabular_classification(X, y, ways=3, shots=2, queries=5, num_tasks=4)
      >>> eps = sample(jax.random.key(0))
      >>> eps.support_x.shape, eps.support_y[0].tolist(), eps.query_y.shape
      ((4, 6, 3), [0, 0, 1, 1, 2, 2], (4, 15))
    """
    _check_sizes(ways=ways, shots=shots, queries=queries, num_tasks=num_tasks)
    ways, shots, queries, num_tasks = int(ways), int(shots), int(queries), int(num_tasks)
    X, y = _check_table(X, y)
    if y.ndim != 1:
        raise ValueError(f"y: expected one class per row [R], got shape {y.shape}.")
    classes, codes = np.unique(y, return_inverse=True)
    table, counts = _index_table(codes.reshape(-1), len(classes), shots + queries)
    eligible = np.flatnonzero(counts >= shots + queries)
    if len(eligible) < ways:
        raise ValueError(
            f"ways={ways}: only {len(eligible)} of {len(classes)} classes have at least shots + queries = "
            f"{shots + queries} rows (the largest class has {int(counts.max())}); ask for fewer ways, shots or "
            "queries.")
    table_d = jnp.asarray(table[eligible])
    counts_d = jnp.asarray(counts[eligible])
    X_d = jnp.asarray(X)
    per_class = shots + queries

    def one(key):
        k_cls, k_rows = jax.random.split(key)
        chosen = jax.random.choice(k_cls, len(eligible), (ways,), replace=False)
        rows = jax.vmap(lambda c, k: _draw_rows(k, table_d[c], counts_d[c], per_class))(
            chosen, jax.random.split(k_rows, ways))  # [N, K + Q]
        labels = jnp.arange(ways, dtype=jnp.int32)
        support, query = rows[:, :shots].reshape(-1), rows[:, shots:].reshape(-1)
        return Episode(X_d[support], jnp.repeat(labels, shots), X_d[query], jnp.repeat(labels, queries))

    @jax.jit
    def sample(key: jax.Array) -> Episode:
        return jax.vmap(one)(jax.random.split(key, num_tasks))

    return sample


def tabular_regression(
    X,
    y,
    *,
    shots: int,
    queries: int,
    num_tasks: int,
    groups=None,
    group_ids: bool = False,
) -> Callable[[jax.Array], Episode]:
    """A sampler of few-shot regression episodes from the rows of ``(X, y)``.

    With ``groups``, every episode is one group (drawn uniformly among the
    groups with at least ``shots + queries`` rows): the meta-learning setting
    where each segment of a table is its own task. Without ``groups``, every
    episode is a random subset of all rows.

    Args:
      X: ``[R, ...]`` features.
      y: ``[R]`` or ``[R, ...]`` float targets (``[R]`` becomes ``[R, 1]``).
      shots: ``K``, support rows per episode.
      queries: ``Q``, query rows per episode.
      num_tasks: ``E``, episodes per call.
      groups: optional ``[R]`` group of each row (any values).
      group_ids: put each episode's group into ``Episode.aux`` as
        ``{"group": int32}``, its position in ``np.unique(groups)``.

    Returns:
      ``sample(key) -> Episode`` with ``support_x [E, K, ...]``, ``support_y
      [E, K, D_y]``, ``query_x [E, Q, ...]``, ``query_y [E, Q, D_y]``; support
      and query rows are disjoint; the same key gives the same episodes.

    Raises:
      ValueError: no group (or, without groups, the table) has
        ``shots + queries`` rows; the message gives the largest size.

    Example:
      >>> import jax, numpy as np
      >>> rng = np.random.default_rng(0)
      >>> X, y, g = rng.normal(size=(100, 4)), rng.normal(size=100), np.arange(100) % 5
      >>> sample = tabular_regression(X, y, shots=5, queries=10, num_tasks=8, groups=g, group_ids=True)
      >>> eps = sample(jax.random.key(0))
      >>> eps.support_x.shape, eps.query_y.shape, eps.aux["group"].shape
      ((8, 5, 4), (8, 10, 1), (8,))
    """
    _check_sizes(shots=shots, queries=queries, num_tasks=num_tasks)
    shots, queries, num_tasks = int(shots), int(queries), int(num_tasks)
    X, y = _check_table(X, y)
    try:
        y = y.astype(np.float32)
    except (TypeError, ValueError):
        raise TypeError("y: regression targets must be numeric.") from None
    if not np.isfinite(y).all():
        raise ValueError(f"y: holds {int((~np.isfinite(y)).sum())} NaN/inf value(s); drop those rows first.")
    if y.ndim == 1:
        y = y[:, None]
    needed = shots + queries
    if groups is None:
        if group_ids:
            raise ValueError("group_ids=True needs groups.")
        codes = np.zeros(X.shape[0], np.int64)
        num_groups = 1
    else:
        groups = np.asarray(groups)
        if groups.shape != (X.shape[0],):
            raise ValueError(f"groups: expected one group per row of X, shape ({X.shape[0]},), got {groups.shape}.")
        _, codes = np.unique(groups, return_inverse=True)
        codes = codes.reshape(-1)
        num_groups = int(codes.max()) + 1
    table, counts = _index_table(codes, num_groups, needed)
    eligible = np.flatnonzero(counts >= needed)
    if len(eligible) == 0:
        what = "the table" if groups is None else "any group"
        raise ValueError(f"shots + queries = {needed} rows per episode exceeds the rows of {what} (largest: "
                         f"{int(counts.max())}); ask for fewer shots or queries.")
    table_d, counts_d = jnp.asarray(table[eligible]), jnp.asarray(counts[eligible])
    eligible_d = jnp.asarray(eligible, jnp.int32)
    X_d, y_d = jnp.asarray(X), jnp.asarray(y)

    def one(key):
        k_group, k_rows = jax.random.split(key)
        g = jax.random.randint(k_group, (), 0, len(eligible))
        rows = _draw_rows(k_rows, table_d[g], counts_d[g], needed)
        support, query = rows[:shots], rows[shots:]
        aux = {"group": eligible_d[g]} if group_ids else None
        return Episode(X_d[support], y_d[support], X_d[query], y_d[query], aux=aux)

    @jax.jit
    def sample(key: jax.Array) -> Episode:
        return jax.vmap(one)(jax.random.split(key, num_tasks))

    return sample
