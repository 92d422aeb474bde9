"""The boundary between Flax and the rest of jaxmeta: :class:`Network`.

Learners never see a Flax module. They see a params pytree and two pure
functions, ``init(key, example_x) -> params`` and ``apply(params, x) -> y``.
This module turns a Flax Linen module into that pair once.

Why Linen here: ``module.apply`` is already a pure function of a params dict,
so the pair costs nothing per call and the params are plain nested dicts that
optax, orbax and ``jax.tree_util`` handle directly (keys name the layers, which
is what ANIL-style "adapt only these layers" filters match on). The choice is
local to ``jaxmeta.nets``; nothing else imports Flax.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax

__all__ = ["Network", "from_linen"]


class Network(NamedTuple):
    """A network made pure: ``init(key, example_x) -> params``, ``apply(params, x) -> y``.

    ``x`` always carries a leading batch axis. ``params`` is a nested dict
    whose top-level keys are layer names (``"hidden_0"``, ..., ``"head"``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxmeta.nets import mlp
      >>> net = mlp(hidden=(40, 40), out=1)
      >>> params = net.init(jax.random.key(0), jnp.zeros((1, 1)))
      >>> net.apply(params, jnp.zeros((7, 1))).shape
      (7, 1)
    """

    init: Callable[[jax.Array, Any], Any]
    apply: Callable[[Any, Any], Any]


def from_linen(module: nn.Module) -> Network:
    """Wraps a stateless Flax Linen module as a :class:`Network`.

    The module must keep all its variables in the ``"params"`` collection
    (jaxmeta's normalisation layers hold no running statistics, see
    :class:`jaxmeta.nets.TaskBatchNorm`).

    Example:
      >>> import flax.linen as nn, jax, jax.numpy as jnp
      >>> net = from_linen(nn.Dense(3))
      >>> p = net.init(jax.random.key(0), jnp.zeros((2, 4)))
      >>> net.apply(p, jnp.zeros((2, 4))).shape
      (2, 3)
    """

    def init(key, example_x):
        variables = module.init(key, example_x)
        extra = set(variables) - {"params"}
        if extra:
            raise ValueError(
                f"module: holds variable collections {sorted(extra)} besides 'params'; jaxmeta networks "
                "must be stateless (use jaxmeta.nets.TaskBatchNorm instead of nn.BatchNorm)."
            )
        return variables["params"]

    def apply(params, x):
        return module.apply({"params": params}, x)

    return Network(init, apply)
