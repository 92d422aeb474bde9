"""Semi-supervised few-shot episodes with distractors (Ren et al., ICLR 2018).

Two steps, both deterministic per key:

1. :func:`split_labelled` splits every class's examples **once** into a
   labelled pool and an unlabelled pool: a fixed fraction of each class is
   labelled, as in the paper (e.g. 10 of Omniglot's 20 drawings per character
   with ``labelled_fraction=0.5``; the split is a random permutation per class
   drawn from the key, so it is the same for the whole run).
2. :func:`semisup_episodes` draws episodes from the two pools:

   * ``N + D`` distinct classes; the first ``N`` are the task's classes,
     relabelled ``0 .. N-1`` in the order drawn, the last ``D`` are
     *distractors*;
   * support (``K`` per task class) and query (``Q`` per task class) are
     distinct examples of the **labelled pool**, drawn the way
     :func:`jaxmeta.scenarios.fewshot_episodes` draws them;
   * the unlabelled set holds ``M`` examples of the **unlabelled pool** of
     every task class *and* of every distractor class (``U = (N + D) * M``),
     in a random order, so position says nothing about the class.

The unlabelled set travels in ``Episode.aux``::

    aux = {"unlabelled_x":    [U, ...] images,
           "unlabelled_mask": [U] float32, 1 = real example, 0 = padding,
           "unlabelled_class": [U] int32, the true class in [0, N), -1 for a
                               distractor -- for evaluation and analysis only;
                               a learner must never read it}

All shapes are static (``N, K, Q, M, D`` are Python ints); the mask is all
ones from this sampler and exists so that hand-padded or merged episodes
share one shape (learners honour it). The labelled part of an episode depends
only on the key and ``(N, K, Q)``, not on ``M`` or ``D``: the same key gives
the same support and query sets with or without unlabelled examples and
distractors, so methods and settings are compared on identical labelled
tasks.
"""

from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmeta.episodes import Episode

__all__ = ["split_labelled", "semisup_episodes", "check_semisup", "UNLABELLED_FIELDS"]

#: The image fields of ``Episode.aux`` that :func:`semisup_episodes` fills (for augmentation).
UNLABELLED_FIELDS = ("unlabelled_x",)


def _is_tracer(a) -> bool:
    return isinstance(a, jax.core.Tracer)


def split_labelled(key: jax.Array, data, *, labelled_fraction: float = 0.5) -> Tuple[jax.Array, jax.Array]:
    """Splits each class's examples once into a labelled and an unlabelled pool.

    Every class gets its own random permutation (from ``key``); the first
    ``L = round(labelled_fraction * M)`` examples of it form the labelled pool,
    the other ``M - L`` the unlabelled pool. Splits are per example within a
    class: the two pools hold the same classes, never the same example.

    Args:
      key: PRNG key; the same key gives the same split.
      data: ``[C, M, ...]`` class-major examples (every class holds ``M``).
      labelled_fraction: the fraction of each class that is labelled, in
        ``(0, 1)``; ``L`` must come out between 1 and ``M - 1``.

    Returns:
      ``(labelled [C, L, ...], unlabelled [C, M - L, ...])``.

    Raises:
      ValueError: ``data`` is not class-major, or the fraction leaves a pool empty.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> data = jnp.arange(3 * 20, dtype=jnp.float32).reshape(3, 20, 1)
      >>> lab, unl = split_labelled(jax.random.key(0), data, labelled_fraction=0.5)
      >>> lab.shape, unl.shape
      ((3, 10, 1), (3, 10, 1))
    """
    shape = np.shape(data)
    if len(shape) < 2:
        raise ValueError(f"data: expected a class-major array [C, M, ...], got shape {tuple(shape)}.")
    per_class = int(shape[1])
    if not 0.0 < float(labelled_fraction) < 1.0:
        raise ValueError(f"labelled_fraction: expected a number in (0, 1), got {labelled_fraction}.")
    num_labelled = int(round(float(labelled_fraction) * per_class))
    if not 1 <= num_labelled <= per_class - 1:
        raise ValueError(
            f"labelled_fraction={labelled_fraction} of {per_class} examples per class gives {num_labelled} labelled "
            f"and {per_class - num_labelled} unlabelled; both pools need at least one example. "
            "Choose a fraction nearer 0.5."
        )
    data = jnp.asarray(data)
    order = jnp.argsort(jax.random.uniform(key, shape[:2]), axis=1)  # [C, M] a permutation per class
    rows = jnp.arange(shape[0])[:, None]
    return data[rows, order[:, :num_labelled]], data[rows, order[:, num_labelled:]]


