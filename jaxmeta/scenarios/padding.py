"""Variable-size support sets within one static shape, through ``Episode.support_mask``."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jaxmeta.episodes import Episode, episode_batch_size

__all__ = ["random_support_size"]


def random_support_size(key: jax.Array, episodes: Episode, *, min_shots: int,
                        max_shots: Optional[int] = None) -> Episode:
    """Keeps a random number ``k ~ U{min_shots..max_shots}`` of support examples per episode.

    The arrays keep their static shape ``[E, S, ...]``; ``support_mask`` marks
    the ``k`` kept examples (a uniformly random subset, so class order in the
    support set does not matter) with 1 and the rest with 0. An existing mask
    is combined (multiplied) with the new one. Learners that honour masks then
    train on support sets of varying size, the usual training regime of neural
    processes. Pure JAX: usable inside a compiled training loop.

    Args:
      key: PRNG key; the same key gives the same masks.
      episodes: a batch of episodes (leading ``E`` axis) with ``S`` support slots.
      min_shots: smallest support size (at least 1).
      max_shots: largest support size (default and maximum: ``S``).

    Returns:
      The episodes with ``support_mask [E, S]`` (float32 in ``{0, 1}``).

    Example:
      >>> import jax
      >>> from jaxmeta import scenarios
      >>> eps = scenarios.sinusoid(jax.random.key(0), num_tasks=4, support_shots=20, query_shots=5)
      >>> masked = random_support_size(jax.random.key(1), eps, min_shots=3)
      >>> masked.support_mask.shape, bool((masked.support_mask.sum(1) >= 3).all())
      ((4, 20), True)
    """
    if not isinstance(episodes, Episode):
        raise TypeError(f"episodes: expected a batched jaxmeta.Episode, got {type(episodes).__name__}.")
    num, slots = episode_batch_size(episodes), episodes.support_x.shape[1]
    max_shots = slots if max_shots is None else int(max_shots)
    min_shots = int(min_shots)
    if not 1 <= min_shots <= max_shots <= slots:
        raise ValueError(f"min_shots, max_shots: expected 1 <= min_shots <= max_shots <= {slots} (the support "
                         f"slots of the episodes), got min_shots={min_shots}, max_shots={max_shots}.")
    k_size, k_perm = jax.random.split(key)
    sizes = jax.random.randint(k_size, (num, 1), min_shots, max_shots + 1)
    ranks = jnp.argsort(jax.random.uniform(k_perm, (num, slots)), axis=1).argsort(axis=1)
    mask = (ranks < sizes).astype(jnp.float32)
    if episodes.support_mask is not None:
        mask = mask * episodes.support_mask.astype(jnp.float32)
    return episodes._replace(support_mask=mask)
