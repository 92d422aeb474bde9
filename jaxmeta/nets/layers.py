"""Layers shared by jaxmeta's networks."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["TaskBatchNorm", "max_pool_2x2", "PatchConv", "im2col_3x3", "conv3x3", "conv_norm_relu_pool"]


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

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.array([[1.0, 10.0], [3.0, 30.0]])
      >>> bn = TaskBatchNorm()
      >>> params = jax.jit(bn.init)(jax.random.key(0), x)   # scale 1, bias 0
      >>> bn.apply(params, x)                              # each channel: zero mean, unit variance
      Array([[-0.99...,  -1.  ],
             [ 0.99...,   1.  ]], dtype=float32)
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
    # the tie count as a sum of four strided views, elementwise: XLA:CPU's loop for a reduce over the
    # window axes runs several times slower
    h2, w2 = pooled.shape[1:3]
    count = sum((jax.lax.stop_gradient(x[:, i : 2 * h2 : 2, j : 2 * w2 : 2, :]) == pooled).astype(pooled.dtype)
                for i in range(2) for j in range(2))
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


def _patch_matrix(x, stride: int):
    """``x``'s 3x3 patches as one matrix, and the axis that runs over the ``9 * C_in`` patch entries.

    With one input channel (grey images) the patches are stacked as rows,
    ``[9, B * H' * W']`` (axis 0): their products with the kernel and with an
    output gradient are then plain matrix products, whereas with patches as
    columns XLA:CPU first copies the whole output gradient into a transposed
    layout (the largest single cost of the Omniglot reference step before this).
    Otherwise ``[B * H' * W', 9 * C_in]`` (axis 1, :func:`im2col_3x3`).
    """
    if x.shape[-1] == 1:
        return jnp.stack(_patch_slices(x, stride)).reshape(9, -1), 0
    patches = im2col_3x3(x, stride)
    return patches.reshape(-1, patches.shape[-1]), 1


def _conv_moments(x, kernel):
    """Per-channel mean and variance of ``conv(x, kernel)`` (3x3 'SAME', stride 1) without reading its output.

    The output is ``P @ K`` (``P`` the ``[N, 9 * C_in]`` patch matrix, ``K`` the
    kernel matrix), so its channel means are ``mean(P) @ K`` and its mean squares
    ``diag(K^T (P^T P / N) K)``. With few input channels (``9 * C_in <= C_out``:
    grey or colour images) the patch Gram matrix is tiny, and the statistics
    cost a small matrix product instead of two passes over the largest
    activation of the network (and their gradients an add of the same size).
    Float32 at least, as :func:`_channel_moments`.
    """
    ftype = jnp.promote_types(x.dtype, jnp.float32)
    patches, entries = _patch_matrix(x.astype(ftype), 1)  # the kernel gradient's patches, shared
    rows = 1 - entries
    n = patches.shape[rows]
    k = kernel.astype(ftype).reshape(-1, kernel.shape[-1])
    mean_p = patches.mean(rows)
    gram = jax.lax.dot_general(patches, patches, (((rows,), (rows,)), ((), ()))) / n
    mean = mean_p @ k
    return mean, jnp.maximum(jnp.sum((gram @ k) * k, axis=0) - mean * mean, 0.0)


def _patch_conv(x, kernel, stride: int = 1):
    """3x3 'SAME' convolution as patches times the ``[9 * C_in, C_out]`` kernel matrix, no bias."""
    b, h, w, c_in = x.shape
    c_out = kernel.shape[3]
    patches, entries = _patch_matrix(x, stride)
    y = jax.lax.dot_general(patches, kernel.reshape(9 * c_in, c_out), (((entries,), (0,)), ((), ())))
    return y.reshape(b, -(-h // stride), -(-w // stride), c_out)


_NHWC = ("NHWC", "HWIO", "NHWC")


@jax.custom_vjp
def conv3x3(x, kernel):
    """3x3 'SAME' stride-1 convolution (``lax.conv``), with gradients lowered for speed on CPU.

    The value is XLA's convolution (a patch product for one input channel,
    where XLA:CPU's convolution runs at a few percent of its peak). The
    derivative rules are written out, and are
    exact: the input gradient is the same convolution of the output gradient with
    the kernel flipped in space and transposed in channels, and the kernel
    gradient is a 'VALID' convolution of the channels-first input with the
    output gradient as its kernel (a patch product for one input channel).
    JAX's own transposes of ``lax.conv`` run on XLA:CPU's slow generic paths
    (0.5-10% of the matmul peak in ``benchmarks/conv_products.py``); these run at
    the speed of the forward convolution. The rules are
    written in terms of ``conv3x3`` itself, so second derivatives (second-order
    MAML) use them too. Reverse mode only: ``jax.jvp`` through it raises (JAX's
    rule for every ``custom_vjp``); jaxmeta's learners use reverse mode.

    Args:
      x: ``[B, H, W, C_in]``.
      kernel: ``[3, 3, C_in, C_out]`` (HWIO, as ``flax.linen.Conv``).

    Returns:
      ``[B, H, W, C_out]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jax.random.normal(jax.random.key(0), (2, 5, 5, 3))
      >>> k = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
      >>> ref = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
      ...                                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
      >>> bool(jnp.allclose(conv3x3(x, k), ref(x, k), atol=1e-5))
      True
      >>> f = lambda conv: jax.grad(lambda k: jnp.sum(jax.grad(lambda x: jnp.sum(jnp.tanh(conv(x, k))))(x) ** 2))(k)
      >>> bool(jnp.allclose(f(conv3x3), f(ref), atol=1e-4))
      True
    """
    if x.shape[-1] == 1:  # a patch product: XLA:CPU's convolution runs far below its peak on one input channel
        return _patch_conv(x, kernel)
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_NHWC)


def _flipped(kernel):
    """The input gradient's kernel: flipped in space, input and output channels swapped."""
    return jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))