def check_semisup(labelled_shape, unlabelled_shape, *, ways: int, shots: int, queries: int,
                  unlabelled_per_class: int, distractors: int) -> None:
    """Validates a semi-supervised sampling request before anything is compiled.

    Raises ``ValueError`` naming the argument: more classes than the data
    holds, more shots + queries than the labelled pool, more unlabelled
    examples than the unlabelled pool, pools of different classes, ...

    Example:
      >>> check_semisup((20, 10, 28, 28), (20, 10, 28, 28), ways=5, shots=1, queries=5,
      ...               unlabelled_per_class=5, distractors=5)
      >>> check_semisup((8, 10, 28, 28), (8, 10, 28, 28), ways=5, shots=1, queries=5,
      ...               unlabelled_per_class=5, distractors=5)
      Traceback (most recent call last):
      ...
      ValueError: ways + distractors = 10 classes are more than the 8 classes in the data; ...
    """
    if len(labelled_shape) < 2 or len(unlabelled_shape) < 2:
        raise ValueError(f"labelled, unlabelled: expected class-major arrays [C, L, ...] and [C, M, ...], got shapes "
                         f"{tuple(labelled_shape)} and {tuple(unlabelled_shape)}.")
    if labelled_shape[0] != unlabelled_shape[0] or tuple(labelled_shape[2:]) != tuple(unlabelled_shape[2:]):
        raise ValueError(f"unlabelled: expected the same classes and example shape as labelled {tuple(labelled_shape)}, "
                         f"got {tuple(unlabelled_shape)}; build both with split_labelled.")
    for name, value, low in (("ways", ways, 1), ("shots", shots, 1), ("queries", queries, 0),
                             ("unlabelled_per_class", unlabelled_per_class, 0), ("distractors", distractors, 0)):
        if int(value) != value or value < low:
            raise ValueError(f"{name}: expected an integer >= {low}, got {value}.")
    num_classes = int(labelled_shape[0])
    if ways + distractors > num_classes:
        raise ValueError(f"ways + distractors = {ways + distractors} classes are more than the {num_classes} classes in "
                         "the data; lower ways or distractors.")
    if shots + queries > labelled_shape[1]:
        raise ValueError(f"shots + queries = {shots + queries} is more than the {labelled_shape[1]} labelled examples "
                         "per class; support and query must be distinct labelled examples. Lower shots or queries, "
                         "or label a larger fraction (split_labelled).")
    if unlabelled_per_class > unlabelled_shape[1]:
        raise ValueError(f"unlabelled_per_class={unlabelled_per_class} is more than the {unlabelled_shape[1]} unlabelled "
                         "examples per class; lower it or label a smaller fraction (split_labelled).")


