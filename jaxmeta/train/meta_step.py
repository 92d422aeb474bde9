"""One compiled meta-step for every learner.

``make_meta_step(learner, optimizer)`` returns ``step(state, episodes, key)``:
the episode batch is mapped (``vmap`` by default), each episode is adapted and
scored, the mean loss is differentiated with respect to the meta-parameters
and the optax update is applied -- all inside one ``jax.jit``.

``make_train_loop`` compiles many meta-steps *and* the episode sampling into
one call (``lax.scan`` over steps, sampling with ``jax.random`` on the
device; on CPU, a few calls of one compiled chunk of at most 16 steps), so a
training run needs no host round trip per step.
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jaxmeta.episodes import Episode, episode_batch_size, take_episodes, validate_episode
from jaxmeta.learners.base import MetaLearner

__all__ = [
    "MetaState",
    "BATCHING",
    "init_state",
    "map_episodes",
    "episode_metrics",
    "make_meta_step",
    "make_eval_step",
    "make_train_loop",
    "step_keys",
    "compiler_options",
]

BATCHING = ("vmap", "map", "unroll", "accumulate")
# meta-steps per compiled program on CPU (see make_train_loop's ``unroll``)
CPU_UNROLL_LIMIT = 16


class MetaState(NamedTuple):
    """Training state: a pytree, so it can be jitted, sharded and checkpointed as is.

    Attributes:
      params: the meta-parameters (``learner.init``'s output).
      opt_state: the outer optax optimizer's state.
      step: number of meta-steps taken (``int32`` scalar).

    Example:
      >>> import functools, jax, optax
      >>> from jaxmeta import learners, losses, nets, scenarios, train
      >>> learner = learners.maml(nets.mlp((8,)), losses.squared_error, inner_lr=0.01)
      >>> shapes = jax.eval_shape(functools.partial(scenarios.sinusoid, num_tasks=4, support_shots=5,
      ...                                            query_shots=5), jax.random.key(0))
      >>> state = train.init_state(learner, optax.adam(1e-3), jax.random.key(1), shapes)
      >>> int(state.step), sorted(state.params["net"])
      (0, ['head', 'hidden_0'])
    """

    params: Any
    opt_state: Any
    step: jax.Array


# XLA:CPU (jax 0.10) hands each convolution whose output is kept to YNNPACK as a fusion of its own,
# and YNNPACK runs that on one thread; without the convolution entry (the default list is
# INDIVIDUAL_DOT, INDIVIDUAL_CONVOLUTION, REDUCE), XLA's multi-threaded convolution runs it instead.
_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}


@functools.lru_cache(maxsize=None)
def _accepted_options(backend: str) -> tuple:
    if backend != "cpu" or "ynn_fusion_type" in os.environ.get("XLA_FLAGS", ""):
        return ()  # not XLA:CPU, or the user chose the YNNPACK fusions themselves
    try:
        x = jax.device_put(jnp.zeros(()), jax.devices("cpu")[0])
        jax.jit(lambda x: x + 1, compiler_options=_CPU_OPTIONS)(x).block_until_ready()
    except Exception as err:  # an XLA that no longer knows the option: compile without it
        warnings.warn(f"jaxmeta: XLA rejected its CPU compiler options {_CPU_OPTIONS} ({err}); compiling without "
                      "them (convolutions may run slower).", RuntimeWarning, stacklevel=3)
        return ()
    return tuple(_CPU_OPTIONS.items())


def compiler_options(backend: Optional[str] = None) -> dict:
    """The XLA options jaxmeta compiles its meta-steps with on ``backend`` (default: JAX's default backend).

    On CPU: keep convolutions off YNNPACK's single-threaded path. On jax 0.10,
    XLA:CPU hands each convolution whose output is kept (every convolution of
    a meta-step) to YNNPACK, which runs it on one thread; without it XLA's own
    convolution uses every core (layer 2 of the Omniglot Conv-4 reference:
    167 ms with YNNPACK, 92 ms without, on 2 cores; see benchmarks/README.md).
    Empty on other backends, when ``XLA_FLAGS`` already sets
    ``--xla_cpu_experimental_ynn_fusion_type`` (yours wins), and when this
    XLA rejects the option (a warning says so). :func:`make_meta_step`,
    :func:`make_eval_step` and :func:`make_train_loop` use it; pass it to your
    own ``jax.jit(..., compiler_options=...)`` to get the same.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> f = jax.jit(lambda x: x * 2, compiler_options=compiler_options() or None)
      >>> float(f(jnp.ones(())))
      2.0
      >>> compiler_options("gpu")
      {}
    """
    return dict(_accepted_options(backend or jax.default_backend()))


def _jit(fn, **kwargs):
    return jax.jit(fn, compiler_options=compiler_options() or None, **kwargs)


def _check_learner(learner) -> MetaLearner:
    if not isinstance(learner, MetaLearner):
        raise TypeError(f"learner: expected a jaxmeta MetaLearner, got {type(learner).__name__}.")
    return learner


def _check_optimizer(optimizer) -> optax.GradientTransformation:
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer: expected an optax.GradientTransformation, got {type(optimizer).__name__}.")
    return optimizer


def _check_batching(batching: str) -> str:
    if batching not in BATCHING:
        raise ValueError(f"batching: expected one of {BATCHING}, got {batching!r}.")
    return batching


def init_state(learner: MetaLearner, optimizer: optax.GradientTransformation, key: jax.Array,
               episodes: Episode) -> MetaState:
    """Initial :class:`MetaState` from a batch of episodes (only shapes are used).

    Args:
      learner: the :class:`MetaLearner`.
      optimizer: the outer optax optimizer.
      key: PRNG key for the parameter initialisation.
      episodes: a batch of episodes (leading ``E`` axis) like those the
        meta-step will receive, or only its shapes (``jax.ShapeDtypeStruct``
        leaves, e.g. ``jax.eval_shape(sample_fn, key)``: the sampler then
        neither compiles nor runs).

    Example:
      >>> import jax, optax
      >>> from jaxmeta import learners, losses, nets, scenarios, train
      >>> learner = learners.maml(nets.mlp(), losses.squared_error)
      >>> eps = scenarios.sinusoid(jax.random.key(0), num_tasks=4, support_shots=5, query_shots=5)
      >>> state = train.init_state(learner, optax.adam(1e-3), jax.random.key(1), eps)
      >>> int(state.step)
      0
      >>> shapes = jax.eval_shape(lambda k: scenarios.sinusoid(k, num_tasks=4, support_shots=5, query_shots=5),
      ...                         jax.random.key(0))
      >>> same = train.init_state(learner, optax.adam(1e-3), jax.random.key(1), shapes)
      >>> bool((same.params["net"]["head"]["kernel"] == state.params["net"]["head"]["kernel"]).all())
      True
    """
    _check_learner(learner)
    _check_optimizer(optimizer)
    validate_episode(episodes, batched=True, check_values=False)
    # the example episode is host zeros of one episode's shapes (a learner's init reads shapes only; slicing
    # the batch would compile a program per field); one compiled init: run op by op, a Conv-4 init caches
    # hundreds of small executables (~100 MB)
    example = jax.tree_util.tree_map(lambda a: np.zeros(a.shape[1:], a.dtype), episodes)
    params = jax.jit(learner.init)(key, example)
    return MetaState(params, optimizer.init(params), jnp.zeros((), jnp.int32))


def map_episodes(fn: Callable, episodes: Episode, keys: jax.Array, batching: str = "vmap"):
    """Applies ``fn(episode, key)`` to every episode of a batch; outputs stacked on ``E``.

    ``batching`` chooses how, with identical results:

    * ``"vmap"``: one vectorised computation (best on GPU/TPU, and for dense
      networks everywhere);
    * ``"map"``: ``lax.map``, a sequential loop in the compiled program (lowest
      memory; small compiled program);
    * ``"unroll"``: a Python loop inside the trace, so each task is its own
      straight-line code. On XLA:CPU this avoids the grouped convolutions that
      ``vmap`` makes of per-task conv weights, at the cost of compile time;
    * ``"accumulate"``: as ``"map"`` here; in :func:`make_meta_step` each
      episode's meta-gradient is also computed inside the loop and summed, so
      the step holds one episode's activations at a time (the way a PyTorch
      loop over tasks runs).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxmeta import Episode
      >>> eps = Episode(jnp.ones((3, 2, 1)), jnp.ones((3, 2, 1)), jnp.ones((3, 2, 1)), jnp.ones((3, 2, 1)))
      >>> map_episodes(lambda ep, k: ep.support_x.sum(), eps, jax.random.split(jax.random.key(0), 3), "unroll")
      Array([2., 2., 2.], dtype=float32)
    """
    _check_batching(batching)
    if batching == "vmap":
        return jax.vmap(fn)(episodes, keys)
    if batching in ("map", "accumulate"):
        return lax.map(lambda args: fn(*args), (episodes, keys))
    n = episode_batch_size(episodes)
    outs = [fn(take_episodes(episodes, i), keys[i]) for i in range(n)]
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *outs)


def episode_metrics(learner: MetaLearner, meta_params, episodes: Episode, key: jax.Array,
                    batching: str = "vmap", mesh=None, axis_name: str = "episodes"):
    """Adapts and scores every episode: ``(losses [E], {metric: [E]})``.

    With ``mesh`` each device adapts and scores its own share of the episodes
    (``jax.shard_map`` over ``axis_name``; ``E`` must be a multiple of the
    device count); the values equal the unsharded ones (same per-episode keys).

    Example:
      >>> import jax
      >>> from jaxmeta import learners, losses, nets, scenarios, train
      >>> learner = learners.maml(nets.mlp(), losses.squared_error)
      >>> eps = scenarios.sinusoid(jax.random.key(0), num_tasks=4, support_shots=5, query_shots=5)
      >>> p = learner.init(jax.random.key(1), jax.tree_util.tree_map(lambda a: a[0], eps))
      >>> losses_, _ = train.episode_metrics(learner, p, eps, jax.random.key(2))
      >>> losses_.shape
      (4,)
    """
    keys = jax.random.split(key, episode_batch_size(episodes))

    def scored(p, eps, ks):
        return (), map_episodes(functools.partial(_episode_loss, learner, p), eps, ks, batching)

    if mesh is None:
        return scored(meta_params, episodes, keys)[1]
    return _per_device(scored, mesh, axis_name, meta_params, episodes, keys)[1]


def _episode_loss(learner: MetaLearner, meta_params, episode: Episode, key: jax.Array):
    """``(loss, metrics)`` of one episode: adapt on its support set, score its query set."""
    return learner.loss(meta_params, learner.adapt(meta_params, episode, key), episode)


def _mean_metrics(losses, metrics) -> dict:
    out = {"loss": jnp.mean(losses)}
    out.update({k: jnp.mean(v) for k, v in metrics.items()})
    return out


def _per_device(fn, mesh, axis_name: str, params, episodes: Episode, keys: jax.Array):
    """``fn(params, episodes, keys) -> (summed, per_episode)`` run by every device of ``mesh`` on its own episodes.

    Plain data parallelism (``jax.shard_map``): ``params`` are replicated,
    the episodes and their keys split along ``axis_name``; ``summed`` is added
    across devices (one ``psum``) and ``per_episode`` keeps its split episode
    axis. Inside, ``params`` are cast to varying: a learner's adaptation (and
    the meta-gradient) differentiates with respect to them, and the gradient
    of a replicated input inside ``shard_map`` would be summed over every
    device's episodes.
    """
    from jax.sharding import PartitionSpec

    n, devices = episode_batch_size(episodes), mesh.shape[axis_name]
    if n % devices:
        raise ValueError(f"episodes: {n} episodes cannot be split evenly over the {devices} devices of mesh axis "
                         f"{axis_name!r}; use a meta-batch (or evaluation batch) divisible by {devices}.")

    def one_device(p, eps, ks):
        summed, per_episode = fn(lax.pcast(p, axis_name, to="varying"), eps, ks)
        return lax.psum(summed, axis_name), per_episode

    split = PartitionSpec(axis_name)
    return jax.shard_map(one_device, mesh=mesh, in_specs=(PartitionSpec(), split, split),
                         out_specs=(PartitionSpec(), split))(params, episodes, keys)


def _sharded(fn, mesh, axis_name):
    """Constrains the episode axis of a function's ``episodes`` argument to a mesh axis."""
    if mesh is None:
        return fn
    from jax.sharding import NamedSharding, PartitionSpec

    shard = NamedSharding(mesh, PartitionSpec(axis_name))

    def constrained(state, episodes, key):
        episodes = jax.tree_util.tree_map(lambda a: lax.with_sharding_constraint(a, shard), episodes)
        return fn(state, episodes, key)

    return constrained


