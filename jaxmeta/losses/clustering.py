"""Soft k-means refinement of prototypes with unlabelled examples, in plain ``jnp``.

The three prototype refinements of Ren et al. (ICLR 2018), as small pure
functions over embeddings (``D`` embedding size, ``N`` classes, ``U``
unlabelled examples; every ``mask [U]`` marks real examples with 1 and padding
with 0, and a masked example has no effect on any result):

* :func:`soft_kmeans_weights`: soft assignments ``z [U, N]`` of unlabelled
  embeddings to the class centres, ``softmax_c(-scale * |u - p_c|^2)``; with a
  ``distractor_radius`` an extra cluster at the origin (radius ``r``, the class
  clusters have radius 1) absorbs probability mass, as in the paper's
  "soft k-means + cluster" (its logit is ``-scale * |u|^2 / r^2 - log r``;
  the constant of the Gaussian normaliser cancels in the softmax);
* :func:`distance_statistics` and :func:`soft_kmeans_gates`: the masked soft
  k-means gates ``m = sigmoid(-gamma_c (d~ - beta_c))`` from distances
  normalised by their mean over the unlabelled set, and the per-class
  statistics (min, max, variance, skewness, kurtosis) from which a small
  network predicts ``beta_c`` and ``gamma_c``;
* :func:`refine_prototypes`: one soft k-means update, the labelled examples
  keeping their hard assignments::

      p~_c = (n_c p_c + sum_j w_jc u_j) / (n_c + sum_j w_jc)

  with ``n_c`` the support count and ``p_c`` the support mean of class ``c``;
* :func:`soft_kmeans_refine`: ``steps`` such updates (the paper uses one).
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from jaxmeta.losses.basic import mask_weights
from jaxmeta.losses.metric import pairwise_squared_euclidean

__all__ = [
    "soft_kmeans_weights",
    "distance_statistics",
    "soft_kmeans_gates",
    "refine_prototypes",
    "soft_kmeans_refine",
    "entropy",
]


def soft_kmeans_weights(unlabelled: jax.Array, centres: jax.Array, *, scale: float | jax.Array = 1.0,
                        distractor_radius: Optional[float | jax.Array] = None) -> jax.Array:
    """Soft assignments of unlabelled embeddings to class centres: ``[U, D], [N, D] -> [U, N]``.

    Rows sum to 1 without a distractor cluster; with ``distractor_radius`` they
    sum to ``1 - `` the probability of the distractor cluster (centred at the
    origin), which is dropped.

    Args:
      unlabelled: ``[U, D]`` embeddings.
      centres: ``[N, D]`` class centres (prototypes).
      scale: inverse temperature of the class clusters (ProtoNets' logit scale).
      distractor_radius: ``None`` (plain soft k-means) or the radius ``r > 0``
        of a distractor cluster at the origin.

    Example:
      >>> import jax.numpy as jnp
      >>> w = soft_kmeans_weights(jnp.array([[0.0], [10.0]]), jnp.array([[0.0], [10.0]]))
      >>> w.round(3)
      Array([[1., 0.],
             [0., 1.]], dtype=float32)
    """
    logits = -scale * pairwise_squared_euclidean(unlabelled, centres)  # [U, N]
    if distractor_radius is None:
        return jax.nn.softmax(logits, axis=1)
    r = jnp.asarray(distractor_radius, logits.dtype)
    distractor = -scale * jnp.sum(unlabelled * unlabelled, axis=1, keepdims=True) / (r * r) - jnp.log(r)
    return jax.nn.softmax(jnp.concatenate([logits, distractor], axis=1), axis=1)[:, :-1]


def distance_statistics(distances: jax.Array, mask: Optional[jax.Array] = None,
                        eps: float = 1e-6) -> tuple[jax.Array, jax.Array]:
    """Normalised distances and their per-class statistics (masked soft k-means).

    ``d~_jc = d_jc / mean_j d_jc`` (mean over the real unlabelled examples),
    then per class ``c`` over ``j``: min, max, variance, skewness and kurtosis.

    Args:
      distances: ``[U, N]`` squared distances of unlabelled examples to centres.
      mask: ``[U]`` real-example weights (``None``: all real).
      eps: guards divisions by zero (all-equal distances, empty sets).

    Returns:
      ``(normalised [U, N], statistics [N, 5])``.

    Example:
      >>> import jax.numpy as jnp
      >>> d = jnp.array([[1.0, 4.0], [3.0, 4.0]])
      >>> norm, stats = distance_statistics(d)
      >>> [round(float(v), 3) for v in norm[:, 0]], [round(float(v), 3) for v in stats[0, :2]]
      ([0.5, 1.5], [0.5, 1.5])
    """
    if distances.ndim != 2:
        raise ValueError(f"distances: expected [U, N], got shape {distances.shape}.")
    m = mask_weights(mask, distances.shape[0], distances.dtype)[:, None]  # [U, 1]
    count = jnp.maximum(jnp.sum(m), 1.0)
    mean_d = jnp.sum(distances * m, axis=0) / count  # [N]
    norm = distances / (mean_d + eps)
    mu = jnp.sum(norm * m, axis=0) / count
    centred = (norm - mu) * m
    var = jnp.sum(centred**2, axis=0) / count
    std = jnp.sqrt(var + eps)
    skew = jnp.sum(centred**3, axis=0) / count / (std**3)
    kurt = jnp.sum(centred**4, axis=0) / count / (std**4)
    big = jnp.asarray(jnp.finfo(distances.dtype).max, distances.dtype)
    present = m > 0
    low = jnp.min(jnp.where(present, norm, big), axis=0)
    high = jnp.max(jnp.where(present, norm, -big), axis=0)
    any_real = jnp.sum(m) > 0
    low, high = jnp.where(any_real, low, 0.0), jnp.where(any_real, high, 0.0)
    return norm, jnp.stack([low, high, var, skew, kurt], axis=1)


def soft_kmeans_gates(normalised: jax.Array, beta: jax.Array, gamma: jax.Array) -> jax.Array:
    """Masked soft k-means gates ``sigmoid(-gamma_c (d~_jc - beta_c))``: ``[U, N], [N], [N] -> [U, N]``.

    An unlabelled example far from class ``c`` (normalised distance above the
    threshold ``beta_c``, with sharpness ``gamma_c``) gets a gate near 0 and
    stops pulling that prototype.

    Example:
      >>> import jax.numpy as jnp
      >>> soft_kmeans_gates(jnp.array([[0.0], [2.0]]), jnp.array([1.0]), jnp.array([50.0])).round(3)
      Array([[1.],
             [0.]], dtype=float32)
    """
    return jax.nn.sigmoid(-gamma[None, :] * (normalised - beta[None, :]))


def refine_prototypes(prototypes: jax.Array, counts: jax.Array, unlabelled: jax.Array, weights: jax.Array,
                      mask: Optional[jax.Array] = None) -> jax.Array:
    """One soft k-means update: ``(n_c p_c + sum_j w_jc u_j) / (n_c + sum_j w_jc)``.

    Args:
      prototypes: ``[N, D]`` support means ``p_c``.
      counts: ``[N]`` support examples per class ``n_c``.
      unlabelled: ``[U, D]`` unlabelled embeddings ``u_j``.
      weights: ``[U, N]`` assignment weights ``w_jc`` (soft assignments, times
        gates for masked soft k-means).
      mask: ``[U]`` real-example weights (``None``: all real).

    Returns:
      ``[N, D]`` refined prototypes (a class with no weight at all keeps its prototype).

    Example:
      >>> import jax.numpy as jnp
      >>> refine_prototypes(jnp.array([[0.0]]), jnp.array([1.0]), jnp.array([[3.0]]), jnp.array([[1.0]]))
      Array([[1.5]], dtype=float32)
    """
    if prototypes.ndim != 2 or unlabelled.ndim != 2 or prototypes.shape[1] != unlabelled.shape[1]:
        raise ValueError(f"prototypes, unlabelled: expected [N, D] and [U, D], got {prototypes.shape} and "
                         f"{unlabelled.shape}.")
    if weights.shape != (unlabelled.shape[0], prototypes.shape[0]):
        raise ValueError(f"weights: expected [U, N] = {(unlabelled.shape[0], prototypes.shape[0])}, got {weights.shape}.")
    if counts.shape != prototypes.shape[:1]:
        raise ValueError(f"counts: expected [N] = {prototypes.shape[:1]}, got {counts.shape}.")
    w = weights * mask_weights(mask, unlabelled.shape[0], weights.dtype)[:, None]
    total = counts + jnp.sum(w, axis=0)  # [N]
    summed = counts[:, None] * prototypes + w.T @ unlabelled
    safe = jnp.where(total > 0, total, 1.0)
    return jnp.where((total > 0)[:, None], summed / safe[:, None], prototypes)


def soft_kmeans_refine(
    prototypes: jax.Array,
    counts: jax.Array,
    unlabelled: jax.Array,
    *,
    mask: Optional[jax.Array] = None,
    steps: int = 1,
    scale: float | jax.Array = 1.0,
    distractor_radius: Optional[float | jax.Array] = None,
    gate_fn: Optional[Callable[[jax.Array, Optional[jax.Array]], jax.Array]] = None,
) -> jax.Array:
    """Refines support prototypes with unlabelled embeddings by ``steps`` soft k-means updates.

    Each step assigns the unlabelled examples softly to the current centres
    (:func:`soft_kmeans_weights`), optionally multiplies the assignments by
    gates ``gate_fn(distances [U, N], mask) -> [U, N]`` (masked soft k-means),
    and recomputes the centres from the support (hard assignments) plus the
    weighted unlabelled examples (:func:`refine_prototypes`).

    Args:
      prototypes: ``[N, D]`` support means.
      counts: ``[N]`` support examples per class.
      unlabelled: ``[U, D]`` unlabelled embeddings.
      mask: ``[U]`` real-example weights; masked examples have no effect.
      steps: number of updates (static; 0 returns ``prototypes``).
      scale: inverse temperature of the assignments.
      distractor_radius: radius of a distractor cluster at the origin (``None``: none).
      gate_fn: ``(distances, mask) -> gates`` or ``None``.

    Returns:
      ``[N, D]`` refined prototypes.

    Example:
      >>> import jax.numpy as jnp
      >>> protos, counts = jnp.array([[0.0], [10.0]]), jnp.array([1.0, 1.0])
      >>> soft_kmeans_refine(protos, counts, jnp.array([[2.0], [8.0]]))
      Array([[1.],
             [9.]], dtype=float32)
    """
    steps = int(steps)
    if steps < 0:
        raise ValueError(f"steps: expected a non-negative integer, got {steps}.")
    centres = prototypes
    for _ in range(steps):
        weights = soft_kmeans_weights(unlabelled, centres, scale=scale, distractor_radius=distractor_radius)
        if gate_fn is not None:
            weights = weights * gate_fn(pairwise_squared_euclidean(unlabelled, centres), mask)
        centres = refine_prototypes(prototypes, counts, unlabelled, weights, mask)
    return centres


def entropy(logits: jax.Array) -> jax.Array:
    """Entropy of ``softmax(logits)`` per example: ``[B, N] -> [B]`` (nats).

    Entropy minimisation on unlabelled examples pushes decision boundaries
    into low-density regions (Grandvalet & Bengio, 2005).

    Example:
      >>> import jax.numpy as jnp
      >>> entropy(jnp.zeros((1, 4))), entropy(jnp.array([[100.0, 0.0]]))
      (Array([1.3862944], dtype=float32), Array([0.], dtype=float32))
    """
    if logits.ndim != 2:
        raise ValueError(f"logits: expected [B, N], got shape {logits.shape}.")
    logp = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=1)
    return -jnp.sum(jnp.exp(logp) * logp, axis=1)
