"""On-device image augmentation for episodes (pure JAX, jit-able)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates

from jaxmeta.episodes import Episode

__all__ = ["random_affine", "random_affine_points", "random_stroke_order", "augment_episodes"]


def _affine_params(key: jax.Array, b: int, dtype, rotate: float, scale: float, shear: float, translate: float):
    """Per-example inverse affine maps ``(a11, a12, a21, a22, ty, tx)``, each ``[b]``, in (row, column) order.

    Output pixel offset ``(dy, dx)`` from the centre maps to input offset
    ``(a11 dy + a12 dx - ty, a21 dy + a22 dx - tx)``. One draw serves
    :func:`random_affine` and :func:`random_affine_points`, so the same key gives
    example ``i`` the same distortion in both.
    """
    k = jax.random.split(key, 5)
    angle = jax.random.uniform(k[0], (b,), dtype, minval=-rotate, maxval=rotate) * (math.pi / 180)
    sx, sy = (1.0 + jax.random.uniform(k[1], (2, b), dtype, minval=-scale, maxval=scale))
    sh = jax.random.uniform(k[2], (b,), dtype, minval=-shear, maxval=shear)
    tx, ty = jax.random.uniform(k[3], (2, b), dtype, minval=-translate, maxval=translate)
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    return cos / sx, (sin + sh * cos) / sx, -sin / sy, (cos - sh * sin) / sy, ty, tx


def random_affine(key: jax.Array, images: jax.Array, *, rotate: float = 10.0, scale: float = 0.1,
                  shear: float = 0.1, translate: float = 2.0) -> jax.Array:
    """Random small affine distortions, one per image: ``[B, H, W(, C)] -> same shape``.

    Each image gets a rotation in ``[-rotate, rotate]`` degrees, a scale in
    ``[1 - scale, 1 + scale]`` per axis, a shear in ``[-shear, shear]`` and a
    translation in ``[-translate, translate]`` pixels, about the image centre,
    with bilinear interpolation and zero fill (ink = 1 on a 0 background).
    :func:`random_affine_points` with the same key and settings applies the
    same distortions to point sequences (e.g. the pen trajectories of the
    same drawings).

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
    a11, a12, a21, a22, ty, tx = _affine_params(key, b, x.dtype, rotate, scale, shear, translate)
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


def random_affine_points(key: jax.Array, points: jax.Array, *, rotate: float = 10.0, scale: float = 0.1,
                         shear: float = 0.1, translate: float = 2.0, renormalise: bool = True) -> jax.Array:
    """The distortions of :func:`random_affine` applied to point sequences: ``[B, P, C] -> same shape``.

    Channels 0 and 1 are ``(x, y)`` in image orientation (``y`` down, like
    :func:`jaxmeta.data.resample_strokes`); the others (e.g. a pen-up flag)
    pass through. Example ``i`` gets the rotation, scale and shear that
    :func:`random_affine` gives image ``i`` for the same key and settings (the
    forward map of its inverse warp). Translation is in pixels and has no
    meaning for normalised points: with ``renormalise`` (default) every
    sequence is re-centred on its bounding box and its longer side scaled to
    span ``[-1, 1]`` again, as the loader normalises trajectories.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> pts = jnp.stack([jnp.linspace(-1, 1, 8), jnp.zeros(8), jnp.zeros(8)], -1)[None]
      >>> out = random_affine_points(jax.random.key(0), pts)
      >>> out.shape, round(float(jnp.abs(out[..., :2]).max()), 4)
      ((1, 8, 3), 1.0)
    """
    if points.ndim != 3 or points.shape[-1] < 2:
        raise ValueError(f"points: expected [B, P, C >= 2] with (x, y) first, got shape {points.shape}.")
    b = points.shape[0]
    a11, a12, a21, a22, _, _ = _affine_params(key, b, points.dtype, rotate, scale, shear, translate)
    det = a11 * a22 - a12 * a21
    y, x = points[..., 1], points[..., 0]
    # inverse of [[a11, a12], [a21, a22]] acting on (y, x)
    new_y = (a22[:, None] * y - a12[:, None] * x) / det[:, None]
    new_x = (-a21[:, None] * y + a11[:, None] * x) / det[:, None]
    xy = jnp.stack([new_x, new_y], axis=-1)
    if renormalise:
        lo, hi = xy.min(axis=1, keepdims=True), xy.max(axis=1, keepdims=True)
        half = jnp.maximum((hi - lo).max(axis=-1, keepdims=True) / 2.0, 1e-6)
        xy = (xy - (lo + hi) / 2.0) / half
    return jnp.concatenate([xy, points[..., 2:]], axis=-1)