def _meta_gradient(learner, params, episodes: Episode, key: jax.Array, batching: str, mesh=None,
                   axis_name: str = "episodes"):
    """``(gradient of the mean episode loss, (losses [E], metrics))``.

    ``accumulate`` sums per-episode gradients one episode at a time (``lax.scan``);
    every other batching differentiates the mapped loss as a whole. With a mesh,
    every device does that for its own share of the episodes (``jax.shard_map``)
    and the gradient sums are added across devices (one ``psum``): plain data
    parallelism, rather than leaving XLA to partition the batched step (it ran a
    loop over the episode axis, such as conv3x3's kernel-gradient rule, on every
    device for every episode: 4 devices took 4x as long as one).
    """
    n = episode_batch_size(episodes)
    keys = jax.random.split(key, n)  # as episode_metrics splits them, with or without a mesh

    def summed(p, eps, ks):
        """The gradient of these episodes' summed loss, and their (losses, metrics)."""
        if batching != "accumulate":
            def total_loss(q):
                losses, metrics = map_episodes(functools.partial(_episode_loss, learner, q), eps, ks, batching)
                return jnp.sum(losses), (losses, metrics)

            return jax.grad(total_loss, has_aux=True)(p)

        def one(total, args):
            def loss(q):
                value, metrics = _episode_loss(learner, q, *args)
                return value, (value, metrics)

            grads, out = jax.grad(loss, has_aux=True)(p)
            return jax.tree_util.tree_map(jnp.add, total, grads), out

        return lax.scan(one, jax.tree_util.tree_map(jnp.zeros_like, p), (eps, ks))

    if mesh is None:
        total, (losses, metrics) = summed(params, episodes, keys)
    else:  # each device differentiates its own episodes' losses; the gradient sums are added
        total, (losses, metrics) = _per_device(summed, mesh, axis_name, params, episodes, keys)
    return jax.tree_util.tree_map(lambda g: g / n, total), (losses, metrics)


