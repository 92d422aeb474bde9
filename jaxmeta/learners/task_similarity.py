"""Task embeddings, similarity between tasks, and warm starts from the nearest known tasks.

A *task embedding* maps an episode's support set to a fixed-size vector
``[T]``; a *similarity* compares such vectors; a :class:`TaskBank` keeps, for
known tasks, their embeddings and the parameters a learner reached on them.
:func:`warm_start` wraps a gradient-based learner (MAML family, Reptile) so
that a new task's inner loop starts from a similarity-weighted combination of
the nearest known tasks' parameters instead of the meta-initialisation.

Three embeddings, from hand-made to learned:

* :func:`moment_embedding`: means and second moments of the (optionally
  embedded) support inputs together with their float targets; the
  cross-moments ``E[x y]`` tell which inputs drive the target.
* :func:`gradient_embedding`: the support loss's gradient at the
  meta-initialisation (tasks that pull the initialisation the same way are
  alike; Task2Vec-like, for any network).
* any learned set encoder, e.g. a neural process's ``adapt(...)["r"]``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxmeta.episodes import Episode, episode_batch_size
from jaxmeta.learners.base import MetaLearner
from jaxmeta.learners.neural_process import masked_set_mean
from jaxmeta.losses import masked_mean

__all__ = [
    "moment_embedding",
    "gradient_embedding",
    "task_similarity",
    "TaskBank",
    "task_bank",
    "build_task_bank",
    "nearest_tasks",
    "warm_start",
]

_METRICS = ("cosine", "euclidean")


def moment_embedding(episode: Episode, *, feature_fn: Optional[Callable] = None,
                     second_moments: bool = True) -> jax.Array:
    """A task vector from the moments of the support set: ``[T]``.

    Every support example becomes ``z = [f(x), y]`` (``f`` = ``feature_fn`` or
    flattening; ``y`` is appended for float targets only, since class ids are
    arbitrary per episode). The embedding is the masked mean of ``z`` and, with
    ``second_moments``, the masked mean of the upper triangle (diagonal
    included) of ``z z^T``. Invariant to the order of the support examples and
    to padding (``support_mask``).

    Args:
      episode: one (unbatched) episode.
      feature_fn: optional ``x [S, ...] -> [S, D]`` (e.g. a trained embedding
        network with its params bound).
      second_moments: include the second moments.

    Returns:
      ``[D']`` with ``D' = d + d(d+1)/2`` (or ``d``), ``d`` the size of ``z``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxmeta import Episode
      >>> ep = Episode(jnp.array([[1.0], [3.0]]), jnp.array([[2.0], [6.0]]), jnp.zeros((1, 1)), jnp.zeros((1, 1)))
      >>> moment_embedding(ep)   # E[x], E[y], E[x^2], E[xy], E[y^2]
      Array([ 2.,  4.,  5., 10., 20.], dtype=float32)
    """
    if not isinstance(episode, Episode):
        raise TypeError(f"episode: expected a jaxmeta.Episode, got {type(episode).__name__}.")
    x = episode.support_x
    f = feature_fn(x) if feature_fn is not None else x
    f = f.reshape(f.shape[0], -1)
    y = episode.support_y
    if jnp.issubdtype(y.dtype, jnp.floating):
        f = jnp.concatenate([f, y.reshape(y.shape[0], -1).astype(f.dtype)], axis=-1)
    parts = [masked_set_mean(f, episode.support_mask)]
    if second_moments:
        rows, cols = jnp.triu_indices(f.shape[-1])
        parts.append(masked_set_mean(f[:, rows] * f[:, cols], episode.support_mask))
    return jnp.concatenate(parts)


def gradient_embedding(apply_fn: Callable, loss_fn: Callable, params: Any, episode: Episode) -> jax.Array:
    """The flattened gradient of the mean support loss at ``params``: ``[P]``.

    Args:
      apply_fn: ``apply(params, x)`` of the network (``net.apply``).
      loss_fn: per-example loss ``(outputs, targets) -> [B]``.
      params: where to take the gradient (e.g. the meta-initialisation
        ``meta_params["net"]``).
      episode: one (unbatched) episode; only its support set is used.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxmeta import Episode, losses, nets
      >>> net = nets.mlp((4,), 1)
      >>> ep = Episode(jnp.ones((3, 1)), jnp.ones((3, 1)), jnp.ones((2, 1)), jnp.ones((2, 1)))
      >>> gradient_embedding(net.apply, losses.squared_error, net.init(jax.random.key(0), ep.support_x), ep).shape
      (13,)
    """
    def support_loss(p):
        return masked_mean(loss_fn(apply_fn(p, episode.support_x), episode.support_y), episode.support_mask)

    return ravel_pytree(jax.grad(support_loss)(params))[0]


def task_similarity(a: jax.Array, b: jax.Array, *, metric: str = "cosine") -> jax.Array:
    """Similarity of task vectors ``a [..., T]`` and ``b [..., T]`` (broadcast): higher is more similar.

    ``"cosine"``: cosine similarity in ``[-1, 1]``; ``"euclidean"``: the
    negative squared Euclidean distance.

    Example:
      >>> import jax.numpy as jnp
      >>> task_similarity(jnp.array([1.0, 0.0]), jnp.array([[2.0, 0.0], [0.0, 1.0]]))
      Array([1., 0.], dtype=float32)
    """
    if metric not in _METRICS:
        raise ValueError(f"metric: expected one of {_METRICS}, got {metric!r}.")
    a, b = jnp.asarray(a), jnp.asarray(b)
    if a.shape[-1:] != b.shape[-1:]:
        raise ValueError(f"task vectors must have the same size T, got {a.shape} and {b.shape}.")
    if metric == "cosine":
        na = jnp.linalg.norm(a, axis=-1)
        nb = jnp.linalg.norm(b, axis=-1)
        return jnp.sum(a * b, axis=-1) / jnp.maximum(na * nb, 1e-12)
    return -jnp.sum(jnp.square(a - b), axis=-1)


class TaskBank(NamedTuple):
    """Known tasks: their embeddings and the parameters reached on them.

    Attributes:
      embeddings: ``[B, T]`` task vectors.
      params: a pytree whose leaves carry a leading ``[B]`` axis (e.g. stacked
        adapted network params).
      center: ``[T]`` subtracted from every embedding before comparing.
      scale: ``[T]`` divides every centred embedding (standardisation, so that
        no moment dominates the similarity by its units).
      standardized: ``[B, T]`` the bank's embeddings after centring and scaling,
        and ``sq_norms`` ``[B]`` their squared norms: computed once by
        :func:`task_bank`, so that compiled code that closes over a bank only
        compares the new task against them (no large constant arithmetic left
        for the compiler to fold on every compilation).

    Build one with :func:`task_bank`.

    Example:
      >>> import jax.numpy as jnp
      >>> bank = task_bank(jnp.array([[0.0, 1.0], [2.0, 3.0]]), {"w": jnp.zeros((2, 4))})
      >>> bank.standardized.tolist(), bank.sq_norms.tolist()
      ([[-1.0, -1.0], [1.0, 1.0]], [2.0, 2.0])
    """

    embeddings: jax.Array
    params: Any
    center: jax.Array
    scale: jax.Array
    standardized: jax.Array
    sq_norms: jax.Array


def task_bank(embeddings: jax.Array, params: Any, *, standardize: bool = True) -> TaskBank:
    """Builds a :class:`TaskBank`, checking that every params leaf has ``B`` rows.

    Args:
      embeddings: ``[B, T]`` task vectors of the known tasks.
      params: pytree of stacked params ``[B, ...]``.
      standardize: compare embeddings after centring and scaling each
        coordinate by the bank's mean and standard deviation.

    Example:
      >>> import jax.numpy as jnp
      >>> bank = task_bank(jnp.eye(3), {"w": jnp.arange(3.0)})
      >>> bank.embeddings.shape, bank.center.shape
      ((3, 3), (3,))
    """
    embeddings = jnp.asarray(embeddings)
    if embeddings.ndim != 2 or embeddings.shape[0] < 1:
        raise ValueError(f"embeddings: expected [B, T] with B >= 1 known tasks, got shape {embeddings.shape}.")
    n = embeddings.shape[0]
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != n:
            raise ValueError(f"params{jax.tree_util.keystr(path)}: expected a leading axis of {n} (one row per "
                             f"known task), got shape {jnp.shape(leaf)}.")
    if standardize:
        center = embeddings.mean(axis=0)
        scale = jnp.where(embeddings.std(axis=0) > 1e-8, embeddings.std(axis=0), 1.0)
    else:
        center, scale = jnp.zeros(embeddings.shape[1]), jnp.ones(embeddings.shape[1])
    standardized = (embeddings - center) / scale
    return TaskBank(embeddings, params, center, scale, standardized, jnp.sum(standardized * standardized, axis=1))


def build_task_bank(learner: MetaLearner, meta_params: Any, episodes: Episode, embed_fn: Callable, *,
                    key: jax.Array, batch_size: int = 100,
                    standardize: bool = True) -> TaskBank:
    """Adapts ``learner`` to every known episode and stores the results with their embeddings.

    The stored params are ``adapt``'s output: for the MAML family, the same
    pytree as ``meta_params["net"]``, which is what :func:`warm_start` replaces.

    Args:
      learner: the learner whose ``adapt`` produces the stored params (e.g. a
        MAML learner with many inner steps on the known tasks' larger support sets).
      meta_params: its meta-parameters.
      episodes: the known tasks, a batch with a leading ``E`` axis.
      embed_fn: ``episode -> [T]``, the task embedding (applied to each episode).
      key: PRNG key for ``adapt``.
      batch_size: episodes per compiled call.
      standardize: see :func:`task_bank`.

    Example:
      >>> import jax
      >>> from jaxmeta import learners, losses, nets, scenarios
      >>> maml = learners.maml(nets.mlp((8,), 1), losses.squared_error, inner_steps=2)
      >>> known = scenarios.sinusoid(jax.random.key(0), num_tasks=10, support_shots=20, query_shots=5)
      >>> params = maml.init(jax.random.key(1), jax.tree_util.tree_map(lambda a: a[0], known))
      >>> bank = build_task_bank(maml, params, known, moment_embedding, key=jax.random.key(2))
      >>> bank.embeddings.shape, bank.params["head"]["bias"].shape
      ((10, 5), (10, 1))
    """
    total = episode_batch_size(episodes)
    batch_size = max(1, min(int(batch_size), total))

    @jax.jit
    def run(chunk, keys):
        return jax.vmap(lambda ep, k: (learner.adapt(meta_params, ep, k), embed_fn(ep)))(chunk, keys)

    keys = jax.random.split(key, total)
    params_out, emb_out = [], []
    for start in range(0, total, batch_size):
        idx = jnp.arange(start, start + batch_size) % total  # wrap the last chunk: one compiled shape
        chunk = jax.tree_util.tree_map(lambda a: a[idx], episodes)
        p, e = run(chunk, keys[idx])
        n = min(batch_size, total - start)
        params_out.append(jax.tree_util.tree_map(lambda a: a[:n], p))
        emb_out.append(e[:n])
    params = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *params_out)
    return task_bank(jnp.concatenate(emb_out), params, standardize=standardize)


def nearest_tasks(bank: TaskBank, embedding: jax.Array, *, k: int, metric: str = "cosine",
                  temperature: Optional[float] = 0.1):
    """The ``k`` most similar known tasks and their combination weights.

    Args:
      bank: the :class:`TaskBank`.
      embedding: ``[T]`` the new task's vector.
      k: how many neighbours (static).
      metric: see :func:`task_similarity`.
      temperature: weights are ``softmax(similarity / temperature)`` over the
        ``k`` neighbours; ``None`` gives equal weights.

    Returns:
      ``(indices [k], weights [k])``, most similar first; weights sum to 1.

    Example:
      >>> import jax.numpy as jnp
      >>> bank = task_bank(jnp.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]]), {"w": jnp.zeros(3)}, standardize=False)
      >>> idx, w = nearest_tasks(bank, jnp.array([1.0, 0.0]), k=2, temperature=None)
      >>> idx, w
      (Array([0, 2], dtype=int32), Array([0.5, 0.5], dtype=float32))
    """
    k = int(k)
    if not 1 <= k <= bank.embeddings.shape[0]:
        raise ValueError(f"k: expected 1 <= k <= {bank.embeddings.shape[0]} (the bank's size), got {k}.")
    if temperature is not None and not float(temperature) > 0:
        raise ValueError(f"temperature: expected a positive float or None, got {temperature}.")
    if jnp.shape(embedding) != bank.embeddings.shape[1:]:
        raise ValueError(f"embedding: expected shape {bank.embeddings.shape[1:]} like the bank's task vectors, "
                         f"got {jnp.shape(embedding)}; use the same embed_fn for the bank and new tasks.")
    if metric not in _METRICS:
        raise ValueError(f"metric: expected one of {_METRICS}, got {metric!r}.")
    # task_similarity against the bank's precomputed standardised embeddings
    query = (embedding - bank.center) / bank.scale
    dots = bank.standardized @ query
    query_sq = jnp.sum(query * query)
    if metric == "cosine":
        sims = dots / jnp.maximum(jnp.sqrt(bank.sq_norms * query_sq), 1e-12)
    else:
        sims = 2.0 * dots - bank.sq_norms - query_sq
    top, idx = jax.lax.top_k(sims, k)
    if temperature is None:
        weights = jnp.full((k,), 1.0 / k, sims.dtype)
    else:
        weights = jax.nn.softmax(top / float(temperature))
    return idx, weights


def warm_start(
    learner: MetaLearner,
    bank: TaskBank,
    embed_fn: Callable[[Episode], jax.Array],
    *,
    k: int = 5,
    metric: str = "cosine",
    temperature: Optional[float] = 0.1,
    mix: float = 1.0,
    param_key: str = "net",
) -> MetaLearner:
    """Wraps a gradient-based learner so that adaptation starts near the most similar known tasks.

    ``adapt(meta_params, episode, key)`` embeds the episode's support set with
    ``embed_fn``, finds the ``k`` nearest tasks of ``bank``
    (:func:`nearest_tasks`), forms ``start = mix * sum_j w_j params_j +
    (1 - mix) * meta_params[param_key]`` and runs the wrapped learner's
    ``adapt`` from ``start`` (its inner loop, unchanged). ``init``, ``loss``
    and ``predict`` are the wrapped learner's. With ``mix=0`` this is exactly
    the wrapped learner.

    Args:
      learner: a learner whose ``meta_params[param_key]`` is the inner loop's
        starting point (``maml``, ``fomaml``, ``meta_sgd``, ``anil``, ``reptile``).
      bank: known tasks; ``bank.params`` has the structure of
        ``meta_params[param_key]`` with a leading ``[B]`` axis.
      embed_fn: ``episode -> [T]``, the same embedding as used for the bank.
      k, metric, temperature: see :func:`nearest_tasks`.
      mix: how far to move from the meta-initialisation towards the neighbours
        (``1``: start at their combination).
      param_key: where the starting parameters live in ``meta_params``.

    Returns:
      A :class:`MetaLearner`.

    Example:
      >>> import jax
      >>> from jaxmeta import learners, losses, nets, scenarios
      >>> maml = learners.maml(nets.mlp((8,), 1), losses.squared_error, inner_steps=2)
      >>> known = scenarios.sinusoid(jax.random.key(0), num_tasks=10, support_shots=20, query_shots=5)
      >>> params = maml.init(jax.random.key(1), jax.tree_util.tree_map(lambda a: a[0], known))
      >>> bank = build_task_bank(maml, params, known, moment_embedding, key=jax.random.key(2))
      >>> warm = warm_start(maml, bank, moment_embedding, k=3)
      >>> new = jax.tree_util.tree_map(lambda a: a[0], scenarios.sinusoid(
      ...     jax.random.key(3), num_tasks=1, support_shots=5, query_shots=5))
      >>> loss, _ = warm.loss(params, warm.adapt(params, new, jax.random.key(4)), new)
    """
    if not isinstance(learner, MetaLearner):
        raise TypeError(f"learner: expected a jaxmeta MetaLearner, got {type(learner).__name__}.")
    if not isinstance(bank, TaskBank):
        raise TypeError(f"bank: expected a TaskBank (see task_bank / build_task_bank), got {type(bank).__name__}.")
    if metric not in _METRICS:
        raise ValueError(f"metric: expected one of {_METRICS}, got {metric!r}.")
    mix = float(mix)
    if not 0.0 <= mix <= 1.0:
        raise ValueError(f"mix: expected a float in [0, 1], got {mix}.")
    k = int(k)
    if not 1 <= k <= bank.embeddings.shape[0]:
        raise ValueError(f"k: expected 1 <= k <= {bank.embeddings.shape[0]} (the bank's size), got {k}.")

    def adapt(meta_params, episode, key):
        if not isinstance(meta_params, dict) or param_key not in meta_params:
            raise ValueError(f"param_key={param_key!r}: the learner's meta_params must be a dict with the inner "
                             f"loop's starting params under that key, got keys {list(meta_params)}.")
        embedding = jax.lax.stop_gradient(embed_fn(episode))
        idx, weights = nearest_tasks(bank, embedding, k=k, metric=metric, temperature=temperature)
        neighbours = jax.tree_util.tree_map(lambda p: jnp.tensordot(weights, p[idx], axes=1), bank.params)
        init = meta_params[param_key]
        if jax.tree_util.tree_structure(neighbours) != jax.tree_util.tree_structure(init):
            raise ValueError(f"bank.params: structure differs from meta_params[{param_key!r}]; store the params "
                             "the wrapped learner adapts (build_task_bank with the same learner).")
        start = jax.tree_util.tree_map(lambda n, p: mix * n + (1.0 - mix) * p, neighbours, init)
        return learner.adapt({**meta_params, param_key: start}, episode, key)

    return learner._replace(adapt=adapt)

