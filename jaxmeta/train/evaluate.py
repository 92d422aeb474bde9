"""Evaluation over many test episodes: means with 95% confidence intervals."""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Union

import jax
import numpy as np

from jaxmeta.episodes import Episode, episode_batch_size, take_episodes, validate_episode
from jaxmeta.learners.base import MetaLearner
from jaxmeta.train.meta_step import make_eval_step

__all__ = ["evaluate", "summarize"]


def summarize(values) -> Dict[str, float]:
    """Mean, sample std, 95% confidence half-width and count of per-episode values.

    The interval is the normal approximation ``1.96 * std / sqrt(n)``, the
    convention of the few-shot literature (600-1000 test episodes). Non-finite
    values are counted under ``"nonfinite"`` and make the mean non-finite (they
    are never silently dropped).

    Example:
      >>> summarize([0.9, 1.0, 0.8, 1.0])["mean"]
      0.925
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("values: nothing to summarise (no episodes were evaluated).")
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return {"mean": float(v.mean()), "ci95": 1.96 * std / math.sqrt(v.size), "std": std, "n": int(v.size),
            "nonfinite": int((~np.isfinite(v)).sum())}


def evaluate(
    learner: MetaLearner,
    meta_params,
    episodes: Union[Episode, Callable[[jax.Array], Episode]],
    *,
    key: jax.Array,
    num_episodes: Optional[int] = None,
    batch_size: int = 100,
    batching: str = "vmap",
    return_values: bool = False,
    nan_policy: str = "raise",
    mesh=None,
) -> Dict[str, Dict[str, float]]:
    """Adapts to each test episode and reports every metric's mean and 95% CI.

    Args:
      learner: the :class:`MetaLearner` (it may differ from the trained one in
        test-time settings, e.g. ``maml(..., inner_steps=10)`` on the same params).
      meta_params: the trained meta-parameters.
      episodes: either a batch of test episodes (leading ``E`` axis), evaluated
        ``batch_size`` at a time, or a sampler ``sample(key) -> Episode batch``
        called until ``num_episodes`` have been evaluated.
      key: PRNG key (per-batch keys are folded from it).
      num_episodes: with a sampler, how many episodes in total (required); with
        a batch, an optional cap.
      batch_size: episodes per compiled call (keep it fixed to avoid recompiles).
      batching: episode mapping (see :func:`jaxmeta.train.map_episodes`).
      return_values: also return the per-episode values under ``"values"``.
      nan_policy: ``"raise"`` (default) raises ``FloatingPointError`` when any
        episode's metric is NaN/inf; ``"report"`` returns it in the summary
        (non-finite mean, ``"nonfinite"`` count), for studies where divergence
        is a result (e.g. learned step sizes applied more often than trained).
      mesh: optional device mesh (:func:`jaxmeta.train.episode_mesh`): each
        compiled call splits its episodes over the devices. ``batch_size`` (for
        a given batch) or the sampler's batch must be a multiple of the device
        count; a short last chunk of a given batch is padded to it. Same values as one device
        (a learner that draws random numbers in ``adapt`` gets other per-episode
        keys where a chunk is padded).

    Returns:
      ``{metric: {"mean", "ci95", "std", "n"}}`` for ``loss`` and every metric
      the learner reports (plus ``"values": {metric: np.ndarray}`` on request).

    Example:
      >>> import jax
      >>> from jaxmeta import learners, losses, nets, scenarios, train
      >>> learner = learners.maml(nets.mlp(), losses.squared_error, inner_steps=5)
      >>> tests = scenarios.sinusoid(jax.random.key(0), num_tasks=60, support_shots=5, query_shots=10)
      >>> p = learner.init(jax.random.key(1), jax.tree_util.tree_map(lambda a: a[0], tests))
      >>> result = train.evaluate(learner, p, tests, key=jax.random.key(2), batch_size=30)
      >>> result["loss"]["n"]
      60
    """
    if nan_policy not in ("raise", "report"):
        raise ValueError(f"nan_policy: expected 'raise' or 'report', got {nan_policy!r}.")
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size}.")
    devices = 1 if mesh is None else int(mesh.devices.size)
    eval_step = make_eval_step(learner, batching=batching, mesh=mesh)
    collected: Dict[str, list] = {}

    def add(values):
        for name, v in values.items():
            collected.setdefault(name, []).append(np.asarray(v))

    if isinstance(episodes, Episode):
        validate_episode(episodes, batched=True)
        if batch_size % devices:
            raise ValueError(f"batch_size: {batch_size} episodes per call cannot be split evenly over the {devices} "
                             f"devices of the mesh; use a multiple of {devices}.")
        total = episode_batch_size(episodes)
        if num_episodes is not None:
            total = min(total, int(num_episodes))
        for i, start in enumerate(range(0, total, batch_size)):
            stop = min(start + batch_size, total)
            chunk = take_episodes(episodes, slice(start, stop))
            # the compiled size: the batch size, or (one short batch) the next multiple of the device count
            size = batch_size if total > batch_size else -(-total // devices) * devices
            if stop - start < size:
                # pad the last chunk to the compiled size, drop the padding after
                pad = size - (stop - start)
                chunk = jax.tree_util.tree_map(
                    lambda a: np.concatenate([np.asarray(a), np.repeat(np.asarray(a)[-1:], pad, 0)]), chunk)
                out = eval_step(meta_params, chunk, jax.random.fold_in(key, i))
                add({k: np.asarray(v)[: stop - start] for k, v in out.items()})
            else:
                add(eval_step(meta_params, chunk, jax.random.fold_in(key, i)))
    elif callable(episodes):
        if num_episodes is None or int(num_episodes) < 1:
            raise ValueError("num_episodes: a positive count is required when episodes is a sampler.")
        done, i = 0, 0
        while done < num_episodes:
            sample_key, step_key = jax.random.split(jax.random.fold_in(key, i))
            batch = episodes(sample_key)
            if i == 0:
                validate_episode(batch, batched=True)
            out = eval_step(meta_params, batch, step_key)
            take = min(episode_batch_size(batch), num_episodes - done)
            add({k: np.asarray(v)[:take] for k, v in out.items()})
            done += take
            i += 1
    else:
        raise TypeError(
            f"episodes: expected a batched Episode or a sampler fn(key) -> Episode, got {type(episodes).__name__}."
        )
    values = {k: np.concatenate(v) for k, v in collected.items()}
    for name, v in values.items():
        if nan_policy == "raise" and not np.isfinite(v).all():
            raise FloatingPointError(
                f"evaluate: metric {name!r} is NaN/inf on {int((~np.isfinite(v)).sum())} episode(s); "
                "the meta-parameters or the test data are broken (check for divergence during training), "
                "or pass nan_policy='report' to record the divergence as a result."
            )
    result = {name: summarize(v) for name, v in values.items()}
    if return_values:
        result["values"] = values
    return result