def _raw_meta_step(learner, optimizer, batching, mesh=None, axis_name="episodes"):
    def step(state: MetaState, episodes: Episode, key: jax.Array):
        validate_episode(episodes, batched=True, check_values=False)  # shapes/dtypes, at trace time only
        grads, (losses, metrics) = _meta_gradient(learner, state.params, episodes, key, batching, mesh, axis_name)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        out = _mean_metrics(losses, metrics)
        out["grad_norm"] = optax.tree.norm(grads)
        return MetaState(params, opt_state, state.step + 1), out

    return step


def make_meta_step(
    learner: MetaLearner,
    optimizer: optax.GradientTransformation,
    *,
    batching: str = "vmap",
    mesh=None,
    axis_name: str = "episodes",
    donate: bool = False,
    jit: bool = True,
) -> Callable:
    """Builds ``step(state, episodes, key) -> (state, metrics)``, one ``jax.jit``.

    Inside: split ``key`` per episode, adapt every episode (inner loop,
    prototypes, ...), score the query sets, differentiate the mean loss with
    respect to the meta-parameters, apply the optax update.

    Args:
      learner: any :class:`MetaLearner`.
      optimizer: the outer optax optimizer.
      batching: how the episode axis is mapped: ``"vmap"``, ``"map"``,
        ``"unroll"`` or ``"accumulate"`` (per-episode meta-gradients summed in a
        loop: the least memory; see :func:`map_episodes`); all give the same
        numbers.
      mesh: optional ``jax.sharding.Mesh``; the episode axis is then sharded
        over its ``axis_name`` axis and the parameters replicated. The same
        code runs on one device or many, with every batching: each device maps
        its own episodes with ``batching`` (``jax.shard_map``) and the
        meta-gradient sums are added across devices; the results equal the
        single-device step to float tolerance. The meta-batch must be a
        multiple of the axis size.
      axis_name: mesh axis that holds episodes.
      donate: donate the input state's buffers to the output (saves a copy of
        parameters and optimizer state; the input state must not be reused).
      jit: compile (turn off only to debug).

    Returns:
      The step function. ``metrics`` holds the mean ``loss``, the learner's
      metrics averaged over episodes, and the meta-gradient's ``grad_norm``.

    Example:
      >>> import jax, optax
      >>> from jaxmeta import learners, losses, nets, scenarios, train
      >>> learner = learners.fomaml(nets.mlp(), losses.squared_error, inner_lr=0.01)
      >>> eps = scenarios.sinusoid(jax.random.key(0), num_tasks=8, support_shots=10, query_shots=10)
      >>> opt = optax.adam(1e-3)
      >>> state = train.init_state(learner, opt, jax.random.key(1), eps)
      >>> step = train.make_meta_step(learner, opt)
      >>> state, metrics = step(state, eps, jax.random.key(2))
      >>> int(state.step), metrics["loss"].shape
      (1, ())
    """
    _check_learner(learner)
    _check_optimizer(optimizer)
    _check_batching(batching)
    step = _sharded(_raw_meta_step(learner, optimizer, batching, mesh, axis_name), mesh, axis_name)
    if not jit:
        return step
    return _jit(step, donate_argnums=(0,) if donate else ())


