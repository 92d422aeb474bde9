"""The Conv-4 backbone of the MAML and Prototypical Networks papers."""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmeta.nets.base import Network, from_linen
from jaxmeta.nets.layers import PatchConv, TaskBatchNorm, conv3x3, conv_norm_relu_pool, max_pool_2x2

__all__ = ["conv4", "Conv4"]


class Conv4(nn.Module):
    """``blocks`` x [conv3x3, norm, ReLU, downsample], then an optional linear head.

    The Flax module behind :func:`conv4` (which wraps it as a
    :class:`~jaxmeta.nets.Network` for the learners and picks the CPU lowering);
    use the module itself inside your own Flax models.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> net, x = Conv4(out=5), jnp.zeros((2, 28, 28, 1))
      >>> params = jax.eval_shape(net.init, jax.random.key(0), x)   # shapes only: nothing runs
      >>> jax.eval_shape(net.apply, params, x).shape
      (2, 5)
    """

    channels: int = 64
    blocks: int = 4
    out: Optional[int] = None
    downsample: str = "max_pool"
    norm: str = "batch"
    readout: str = "flatten"
    conv_impl: str = "xla"
    last_pool: bool = True
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        if x.ndim == 3:  # [B, H, W] grey images
            x = x[..., None]
        if self.dtype is not None:
            x = x.astype(self.dtype)
        for i in range(self.blocks):
            stride = 2 if self.downsample == "stride" else 1
            pool = self.downsample == "max_pool" and (self.last_pool or i < self.blocks - 1)
            if self.conv_impl != "xla" and self.norm == "batch" and pool:
                # the same four layers (same parameters as nn.Conv and TaskBatchNorm), fused into fewer
                # passes over the activations
                kernel, _ = PatchConv(self.channels, dtype=self.dtype, name=f"conv_{i}").weights(x.shape[-1])
                scale, bias = TaskBatchNorm(dtype=self.dtype, name=f"norm_{i}").weights(self.channels)
                x = conv_norm_relu_pool(x, kernel, scale, bias, conv_impl=self.conv_impl, dtype=self.dtype)
                continue
            if self.conv_impl == "im2col":
                x = PatchConv(self.channels, stride, dtype=self.dtype, name=f"conv_{i}")(x)
            elif self.conv_impl == "xla_vjp":  # stride 1 (conv4 checks)
                kernel, bias = PatchConv(self.channels, dtype=self.dtype, name=f"conv_{i}").weights(x.shape[-1])
                dtype = self.dtype or x.dtype
                x = conv3x3(x.astype(dtype), kernel.astype(dtype)) + bias.astype(dtype)
            else:
                x = nn.Conv(self.channels, (3, 3), strides=(stride, stride), padding="SAME", dtype=self.dtype,
                            name=f"conv_{i}")(x)
            if self.norm == "batch":
                x = TaskBatchNorm(dtype=self.dtype, name=f"norm_{i}")(x)
            elif self.norm == "layer":
                x = nn.GroupNorm(num_groups=1, dtype=self.dtype, name=f"norm_{i}")(x)
            x = nn.relu(x)
            if pool:
                x = max_pool_2x2(x)
        if self.readout == "mean":
            x = x.mean(axis=(1, 2))
        else:
            x = x.reshape(x.shape[0], -1)
        if self.out is not None:
            x = nn.Dense(self.out, dtype=self.dtype, name="head")(x)
        return x.astype(jnp.float32) if self.dtype is not None else x