def _one_episode(key, labelled, unlabelled, ways, shots, queries, per_class, distractors):
    k_class, k_labelled, k_unlabelled, k_order = jax.random.split(key, 4)
    num_classes = labelled.shape[0]
    classes = jnp.argsort(jax.random.uniform(k_class, (num_classes,)))[: ways + distractors]
    task = classes[:ways]
    picks = jnp.argsort(jax.random.uniform(k_labelled, (ways, labelled.shape[1])), axis=1)[:, : shots + queries]
    chosen = labelled[task[:, None], picks]  # [N, K+Q, ...]
    tail = labelled.shape[2:]
    support_x = chosen[:, :shots].reshape((ways * shots,) + tail)
    query_x = chosen[:, shots:].reshape((ways * queries,) + tail)
    labels = jnp.arange(ways, dtype=jnp.int32)

    total = (ways + distractors) * per_class
    upicks = jnp.argsort(jax.random.uniform(k_unlabelled, (ways + distractors, unlabelled.shape[1])), axis=1)
    ux = unlabelled[classes[:, None], upicks[:, :per_class]].reshape((total,) + tail)
    uclass = jnp.concatenate([jnp.repeat(labels, per_class), jnp.full((distractors * per_class,), -1, jnp.int32)])
    order = jax.random.permutation(k_order, total)
    aux = {"unlabelled_x": ux[order], "unlabelled_mask": jnp.ones((total,), jnp.float32),
           "unlabelled_class": uclass[order]}
    return Episode(support_x, jnp.repeat(labels, shots), query_x, jnp.repeat(labels, queries), aux=aux)


def semisup_episodes(
    key: jax.Array,
    labelled: jax.Array,
    unlabelled: jax.Array,
    *,
    num_tasks: int,
    ways: int,
    shots: int,
    queries: int,
    unlabelled_per_class: int,
    distractors: int = 0,
) -> Episode:
    """A batch of semi-supervised N-way K-shot episodes with D distractor classes (jit-able).

    Args:
      key: PRNG key; the same key gives the same episodes.
      labelled: ``[C, L, ...]`` labelled pool (from :func:`split_labelled`).
      unlabelled: ``[C, M', ...]`` unlabelled pool of the same classes.
      num_tasks: ``E`` episodes.
      ways, shots, queries: ``N``, ``K``, ``Q`` (queries per class), drawn
        from the labelled pool (support and query distinct).
      unlabelled_per_class: ``M``, unlabelled examples per task class and per
        distractor class (0 gives an empty unlabelled set).
      distractors: ``D`` extra classes whose examples appear only in the
        unlabelled set.

    Returns:
      :class:`~jaxmeta.Episode` with ``support_x [E, N*K, ...]``,
      ``support_y [E, N*K]`` (``int32`` in ``[0, N)``), ``query_x [E, N*Q, ...]``,
      ``query_y [E, N*Q]`` and ``aux`` = ``{"unlabelled_x": [E, U, ...],
      "unlabelled_mask": [E, U], "unlabelled_class": [E, U]}`` with
      ``U = (N + D) * M`` (see the module docstring).

    Raises:
      ValueError: an impossible request (see :func:`check_semisup`).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> data = jnp.arange(20 * 20, dtype=jnp.float32).reshape(20, 20, 1)
      >>> lab, unl = split_labelled(jax.random.key(0), data)
      >>> eps = semisup_episodes(jax.random.key(1), lab, unl, num_tasks=4, ways=5, shots=1, queries=5,
      ...                        unlabelled_per_class=5, distractors=5)
      >>> eps.support_x.shape, eps.query_y.shape, eps.aux["unlabelled_x"].shape
      ((4, 5, 1), (4, 25), (4, 50, 1))
    """
    labelled, unlabelled = jnp.asarray(labelled), jnp.asarray(unlabelled)
    ways, shots, queries = int(ways), int(shots), int(queries)
    per_class, distractors = int(unlabelled_per_class), int(distractors)
    check_semisup(labelled.shape, unlabelled.shape, ways=ways, shots=shots, queries=queries,
                  unlabelled_per_class=per_class, distractors=distractors)
    if int(num_tasks) != num_tasks or num_tasks < 1:
        raise ValueError(f"num_tasks: expected a positive integer, got {num_tasks}.")
    if not _is_tracer(labelled) and not jnp.issubdtype(labelled.dtype, jnp.floating):
        raise TypeError(f"labelled: expected floating-point examples, got {labelled.dtype}; convert with .astype.")
    keys = jax.random.split(key, int(num_tasks))
    return jax.vmap(lambda k: _one_episode(k, labelled, unlabelled, ways, shots, queries, per_class,
                                           distractors))(keys)