def _conv3x3_fwd(x, kernel):
    return conv3x3(x, kernel), (x, kernel)  # through conv3x3, so that higher derivatives keep these rules


def _conv3x3_bwd(residuals, g):
    x, kernel = residuals
    return conv3x3(g, _flipped(kernel)), _kernel_grad(x, g)


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


@jax.custom_vjp
@jax.custom_batching.custom_vmap
def _kernel_grad(x, g):
    """``conv3x3``'s kernel gradient ``[3, 3, C_in, C_out]``: sum over b, h, w of ``x_pad[b, h+i, w+j] g[b, h, w]``.

    That sum is itself a 'VALID' convolution in the standard layout: the padded
    input with its channels as the batch and its images as the features
    (``[C_in, H+2, W+2, B]``), the output gradient as an ``[H, W, B, C_out]``
    kernel, giving ``[C_in, 3, 3, C_out]``. Written with explicit transposes it
    runs on XLA:CPU's multi-threaded convolution (layer 2 of the Omniglot
    reference: 122-180 ms for 32 episodes on 2 cores, against 258-308 ms for the
    patch product; ``benchmarks/conv_products.py``); the same convolution given
    as dimension numbers instead of transposes, as JAX's own rule does, ran
    100x slower. With one input channel (grey images) the patch product is
    faster (no transposing copy of the 64-channel output gradient). Under
    ``vmap`` it loops over the mapped axis (its own batching rule): a vmapped
    convolution with a per-episode kernel is a grouped convolution, which
    XLA:CPU runs on a slow generic path (ProtoNet reference step with ``vmap``:
    4.0 s per step before, 0.97 s after).
    """
    c_in, c_out = x.shape[-1], g.shape[-1]
    if c_in == 1:
        patches, entries = _patch_matrix(x, 1)
        rows = 1 - entries  # contract over the patches' rows, one per output position
        grad = jax.lax.dot_general(patches, g.reshape(-1, c_out), (((rows,), (0,)), ((), ())))
        return grad.reshape(3, 3, c_in, c_out)
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = jax.lax.conv_general_dilated(jnp.transpose(xp, (3, 1, 2, 0)), jnp.transpose(g, (1, 2, 0, 3)), (1, 1),
                                       "VALID", dimension_numbers=_NHWC)
    return jnp.transpose(out, (1, 2, 0, 3))


@_kernel_grad.fun.def_vmap
def _kernel_grad_vmap(axis_size, in_batched, x, g):
    # one episode's kernel gradient at a time: vmapped, the convolution above would become a grouped
    # convolution (a slow generic path on XLA:CPU) with one group per episode
    # (an unbatched argument is closed over, not copied once per episode)
    batched = tuple(a for a, b in zip((x, g), in_batched) if b)

    def one(slices):
        it = iter(slices)
        return _kernel_grad(*(next(it) if b else a for a, b in zip((x, g), in_batched)))

    return jax.lax.map(one, batched), True