def conv4(
    out: Optional[int] = None,
    *,
    channels: int = 64,
    blocks: int = 4,
    downsample: str = "max_pool",
    norm: str = "batch",
    readout: str = "flatten",
    conv_impl: str = "auto",
    last_pool: bool = True,
    dtype: Any = None,
) -> Network:
    """The Conv-4 of MAML / ProtoNets as a pure :class:`~jaxmeta.nets.Network`.

    Each block is conv 3x3 (``channels`` filters, SAME padding), normalisation,
    ReLU and 2x2 downsampling. On 28x28 Omniglot, max-pooling gives a 64-d
    embedding (28 -> 14 -> 7 -> 3 -> 1).

    Args:
      out: width of a linear ``head`` (the number of ways for MAML); ``None``
        returns the embedding (ProtoNets, Matching Networks).
      channels: filters per conv layer.
      blocks: number of conv blocks.
      downsample: ``"max_pool"`` (ProtoNets, MAML on MiniImageNet) or
        ``"stride"`` (stride-2 convs, MAML's Omniglot variant).
      norm: ``"batch"`` for :class:`TaskBatchNorm` (per-call batch statistics,
        no running averages: see its docstring for the exact semantics inside
        adaptation), ``"layer"`` (per-example statistics over height, width and
        channels with a per-channel scale and bias, i.e. group norm with one
        group: an example's embedding does not depend on the rest of its batch,
        so a data set can be embedded once and the embeddings reused) or
        ``"none"``.
      readout: ``"flatten"`` or ``"mean"`` (global average over space, as MAML's
        reference code does on Omniglot).
      conv_impl: how the convolutions are computed; same parameters, same
        outputs, different speed (see benchmarks/README.md):

        * ``"auto"`` (default): the fastest measured for the default backend
          (``jax.default_backend()`` when ``conv4`` is called): on CPU
          ``"xla_vjp"`` (``"im2col"`` with ``downsample="stride"``), where
          ``"xla"``'s meta-steps ran 3-40x slower; elsewhere ``"xla"``.
          Pass ``"xla"`` to differentiate in forward mode (``jax.jvp``) on CPU;
        * ``"xla"``: ``flax.linen.Conv`` (``lax.conv`` and JAX's derivatives);
        * ``"im2col"``: patches + matmul (:class:`jaxmeta.nets.PatchConv`): fast
          under ``vmap`` with per-task weights, where ``lax.conv`` becomes a
          grouped convolution;
        * ``"xla_vjp"``: :func:`jaxmeta.nets.conv3x3`, ``lax.conv`` with its
          gradients written out: the fastest on CPU, with ``batching="accumulate"``
          (one kernel per episode) and the meta-step's CPU compiler options
          (:func:`jaxmeta.train.compiler_options`). Reverse-mode derivatives only; stride-2
          downsampling is not supported.

        With ``"im2col"`` or ``"xla_vjp"``, batch norm and max-pooling, each
        block runs as one :func:`jaxmeta.nets.conv_norm_relu_pool` (pooling
        before normalisation, exact; the conv bias, which batch norm cancels,
        is kept but unused).
      last_pool: pool after the last block too (``False`` keeps the last
        block's 3x3 map on 28x28 inputs: a 576-d embedding instead of 64-d).
      dtype: computation dtype (e.g. ``jnp.bfloat16``); params stay float32.

    Returns:
      A :class:`Network` with layers ``conv_i``, ``norm_i`` and ``head``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> net = conv4()
      >>> p = net.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
      >>> net.apply(p, jnp.zeros((10, 28, 28, 1))).shape
      (10, 64)
    """
    if downsample not in ("max_pool", "stride"):
        raise ValueError(f"downsample: expected 'max_pool' or 'stride', got {downsample!r}.")
    if norm not in ("batch", "layer", "none"):
        raise ValueError(f"norm: expected 'batch', 'layer' or 'none', got {norm!r}.")
    if readout not in ("flatten", "mean"):
        raise ValueError(f"readout: expected 'flatten' or 'mean', got {readout!r}.")
    if conv_impl not in ("auto", "xla", "im2col", "xla_vjp"):
        raise ValueError(f"conv_impl: expected 'auto', 'xla', 'im2col' or 'xla_vjp', got {conv_impl!r}.")
    if conv_impl == "auto":
        conv_impl = _default_conv_impl(downsample)
    if conv_impl == "xla_vjp" and downsample == "stride":
        raise ValueError("conv_impl='xla_vjp' computes stride-1 convolutions only; with downsample='stride' "
                         "use conv_impl='im2col' (or 'xla').")
    if channels <= 0 or blocks <= 0:
        raise ValueError(f"channels and blocks must be positive, got {channels} and {blocks}.")
    return from_linen(Conv4(channels=channels, blocks=blocks, out=out, downsample=downsample, norm=norm,
                            readout=readout, conv_impl=conv_impl, last_pool=last_pool, dtype=dtype))


def _default_conv_impl(downsample: str) -> str:
    """``conv4``'s ``"auto"``: the lowering measured fastest on the default backend (benchmarks/README.md)."""
    if jax.default_backend() != "cpu":
        return "xla"
    return "im2col" if downsample == "stride" else "xla_vjp"
