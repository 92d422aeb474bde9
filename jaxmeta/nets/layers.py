"""Layers shared by jaxmeta's networks."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

__all__ = ["TaskBatchNorm", "max_pool_2x2"]


class TaskBatchNorm(nn.Module):
    """Batch normalisation with per-call batch statistics and no running averages.

    Meta-learning runs a network on many tiny batches that belong to different
    tasks; running averages updated inside an inner loop are a classic source of
    silent bugs (statistics leak across tasks, and differ between the inner loop
    and evaluation). jaxmeta makes the mode explicit and the same everywhere:

    * statistics are the mean and variance of the batch passed to ``apply``,
      over every axis but the last (channels);
    * inside the meta-step each task is a separate call (``vmap`` keeps tasks
      apart), so statistics are **per task**: the support set in the inner loop,
      the query set (or support + query, for metric learners that embed both in
      one call) when scoring. This is the transductive setting of the MAML and
      ProtoNet reference code; it is used identically at meta-train and
      meta-test time, so there is no train/eval switch to forget;
    * only ``scale`` and ``bias`` are parameters, and they are adapted by the
      inner loop like any other parameter unless a filter excludes them.

    Attributes:
      epsilon: added to the variance.
      dtype: computation dtype (``None``: the input's).
    """

    epsilon: float = 1e-5
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,))
        bias = self.param("bias", nn.initializers.zeros, (features,))
        dtype = self.dtype or x.dtype
        # statistics in float32 even under bfloat16 compute
        xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        axes = tuple(range(x.ndim - 1))
        mean = xf.mean(axes)
        var = jnp.maximum((xf * xf).mean(axes) - mean * mean, 0.0)
        y = (xf - mean) * (scale * jnp.reciprocal(jnp.sqrt(var + self.epsilon))) + bias
        return y.astype(dtype)


def max_pool_2x2(x):
    """2x2 max-pooling with stride 2 (floor on odd sizes), as a reshape and a max.

    Same result as ``flax.linen.max_pool(x, (2, 2), (2, 2))`` but its gradient
    (and second derivative) lowers to cheaper XLA ops on CPU than
    ``reduce_window``'s select-and-scatter.

    Example:
      >>> import jax.numpy as jnp
      >>> max_pool_2x2(jnp.arange(16.).reshape(1, 4, 4, 1))[0, :, :, 0]
      Array([[ 5.,  7.],
             [13., 15.]], dtype=float32)
    """
    b, h, w, c = x.shape
    h2, w2 = h // 2, w // 2
    x = x[:, : 2 * h2, : 2 * w2, :]
    return x.reshape(b, h2, 2, w2, 2, c).max(axis=(2, 4))
