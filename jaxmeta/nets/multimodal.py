"""Encoders for pen trajectories and for image + trajectory examples in one embedding space.

* :func:`stroke_encoder`: a 1-D convolutional network over a resampled
  trajectory ``[B, P, 3]`` (``x, y, pen_up``), with per-example layer
  normalisation, pooled over time into a vector.
* :func:`multimodal_encoder`: reads packed examples
  (:func:`jaxmeta.scenarios.pack_examples`: modality flags, image, trajectory),
  embeds the image with Conv-4 and the trajectory with the stroke encoder, maps
  each to a common ``dim``-d space with its own linear adapter
  (``image_proj`` / ``stroke_proj``), *fuses* them as the mean of the adapters'
  outputs over the modalities an example has, and applies a shared linear
  projection ``head``. An image-only, a trajectory-only and a fused example
  therefore land in one space, so prototypes and queries of different
  modalities can be compared directly.

Every normalisation is per example (no batch statistics), so an example's
embedding never depends on its batch: a data set can be embedded once and the
embeddings reused (``features_only=True`` returns the fused embedding before
``head``, for learners that adapt only the head).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from jaxmeta.nets.base import Network, from_linen
from jaxmeta.nets.conv import Conv4
from jaxmeta.scenarios.multimodal import unpack_examples

__all__ = ["StrokeEncoder", "stroke_encoder", "MultimodalEncoder", "multimodal_encoder"]


class StrokeEncoder(nn.Module):
    """1-D conv blocks [conv (kernel ``kernel``), layer norm, ReLU, max-pool 2] over time, optional self-attention
    blocks over the pooled time steps, then mean+max pooling and a linear map to ``out``.

    The Flax module behind :func:`stroke_encoder`; input ``[B, P, 3]`` pen
    points ``(x, y, pen_up)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> net, s = StrokeEncoder(out=32), jnp.zeros((2, 48, 3))
      >>> params = jax.eval_shape(net.init, jax.random.key(0), s)
      >>> jax.eval_shape(net.apply, params, s).shape
      (2, 32)
    """

    channels: Tuple[int, ...] = (64, 64, 64)
    kernel: int = 5
    out: int = 64
    attention_layers: int = 0
    attention_heads: int = 4

    @nn.compact
    def __call__(self, s):
        # positions, pen-up flag and the step to the previous point (zero at a pen-up: no ink moved)
        step = jnp.concatenate([jnp.zeros_like(s[:, :1, :2]), s[:, 1:, :2] - s[:, :-1, :2]], axis=1)
        h = jnp.concatenate([s, step * (1.0 - s[:, :, 2:3])], axis=-1)
        for i, width in enumerate(self.channels):
            h = nn.Conv(width, (self.kernel,), padding="SAME", name=f"conv_{i}")(h)
            h = nn.LayerNorm(name=f"norm_{i}")(h)
            h = nn.relu(h)
            if h.shape[1] >= 4:
                t = h.shape[1] // 2
                h = h[:, : 2 * t].reshape(h.shape[0], t, 2, width).max(axis=2)
        if self.attention_layers:
            # pre-norm transformer blocks: every time step attends to all others (how strokes sit relative to
            # each other, which pooled convolutions see only locally), learned position embedding
            width = h.shape[-1]
            h = h + self.param("position", nn.initializers.normal(0.02), h.shape[1:])
            for i in range(self.attention_layers):
                a = nn.LayerNorm(name=f"attention_norm_{i}")(h)
                h = h + nn.MultiHeadDotProductAttention(self.attention_heads, name=f"attention_{i}")(a, a)
                a = nn.LayerNorm(name=f"mlp_norm_{i}")(h)
                h = h + nn.Dense(width, name=f"mlp_out_{i}")(nn.relu(nn.Dense(2 * width, name=f"mlp_in_{i}")(a)))
            h = nn.LayerNorm(name="attention_out_norm")(h)
        h = jnp.concatenate([h.mean(axis=1), h.max(axis=1)], axis=-1)
        return nn.Dense(self.out, name="out")(h)


def stroke_encoder(out: int = 64, *, channels: Sequence[int] = (64, 64, 64), kernel: int = 5,
                   attention_layers: int = 0, attention_heads: int = 4) -> Network:
    """A 1-D convolutional encoder of resampled pen trajectories ``[B, P, 3] -> [B, out]``.

    Inputs are ``(x, y, pen_up)`` per point (:func:`jaxmeta.data.resample_strokes`);
    the network also sees the step from the previous point (zeroed where the pen
    was lifted). Each block is a convolution over time, layer normalisation
    (per example), ReLU and 2x max-pooling. With ``attention_layers``, pre-norm
    transformer blocks (multi-head self-attention + a 2x-wide ReLU MLP, with a
    learned position embedding) follow, so every time step sees the whole
    drawing. The last feature map is averaged and max-pooled over time and
    mapped linearly to ``out``.

    Args:
      out: embedding width.
      channels: filters of each conv block.
      kernel: temporal kernel size.
      attention_layers: self-attention blocks after the conv blocks (0: none).
      attention_heads: heads per attention block (must divide
        ``channels[-1]``).

    Returns:
      A :class:`~jaxmeta.nets.Network`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> net = stroke_encoder(32, channels=(16, 16))
      >>> p = net.init(jax.random.key(0), jnp.zeros((1, 48, 3)))
      >>> net.apply(p, jnp.zeros((5, 48, 3))).shape
      (5, 32)
    """
    channels = tuple(int(c) for c in channels)
    _check_stroke_settings(channels, out, kernel, attention_layers, attention_heads)
    return from_linen(StrokeEncoder(channels=channels, kernel=int(kernel), out=int(out),
                                    attention_layers=int(attention_layers), attention_heads=int(attention_heads)))


def _check_stroke_settings(channels, out, kernel, attention_layers, attention_heads) -> None:
    if not channels or any(c <= 0 for c in channels) or int(out) <= 0 or int(kernel) <= 0:
        raise ValueError(f"channels, out, kernel: expected positive sizes, got {channels}, {out}, {kernel}.")
    if int(attention_layers) < 0 or int(attention_heads) <= 0 or (attention_layers and channels[-1] % attention_heads):
        raise ValueError(f"attention_layers, attention_heads: expected layers >= 0 and a head count that divides the "
                         f"last conv width {channels[-1]}, got {attention_layers} and {attention_heads}.")


class MultimodalEncoder(nn.Module):
    """Conv-4 image branch + stroke branch, per-modality adapters, masked-mean fusion, shared ``head``.

    The Flax module behind :func:`multimodal_encoder`, which documents the
    packed example layout (:func:`jaxmeta.scenarios.pack_examples` builds it:
    ``[B, 2 + H * W + P * 3]``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> net = MultimodalEncoder(image_shape=(28, 28), stroke_shape=(48, 3), dim=16)
      >>> x = jnp.zeros((2, 2 + 28 * 28 + 48 * 3))
      >>> params = jax.eval_shape(net.init, jax.random.key(0), x)
      >>> jax.eval_shape(net.apply, params, x).shape
      (2, 16)
    """

    image_shape: Tuple[int, ...]
    stroke_shape: Tuple[int, ...]
    dim: int = 64
    image_channels: int = 64
    stroke_channels: Tuple[int, ...] = (64, 64, 64)
    stroke_attention: int = 0
    features_only: bool = False
    views: bool = False

    @nn.compact
    def __call__(self, x):
        has_image, has_stroke, images, strokes = unpack_examples(x, self.image_shape, self.stroke_shape)
        e_image = Conv4(channels=self.image_channels, norm="layer", name="image")(images)
        e_image = nn.Dense(self.dim, name="image_proj")(e_image)
        e_stroke = StrokeEncoder(channels=self.stroke_channels, out=self.dim, attention_layers=self.stroke_attention,
                                 name="stroke")(strokes)
        e_stroke = nn.Dense(self.dim, name="stroke_proj")(e_stroke)
        if self.views:  # every drawing in every modality: [B, 3 (image, stroke, fused), dim]
            fused = jnp.stack([e_image, e_stroke, (e_image + e_stroke) / 2.0], axis=1)
        else:
            count = jnp.maximum(has_image + has_stroke, 1.0)[:, None]
            fused = (has_image[:, None] * e_image + has_stroke[:, None] * e_stroke) / count
        if self.features_only:
            return fused
        return nn.Dense(self.dim, name="head")(fused)


def multimodal_encoder(
    image_shape: Sequence[int],
    stroke_shape: Sequence[int],
    *,
    dim: int = 64,
    image_channels: int = 64,
    stroke_channels: Sequence[int] = (64, 64, 64),
    stroke_attention: int = 0,
    features_only: bool = False,
    views: bool = False,
) -> Network:
    """One embedding for images, pen trajectories, or both (packed examples in, ``[B, dim]`` out).

    Args:
      image_shape: shape of one image, e.g. ``(28, 28, 1)``.
      stroke_shape: shape of one trajectory, e.g. ``(48, 3)``.
      dim: embedding width.
      image_channels: Conv-4 filters per block (with per-example layer norm).
      stroke_channels: stroke-encoder filters per block.
      stroke_attention: self-attention blocks of the stroke encoder (see
        :func:`stroke_encoder`'s ``attention_layers``; 4 heads).
      features_only: return the fused embedding before the shared linear
        ``head`` (the params are then those of the full encoder minus
        ``"head"``; ``head`` is a ``Dense(dim)`` like ``nets.mlp((), dim)``'s).
      views: embed every example in all three modalities, ignoring its flags:
        ``[B, 3, dim]`` = (image, stroke, fused), for examples packed with both
        modalities (``modality = 2``); with :func:`jaxmeta.learners.protonet`
        ``views=True`` this trains every support/query modality pair at the
        cost of one pass. Same params as the default (flags-driven) network.

    Returns:
      A :class:`~jaxmeta.nets.Network` with layers ``image``, ``image_proj``,
      ``stroke``, ``stroke_proj`` and ``head``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxmeta.scenarios import pack_examples
      >>> net = multimodal_encoder((16, 16, 1), (16, 3), dim=16, image_channels=8, stroke_channels=(8,))
      >>> x = pack_examples(jnp.ones((3, 16, 16)), jnp.ones((3, 16, 3)), jnp.array([0, 1, 2]))
      >>> p = net.init(jax.random.key(0), x)
      >>> sorted(p), net.apply(p, x).shape
      (['head', 'image', 'image_proj', 'stroke', 'stroke_proj'], (3, 16))
    """
    image_shape, stroke_shape = tuple(int(s) for s in image_shape), tuple(int(s) for s in stroke_shape)
    if len(image_shape) == 2:
        image_shape = image_shape + (1,)
    if len(image_shape) != 3 or len(stroke_shape) != 2:
        raise ValueError(f"image_shape, stroke_shape: expected (H, W[, C]) and (P, 3), got {image_shape} and "
                         f"{stroke_shape}.")
    if int(dim) <= 0 or int(image_channels) <= 0:
        raise ValueError(f"dim, image_channels: expected positive sizes, got {dim}, {image_channels}.")
    # the stroke branch uses StrokeEncoder's default kernel and head count
    _check_stroke_settings(tuple(int(c) for c in stroke_channels), dim, StrokeEncoder.kernel, stroke_attention,
                           StrokeEncoder.attention_heads)
    return from_linen(MultimodalEncoder(image_shape=image_shape, stroke_shape=stroke_shape, dim=int(dim),
                                        image_channels=int(image_channels),
                                        stroke_channels=tuple(int(c) for c in stroke_channels),
                                        stroke_attention=int(stroke_attention),
                                        features_only=bool(features_only), views=bool(views)))