@functools.lru_cache(maxsize=64)
def _cached_eval_step(learner, batching, mesh=None, axis_name="episodes"):
    def run(meta_params, episodes, key):
        validate_episode(episodes, batched=True, check_values=False)
        losses, metrics = episode_metrics(learner, meta_params, episodes, key, batching, mesh, axis_name)
        return {"loss": losses, **metrics}

    return _jit(run)


def make_eval_step(learner: MetaLearner, *, batching: str = "vmap", mesh=None,
                   axis_name: str = "episodes") -> Callable:
    """Builds ``eval_step(meta_params, episodes, key) -> {metric: [E]}`` (jitted, cached).

    Per-episode values, no reduction: :func:`jaxmeta.train.evaluate` turns them
    into means and confidence intervals. The same learner object always gets
    the same compiled function, so repeated evaluation does not retrace. With
    ``mesh`` (e.g. :func:`jaxmeta.train.episode_mesh`) the episodes are split
    over its devices (see :func:`episode_metrics`).

    Example:
      >>> import jax
      >>> from jaxmeta import learners, losses, nets, scenarios, train
      >>> learner = learners.maml(nets.mlp(), losses.squared_error)
      >>> eps = scenarios.sinusoid(jax.random.key(0), num_tasks=4, support_shots=5, query_shots=5)
      >>> p = learner.init(jax.random.key(1), jax.tree_util.tree_map(lambda a: a[0], eps))
      >>> train.make_eval_step(learner)(p, eps, jax.random.key(2))["loss"].shape
      (4,)
    """
    _check_learner(learner)
    return _cached_eval_step(learner, _check_batching(batching), mesh, axis_name)


