"""On-device image augmentation for episodes (pure JAX, jit-able)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates

from jaxmeta.episodes import Episode

__all__ = ["random_affine", "augment_episodes"]


def random_affine(key: jax.Array, images: jax.Array, *, rotate: float = 10.0, scale: float = 0.1,
                  shear: float = 0.1, translate: float = 2.0) -> jax.Array:
    """Random small affine distortions, one per image: ``[B, H, W(, C)] -> same shape``.

    Each image gets a rotation in ``[-rotate, rotate]`` degrees, a scale in
    ``[1 - scale, 1 + scale]`` per axis, a shear in ``[-shear, shear]`` and a
    translation in ``[-translate, translate]`` pixels, about the image centre,
    with bilinear interpolation and zero fill (ink = 1 on a 0 background).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.zeros((3, 28, 28, 1)).at[:, 10:18, 10:18].set(1.0)
      >>> random_affine(jax.random.key(0), x).shape
      (3, 28, 28, 1)
    """
    if images.ndim not in (3, 4):
        raise ValueError(f"images: expected [B, H, W] or [B, H, W, C], got shape {images.shape}.")
    squeeze = images.ndim == 3
    x = images[..., None] if squeeze else images
    b, h, w, c = x.shape
    k = jax.random.split(key, 5)
    angle = jax.random.uniform(k[0], (b,), minval=-rotate, maxval=rotate) * (math.pi / 180)
    sx, sy = (1.0 + jax.random.uniform(k[1], (2, b), minval=-scale, maxval=scale))
    sh = jax.random.uniform(k[2], (b,), minval=-shear, maxval=shear)
    tx, ty = jax.random.uniform(k[3], (2, b), minval=-translate, maxval=translate)
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    # inverse map: output pixel -> input coordinate
    a11, a12 = cos / sx, (sin + sh * cos) / sx
    a21, a22 = -sin / sy, (cos - sh * sin) / sy
    yy, xx = jnp.meshgrid(jnp.arange(h, dtype=x.dtype), jnp.arange(w, dtype=x.dtype), indexing="ij")
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    dy, dx = yy - cy, xx - cx

    def warp(img, a11, a12, a21, a22, tx, ty):
        src_y = a11 * dy + a12 * dx + cy - ty
        src_x = a21 * dy + a22 * dx + cx - tx
        return jax.vmap(lambda ch: map_coordinates(ch, [src_y, src_x], order=1, mode="constant", cval=0.0),
                        in_axes=2, out_axes=2)(img)

    out = jax.vmap(warp)(x, a11, a12, a21, a22, tx, ty)
    return out[..., 0] if squeeze else out


def augment_episodes(key: jax.Array, episodes: Episode, fn=random_affine, *, aux_fields=(), **kwargs) -> Episode:
    """Applies an image augmentation ``fn(key, images [B, ...])`` to every support and query image.

    Works on a single episode or a batch (leading axes are flattened and restored).
    ``aux_fields`` names image arrays in ``episodes.aux`` (a dict) to augment
    too, each with its own key (e.g. ``("unlabelled_x",)`` for
    :func:`jaxmeta.scenarios.semisup_episodes`).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxmeta import Episode
      >>> eps = Episode(jnp.zeros((2, 5, 28, 28, 1)), jnp.zeros((2, 5), jnp.int32),
      ...               jnp.zeros((2, 10, 28, 28, 1)), jnp.zeros((2, 10), jnp.int32))
      >>> augment_episodes(jax.random.key(0), eps).query_x.shape
      (2, 10, 28, 28, 1)
    """
    k_s, k_q = jax.random.split(key)

    def apply(k, x):
        image_ndim = 3 if x.shape[-1] in (1, 3) and x.ndim >= 4 else 2
        lead = x.shape[: x.ndim - image_ndim]
        flat = x.reshape((-1,) + x.shape[x.ndim - image_ndim:])
        return fn(k, flat, **kwargs).reshape(lead + x.shape[x.ndim - image_ndim:])

    out = episodes._replace(support_x=apply(k_s, episodes.support_x), query_x=apply(k_q, episodes.query_x))
    aux_fields = (aux_fields,) if isinstance(aux_fields, str) else tuple(aux_fields)
    if aux_fields:
        if not isinstance(episodes.aux, dict) or any(f not in episodes.aux for f in aux_fields):
            have = sorted(episodes.aux) if isinstance(episodes.aux, dict) else type(episodes.aux).__name__
            raise ValueError(f"aux_fields: {aux_fields} must name image arrays in episodes.aux; it holds {have}.")
        aux = dict(episodes.aux)
        for i, name in enumerate(aux_fields):
            aux[name] = apply(jax.random.fold_in(key, i + 1), aux[name])  # support/query keys unchanged
        out = out._replace(aux=aux)
    return out
