"""Layers shared by jaxmeta's networks."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["TaskBatchNorm", "max_pool_2x2", "PatchConv", "im2col_3x3", "conv_norm_relu_pool"]


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
    def weights(self, features: int):
        """The layer's ``(scale, bias)``, created on first use (for fused lowerings such as
        :func:`conv_norm_relu_pool`)."""
        return (self.param("scale", nn.initializers.ones, (features,)),
                self.param("bias", nn.initializers.zeros, (features,)))

    def __call__(self, x):
        scale, bias = self.weights(x.shape[-1])
        mean, var = _channel_moments(x)
        y = (x.astype(mean.dtype) - mean) * (scale * jnp.reciprocal(jnp.sqrt(var + self.epsilon))) + bias
        return y.astype(self.dtype or x.dtype)


def _channel_moments(x):
    """Per-channel mean and (biased) variance over every axis but the last, in float32 at least."""
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # float32 statistics even under bfloat16
    axes = tuple(range(x.ndim - 1))
    mean = xf.mean(axes)
    return mean, jnp.maximum((xf * xf).mean(axes) - mean * mean, 0.0)


@jax.custom_jvp
def max_pool_2x2(x):
    """2x2 max-pooling with stride 2 (floor on odd sizes), as a reshape and a max.

    Same result and same derivatives as ``flax.linen.max_pool(x, (2, 2), (2, 2))``
    up to ties (a tie splits the gradient equally between the tied inputs, as
    ``jnp.max`` does), lowered for speed on CPU: the derivative rule is written
    out (a mask of the window's maxima, recomputed where it is used, and their
    count), which XLA fuses into its neighbours instead of materialising the mask
    the way ``jnp.max``'s or ``reduce_window``'s own gradients do. Higher
    derivatives (second-order MAML) use the same rule.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.arange(16.).reshape(1, 4, 4, 1)
      >>> max_pool_2x2(x)[0, :, :, 0]
      Array([[ 5.,  7.],
             [13., 15.]], dtype=float32)
      >>> jax.grad(lambda x: max_pool_2x2(x).sum())(jnp.ones((1, 2, 2, 1)))[0, :, :, 0]
      Array([[0.25, 0.25],
             [0.25, 0.25]], dtype=float32)
    """
    return _pool_windows(x).max(axis=(2, 4))


def _pool_windows(x):
    """``[B, H, W, C] -> [B, H // 2, 2, W // 2, 2, C]`` (odd edges dropped)."""
    b, h, w, c = x.shape
    h2, w2 = h // 2, w // 2
    return x[:, : 2 * h2, : 2 * w2, :].reshape(b, h2, 2, w2, 2, c)


@max_pool_2x2.defjvp
def _max_pool_2x2_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    pooled = max_pool_2x2(x)
    windows = _pool_windows(x)
    is_max = jax.lax.stop_gradient(windows == pooled[:, :, None, :, None, :])
    count = is_max.sum(axis=(2, 4)).astype(pooled.dtype)
    return pooled, jnp.where(is_max, _pool_windows(dx), 0).sum(axis=(2, 4)) / count


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
    return jnp.concatenate(_patch_slices(x, stride), axis=-1)


def _patch_slices(x, stride: int):
    """The nine shifted ``[B, H', W', C]`` views of the zero-padded input, in (dy, dx) order."""
    b, h, w, c = x.shape
    out_h, out_w = -(-h // stride), -(-w // stride)
    # XLA/TF 'SAME' padding: total pad = max((out-1)*stride + 3 - size, 0), extra on the bottom/right
    pad_h, pad_w = max((out_h - 1) * stride + 3 - h, 0), max((out_w - 1) * stride + 3 - w, 0)
    xp = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    return [xp[:, dy : dy + (out_h - 1) * stride + 1 : stride, dx : dx + (out_w - 1) * stride + 1 : stride, :]
            for dy in range(3) for dx in range(3)]


def _patch_conv(x, kernel, stride: int = 1):
    """3x3 'SAME' convolution as patches times the ``[9 * C_in, C_out]`` kernel matrix, no bias.

    With one input channel (grey images) the patches are stacked as rows,
    ``[9, B * H' * W']``: the weight gradient is then a plain matrix product,
    whereas with patches as columns XLA:CPU first copies the whole output
    gradient into a transposed layout (the largest single cost of the Omniglot
    reference step before this).
    """
    c_in, c_out = kernel.shape[2], kernel.shape[3]
    w = kernel.reshape(9 * c_in, c_out)
    if c_in > 1:
        return im2col_3x3(x, stride) @ w
    rows = jnp.stack(_patch_slices(x, stride))  # [9, B, H', W', 1]
    y = jax.lax.dot_general(rows.reshape(9, -1), w, (((0,), (0,)), ((), ())))
    return y.reshape(rows.shape[1:-1] + (c_out,))


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
    def weights(self, c_in: int):
        """The layer's ``(kernel [3, 3, c_in, features], bias)``, created on first use."""
        return (self.param("kernel", nn.initializers.lecun_normal(), (3, 3, c_in, self.features)),
                self.param("bias", nn.initializers.zeros, (self.features,)))

    def __call__(self, x):
        kernel, bias = self.weights(x.shape[-1])
        dtype = self.dtype or x.dtype
        return _patch_conv(x.astype(dtype), kernel.astype(dtype), self.strides) + bias.astype(dtype)


def conv_norm_relu_pool(x, kernel, scale, bias, *, epsilon: float = 1e-5, dtype: Any = None):
    """One Conv-4 block, ``max_pool_2x2(relu(TaskBatchNorm(PatchConv(x))))``, with fewer passes.

    Same function as the four layers in a row (stride 1, per-call batch
    statistics), lowered for speed on memory-bound backends:

    * the convolution's bias is left out: batch normalisation subtracts the
      channel mean, so it cancels exactly (its gradient is zero either way);
    * pooling comes first: with ``a = scale / sqrt(var + eps)`` the block is
      ``relu(a * y + b)`` pooled, and ``a * y = |a| * (sign(scale) * y)``; folding
      ``sign(scale)`` into the kernel makes the map increasing, so the max-pool
      commutes with it and the normalisation and ReLU run on a quarter of the
      activations (forward and backward). Statistics are still those of the
      full-resolution output.

    Args:
      x: ``[B, H, W, C_in]``.
      kernel: ``[3, 3, C_in, C_out]`` (as :class:`PatchConv`).
      scale, bias: ``[C_out]`` batch-norm parameters (as :class:`TaskBatchNorm`).
      epsilon: added to the variance.
      dtype: computation dtype (``None``: ``x``'s); statistics stay float32.

    Returns:
      ``[B, H // 2, W // 2, C_out]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jax.random.normal(jax.random.key(0), (4, 6, 6, 2))
      >>> k = jax.random.normal(jax.random.key(1), (3, 3, 2, 3))
      >>> s, b = jnp.array([1.0, -0.5, 2.0]), jnp.zeros(3)
      >>> y = conv_norm_relu_pool(x, k, s, b)
      >>> z = im2col_3x3(x) @ k.reshape(18, 3)
      >>> mean, var = z.mean((0, 1, 2)), z.var((0, 1, 2))
      >>> ref = max_pool_2x2(jax.nn.relu((z - mean) * s / jnp.sqrt(var + 1e-5) + b))
      >>> y.shape, bool(jnp.allclose(y, ref, atol=1e-5))
      ((4, 3, 3, 3), True)
    """
    dtype = dtype or x.dtype
    sign = jax.lax.stop_gradient(jnp.where(scale >= 0, 1.0, -1.0)).astype(kernel.dtype)
    z = _patch_conv(x.astype(dtype), (kernel * sign).astype(dtype))
    mean_z, var = _channel_moments(z)
    a = scale * jnp.reciprocal(jnp.sqrt(var + epsilon))
    # a * y + bias - a * mean_y with y = sign * z, so |a| = a * sign multiplies the pooled z
    y = max_pool_2x2(z).astype(mean_z.dtype) * (a * sign) + (bias - a * mean_z * sign)
    return jax.nn.relu(y).astype(dtype)
