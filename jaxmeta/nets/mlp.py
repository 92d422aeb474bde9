"""Multi-layer perceptron."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmeta.nets.base import Network, from_linen

__all__ = ["mlp", "MLP"]


class MLP(nn.Module):
    """Dense layers named ``hidden_0 .. hidden_{L-1}`` and an optional ``head``.

    The Flax module behind :func:`mlp`; inputs are flattened to ``[B, -1]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> net, x = MLP(hidden=(40, 40), out=1), jnp.zeros((10, 1))
      >>> params = jax.jit(net.init)(jax.random.key(0), x)
      >>> sorted(params["params"]), net.apply(params, x).shape
      (['head', 'hidden_0', 'hidden_1'], (10, 1))
    """

    hidden: Sequence[int]
    out: Optional[int]
    activation: Callable = nn.relu
    dtype: Any = None
    head_bias: bool = True

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        if self.dtype is not None:
            x = x.astype(self.dtype)
        for i, width in enumerate(self.hidden):
            x = self.activation(nn.Dense(width, dtype=self.dtype, name=f"hidden_{i}")(x))
        if self.out is not None:
            x = nn.Dense(self.out, use_bias=self.head_bias, dtype=self.dtype, name="head")(x)
        return x.astype(jnp.float32) if self.dtype is not None else x


def mlp(
    hidden: Sequence[int] = (40, 40),
    out: Optional[int] = 1,
    *,
    activation: Callable[[jax.Array], jax.Array] = nn.relu,
    dtype: Any = None,
    head_bias: bool = True,
) -> Network:
    """An MLP as a pure :class:`~jaxmeta.nets.Network`.

    Inputs ``[B, ...]`` are flattened to ``[B, D]``. Layers are named
    ``hidden_i`` and ``head``, so ``adapt_filter=("head",)`` adapts the head only.

    Args:
      hidden: widths of the hidden layers.
      out: output width; ``None`` drops the head (the last hidden layer is the output).
      activation: nonlinearity after each hidden layer.
      dtype: computation dtype (e.g. ``jnp.bfloat16``); params stay float32,
        outputs are returned in float32.
      head_bias: give the head a bias. Drop it where a constant added to every
        output cannot change the loss (one logit per class from a shared head,
        under softmax): there its meta-gradient is exactly zero.

    Returns:
      A :class:`Network`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> net = mlp((40, 40), 1)          # MAML's sinusoid regressor
      >>> p = net.init(jax.random.key(0), jnp.zeros((1, 1)))
      >>> sorted(p)
      ['head', 'hidden_0', 'hidden_1']
      >>> sorted(mlp((8,), 1, head_bias=False).init(jax.random.key(0), jnp.zeros((1, 3)))["head"])
      ['kernel']
    """
    hidden = tuple(int(h) for h in hidden)
    if any(h <= 0 for h in hidden):
        raise ValueError(f"hidden: widths must be positive, got {hidden}.")
    if out is not None and int(out) <= 0:
        raise ValueError(f"out: expected a positive width or None, got {out}.")
    return from_linen(MLP(hidden=hidden, out=out, activation=activation, dtype=dtype, head_bias=bool(head_bias)))
