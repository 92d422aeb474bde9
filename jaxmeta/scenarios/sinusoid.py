"""Sinusoid regression (Finn et al., 2017): each task is ``y = A sin(x - phase)``."""

from __future__ import annotations

import math
from typing import NamedTuple, Tuple

import jax
import jax.numpy as jnp

from jaxmeta.episodes import Episode

__all__ = ["sinusoid", "SinusoidTasks", "sinusoid_values"]


class SinusoidTasks(NamedTuple):
    """The functions behind a batch of sinusoid episodes: ``amplitude [E]``, ``phase [E]``.

    Task ``e`` is ``y = amplitude[e] * sin(x - phase[e])``; ``sinusoid(...,
    return_tasks=True)`` returns them with the episodes (for plotting the true curves).

    Example:
      >>> import jax
      >>> episodes, tasks = sinusoid(jax.random.key(0), num_tasks=3, support_shots=5, query_shots=5,
      ...                            return_tasks=True)
      >>> tasks.amplitude.shape, tasks.phase.shape
      ((3,), (3,))
    """

    amplitude: jax.Array
    phase: jax.Array


def sinusoid_values(tasks: SinusoidTasks, x: jax.Array) -> jax.Array:
    """Evaluates each task's function at ``x [E, B, 1]`` (or ``[B, 1]``, broadcast).

    Example:
      >>> import jax.numpy as jnp
      >>> tasks = SinusoidTasks(jnp.array([2.0]), jnp.array([0.0]))
      >>> sinusoid_values(tasks, jnp.array([[[jnp.pi / 2]]]))
      Array([[[2.]]], dtype=float32)
    """
    return tasks.amplitude[:, None, None] * jnp.sin(x - tasks.phase[:, None, None])


def _check_range(name: str, bounds) -> Tuple[float, float]:
    lo, hi = (float(b) for b in bounds)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"{name}: expected finite (low, high) with low <= high, got {bounds}.")
    return lo, hi


def sinusoid(
    key: jax.Array,
    *,
    num_tasks: int,
    support_shots: int,
    query_shots: int,
    amplitude: Tuple[float, float] = (0.1, 5.0),
    phase: Tuple[float, float] = (0.0, math.pi),
    x_range: Tuple[float, float] = (-5.0, 5.0),
    return_tasks: bool = False,
    dtype=jnp.float32,
):
    """A batch of sinusoid regression episodes, as in MAML's Section 5.1.

    Amplitude ``~ U[0.1, 5]``, phase ``~ U[0, pi]``, inputs ``x ~ U[-5, 5]``;
    support and query inputs are drawn independently. Pure JAX: it can run
    inside a compiled training loop (``fit(..., device_sampling=True)``).

    Args:
      key: PRNG key; the same key gives the same episodes.
      num_tasks: ``E``, episodes in the batch.
      support_shots: ``K``, support points per task.
      query_shots: ``Q``, query points per task.
      amplitude, phase, x_range: ``(low, high)`` of the uniform distributions.
      return_tasks: also return the :class:`SinusoidTasks` (for plotting the
        true curves).
      dtype: floating dtype of the arrays.

    Returns:
      An :class:`~jaxmeta.Episode` with ``support_x, support_y [E, K, 1]`` and
      ``query_x, query_y [E, Q, 1]`` (and the tasks, on request).

    Example:
      >>> import jax
      >>> eps = sinusoid(jax.random.key(0), num_tasks=25, support_shots=10, query_shots=10)
      >>> eps.support_x.shape, eps.query_y.shape
      ((25, 10, 1), (25, 10, 1))
    """
    num_tasks, support_shots, query_shots = int(num_tasks), int(support_shots), int(query_shots)
    if num_tasks < 1:
        raise ValueError(f"num_tasks: expected a positive integer, got {num_tasks}.")
    if support_shots < 1 or query_shots < 1:
        raise ValueError(f"support_shots and query_shots must be positive, got {support_shots} and {query_shots}.")
    a_lo, a_hi = _check_range("amplitude", amplitude)
    p_lo, p_hi = _check_range("phase", phase)
    x_lo, x_hi = _check_range("x_range", x_range)
    k_amp, k_phase, k_x = jax.random.split(key, 3)
    tasks = SinusoidTasks(
        jax.random.uniform(k_amp, (num_tasks,), dtype, a_lo, a_hi),
        jax.random.uniform(k_phase, (num_tasks,), dtype, p_lo, p_hi),
    )
    x = jax.random.uniform(k_x, (num_tasks, support_shots + query_shots, 1), dtype, x_lo, x_hi)
    y = sinusoid_values(tasks, x)
    episodes = Episode(x[:, :support_shots], y[:, :support_shots], x[:, support_shots:], y[:, support_shots:])
    return (episodes, tasks) if return_tasks else episodes
