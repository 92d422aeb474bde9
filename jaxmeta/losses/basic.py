"""Per-example supervised losses and metrics, and the masked reduction.

Every function returns one value per example (the caller reduces), so the same
function serves inner loops, outer losses, padded episodes and evaluation.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

__all__ = ["squared_error", "absolute_error", "softmax_cross_entropy", "accuracy", "masked_mean", "mask_weights"]


def _at_least_f32(x: jax.Array) -> jax.Array:
    """Upcasts bfloat16/float16 to float32 for the reduction; keeps float64 as is."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def squared_error(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """Squared error summed over trailing target axes: ``[B, ...] -> [B]``.

    With one output per example this is the per-example MSE used by MAML's
    sinusoid regression.

    Example:
      >>> import jax.numpy as jnp
      >>> squared_error(jnp.array([[1.0], [2.0]]), jnp.array([[0.0], [0.0]]))
      Array([1., 4.], dtype=float32)
    """
    return _summed_error(jnp.square, predictions, targets)


def absolute_error(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """Absolute error summed over trailing target axes: ``[B, ...] -> [B]``.

    With one output per example, its (masked) mean is the MAE.

    Example:
      >>> import jax.numpy as jnp
      >>> absolute_error(jnp.array([[3.5], [2.0]]), jnp.array([[4.0], [5.0]]))
      Array([0.5, 3. ], dtype=float32)
    """
    return _summed_error(jnp.abs, predictions, targets)


def _summed_error(fn, predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """``fn(predictions - targets)`` in at least float32, summed over trailing axes; shapes must match."""
    predictions = jnp.asarray(predictions)
    targets = jnp.asarray(targets)
    if predictions.shape != targets.shape:
        raise ValueError(
            f"targets: shape {targets.shape} differs from predictions {predictions.shape}; "
            "regression targets must match the network output (e.g. [B, 1])."
        )
    err = fn(_at_least_f32(predictions) - _at_least_f32(targets))
    return err.reshape(err.shape[0], -1).sum(axis=1)


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Cross-entropy of integer labels under softmax(logits): ``[B, N], [B] -> [B]``.

    A label outside ``[0, N)`` gives NaN for that example (never a silently
    clamped class), so a bad episode surfaces as a non-finite loss, which
    ``fit`` and ``evaluate`` report.

    Example:
      >>> import jax.numpy as jnp
      >>> softmax_cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 3]))
      Array([1.3862944, 1.3862944], dtype=float32)
    """
    logits = _at_least_f32(jnp.asarray(logits))
    if logits.ndim != 2 or jnp.ndim(labels) != 1 or logits.shape[0] != jnp.shape(labels)[0]:
        raise ValueError(f"expected logits [B, N] and labels [B], got {logits.shape} and {jnp.shape(labels)}.")
    logp = jax.nn.log_softmax(logits)
    labels = labels.astype(jnp.int32)
    valid = (labels >= 0) & (labels < logits.shape[1])
    picked = jnp.take_along_axis(logp, jnp.clip(labels, 0, logits.shape[1] - 1)[:, None], axis=1)[:, 0]
    return jnp.where(valid, -picked, jnp.nan)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """1.0 where ``argmax(logits) == label`` else 0.0: ``[B, N], [B] -> [B]``.

    Example:
      >>> import jax.numpy as jnp
      >>> accuracy(jnp.array([[2.0, 1.0], [0.0, 1.0]]), jnp.array([0, 0]))
      Array([1., 0.], dtype=float32)
    """
    return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


def mask_weights(mask: Optional[jax.Array], n: int, dtype=jnp.float32) -> jax.Array:
    """Per-example weights ``[n]`` from an optional mask: ones for ``None``, else ``mask`` as ``dtype``.

    The one place masks (true / non-zero = real example, 0 = padding) become
    weights; a mask of the wrong shape raises an error that names the shape.

    Example:
      >>> import jax.numpy as jnp
      >>> mask_weights(None, 3), mask_weights(jnp.array([1, 0, 1]), 3)
      (Array([1., 1., 1.], dtype=float32), Array([1., 0., 1.], dtype=float32))
    """
    if mask is None:
        return jnp.ones((n,), dtype)
    if jnp.shape(mask) != (n,):
        raise ValueError(f"mask: expected one weight per example, shape ({n},), got {jnp.shape(mask)}.")
    return jnp.asarray(mask).astype(dtype)


def masked_mean(values: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
    """Mean of per-example ``values`` ``[B]`` over examples where ``mask`` is non-zero.

    ``mask=None`` is the plain mean. A fully masked batch gives 0, not NaN.

    Example:
      >>> import jax.numpy as jnp
      >>> masked_mean(jnp.array([1.0, 3.0, 100.0]), jnp.array([1, 1, 0]))
      Array(2., dtype=float32)
    """
    if mask is None:
        return jnp.mean(values)
    mask = mask.astype(values.dtype)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)
