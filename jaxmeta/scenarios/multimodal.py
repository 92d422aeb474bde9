"""Multi-modal few-shot episodes: every example is an image, a pen trajectory, or both.

The data are two aligned class-major arrays of the same drawings,
``images [C, D, H, W(, 1)]`` and ``strokes [C, D, P, 3]`` (see
:func:`jaxmeta.data.load_omniglot_multimodal`). An episode draws ``N`` classes
and ``K + Q`` drawings of each exactly like
:func:`~jaxmeta.scenarios.fewshot_episodes`, then shows each drawing in one
*modality*:

* ``"image"`` -- the image only;  ``"stroke"`` -- the trajectory only;
* ``"both"`` -- image and trajectory together (a fused example);
* ``"random"`` -- one of the three per example, drawn with ``probs``.

Support and query modalities are chosen separately, which gives the
cross-modal episodes (support as strokes and query as images, or the reverse).
The classes and drawings depend on ``key`` only, never on the modalities, so
the same key gives the *same episodes* in every modality: comparisons between
image-only, stroke-only, cross-modal and fused accuracy are paired.

An example is one flat vector (so that :class:`~jaxmeta.Episode` keeps one
array per set and every learner works unchanged)::

    x = [has_image, has_stroke, image (H*W values), stroke (P*3 values)]

with the absent modality zero-filled. The flags are the per-example modality
flag the network reads (:func:`unpack_examples` splits a batch back);
``episode.aux`` also carries them as integers (``0`` image, ``1`` stroke,
``2`` both) under ``"support_modality"`` / ``"query_modality"``, and the drawing
of every example as a flat index ``c * D + d`` under ``"support_index"`` /
``"query_index"`` (for analyses that reuse precomputed embeddings).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmeta.episodes import Episode
from jaxmeta.scenarios.augment import augment_episodes, random_affine, random_affine_points, random_stroke_order
from jaxmeta.scenarios.fewshot import check_fewshot, fewshot_episodes

__all__ = ["MODALITIES", "MODALITY_IDS", "pack_examples", "unpack_examples", "multimodal_episodes", "augment_multimodal"]

#: the modality names an episode set accepts
MODALITIES = ("image", "stroke", "both", "random")
#: integer code of each concrete modality (``episode.aux`` flags)
MODALITY_IDS = {"image": 0, "stroke": 1, "both": 2}


def pack_examples(images: jax.Array, strokes: jax.Array, modality: jax.Array) -> jax.Array:
    """Packs examples into flat vectors ``[has_image, has_stroke, image, stroke]``.

    Args:
      images: ``[B, H, W]`` or ``[B, H, W, 1]``.
      strokes: ``[B, P, 3]``.
      modality: ``int [B]`` codes (:data:`MODALITY_IDS`); the absent modality
        is zero-filled.

    Returns:
      ``float32 [B, 2 + H*W + P*3]``.

    Example:
      >>> import jax.numpy as jnp
      >>> x = pack_examples(jnp.ones((2, 4, 4)), jnp.ones((2, 8, 3)), jnp.array([0, 1]))
      >>> x.shape, x[:, :2].tolist(), float(x[0, 2:18].sum()), float(x[0, 18:].sum())
      ((2, 42), [[1.0, 0.0], [0.0, 1.0]], 16.0, 0.0)
    """
    b = images.shape[0]
    if strokes.shape[0] != b or jnp.shape(modality) != (b,):
        raise ValueError(f"images, strokes, modality: expected the same leading size B, got {images.shape}, "
                         f"{strokes.shape}, {jnp.shape(modality)}.")
    modality = jnp.asarray(modality)
    has_image = (modality != MODALITY_IDS["stroke"]).astype(jnp.float32)
    has_stroke = (modality != MODALITY_IDS["image"]).astype(jnp.float32)
    flat_i = images.reshape(b, -1).astype(jnp.float32) * has_image[:, None]
    flat_s = strokes.reshape(b, -1).astype(jnp.float32) * has_stroke[:, None]
    return jnp.concatenate([has_image[:, None], has_stroke[:, None], flat_i, flat_s], axis=1)


def unpack_examples(x: jax.Array, image_shape: Sequence[int], stroke_shape: Sequence[int]):
    """Splits packed examples back: ``(has_image [B], has_stroke [B], images [B, *image_shape], strokes [B, *stroke_shape])``.

    Example:
      >>> import jax.numpy as jnp
      >>> x = pack_examples(jnp.ones((2, 4, 4)), jnp.ones((2, 8, 3)), jnp.array([2, 1]))
      >>> hi, hs, im, st = unpack_examples(x, (4, 4, 1), (8, 3))
      >>> hi.tolist(), hs.tolist(), im.shape, st.shape
      ([1.0, 0.0], [1.0, 1.0], (2, 4, 4, 1), (2, 8, 3))
    """
    image_shape, stroke_shape = tuple(int(s) for s in image_shape), tuple(int(s) for s in stroke_shape)
    n_i, n_s = int(np.prod(image_shape)), int(np.prod(stroke_shape))
    if x.ndim != 2 or x.shape[1] != 2 + n_i + n_s:
        raise ValueError(f"x: expected packed examples [B, 2 + {n_i} + {n_s}] for image_shape {image_shape} and "
                         f"stroke_shape {stroke_shape}, got {x.shape}.")
    b = x.shape[0]
    return (x[:, 0], x[:, 1], x[:, 2 : 2 + n_i].reshape((b,) + image_shape),
            x[:, 2 + n_i :].reshape((b,) + stroke_shape))


def _check_modality(name: str, value: str) -> str:
    if value not in MODALITIES:
        raise ValueError(f"{name}: expected one of {MODALITIES}, got {value!r}.")
    return value


def _modalities(key, modality: str, shape, probs) -> jax.Array:
    if modality == "random":
        return jax.random.choice(key, 3, shape, p=probs).astype(jnp.int32)
    return jnp.full(shape, MODALITY_IDS[modality], jnp.int32)


def multimodal_episodes(
    key: jax.Array,
    images: jax.Array,
    strokes: jax.Array,
    *,
    num_tasks: int,
    ways: int,
    shots: int,
    queries: int,
    support_modality: str = "both",
    query_modality: str = "both",
    probs: Sequence[float] = (1 / 3, 1 / 3, 1 / 3),
    groups: Optional[jax.Array] = None,
    within_group: bool = False,
) -> Episode:
    """A batch of N-way K-shot episodes whose examples are images, trajectories or both (jit-able).

    Args:
      key: PRNG key; it alone decides classes and drawings (the same key gives
        the same episodes for every choice of modalities); the per-example
        draws of ``"random"`` use a key split off it.
      images: ``[C, D, H, W]`` or ``[C, D, H, W, 1]``.
      strokes: ``[C, D, P, 3]``, aligned with ``images``.
      num_tasks, ways, shots, queries: ``E``, ``N``, ``K``, ``Q`` (queries per class).
      support_modality, query_modality: one of :data:`MODALITIES`.
      probs: probabilities of image / stroke / both for ``"random"``.
      groups, within_group: as :func:`~jaxmeta.scenarios.fewshot_episodes`.

    Returns:
      :class:`~jaxmeta.Episode` with packed ``support_x [E, N*K, 2+H*W+P*3]``,
      ``query_x [E, N*Q, ...]``, labels ``int32`` in ``[0, N)`` and ``aux``
      ``{"support_modality", "query_modality", "support_index", "query_index"}``
      (``int32 [E, N*K]`` / ``[E, N*Q]``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> images, strokes = jnp.zeros((10, 20, 4, 4)), jnp.zeros((10, 20, 8, 3))
      >>> eps = multimodal_episodes(jax.random.key(0), images, strokes, num_tasks=2, ways=5, shots=1, queries=3,
      ...                           support_modality="stroke", query_modality="image")
      >>> eps.support_x.shape, eps.aux["support_modality"][0].tolist(), int(eps.aux["query_modality"].max())
      ((2, 5, 42), [1, 1, 1, 1, 1], 0)
    """
    _check_modality("support_modality", support_modality)
    _check_modality("query_modality", query_modality)
    images, strokes = jnp.asarray(images), jnp.asarray(strokes)
    if images.ndim == 5:
        if images.shape[-1] != 1:
            raise ValueError(f"images: expected [C, D, H, W] or [C, D, H, W, 1], got {images.shape}.")
        images = images[..., 0]
    if images.ndim != 4 or strokes.ndim != 4 or images.shape[:2] != strokes.shape[:2]:
        raise ValueError(f"images, strokes: expected aligned [C, D, H, W] and [C, D, P, 3], got {images.shape} and "
                         f"{strokes.shape}.")
    probs = jnp.asarray(probs, jnp.float32)
    if probs.shape != (3,):
        raise ValueError(f"probs: expected 3 probabilities (image, stroke, both), got shape {probs.shape}.")
    num_classes, per_class = images.shape[:2]
    check_fewshot(images.shape, ways=ways, shots=shots, queries=queries,
                  groups=None if groups is None or isinstance(groups, jax.core.Tracer) else groups,
                  within_group=within_group)
    k_index, k_mod = jax.random.split(key)
    flat_index = jnp.arange(num_classes * per_class, dtype=jnp.float32).reshape(num_classes, per_class, 1)
    picks = fewshot_episodes(k_index, flat_index, num_tasks=num_tasks, ways=ways, shots=shots, queries=queries,
                             groups=groups, within_group=within_group)
    s_index = picks.support_x[..., 0].astype(jnp.int32)  # [E, N*K]
    q_index = picks.query_x[..., 0].astype(jnp.int32)
    k_s, k_q = jax.random.split(k_mod)
    s_mod = _modalities(k_s, support_modality, s_index.shape, probs)
    q_mod = _modalities(k_q, query_modality, q_index.shape, probs)
    flat_images = images.reshape((num_classes * per_class,) + images.shape[2:])
    flat_strokes = strokes.reshape((num_classes * per_class,) + strokes.shape[2:])

    def gather(index, mod):
        packed = pack_examples(flat_images[index.reshape(-1)], flat_strokes[index.reshape(-1)], mod.reshape(-1))
        return packed.reshape(index.shape + packed.shape[-1:])

    aux = {"support_modality": s_mod, "query_modality": q_mod, "support_index": s_index, "query_index": q_index}
    return Episode(gather(s_index, s_mod), picks.support_y, gather(q_index, q_mod), picks.query_y, aux=aux)


def augment_multimodal(key: jax.Array, episodes: Episode, image_shape: Sequence[int], stroke_shape: Sequence[int],
                       *, order_noise: float = 0.0, reverse: float = 0.0, **affine) -> Episode:
    """Random affine distortions of packed multi-modal examples: one distortion per drawing, both modalities.

    Every support and query example is unpacked; its image is warped by
    :func:`~jaxmeta.scenarios.random_affine` and its trajectory by
    :func:`~jaxmeta.scenarios.random_affine_points` with the *same* rotation,
    scale and shear (so a fused example stays one drawing), then repacked with
    its modality flags unchanged (absent modalities stay zero). With
    ``order_noise`` or ``reverse``, trajectories also get a random stroke order
    and direction (:func:`~jaxmeta.scenarios.random_stroke_order`: same ink, so
    the pair still matches). Works on one episode or a batch; ``aux`` passes
    through.

    Args:
      key: PRNG key (support and query get keys split from it).
      episodes: packed examples from :func:`multimodal_episodes`.
      image_shape, stroke_shape: e.g. ``(28, 28)`` and ``(48, 3)``.
      order_noise, reverse: stroke-order noise and stroke-reversal
        probability of :func:`~jaxmeta.scenarios.random_stroke_order` (0 and 0:
        order and direction unchanged).
      **affine: ``rotate``, ``scale``, ``shear``, ``translate`` of
        :func:`~jaxmeta.scenarios.random_affine`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> images = jnp.zeros((10, 20, 28, 28)).at[:, :, 10:18, 10:18].set(1.0)
      >>> strokes = jnp.tile(jnp.linspace(-1, 1, 48 * 3).reshape(1, 1, 48, 3), (10, 20, 1, 1))
      >>> eps = multimodal_episodes(jax.random.key(0), images, strokes, num_tasks=2, ways=5, shots=1, queries=2,
      ...                           support_modality="random", query_modality="random")
      >>> aug = augment_multimodal(jax.random.key(1), eps, (28, 28), (48, 3))
      >>> aug.query_x.shape == eps.query_x.shape, bool((aug.support_x[..., :2] == eps.support_x[..., :2]).all())
      (True, True)
    """
    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) == 2:
        image_shape = image_shape + (1,)
    stroke_shape = tuple(int(s) for s in stroke_shape)

    def distort(k, flat):
        has_image, has_stroke, images, strokes = unpack_examples(flat, image_shape, stroke_shape)
        images = random_affine(k, images, **affine)
        strokes = random_affine_points(k, strokes, **affine)
        if order_noise or reverse:
            strokes = random_stroke_order(jax.random.fold_in(k, 1), strokes, order_noise=order_noise, reverse=reverse)
        modality = jnp.where(has_image * has_stroke > 0, MODALITY_IDS["both"],
                             jnp.where(has_image > 0, MODALITY_IDS["image"], MODALITY_IDS["stroke"]))
        return pack_examples(images, strokes, modality)

    return augment_episodes(key, episodes, distort, example_ndim=1)
