"""N-way K-shot Q-query classification episodes from a class-major array.

The data set is one array ``data [C, M, ...]``: ``C`` classes, up to ``M``
examples each (``counts [C]`` when classes have fewer than ``M``; the rest is
padding). An episode draws ``N`` distinct classes, then ``K + Q`` distinct
examples of each (support and query never share an example), and relabels the
classes ``0 .. N-1`` in the order drawn.

Two samplers give the same distribution:

* :func:`fewshot_episodes` -- pure JAX, so it runs inside the compiled
  training loop with the whole data set resident on the device;
* :func:`fewshot_episodes_numpy` -- NumPy on the host, for data that does not
  fit on the device or for host-side pipelines.

With ``groups`` (e.g. the alphabet of each character) and
``within_group=True``, all ``N`` classes of an episode come from one group (the
harder within-alphabet Omniglot task).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxmeta.episodes import Episode

__all__ = ["fewshot_episodes", "fewshot_episodes_numpy", "check_fewshot", "numpy_rng"]


def check_fewshot(data_shape, *, ways: int, shots: int, queries: int, counts=None, groups=None,
                  within_group: bool = False) -> None:
    """Validates a sampling request against the data, before anything is compiled.

    Raises ``ValueError`` naming the argument: more ways than classes, more
    shots + queries than examples per class, an empty group, ...

    Example:
      >>> check_fewshot((10, 20, 28, 28), ways=5, shots=1, queries=15)
      >>> check_fewshot((10, 20, 28, 28), ways=20, shots=1, queries=15)
      Traceback (most recent call last):
      ...
      ValueError: ways=20 is more than the 10 classes in the data; ...
    """
    if len(data_shape) < 2:
        raise ValueError(f"data: expected a class-major array [C, M, ...], got shape {tuple(data_shape)}.")
    num_classes, per_class = int(data_shape[0]), int(data_shape[1])
    for name, value, low in (("ways", ways, 1), ("shots", shots, 1), ("queries", queries, 0)):
        if int(value) != value or value < low:
            raise ValueError(f"{name}: expected an integer >= {low}, got {value}.")
    if ways > num_classes:
        raise ValueError(f"ways={ways} is more than the {num_classes} classes in the data; ask for at most "
                         f"{num_classes} ways or use a larger split.")
    smallest = per_class
    if counts is not None:
        counts = np.asarray(counts)
        if counts.shape != (num_classes,):
            raise ValueError(f"counts: expected one count per class, shape ({num_classes},), got {counts.shape}.")
        if counts.max() > per_class or counts.min() < 0:
            raise ValueError(f"counts: values must lie in [0, {per_class}] (the padded M), got [{counts.min()}, {counts.max()}].")
        smallest = int(counts.min())
    if shots + queries > smallest:
        raise ValueError(
            f"shots + queries = {shots + queries} is more than the {smallest} examples the smallest class holds; "
            "support and query must be distinct examples. Lower shots or queries."
        )
    if within_group:
        if groups is None:
            raise ValueError("within_group=True needs groups (e.g. the alphabet id of each class).")
        groups = np.asarray(groups)
        if groups.shape != (num_classes,):
            raise ValueError(f"groups: expected one group id per class, shape ({num_classes},), got {groups.shape}.")
        sizes = np.bincount(groups)
        if sizes.max() < ways:
            raise ValueError(f"within_group: no group has {ways} classes (largest has {sizes.max()}); ask for "
                             "fewer ways or sample across groups.")


def numpy_rng(key: jax.Array) -> np.random.Generator:
    """A NumPy generator seeded from a JAX key (host samplers take keys like everything else).

    Example:
      >>> import jax
      >>> bool(numpy_rng(jax.random.key(0)).integers(10) == numpy_rng(jax.random.key(0)).integers(10))
      True
    """
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).astype(np.uint64).tolist())


def _one_episode(key, data, counts, group_of, num_groups, group_ok, ways, shots, queries):
    k_group, k_class, k_examples = jax.random.split(key, 3)
    num_classes, per_class = data.shape[0], data.shape[1]
    class_scores = jax.random.uniform(k_class, (num_classes,))
    if group_of is not None:
        # a group with at least `ways` classes, uniformly; then classes within it
        group_scores = jnp.where(group_ok, jax.random.uniform(k_group, (num_groups,)), 2.0)
        group = jnp.argmin(group_scores)
        class_scores = jnp.where(group_of == group, class_scores, 2.0)
    classes = jnp.argsort(class_scores)[:ways]
    scores = jax.random.uniform(k_examples, (ways, per_class))
    if counts is not None:
        scores = jnp.where(jnp.arange(per_class)[None, :] < counts[classes][:, None], scores, 2.0)
    picks = jnp.argsort(scores, axis=1)[:, : shots + queries]
    chosen = data[classes[:, None], picks]  # [N, K+Q, ...]
    tail = data.shape[2:]
    support_x = chosen[:, :shots].reshape((ways * shots,) + tail)
    query_x = chosen[:, shots:].reshape((ways * queries,) + tail)
    labels = jnp.arange(ways, dtype=jnp.int32)
    return Episode(support_x, jnp.repeat(labels, shots), query_x, jnp.repeat(labels, queries))


def fewshot_episodes(
    key: jax.Array,
    data: jax.Array,
    *,
    num_tasks: int,
    ways: int,
    shots: int,
    queries: int,
    counts: Optional[jax.Array] = None,
    groups: Optional[jax.Array] = None,
    within_group: bool = False,
) -> Episode:
    """A batch of N-way K-shot episodes, sampled with ``jax.random`` (jit-able).

    Args:
      key: PRNG key; the same key gives the same episodes.
      data: ``[C, M, ...]`` class-major examples (a device array).
      num_tasks: ``E`` episodes.
      ways, shots, queries: ``N``, ``K``, ``Q`` (queries per class).
      counts: optional ``[C]`` number of real examples per class.
      groups: optional ``[C]`` group id per class (e.g. alphabet).
      within_group: draw all ``N`` classes from one group.

    Returns:
      :class:`~jaxmeta.Episode` with ``support_x [E, N*K, ...]``,
      ``support_y [E, N*K]`` (``int32`` in ``[0, N)``), ``query_x [E, N*Q, ...]``,
      ``query_y [E, N*Q]``; examples are ordered by class.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> data = jnp.arange(10 * 20, dtype=jnp.float32).reshape(10, 20, 1)
      >>> eps = fewshot_episodes(jax.random.key(0), data, num_tasks=4, ways=5, shots=1, queries=3)
      >>> eps.support_x.shape, eps.query_y.shape
      ((4, 5, 1), (4, 15))
    """
    data = jnp.asarray(data)
    if not isinstance(data, jax.core.Tracer):
        check_fewshot(data.shape, ways=ways, shots=shots, queries=queries,
                      counts=None if counts is None or isinstance(counts, jax.core.Tracer) else counts,
                      groups=None if groups is None or isinstance(groups, jax.core.Tracer) else groups,
                      within_group=within_group)
    group_of = num_groups = group_ok = None
    if within_group:
        group_of = jnp.asarray(groups, jnp.int32)
        num_groups = int(np.asarray(groups).max()) + 1 if not isinstance(groups, jax.core.Tracer) else data.shape[0]
        group_ok = jnp.bincount(group_of, length=num_groups) >= ways
    if counts is not None:
        counts = jnp.asarray(counts)
    keys = jax.random.split(key, int(num_tasks))
    return jax.vmap(lambda k: _one_episode(k, data, counts, group_of, num_groups, group_ok, ways, shots,
                                           queries))(keys)


def fewshot_episodes_numpy(
    key: jax.Array,
    data: np.ndarray,
    *,
    num_tasks: int,
    ways: int,
    shots: int,
    queries: int,
    counts: Optional[np.ndarray] = None,
    groups: Optional[np.ndarray] = None,
    within_group: bool = False,
) -> Episode:
    """The host (NumPy) twin of :func:`fewshot_episodes`: same arguments, same distribution.

    Returns NumPy arrays (transferred to the device by the jitted step that
    consumes them).

    Example:
      >>> import jax, numpy as np
      >>> data = np.arange(10 * 20, dtype=np.float32).reshape(10, 20, 1)
      >>> eps = fewshot_episodes_numpy(jax.random.key(0), data, num_tasks=4, ways=5, shots=1, queries=3)
      >>> eps.support_x.shape, eps.query_y.shape
      ((4, 5, 1), (4, 15))
    """
    check_fewshot(np.shape(data), ways=ways, shots=shots, queries=queries, counts=counts, groups=groups,
                  within_group=within_group)
    rng = numpy_rng(key)
    num_classes, per_class = data.shape[0], data.shape[1]
    tail = data.shape[2:]
    eligible = None
    if within_group:
        groups = np.asarray(groups)
        eligible = np.flatnonzero(np.bincount(groups) >= ways)
    sx = np.empty((num_tasks, ways * shots) + tail, data.dtype)
    qx = np.empty((num_tasks, ways * queries) + tail, data.dtype)
    for e in range(num_tasks):
        if within_group:
            group = rng.choice(eligible)
            classes = rng.choice(np.flatnonzero(groups == group), ways, replace=False)
        else:
            classes = rng.choice(num_classes, ways, replace=False)
        for n, c in enumerate(classes):
            available = per_class if counts is None else int(counts[c])
            picks = rng.choice(available, shots + queries, replace=False)
            sx[e, n * shots : (n + 1) * shots] = data[c, picks[:shots]]
            qx[e, n * queries : (n + 1) * queries] = data[c, picks[shots:]]
    labels = np.arange(ways, dtype=np.int32)
    sy = np.tile(np.repeat(labels, shots), (num_tasks, 1))
    qy = np.tile(np.repeat(labels, queries), (num_tasks, 1))
    return Episode(sx, sy, qx, qy)
