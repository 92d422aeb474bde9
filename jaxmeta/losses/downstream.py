"""Downstream uses of an embedding: k-means clustering and its scores (NMI, ARI), and ROC AUC.

Plain ``jnp`` with static sizes (the number of clusters and classes are Python
ints), so everything jits; labels are integer arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmeta.losses.metric import pairwise_squared_euclidean

__all__ = ["kmeans", "contingency", "normalized_mutual_info", "adjusted_rand_index", "roc_auc"]


def kmeans(key: jax.Array, x: jax.Array, num_clusters: int, *, iterations: int = 50, restarts: int = 5):
    """Lloyd's k-means with k-means++ seeding; the best of ``restarts`` runs (lowest inertia).

    Args:
      key: PRNG key (seeding).
      x: ``[B, D]`` points.
      num_clusters: ``k`` (static).
      iterations: Lloyd iterations per run (fixed count, jit-friendly).
      restarts: independent seedings.

    Returns:
      ``(assignments int32 [B], centres [k, D], inertia)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.array([[0.0], [0.1], [5.0], [5.2]])
      >>> a, c, _ = kmeans(jax.random.key(0), x, 2)
      >>> bool(a[0] == a[1]) and bool(a[2] == a[3]) and bool(a[0] != a[2])
      True
    """
    num_clusters, iterations, restarts = int(num_clusters), int(iterations), int(restarts)
    if x.ndim != 2:
        raise ValueError(f"x: expected points [B, D], got shape {x.shape}.")
    if not 1 <= num_clusters <= x.shape[0]:
        raise ValueError(f"num_clusters: expected 1 <= k <= {x.shape[0]} (the number of points), got {num_clusters}.")
    if iterations < 1 or restarts < 1:
        raise ValueError(f"iterations, restarts: expected positive integers, got {iterations}, {restarts}.")
    x = jnp.asarray(x, jnp.float32)
    n = x.shape[0]

    def seed(k):
        keys = jax.random.split(k, num_clusters)
        first = x[jax.random.randint(keys[0], (), 0, n)]
        centres = jnp.zeros((num_clusters, x.shape[1]), x.dtype).at[0].set(first)
        nearest = jnp.sum((x - first) ** 2, axis=1)

        def body(i, carry):
            centres, nearest = carry
            p = nearest / jnp.maximum(nearest.sum(), 1e-12)
            c = x[jax.random.choice(keys[i], n, p=p)]
            return centres.at[i].set(c), jnp.minimum(nearest, jnp.sum((x - c) ** 2, axis=1))

        return jax.lax.fori_loop(1, num_clusters, body, (centres, nearest))[0]

    def lloyd(centres):
        def body(_, centres):
            assign = jnp.argmin(pairwise_squared_euclidean(x, centres), axis=1)
            onehot = jax.nn.one_hot(assign, num_clusters, dtype=x.dtype)
            counts = onehot.sum(axis=0)
            means = onehot.T @ x / jnp.maximum(counts, 1.0)[:, None]
            return jnp.where(counts[:, None] > 0, means, centres)  # an empty cluster keeps its centre

        centres = jax.lax.fori_loop(0, iterations, body, centres)
        d = pairwise_squared_euclidean(x, centres)
        return jnp.argmin(d, axis=1).astype(jnp.int32), centres, jnp.min(d, axis=1).sum()

    assign, centres, inertia = jax.vmap(lambda k: lloyd(seed(k)))(jax.random.split(key, restarts))
    best = jnp.argmin(inertia)
    return assign[best], centres[best], inertia[best]


def contingency(labels_a: jax.Array, labels_b: jax.Array, num_a: int, num_b: int) -> jax.Array:
    """Counts ``[num_a, num_b]`` of points with label ``i`` in ``a`` and ``j`` in ``b``.

    Example:
      >>> import jax.numpy as jnp
      >>> contingency(jnp.array([0, 0, 1]), jnp.array([1, 1, 0]), 2, 2)
      Array([[0., 2.],
             [1., 0.]], dtype=float32)
    """
    if labels_a.shape != labels_b.shape or labels_a.ndim != 1:
        raise ValueError(f"labels_a, labels_b: expected two [B] label arrays, got {labels_a.shape} and {labels_b.shape}.")
    return jax.nn.one_hot(labels_a, int(num_a)).T @ jax.nn.one_hot(labels_b, int(num_b))


def _xlogx(v):
    return jnp.where(v > 0, v * jnp.log(jnp.where(v > 0, v, 1.0)), 0.0)


def normalized_mutual_info(labels_true: jax.Array, labels_pred: jax.Array, num_true: int, num_pred: int) -> jax.Array:
    """Normalised mutual information ``I(a; b) / ((H(a) + H(b)) / 2)`` (arithmetic mean, as scikit-learn's default).

    Example:
      >>> import jax.numpy as jnp
      >>> float(normalized_mutual_info(jnp.array([0, 0, 1, 1]), jnp.array([1, 1, 0, 0]), 2, 2))
      1.0
    """
    table = contingency(labels_true, labels_pred, num_true, num_pred)
    n = table.sum()
    pa, pb = table.sum(axis=1) / n, table.sum(axis=0) / n
    h_a, h_b = -jnp.sum(_xlogx(pa)), -jnp.sum(_xlogx(pb))
    mi = jnp.sum(_xlogx(table / n)) - jnp.sum(_xlogx(pa)) - jnp.sum(_xlogx(pb))
    denom = (h_a + h_b) / 2.0
    return jnp.where(denom > 0, jnp.clip(mi / jnp.where(denom > 0, denom, 1.0), 0.0, 1.0), 1.0)


def adjusted_rand_index(labels_true: jax.Array, labels_pred: jax.Array, num_true: int, num_pred: int) -> jax.Array:
    """Adjusted Rand index (Hubert & Arabie, 1985): 1 for identical partitions, about 0 for random ones.

    Example:
      >>> import jax.numpy as jnp
      >>> float(adjusted_rand_index(jnp.array([0, 0, 1, 1]), jnp.array([1, 1, 0, 0]), 2, 2))
      1.0
    """
    table = contingency(labels_true, labels_pred, num_true, num_pred)
    comb2 = lambda v: v * (v - 1.0) / 2.0
    n = table.sum()
    index = jnp.sum(comb2(table))
    sum_a, sum_b = jnp.sum(comb2(table.sum(axis=1))), jnp.sum(comb2(table.sum(axis=0)))
    expected = sum_a * sum_b / comb2(n)
    maximum = (sum_a + sum_b) / 2.0
    denom = maximum - expected
    return jnp.where(denom != 0, (index - expected) / jnp.where(denom != 0, denom, 1.0), 1.0)


def roc_auc(scores: jax.Array, positive: jax.Array) -> jax.Array:
    """Area under the ROC curve: the probability that a positive scores above a negative (ties count 1/2).

    Computed from mid-ranks (the Mann-Whitney U statistic).

    Example:
      >>> import jax.numpy as jnp
      >>> float(roc_auc(jnp.array([0.1, 0.4, 0.35, 0.8]), jnp.array([0, 0, 1, 1])))
      0.75
    """
    if scores.ndim != 1 or positive.shape != scores.shape:
        raise ValueError(f"scores, positive: expected two [B] arrays, got {scores.shape} and {positive.shape}.")
    scores = jnp.asarray(scores, jnp.float32)
    pos = jnp.asarray(positive).astype(bool)
    # mid-rank of every score: (#smaller) + (#equal + 1) / 2
    smaller = jnp.sum(scores[None, :] < scores[:, None], axis=1)
    equal = jnp.sum(scores[None, :] == scores[:, None], axis=1)
    ranks = smaller + (equal + 1) / 2.0
    n_pos = jnp.sum(pos)
    n_neg = pos.shape[0] - n_pos
    u = jnp.sum(jnp.where(pos, ranks, 0.0)) - n_pos * (n_pos + 1) / 2.0
    return u / jnp.maximum(n_pos * n_neg, 1)