def step_keys(key: jax.Array, step) -> tuple:
    """The ``(sample_key, step_key)`` of meta-step ``step`` of a run keyed by ``key``.

    Keys depend only on ``(key, step)``: a run resumed at step ``t`` draws
    exactly the episodes and randomness an uninterrupted run would, and the
    host loop and the compiled loop agree.

    Example:
      >>> import jax
      >>> a, b = step_keys(jax.random.key(0), 3)
      >>> a.shape, b.shape
      ((), ())
    """
    k = jax.random.fold_in(key, step)
    sample_key, step_key = jax.random.split(k)
    return sample_key, step_key


def make_train_loop(
    learner: MetaLearner,
    optimizer: optax.GradientTransformation,
    sample_fn: Callable[[jax.Array], Episode],
    *,
    steps: int,
    batching: str = "vmap",
    unroll=None,
    mesh=None,
    axis_name: str = "episodes",
) -> Callable:
    """Compiles ``steps`` meta-steps with on-device sampling into one call (CPU: chunks, see ``unroll``).

    ``sample_fn(key) -> Episode`` must be a pure JAX function (for example
    ``jaxmeta.scenarios.sinusoid`` with fixed sizes, or an on-device few-shot
    sampler over a data set held as one array). The returned
    ``loop(state, key) -> (state, metrics)`` runs a ``lax.scan`` over meta-steps
    ``state.step .. state.step + steps - 1``, each with
    ``step_keys(key, t)``, so its result equals ``steps`` calls of
    :func:`make_meta_step` on the host with the same keys; ``metrics`` are
    stacked ``[steps]``.

    Args:
      learner, optimizer, batching, mesh, axis_name: as :func:`make_meta_step`.
      sample_fn: on-device episode sampler.
      steps: meta-steps per call.
      unroll: ``lax.scan`` unroll factor over meta-steps (the whole call is
        then one compiled program). ``None`` picks per backend. On GPU/TPU: a
        rolled scan (1). On CPU: no loop inside the program at all, because
        XLA:CPU runs convolutions and their gradients inside a loop body on a
        slow path (measured on the 2-core dev machine, Conv-4 ProtoNet 20-way:
        243 ms/step fully unrolled, 4,903 ms/step for a scan of 32 steps
        unrolled 16 at a time, the body still a loop); so the call runs
        ``steps / c`` times one compiled, fully unrolled chunk of ``c`` steps,
        ``c`` the largest divisor of ``steps`` up to 16 (this keeps compile
        time and memory bounded: fully unrolling 500 steps took over 14 GB).
        The results are the same either way (the step keys depend only on
        ``key`` and the step number). The slow path is XLA's own convolution
        gradients (``nn.Conv``, ``conv4(conv_impl="xla")``): with the stroke
        encoder of ``nets.multimodal_encoder`` a rolled scan ran 2.34 s/step
        against 0.083 s unrolled. ``nets.conv4``'s default CPU lowering
        does not take it (ProtoNet, meta-batch 4: 0.073 s/step rolled, 0.072 s
        unrolled), so for nets built from it ``unroll=1`` gives the same
        speed with about a third of the compile time.

    Example:
      >>> import functools, jax, optax
      >>> from jaxmeta import learners, losses, nets, scenarios, train
      >>> learner = learners.maml(nets.mlp(), losses.squared_error)
      >>> sample = functools.partial(scenarios.sinusoid, num_tasks=4, support_shots=5, query_shots=5)
      >>> state = train.init_state(learner, optax.adam(1e-3), jax.random.key(0), sample(jax.random.key(1)))
      >>> loop = train.make_train_loop(learner, optax.adam(1e-3), sample, steps=10)
      >>> state, metrics = loop(state, jax.random.key(2))
      >>> int(state.step), metrics["loss"].shape
      (10, (10,))
    """
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"steps: expected a positive number of meta-steps per call, got {steps}.")
    raw = _sharded(_raw_meta_step(_check_learner(learner), _check_optimizer(optimizer), _check_batching(batching),
                                  mesh, axis_name), mesh, axis_name)

    def body(state, _, key):
        sample_key, step_key = step_keys(key, state.step)
        return raw(state, sample_fn(sample_key), step_key)

    def compiled(length: int, unroll_by: int):
        def run(state: MetaState, key: jax.Array):
            return lax.scan(functools.partial(body, key=key), state, None, length=length, unroll=unroll_by)

        return _jit(run)

    if unroll is not None:
        return compiled(steps, unroll)
    if jax.default_backend() != "cpu":
        return compiled(steps, 1)
    chunk = max(c for c in range(1, min(steps, CPU_UNROLL_LIMIT) + 1) if steps % c == 0)
    if chunk == steps:
        return compiled(steps, steps)
    run_chunk = compiled(chunk, chunk)

    def loop(state: MetaState, key: jax.Array):
        parts = []
        for _ in range(steps // chunk):
            state, metrics = run_chunk(state, key)
            parts.append(metrics)
        return state, jax.tree_util.tree_map(lambda *ms: jnp.concatenate(ms), *parts)

    return loop
