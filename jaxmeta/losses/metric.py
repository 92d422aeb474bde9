"""Distances, prototypes and metric-learning losses as plain ``jnp`` functions.

Shapes: ``D`` embedding size, ``N`` classes (static), ``S``/``Q``/``B`` set sizes.
Every loss returns one value per example (anchor, pair or query); the caller
reduces (e.g. with :func:`jaxmeta.losses.masked_mean`).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jaxmeta.losses.basic import softmax_cross_entropy

__all__ = [
    "pairwise_squared_euclidean",
    "pairwise_cosine_similarity",
    "pairwise_cosine_distance",
    "prototypes",
    "prototype_logits",
    "prototypical_loss",
    "triplet_loss",
    "batch_hard_triplet_loss",
    "contrastive_loss",
    "view_alignment_loss",
]


def _check_pair(a, b, fn):
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"{fn}: expected embeddings [A, D] and [B, D] with the same D, got {a.shape} and {b.shape}.")


def pairwise_squared_euclidean(a: jax.Array, b: jax.Array) -> jax.Array:
    """``[A, D], [B, D] -> [A, B]`` squared Euclidean distances.

    Computed as ``|a|^2 + |b|^2 - 2 a.b`` (one matrix product) and clipped at 0
    against rounding.

    Example:
      >>> import jax.numpy as jnp
      >>> pairwise_squared_euclidean(jnp.array([[0.0, 0.0]]), jnp.array([[3.0, 4.0], [0.0, 1.0]]))
      Array([[25.,  1.]], dtype=float32)
    """
    _check_pair(a, b, "pairwise_squared_euclidean")
    sq = jnp.sum(a * a, axis=1)[:, None] + jnp.sum(b * b, axis=1)[None, :] - 2.0 * a @ b.T
    return jnp.maximum(sq, 0.0)


def pairwise_cosine_similarity(a: jax.Array, b: jax.Array, eps: float = 1e-8) -> jax.Array:
    """``[A, D], [B, D] -> [A, B]`` cosine similarities in ``[-1, 1]``.

    Example:
      >>> import jax.numpy as jnp
      >>> pairwise_cosine_similarity(jnp.array([[1.0, 0.0]]), jnp.array([[2.0, 0.0], [0.0, 3.0]]))
      Array([[1., 0.]], dtype=float32)
    """
    _check_pair(a, b, "pairwise_cosine_similarity")
    an = a * jax.lax.rsqrt(jnp.sum(a * a, axis=1, keepdims=True) + eps)
    bn = b * jax.lax.rsqrt(jnp.sum(b * b, axis=1, keepdims=True) + eps)
    return an @ bn.T


def pairwise_cosine_distance(a: jax.Array, b: jax.Array, eps: float = 1e-8) -> jax.Array:
    """``1 - cosine similarity``: ``[A, D], [B, D] -> [A, B]`` in ``[0, 2]``.

    Example:
      >>> import jax.numpy as jnp
      >>> pairwise_cosine_distance(jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 3.0]]))
      Array([[1.]], dtype=float32)
    """
    return 1.0 - pairwise_cosine_similarity(a, b, eps)


def prototypes(embeddings: jax.Array, labels: jax.Array, num_classes: int,
               mask: Optional[jax.Array] = None) -> jax.Array:
    """Class means of support embeddings: ``[S, D], [S] -> [N, D]``.

    ``one_hot(labels, N).T @ embeddings / counts`` over a static ``N``: no
    data-dependent shapes. ``mask [S]`` weights examples (0 drops padding); a
    class with no (unmasked) example gets a zero prototype.

    Example:
      >>> import jax.numpy as jnp
      >>> prototypes(jnp.array([[0.0], [2.0], [10.0]]), jnp.array([0, 0, 1]), 2)
      Array([[ 1.],
             [10.]], dtype=float32)
    """
    if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
        raise ValueError(f"prototypes: expected embeddings [S, D] and labels [S], got {embeddings.shape} and {labels.shape}.")
    onehot = jax.nn.one_hot(labels, num_classes, dtype=embeddings.dtype)  # [S, N]
    if mask is not None:
        onehot = onehot * mask.astype(embeddings.dtype)[:, None]
    counts = onehot.sum(axis=0)  # [N]
    return (onehot.T @ embeddings) / jnp.maximum(counts, 1.0)[:, None]


def prototype_logits(queries: jax.Array, protos: jax.Array, distance: str = "euclidean",
                     scale: float | jax.Array = 1.0) -> jax.Array:
    """Class scores of query embeddings against prototypes: ``[Q, D], [N, D] -> [Q, N]``.

    ``"euclidean"``: ``-scale * |q - c|^2`` (ProtoNets); ``"cosine"``:
    ``scale * cos(q, c)``.

    Example:
      >>> import jax.numpy as jnp
      >>> prototype_logits(jnp.array([[0.0, 1.0]]), jnp.array([[0.0, 0.0], [0.0, 3.0]]))
      Array([[-1., -4.]], dtype=float32)
    """
    if distance == "euclidean":
        return -scale * pairwise_squared_euclidean(queries, protos)
    if distance == "cosine":
        return scale * pairwise_cosine_similarity(queries, protos)
    raise ValueError(f"distance: expected 'euclidean' or 'cosine', got {distance!r}.")


def prototypical_loss(queries: jax.Array, labels: jax.Array, protos: jax.Array, distance: str = "euclidean",
                      scale: float | jax.Array = 1.0) -> jax.Array:
    """Per-query cross-entropy of the softmax over (negative) distances to prototypes: ``[Q]``.

    Invariant to relabelling the classes (permuting prototypes and labels together).

    Example:
      >>> import jax.numpy as jnp
      >>> protos = jnp.array([[0.0], [10.0]])
      >>> prototypical_loss(jnp.array([[0.0], [10.0]]), jnp.array([0, 1]), protos)
      Array([0., 0.], dtype=float32)
    """
    return softmax_cross_entropy(prototype_logits(queries, protos, distance, scale), labels)


def _distance(a: jax.Array, b: jax.Array, eps: float) -> jax.Array:
    """Row-wise Euclidean distance with a safe gradient at 0."""
    return jnp.sqrt(jnp.sum(jnp.square(a - b), axis=-1) + eps)


def triplet_loss(anchor: jax.Array, positive: jax.Array, negative: jax.Array, margin: float = 1.0,
                 squared: bool = False, eps: float = 1e-12) -> jax.Array:
    """Triplet hinge ``max(0, d(a, p) - d(a, n) + margin)`` per triplet: ``[B, D] x 3 -> [B]``.

    ``squared`` uses squared distances (FaceNet's form).

    Example:
      >>> import jax.numpy as jnp
      >>> a, p, n = jnp.array([[0.0]]), jnp.array([[1.0]]), jnp.array([[3.0]])
      >>> triplet_loss(a, p, n, margin=1.0)
      Array([0.], dtype=float32)
      >>> triplet_loss(a, p, n, margin=3.0)
      Array([1.], dtype=float32)
    """
    if not (anchor.shape == positive.shape == negative.shape) or anchor.ndim != 2:
        raise ValueError(f"triplet_loss: expected three [B, D] arrays, got {anchor.shape}, {positive.shape}, {negative.shape}.")
    if squared:
        d_ap, d_an = jnp.sum(jnp.square(anchor - positive), -1), jnp.sum(jnp.square(anchor - negative), -1)
    else:
        d_ap, d_an = _distance(anchor, positive, eps), _distance(anchor, negative, eps)
    return jnp.maximum(d_ap - d_an + margin, 0.0)


def batch_hard_triplet_loss(embeddings: jax.Array, labels: jax.Array, margin: float = 1.0,
                            mask: Optional[jax.Array] = None, eps: float = 1e-12) -> jax.Array:
    """Batch-hard triplet loss (Hermans et al., 2017): one value per anchor, ``[B]``.

    For each anchor: its farthest positive (same label, not itself) and its
    nearest negative, then ``max(0, d_pos - d_neg + margin)``. An anchor with no
    positive or no negative in the batch contributes 0. ``mask [B]`` drops
    padded examples as anchors and as candidates.

    Example:
      >>> import jax.numpy as jnp
      >>> emb = jnp.array([[0.0], [0.5], [3.0], [3.2]])
      >>> batch_hard_triplet_loss(emb, jnp.array([0, 0, 1, 1]), margin=1.0)
      Array([0., 0., 0., 0.], dtype=float32)
    """
    if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
        raise ValueError(f"batch_hard_triplet_loss: expected [B, D] and [B], got {embeddings.shape} and {labels.shape}.")
    n = embeddings.shape[0]
    dist = jnp.sqrt(pairwise_squared_euclidean(embeddings, embeddings) + eps)
    valid = jnp.ones((n,), bool) if mask is None else mask.astype(bool)
    same = labels[:, None] == labels[None, :]
    pair_ok = valid[:, None] & valid[None, :]
    pos = same & ~jnp.eye(n, dtype=bool) & pair_ok
    neg = ~same & pair_ok
    hardest_pos = jnp.max(jnp.where(pos, dist, -jnp.inf), axis=1)
    hardest_neg = jnp.min(jnp.where(neg, dist, jnp.inf), axis=1)
    has_both = pos.any(axis=1) & neg.any(axis=1) & valid
    loss = jnp.maximum(jnp.where(has_both, hardest_pos - hardest_neg, 0.0) + margin, 0.0)
    return jnp.where(has_both, loss, 0.0)


def contrastive_loss(a: jax.Array, b: jax.Array, same: jax.Array, margin: float = 1.0,
                     eps: float = 1e-12) -> jax.Array:
    """Contrastive loss (Hadsell, Chopra & LeCun, 2006) per pair: ``[B, D], [B, D], [B] -> [B]``.

    ``d^2`` for pairs of the same class (``same`` true), ``max(0, margin - d)^2``
    for pairs of different classes.

    Example:
      >>> import jax.numpy as jnp
      >>> a, b = jnp.array([[0.0], [0.0]]), jnp.array([[1.0], [0.5]])
      >>> contrastive_loss(a, b, jnp.array([True, False]), margin=1.0)
      Array([1.  , 0.25], dtype=float32)
    """
    if a.shape != b.shape or a.ndim != 2 or same.shape != a.shape[:1]:
        raise ValueError(f"contrastive_loss: expected [B, D], [B, D], [B], got {a.shape}, {b.shape}, {same.shape}.")
    d = _distance(a, b, eps)
    return jnp.where(same.astype(bool), jnp.square(d), jnp.square(jnp.maximum(margin - d, 0.0)))


def view_alignment_loss(a: jax.Array, b: jax.Array, labels: Optional[jax.Array] = None, scale: float = 1.0,
                        mask: Optional[jax.Array] = None, distance: str = "euclidean") -> jax.Array:
    """Matches each example's two views (InfoNCE), per example: ``[B, D], [B, D] -> [B]``.

    For example ``i``, the cross-entropy of picking ``b[i]`` (its own other view:
    the strokes of the drawing whose image is ``a[i]``) among the ``b`` of the
    batch, scored as :func:`prototype_logits` scores a query against prototypes
    (``distance``, ``scale``: ``-scale * |a[i] - b[j]|^2`` by default). With ``labels``, the other
    examples of ``i``'s class are left out of the candidates, so drawings of one
    class are tied view to view without being pushed apart. ``mask`` (``[B]``,
    true = real example) drops padding both as anchor and as candidate (a padded
    anchor's value is 0).

    Example:
      >>> import jax.numpy as jnp
      >>> a = jnp.array([[0.0], [4.0]])
      >>> view_alignment_loss(a, a + 0.1).round(4)  # each view is nearest its own pair
      Array([0., 0.], dtype=float32)
      >>> view_alignment_loss(a, a[::-1]).round(2)  # swapped views: the nearest candidate is wrong
      Array([16., 16.], dtype=float32)
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"view_alignment_loss: expected two views [B, D] of one shape, got {a.shape} and {b.shape}.")
    n = a.shape[0]
    for name, v in (("labels", labels), ("mask", mask)):
        if v is not None and v.shape != (n,):
            raise ValueError(f"view_alignment_loss: expected {name} of shape ({n},), got {v.shape}.")
    logits = prototype_logits(a, b, distance, scale)
    keep = jnp.ones((n, n), bool)
    if labels is not None:
        keep = labels[:, None] != labels[None, :]
    if mask is not None:
        keep = keep & mask.astype(bool)[None, :]
    keep = keep | jnp.eye(n, dtype=bool)  # a padded anchor keeps its own (finite) column
    logits = jnp.where(keep, logits, -jnp.inf)
    value = softmax_cross_entropy(logits, jnp.arange(n))
    return value if mask is None else jnp.where(mask.astype(bool), value, 0.0)
