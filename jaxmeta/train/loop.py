"""The training loop: ``fit`` with progress, logs, evaluation, checkpoints and exact resume."""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmeta.episodes import Episode, validate_episode
from jaxmeta.learners.base import MetaLearner
from jaxmeta.train.io import append_jsonl, progress_bar, read_jsonl, truncate_jsonl
from jaxmeta.train.meta_step import MetaState, init_state, make_meta_step, make_train_loop, step_keys

__all__ = ["fit", "FitResult"]


class FitResult(NamedTuple):
    """What :func:`fit` returns: the final state and every log record written.

    Example:
      >>> result = FitResult(state=None, history=[{"step": 10, "kind": "train", "loss": 0.5}])
      >>> [r["loss"] for r in result.history if r["kind"] == "train"]
      [0.5]
    """

    state: MetaState
    history: List[dict]


def _check_every(name: str, value: Optional[int], chunk: int) -> int:
    value = int(value or 0)
    if value < 0:
        raise ValueError(f"{name}: expected a non-negative number of steps, got {value}.")
    if value and value % chunk:
        raise ValueError(f"{name}={value} must be a multiple of steps_per_call={chunk} (events happen between calls).")
    return value


def fit(
    learner: MetaLearner,
    optimizer: optax.GradientTransformation,
    sample_fn: Callable[[jax.Array], Episode],
    *,
    key: jax.Array,
    num_steps: int,
    state: Optional[MetaState] = None,
    device_sampling: bool = False,
    steps_per_call: int = 1,
    unroll=None,
    batching: str = "vmap",
    mesh=None,
    eval_fn: Optional[Callable[[Any], Dict[str, Any]]] = None,
    eval_every: int = 0,
    log_every: int = 100,
    workdir: Optional[str] = None,
    checkpoint_every: Optional[int] = None,
    resume: bool = True,
    progress: bool = True,
    desc: str = "meta-train",
) -> FitResult:
    """Meta-trains ``learner`` for ``num_steps`` meta-steps.

    Every step ``t`` uses ``step_keys(key', t)`` (``key'`` derived from
    ``key``), so a run is a pure function of ``(key, num_steps)``: stopping and
    resuming from a checkpoint gives bit-for-bit the parameters of a run that
    never stopped.

    Args:
      learner: the :class:`MetaLearner`.
      optimizer: outer optax optimizer.
      sample_fn: ``sample_fn(key) -> Episode`` batch. On the host it may use
        NumPy (seed it from the key, e.g. ``np.random.default_rng(
        jax.random.key_data(key))``); with ``device_sampling`` it must be pure
        JAX and is compiled into the training loop.
      key: PRNG key of the run.
      num_steps: total meta-steps (a resumed run continues up to this).
      state: initial state (default: ``init_state`` from the first batch; when
        resuming with ``device_sampling``, only its shapes: nothing compiles
        before the checkpoint is read).
      device_sampling: sample inside the compiled loop (no host round trip).
      steps_per_call: with device sampling, meta-steps per compiled call
        (``lax.scan``); log/eval/checkpoint intervals must be multiples of it.
      unroll: with device sampling, how each call's steps are compiled (see
        :func:`jaxmeta.train.make_train_loop`): ``None`` picks per backend
        (on CPU, unrolled chunks: safe with any network), ``1`` one rolled
        scan (on CPU, faster to compile, and about as fast to run for
        nets without XLA's own convolution gradients, e.g. ``nets.conv4()``).
      batching: episode mapping (``"vmap"``, ``"map"``, ``"unroll"``, ``"accumulate"``; see
        :func:`jaxmeta.train.make_meta_step`).
      mesh: optional device mesh to shard the episode axis over.
      eval_fn: ``eval_fn(meta_params) -> dict`` (e.g. a partial of
        :func:`jaxmeta.train.evaluate`), run every ``eval_every`` steps and at
        the end.
      eval_every: evaluation interval in steps (0: only at the end).
      log_every: training metrics are averaged over this many steps and logged.
      workdir: folder for ``metrics.jsonl`` and ``checkpoints/`` (``None``:
        nothing is written).
      checkpoint_every: checkpoint interval (default: ``eval_every`` or 1000);
        a checkpoint is also written at the end and on Ctrl-C.
      resume: continue from the latest checkpoint in ``workdir`` if any; with
        ``False``, a workdir that already holds checkpoints is an error (runs
        are never silently overwritten).
      progress: show a progress bar.
      desc: progress bar label.

    Returns:
      :class:`FitResult` ``(state, history)``; ``history`` holds the records
      also written to ``workdir/metrics.jsonl``: ``{"step", "kind": "train" |
      "eval", "elapsed", ...metrics}``; train records also carry
      ``train_seconds``, the time spent training (evaluation and checkpoint
      writes excluded), summed over resumed sessions.

    Raises:
      FloatingPointError: the training loss became NaN/inf (the state is not
        checkpointed; lower the learning rate or check the data).

    Example:
      >>> import functools, jax, optax
      >>> from jaxmeta import learners, losses, nets, scenarios, train
      >>> learner = learners.maml(nets.mlp(), losses.squared_error, inner_lr=0.01)
      >>> sample = functools.partial(scenarios.sinusoid, num_tasks=25, support_shots=10, query_shots=10)
      >>> result = train.fit(learner, optax.adam(1e-3), sample, key=jax.random.key(0), num_steps=20,
      ...                    device_sampling=True, steps_per_call=10, log_every=10, progress=False)
      >>> int(result.state.step), result.history[-1]["step"]
      (20, 20)
    """
    num_steps = int(num_steps)
    if num_steps < 0:
        raise ValueError(f"num_steps: expected a non-negative integer, got {num_steps}.")
    chunk = int(steps_per_call)
    if chunk < 1:
        raise ValueError(f"steps_per_call: expected a positive integer, got {steps_per_call}.")
    if chunk > 1 and not device_sampling:
        raise ValueError("steps_per_call > 1 needs device_sampling=True (host sampling runs one step per call).")
    if unroll is not None and not device_sampling:
        raise ValueError("unroll applies to the compiled loop: it needs device_sampling=True.")
    log_every = _check_every("log_every", log_every, chunk) or chunk
    eval_every = _check_every("eval_every", eval_every, chunk)
    if checkpoint_every is None:
        checkpoint_every = eval_every or max(chunk, (1000 // chunk) * chunk)
    checkpoint_every = _check_every("checkpoint_every", checkpoint_every, chunk)

    init_key, loop_key = jax.random.split(key)
    checkpointer, log_path, history, elapsed0, train0, latest = None, None, [], 0.0, 0.0, None
    if workdir is not None:
        from jaxmeta.train.checkpoint import Checkpointer

        os.makedirs(workdir, exist_ok=True)
        log_path = os.path.join(workdir, "metrics.jsonl")
        checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
        latest = checkpointer.latest_step()
        if latest is not None and not resume:
            checkpointer.close()
            raise FileExistsError(
                f"workdir {workdir!r} already holds a run (checkpoint at step {latest}); pass resume=True to "
                "continue it, or choose a new workdir (or delete this one) to start over."
            )
    try:  # (the checkpointer is closed if the state cannot be built or restored)
        if state is None:
            first_key = step_keys(loop_key, 0)[0]
            make_state = functools.partial(init_state, learner, optimizer, init_key)
            if latest is not None and device_sampling:
                # resuming: the checkpoint is restored onto the state's shapes, so nothing is sampled or
                # compiled here (a finished run re-opened for its results only reads its checkpoint)
                state = jax.eval_shape(lambda k: make_state(sample_fn(k)), first_key)
            else:
                first = (jax.jit(sample_fn) if device_sampling else sample_fn)(first_key)
                validate_episode(first, batched=True)
                state = jax.eval_shape(make_state, first) if latest is not None else make_state(first)
        if latest is not None:
            state = checkpointer.restore(state, latest)
            truncate_jsonl(log_path, int(state.step))
            history = read_jsonl(log_path)
            elapsed0 = max((r.get("elapsed", 0.0) for r in history), default=0.0)
            train0 = max((r.get("train_seconds", 0.0) for r in history), default=0.0)
        elif log_path is not None and os.path.exists(log_path):
            os.unlink(log_path)  # a log without a checkpoint belongs to no state we can continue
    except BaseException:
        if checkpointer is not None:
            checkpointer.close()
        raise

    if mesh is not None:
        from jaxmeta.train.sharding import replicate, shard_episodes

        state = replicate(state, mesh)
    if device_sampling:
        loops = {}

        def advance(state, n):
            if n not in loops:
                loops[n] = make_train_loop(learner, optimizer, sample_fn, steps=n, batching=batching, unroll=unroll,
                                          mesh=mesh)
            return loops[n](state, loop_key)
    else:
        meta_step = make_meta_step(learner, optimizer, batching=batching, mesh=mesh)
        keys_at = jax.jit(step_keys)

        def advance(state, n):
            sample_key, step_key = keys_at(loop_key, state.step)
            episodes = sample_fn(sample_key)
            if mesh is not None:
                episodes = shard_episodes(episodes, mesh)
            state, metrics = meta_step(state, episodes, step_key)
            return state, jax.tree_util.tree_map(lambda m: m[None], metrics)

    def record(rec: dict) -> None:
        history.append(rec)
        if log_path is not None:
            append_jsonl(log_path, rec)

    def save(step: int) -> None:
        if checkpointer is not None and checkpointer.latest_step() != step:
            checkpointer.save(step, state)

    t = int(state.step)
    bar = progress_bar(num_steps, initial=min(t, num_steps), desc=desc, enabled=progress)
    start = time.perf_counter()
    excluded = 0.0  # seconds spent evaluating and checkpointing, not training
    pending: List[dict] = []
    try:
        while t < num_steps:
            n = min(chunk, num_steps - t)
            state, metrics = advance(state, n)
            pending.append(metrics)
            t += n
            bar.update(n)
            if t % log_every == 0 or t == num_steps:
                stacked = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *pending)
                means = {k: float(np.mean(np.asarray(v))) for k, v in stacked.items()}
                pending = []
                if not np.isfinite(means["loss"]):
                    raise FloatingPointError(
                        f"fit: the meta-training loss is {means['loss']} at step {t}; the run diverged. "
                        "Lower the outer or inner learning rate, or check the episodes for bad values."
                    )
                now = time.perf_counter() - start
                record({"step": t, "kind": "train", "elapsed": round(elapsed0 + now, 3),
                        "train_seconds": round(train0 + now - excluded, 3), **means})
                bar.set_postfix_str(f"loss {means['loss']:.4g}")
            if eval_fn is not None and ((eval_every and t % eval_every == 0) or t == num_steps):
                jax.block_until_ready(state)
                t0 = time.perf_counter()
                result = eval_fn(state.params)
                excluded += time.perf_counter() - t0
                record({"step": t, "kind": "eval", "elapsed": round(elapsed0 + time.perf_counter() - start, 3),
                        **result})
            if checkpoint_every and t % checkpoint_every == 0 and t != num_steps:
                jax.block_until_ready(state)
                t0 = time.perf_counter()
                save(t)
                excluded += time.perf_counter() - t0
        save(t)
    except KeyboardInterrupt:
        if int(state.step) % chunk == 0:
            save(int(state.step))
        raise
    finally:
        bar.close()
        if checkpointer is not None:
            checkpointer.close()
    return FitResult(state, history)