def random_stroke_order(key: jax.Array, points: jax.Array, *, order_noise: float = 1.0,
                        reverse: float = 0.2) -> jax.Array:
    """Random stroke order and direction of resampled drawings: ``[B, P, C] -> same shape``.

    People draw the same character with its strokes in different orders and
    directions; an image cannot tell, a sequence encoder can. This shows a
    sequence encoder such variants. Channel 2 is the pen-up flag of
    :func:`jaxmeta.data.resample_strokes` (1 on the first point of each stroke);
    a drawing's strokes are re-laid end to end sorted by ``index + order_noise
    * N(0, 1)`` (0: the original order; about 1: neighbouring strokes often
    swap; large: a uniformly random order), and each stroke is drawn backwards
    with probability ``reverse``. Every point is kept (a stroke keeps its number
    of points), so the ink, and the drawing's image, are unchanged; the pen-up
    flags are rebuilt for the new stroke starts, other channels move with their
    points.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> pts = jnp.array([[[0., 0, 1], [1, 0, 0], [2, 0, 0], [5, 5, 1], [6, 5, 0]]])
      >>> out = random_stroke_order(jax.random.key(0), pts, order_noise=100.0, reverse=1.0)
      >>> sorted(map(tuple, out[0, :, :2].tolist())) == sorted(map(tuple, pts[0, :, :2].tolist()))
      True
      >>> random_stroke_order(jax.random.key(0), pts, order_noise=0.0, reverse=0.0).tolist() == pts.tolist()
      True
    """
    if points.ndim != 3 or points.shape[-1] < 3:
        raise ValueError(f"points: expected [B, P, C >= 3] with (x, y, pen_up) first, got shape {points.shape}.")
    if order_noise < 0 or not 0.0 <= reverse <= 1.0:
        raise ValueError(f"order_noise, reverse: expected >= 0 and a probability, got {order_noise} and {reverse}.")
    b, p, _ = points.shape

    def one(pts, k):
        k_order, k_reverse = jax.random.split(k)
        starts = (pts[:, 2] > 0.5).at[0].set(True)
        stroke = jnp.cumsum(starts) - 1  # stroke id of every point; ids < P
        length = jnp.zeros(p, jnp.int32).at[stroke].add(1)  # points per stroke id (0: no such stroke)
        first = jnp.cumsum(length) - length
        rank = jnp.arange(p, dtype=jnp.float32) + order_noise * jax.random.normal(k_order, (p,))
        order = jnp.argsort(jnp.where(length > 0, rank, jnp.inf))  # stroke ids in their new order, empty ids last
        new_end = jnp.cumsum(length[order])
        slot = jnp.searchsorted(new_end, jnp.arange(p), side="right")  # new position of each output point's stroke
        src_stroke = order[slot]
        offset = jnp.arange(p) - (new_end[slot] - length[src_stroke])
        backwards = jax.random.bernoulli(k_reverse, reverse, (p,))[src_stroke]
        src = first[src_stroke] + jnp.where(backwards, length[src_stroke] - 1 - offset, offset)
        moved = pts[src]
        return moved.at[:, 2].set((offset == 0).astype(pts.dtype))

    return jax.vmap(one)(points, jax.random.split(key, b))


def augment_episodes(key: jax.Array, episodes: Episode, fn=random_affine, *, aux_fields=(),
                     example_ndim: int | None = None, **kwargs) -> Episode:
    """Applies an image augmentation ``fn(key, images [B, ...])`` to every support and query image.

    Works on a single episode or a batch (leading axes are flattened and restored).
    ``aux_fields`` names image arrays in ``episodes.aux`` (a dict) to augment
    too, each with its own key (e.g. ``("unlabelled_x",)`` for
    :func:`jaxmeta.scenarios.semisup_episodes`). ``example_ndim`` is the
    number of trailing axes of one example (default: 3 for ``[..., H, W, 1 or
    3]``, else 2); ``fn`` gets ``[B, *example_shape]``, e.g. ``1`` for flat
    packed examples (:func:`jaxmeta.scenarios.augment_multimodal`).

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
        image_ndim = example_ndim if example_ndim is not None else (3 if x.shape[-1] in (1, 3) and x.ndim >= 4 else 2)
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
