"""Layers shared by jaxmeta's networks."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

__all__ = ["TaskBatchNorm", "max_pool_2x2", "PatchConv", "im2col_3x3"]


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


def im2col_3x3(x, stride: int = 1):
    """3x3 'SAME' patches as channels: ``[B, H, W, C] -> [B, H', W', 9*C]``, order (dy, dx, c).

    Built from nine shifted slices of the zero-padded input, so the transpose
    (used by gradients) is pads and adds, not a convolution.

    Example:
      >>> import jax.numpy as jnp
      >>> im2col_3x3(jnp.ones((1, 4, 4, 2))).shape
      (1, 4, 4, 18)
      >>> im2col_3x3(jnp.ones((1, 5, 5, 2)), stride=2).shape
      (1, 3, 3, 18)
    """
    b, h, w, c = x.shape
    out_h, out_w = -(-h // stride), -(-w // stride)
    # XLA/TF 'SAME' padding: total pad = max((out-1)*stride + 3 - size, 0), extra on the bottom/right
    pad_h, pad_w = max((out_h - 1) * stride + 3 - h, 0), max((out_w - 1) * stride + 3 - w, 0)
    xp = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    cols = [xp[:, dy : dy + (out_h - 1) * stride + 1 : stride, dx : dx + (out_w - 1) * stride + 1 : stride, :]
            for dy in range(3) for dx in range(3)]
    return jnp.concatenate(cols, axis=-1)


class PatchConv(nn.Module):
    """A 3x3 'SAME' convolution computed as im2col + one matrix product.

    Same parameters (``kernel [3, 3, C_in, C_out]``, ``bias``) and same output as
    ``nn.Conv(features, (3, 3), strides, padding="SAME")``. Under ``jax.vmap``
    with per-task weights (every gradient-based meta-learner) the product
    becomes a batched matmul, whereas ``lax.conv`` becomes a grouped
    convolution, which XLA:CPU runs on a slow generic path.
    """

    features: int
    strides: int = 1
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        c_in = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, c_in, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        dtype = self.dtype or x.dtype
        cols = im2col_3x3(x.astype(dtype), self.strides)
        y = cols @ kernel.reshape(9 * c_in, self.features).astype(dtype)
        return y + bias.astype(dtype)
