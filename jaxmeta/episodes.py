"""The data contract every learner and scenario agrees on: :class:`Episode`.

An episode is one few-shot task: a support set the learner adapts on and a
query set it is scored on. A *batch* of episodes is the same NamedTuple with a
leading ``E`` (episodes) axis on every leaf, which is what ``jax.vmap`` maps
over inside the compiled meta-step.

Shape letters used in comments throughout jaxmeta:
``E`` episodes, ``N`` ways, ``K`` shots, ``S`` support size (``N*K`` for
classification), ``Q`` query size, ``...`` the example shape.

:func:`validate_episode` is the single owner of the shape contract; scenarios,
samplers and the training loop call it on the host before anything is traced.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Episode", "validate_episode", "episode_batch_size", "stack_episodes", "take_episodes"]


class Episode(NamedTuple):
    """One few-shot task (or a batch of them with a leading ``E`` axis).

    Attributes:
      support_x: ``[S, ...]`` support inputs (floating point).
      support_y: ``[S]`` support targets: ``int32`` class ids in ``[0, N)`` for
        classification, or floats ``[S, ...]`` for regression.
      query_x: ``[Q, ...]`` query inputs, same example shape as ``support_x``.
      query_y: ``[Q]`` (or ``[Q, ...]``) query targets, same kind as ``support_y``.
      support_mask: optional ``[S]`` weights in ``{0, 1}``; ``0`` marks padding
        so that tasks of different sizes share one static shape. ``None``
        means every example is real.
      query_mask: optional ``[Q]`` weights, as ``support_mask``.
      aux: optional pytree of extra per-task arrays a scenario provides and a
        learner may use (an unlabelled set, a task description, ...). Learners
        that do not know a field ignore it.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxmeta import Episode, validate_episode
      >>> ep = Episode(jnp.zeros((5, 1)), jnp.zeros((5, 1)), jnp.zeros((10, 1)), jnp.zeros((10, 1)))
      >>> validate_episode(ep)
      Episode(...)
    """

    support_x: Any
    support_y: Any
    query_x: Any
    query_y: Any
    support_mask: Any = None
    query_mask: Any = None
    aux: Any = None

    def __repr__(self) -> str:  # short, shape-only repr (arrays can be large)
        return "Episode(...)"


def _shape(a) -> tuple:
    return tuple(np.shape(a))


def _is_concrete(a) -> bool:
    return not isinstance(a, jax.core.Tracer)


def episode_batch_size(episodes: Episode) -> int:
    """Number of episodes ``E`` in a batched :class:`Episode`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxmeta import Episode
      >>> eps = Episode(jnp.zeros((4, 5, 1)), jnp.zeros((4, 5, 1)), jnp.zeros((4, 3, 1)), jnp.zeros((4, 3, 1)))
      >>> episode_batch_size(eps)
      4
    """
    shape = _shape(episodes.support_x)
    if not shape:
        raise ValueError("episodes.support_x is a scalar; a batch needs a leading E axis.")
    return shape[0]


def validate_episode(
    episode: Episode,
    *,
    batched: bool = False,
    num_ways: Optional[int] = None,
    task: Optional[str] = None,
    check_values: bool = True,
) -> Episode:
    """Checks an episode (or a batch) against the shape contract and returns it.

    Runs on the host, before anything is traced: shapes and dtypes are always
    checked; values (NaN/inf inputs, labels in range) are checked when the
    arrays are concrete and ``check_values`` is true.

    Args:
      episode: the :class:`Episode` to check.
      batched: whether every leaf carries a leading ``E`` axis.
      num_ways: for classification, labels must lie in ``[0, num_ways)``.
      task: ``"classification"`` (integer labels), ``"regression"`` (float
        targets) or ``None`` to infer it from the label dtype.
      check_values: also scan concrete arrays for NaN/inf and label range.

    Returns:
      The same episode, so calls can be chained.

    Raises:
      TypeError: an argument is not an Episode, a field is not an array, or a
        dtype is wrong (integer inputs, float labels for classification, ...).
      ValueError: shapes disagree, inputs hold NaN/inf, or labels are out of
        range. The message names the field and says what was expected.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxmeta import Episode, validate_episode
      >>> ep = Episode(jnp.zeros((10, 28, 28, 1)), jnp.arange(10) % 5,
      ...              jnp.zeros((15, 28, 28, 1)), jnp.arange(15) % 5)
      >>> _ = validate_episode(ep, num_ways=5)
    """
    if not isinstance(episode, Episode):
        raise TypeError(
            f"episode: expected a jaxmeta.Episode, got {type(episode).__name__}. "
            "Build one with Episode(support_x, support_y, query_x, query_y)."
        )
    lead = 1 if batched else 0
    names = ("support_x", "support_y", "query_x", "query_y")
    for name in names:
        value = getattr(episode, name)
        if not hasattr(value, "shape") or not hasattr(value, "dtype"):
            raise TypeError(f"episode.{name}: expected an array, got {type(value).__name__}.")
    sx, sy, qx, qy = (_shape(getattr(episode, n)) for n in names)
    where = "batched " if batched else ""
    for name, shape in zip(names, (sx, sy, qx, qy)):
        if len(shape) < lead + 1:
            raise ValueError(
                f"episode.{name}: expected at least {lead + 1} axes for a {where}episode "
                f"({'[E, ' if batched else '['}{'S' if 'support' in name else 'Q'}, ...]), got shape {shape}."
            )
    if batched:
        sizes = {n: s[0] for n, s in zip(names, (sx, sy, qx, qy))}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"episode: every field needs the same leading episode axis E, got {sizes}.")
    if sx[: lead + 1] != sy[: lead + 1]:
        raise ValueError(
            f"episode.support_y: expected {sx[: lead + 1]} leading axes to match support_x {sx}, got {sy}."
        )
    if qx[: lead + 1] != qy[: lead + 1]:
        raise ValueError(
            f"episode.query_y: expected {qx[: lead + 1]} leading axes to match query_x {qx}, got {qy}."
        )
    if sx[lead + 1 :] != qx[lead + 1 :]:
        raise ValueError(
            f"episode.query_x: example shape {qx[lead + 1:]} differs from support_x's {sx[lead + 1:]}; "
            "support and query examples must have the same shape."
        )
    if sy[lead + 1 :] != qy[lead + 1 :]:
        raise ValueError(
            f"episode.query_y: target shape {qy[lead + 1:]} differs from support_y's {sy[lead + 1:]}."
        )
    for name in ("support_x", "query_x"):
        dtype = getattr(episode, name).dtype
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"episode.{name}: expected a floating dtype (float32/bfloat16/float64), got {dtype}. "
                "Convert with .astype(jnp.float32)."
            )
    ydt = episode.support_y.dtype
    if episode.query_y.dtype != ydt:
        raise TypeError(f"episode.query_y: dtype {episode.query_y.dtype} differs from support_y's {ydt}.")
    is_int = jnp.issubdtype(ydt, jnp.integer)
    if task is None:
        task = "classification" if is_int else "regression"
    if task == "classification":
        if not is_int:
            raise TypeError(f"episode.support_y: classification needs integer labels, got {ydt}.")
        if len(sy) != lead + 1:
            raise ValueError(f"episode.support_y: classification labels must be [{'E, ' if batched else ''}S], got {sy}.")
    elif task == "regression":
        if not jnp.issubdtype(ydt, jnp.floating):
            raise TypeError(f"episode.support_y: regression needs floating targets, got {ydt}.")
    else:
        raise ValueError(f"task: expected 'classification', 'regression' or None, got {task!r}.")
    for name, size_name in (("support_mask", "support_x"), ("query_mask", "query_x")):
        mask = getattr(episode, name)
        if mask is None:
            continue
        want = _shape(getattr(episode, size_name))[: lead + 1]
        if _shape(mask) != want:
            raise ValueError(f"episode.{name}: expected shape {want} (one weight per example), got {_shape(mask)}.")
    if num_ways is not None and task == "classification":
        if int(num_ways) < 1:
            raise ValueError(f"num_ways: expected a positive integer, got {num_ways}.")
    if check_values:
        for name in ("support_x", "query_x", "support_y", "query_y"):
            value = getattr(episode, name)
            if not _is_concrete(value) or not jnp.issubdtype(value.dtype, jnp.floating):
                continue
            arr = np.asarray(value, dtype=np.float32)
            if not np.isfinite(arr).all():
                bad = int((~np.isfinite(arr)).sum())
                raise ValueError(
                    f"episode.{name}: holds {bad} NaN/inf value(s); clean or impute them "
                    "(or mark padded examples with a mask and fill them with zeros)."
                )
        if num_ways is not None and task == "classification":
            for name in ("support_y", "query_y"):
                value = getattr(episode, name)
                if not _is_concrete(value):
                    continue
                arr = np.asarray(value)
                mask = getattr(episode, name.replace("_y", "_mask"))
                if mask is not None and _is_concrete(mask):
                    arr = arr[np.asarray(mask) > 0]
                if arr.size and (arr.min() < 0 or arr.max() >= num_ways):
                    raise ValueError(
                        f"episode.{name}: labels must lie in [0, {num_ways}) for a {num_ways}-way task, "
                        f"got values in [{arr.min()}, {arr.max()}]. Remap labels per episode to 0..N-1."
                    )
    return episode


def stack_episodes(episodes) -> Episode:
    """Stacks a list of unbatched episodes into one batch with a leading ``E`` axis.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxmeta import Episode
      >>> ep = Episode(jnp.zeros((5, 1)), jnp.zeros((5, 1)), jnp.zeros((3, 1)), jnp.zeros((3, 1)))
      >>> stack_episodes([ep, ep]).support_x.shape
      (2, 5, 1)
    """
    episodes = list(episodes)
    if not episodes:
        raise ValueError("episodes: expected at least one episode to stack, got none.")
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *episodes)


def take_episodes(episodes: Episode, index) -> Episode:
    """Selects episodes ``index`` (an int or a slice) from a batch.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxmeta import Episode
      >>> eps = Episode(jnp.zeros((4, 5, 1)), jnp.zeros((4, 5, 1)), jnp.zeros((4, 3, 1)), jnp.zeros((4, 3, 1)))
      >>> take_episodes(eps, 0).support_x.shape
      (5, 1)
    """
    return jax.tree_util.tree_map(lambda a: a[index], episodes)