def _kernel_grad_fwd(x, g):
    return _kernel_grad(x, g), (x, g)


def _kernel_grad_bwd(residuals, h):
    # _kernel_grad is bilinear: <_kernel_grad(x, g), h> = <conv3x3(x, h), g> = <x, conv3x3(g, flipped(h))>
    x, g = residuals
    return conv3x3(g, _flipped(h)), conv3x3(x, h)


_kernel_grad.defvjp(_kernel_grad_fwd, _kernel_grad_bwd)


class PatchConv(nn.Module):
    """A 3x3 'SAME' convolution computed as im2col + one matrix product.

    Same parameters (``kernel [3, 3, C_in, C_out]``, ``bias``) and same output as
    ``nn.Conv(features, (3, 3), strides, padding="SAME")``. Under ``jax.vmap``
    with per-task weights (every gradient-based meta-learner) the product
    becomes a batched matmul, whereas ``lax.conv`` becomes a grouped
    convolution, which XLA:CPU runs on a slow generic path.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> conv, x = PatchConv(8), jnp.ones((2, 5, 5, 3))
      >>> params = jax.jit(conv.init)(jax.random.key(0), x)
      >>> ref = jax.lax.conv_general_dilated(x, params["params"]["kernel"], (1, 1), "SAME",
      ...                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))
      >>> y = conv.apply(params, x)
      >>> y.shape, bool(jnp.allclose(y, ref, atol=1e-5))
      ((2, 5, 5, 8), True)
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


def conv_norm_relu_pool(x, kernel, scale, bias, *, epsilon: float = 1e-5, conv_impl: str = "im2col",
                        dtype: Any = None):
    """One Conv-4 block, ``max_pool_2x2(relu(TaskBatchNorm(conv(x))))``, with fewer passes.

    Same function as the four layers in a row (stride 1, per-call batch
    statistics), lowered for speed on memory-bound backends:

    * the convolution's bias is left out: batch normalisation subtracts the
      channel mean, so it cancels exactly (its gradient is zero either way);
    * pooling comes first: with ``a = scale / sqrt(var + eps)`` the block is
      ``relu(a * y + b)`` pooled, and ``a * y = |a| * (sign(scale) * y)``; folding
      ``sign(scale)`` into the kernel makes the map increasing, so the max-pool
      commutes with it and the normalisation and ReLU run on a quarter of the
      activations (forward and backward). Statistics are still those of the
      full-resolution output;
    * with few input channels (``9 * C_in <= C_out``: the first block on grey
      or colour images) those statistics come from the input's small patch
      Gram matrix instead of two passes over the block's largest activation.

    Args:
      x: ``[B, H, W, C_in]``.
      kernel: ``[3, 3, C_in, C_out]`` (as :class:`PatchConv`).
      scale, bias: ``[C_out]`` batch-norm parameters (as :class:`TaskBatchNorm`).
      epsilon: added to the variance.
      conv_impl: the convolution: ``"im2col"`` (as :class:`PatchConv`) or ``"xla_vjp"``
        (:func:`conv3x3`); the same function either way.
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
    if conv_impl not in ("im2col", "xla_vjp"):
        raise ValueError(f"conv_impl: expected 'im2col' or 'xla_vjp', got {conv_impl!r}.")
    dtype = dtype or x.dtype
    sign = jax.lax.stop_gradient(jnp.where(scale >= 0, 1.0, -1.0)).astype(kernel.dtype)
    conv = _patch_conv if conv_impl == "im2col" else conv3x3
    signed = (kernel * sign).astype(dtype)
    z = conv(x.astype(dtype), signed)
    if 9 * x.shape[-1] <= kernel.shape[-1]:
        mean_z, var = _conv_moments(x.astype(dtype), signed)
    else:
        mean_z, var = _channel_moments(z)
    a = scale * jnp.reciprocal(jnp.sqrt(var + epsilon))
    # a * y + bias - a * mean_y with y = sign * z, so |a| = a * sign multiplies the pooled z
    y = max_pool_2x2(z).astype(mean_z.dtype) * (a * sign) + (bias - a * mean_z * sign)
    return jax.nn.relu(y).astype(dtype)
