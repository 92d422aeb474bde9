"""Ranking metrics for recommendation: masked nDCG@k."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

__all__ = ["ndcg_at_k"]

_GAINS = ("exponential", "linear")


def ndcg_at_k(
    scores: jax.Array,
    relevance: jax.Array,
    mask: Optional[jax.Array] = None,
    *,
    k: int = 3,
    gain: str = "exponential",
) -> jax.Array:
    """nDCG@k of ranking a list's items by ``scores``, one value per list: ``[..., Q] -> [...]``.

    The items of each list (last axis) are ranked by descending ``scores``;
    ``DCG@k = sum_{i=1..k} g(rel_(i)) / log2(i + 1)`` over the top ``k``, and
    the result is ``DCG@k / IDCG@k``, where ``IDCG@k`` is the DCG of the
    ranking by true relevance. The gain is ``g(r) = 2^r - 1``
    (``"exponential"``, Burges et al. 2005; for ratings 1..5 it weighs a
    5-star item 31x a 1-star one) or ``g(r) = r`` (``"linear"``).

    * Padding: items with ``mask == 0`` are never ranked and add no gain; a
      list with fewer than ``k`` real items is scored on all of them.
    * Ties in ``scores`` keep the items' order in the list (a stable sort), so
      a constant predictor scores the nDCG of the list's given order (random
      order gives the random-ranking baseline).
    * A list without real items, or whose ideal DCG is 0, scores 0 (as
      scikit-learn's ``ndcg_score``); a NaN score of a real item gives NaN.

    Args:
      scores: ``[..., Q]`` predicted scores (e.g. ratings).
      relevance: ``[..., Q]`` true relevance (e.g. ratings), non-negative.
      mask: optional ``[..., Q]`` weights in {0, 1}; ``None``: every item is real.
      k: cut-off (static).
      gain: ``"exponential"`` or ``"linear"``.

    Returns:
      ``[...]`` nDCG@k in ``[0, 1]``.

    Example:
      >>> import jax.numpy as jnp
      >>> ndcg_at_k(jnp.array([3.0, 2.0, 1.0]), jnp.array([5.0, 4.0, 1.0]), k=3)
      Array(1., dtype=float32)
      >>> round(float(ndcg_at_k(jnp.array([1.0, 2.0, 3.0]), jnp.array([5.0, 4.0, 1.0]), k=1, gain="linear")), 3)
      0.2
    """
    k = int(k)
    if k < 1:
        raise ValueError(f"k: expected a positive cut-off, got {k}.")
    if gain not in _GAINS:
        raise ValueError(f"gain: expected one of {_GAINS}, got {gain!r}.")
    scores = jnp.asarray(scores)
    scores = scores.astype(jnp.promote_types(scores.dtype, jnp.float32))
    relevance = jnp.asarray(relevance, scores.dtype)
    if scores.shape != relevance.shape or scores.ndim < 1:
        raise ValueError(f"relevance: expected the shape of scores {scores.shape} ([..., Q]), got {relevance.shape}.")
    valid = jnp.ones(scores.shape, bool) if mask is None else jnp.asarray(mask) > 0
    if valid.shape != scores.shape:
        raise ValueError(f"mask: expected the shape of scores {scores.shape}, got {valid.shape}.")
    top = min(k, scores.shape[-1])
    g = (jnp.exp2(relevance) - 1.0) if gain == "exponential" else relevance
    g = jnp.where(valid, g, 0.0)
    ranked = jnp.where(valid, -scores, jnp.inf)  # padding sorts last
    ranked = jnp.where(jnp.isnan(ranked), 0.0, ranked)
    order = jnp.argsort(ranked, axis=-1, stable=True)[..., :top]
    discount = 1.0 / jnp.log2(jnp.arange(2, top + 2, dtype=scores.dtype))
    dcg = jnp.sum(jnp.take_along_axis(g, order, axis=-1) * discount, axis=-1)
    idcg = jnp.sum(-jnp.sort(-g, axis=-1)[..., :top] * discount, axis=-1)
    result = jnp.where(idcg > 0, dcg / jnp.where(idcg > 0, idcg, 1.0), 0.0)
    has_nan = jnp.any(jnp.isnan(scores) & valid, axis=-1)
    return jnp.where(has_nan, jnp.nan, result)
