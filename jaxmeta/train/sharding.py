"""Placing meta-training on several devices: episodes sharded, parameters replicated.

The meta-step is data-parallel over episodes: every device adapts and scores
its share of the episode batch, and the mean meta-gradient is reduced across
devices by XLA (``jax.sharding``; no ``pmap``). The same code runs on one
device, several local devices, or several hosts started with
``jax.distributed.initialize()`` (see benchmarks/README.md for a launch example).
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["episode_mesh", "shard_episodes", "replicate"]


def episode_mesh(devices: Optional[Sequence[jax.Device]] = None, axis_name: str = "episodes") -> Mesh:
    """A 1-D mesh over ``devices`` (default: all, across hosts) for the episode axis.

    Example:
      >>> mesh = episode_mesh()
      >>> mesh.axis_names
      ('episodes',)
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices: expected at least one device.")
    return Mesh(np.array(devices), (axis_name,))


def shard_episodes(episodes, mesh: Mesh, axis_name: str = "episodes"):
    """Splits the leading episode axis of every leaf across the mesh.

    The number of episodes must be a multiple of the number of devices.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxmeta import Episode
      >>> eps = Episode(*(jnp.zeros((4, 3, 1)),) * 4)
      >>> shard_episodes(eps, episode_mesh()).support_x.shape
      (4, 3, 1)
    """
    n = mesh.shape[axis_name]
    sizes = {np.shape(a)[0] for a in jax.tree_util.tree_leaves(episodes)}
    if any(s % n for s in sizes):
        raise ValueError(f"episodes: the episode axis ({sorted(sizes)}) must be a multiple of the {n} devices of "
                         f"mesh axis {axis_name!r}; use a meta-batch divisible by {n}.")
    return jax.device_put(episodes, NamedSharding(mesh, PartitionSpec(axis_name)))


def replicate(tree, mesh: Mesh):
    """Places a pytree (parameters, optimizer state) on every device of the mesh.

    Example:
      >>> import jax.numpy as jnp
      >>> replicate({"w": jnp.ones(2)}, episode_mesh())["w"].shape
      (2,)
    """
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
