"""Embeddings of categorical features followed by an MLP (MeLU's rating network)."""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmeta.nets.base import Network, from_linen

__all__ = ["embedding_mlp", "EmbeddingMLP", "decision_layers"]


class EmbeddingMLP(nn.Module):
    """Layers ``embed_i`` (one table per categorical column), ``embed_dense``,
    ``hidden_0 .. hidden_{L-1}`` and ``head``.

    The Flax module behind :func:`embedding_mlp`. Each row of ``x`` holds the
    categorical ids first (as floats), then ``num_dense`` numeric columns.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> net = EmbeddingMLP(vocab_sizes=(3, 4), num_dense=2, embed_dim=8, hidden=(16,), out=1)
      >>> x = jnp.array([[0.0, 3.0, 0.5, 1.0], [2.0, 1.0, 0.0, 0.0]])
      >>> params = jax.eval_shape(net.init, jax.random.key(0), x)
      >>> jax.eval_shape(net.apply, params, x).shape
      (2, 1)
    """

    vocab_sizes: Tuple[int, ...]
    num_dense: int
    embed_dim: int
    hidden: Tuple[int, ...]
    out: int
    activation: Callable = nn.relu
    head_bias: float = 0.0

    @nn.compact
    def __call__(self, x):
        x = jnp.asarray(x)
        num_cat = len(self.vocab_sizes)
        if x.ndim != 2 or x.shape[-1] != num_cat + self.num_dense:
            raise ValueError(
                f"x: expected [B, {num_cat + self.num_dense}] ({num_cat} categorical id columns, then "
                f"{self.num_dense} numeric ones), got shape {x.shape}."
            )
        parts = []
        for i, vocab in enumerate(self.vocab_sizes):
            ids = jnp.round(x[:, i]).astype(jnp.int32)
            # an id outside [0, vocab) reads past the table, which gives NaN (never a wrapped row)
            ids = jnp.where(ids < 0, vocab, ids)
            parts.append(nn.Embed(vocab, self.embed_dim, name=f"embed_{i}")(ids))
        if self.num_dense:
            parts.append(nn.Dense(self.embed_dim, use_bias=False, name="embed_dense")(x[:, num_cat:]))
        h = jnp.concatenate(parts, axis=-1)
        for i, width in enumerate(self.hidden):
            h = self.activation(nn.Dense(width, name=f"hidden_{i}")(h))
        return nn.Dense(self.out, name="head", bias_init=nn.initializers.constant(self.head_bias))(h)


def embedding_mlp(
    vocab_sizes: Sequence[int],
    *,
    num_dense: int = 0,
    embed_dim: int = 32,
    hidden: Sequence[int] = (64, 64),
    out: int = 1,
    activation: Callable[[jax.Array], jax.Array] = nn.relu,
    head_bias: float = 0.0,
) -> Network:
    """Embeds categorical columns, concatenates them, and runs an MLP on the result.

    Input rows are ``x = [id_0, ..., id_{C-1}, v_0, ..., v_{D-1}]`` (floats):
    the first ``C = len(vocab_sizes)`` columns are integer ids (rounded), each
    looked up in its own table ``embed_i`` of ``embed_dim`` columns; the other
    ``D = num_dense`` columns (e.g. multi-hot genre flags) go through one linear
    map ``embed_dense`` to ``embed_dim``. The concatenation feeds the *decision
    layers* ``hidden_0 .. hidden_{L-1}`` (ReLU) and ``head``. MeLU adapts only
    the decision layers per user; pass ``adapt_filter=decision_layers(hidden)``
    to :func:`jaxmeta.learners.maml` for that. An id outside ``[0, vocab)``
    gives a NaN output (never a silently wrapped row).

    Args:
      vocab_sizes: number of ids of each categorical column.
      num_dense: number of numeric columns after the ids.
      embed_dim: width of every embedding.
      hidden: widths of the hidden decision layers.
      out: output width.
      activation: nonlinearity after each hidden layer.
      head_bias: initial bias of the head (e.g. the mean rating, so training
        starts from the global-mean predictor).

    Returns:
      A :class:`~jaxmeta.nets.Network`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> net = embedding_mlp((7, 2), num_dense=3, embed_dim=4, hidden=(8,), head_bias=3.5)
      >>> p = net.init(jax.random.key(0), jnp.zeros((1, 5)))
      >>> sorted(p)
      ['embed_0', 'embed_1', 'embed_dense', 'head', 'hidden_0']
      >>> net.apply(p, jnp.array([[6.0, 1.0, 0.0, 1.0, 1.0]])).shape
      (1, 1)
    """
    vocab_sizes = tuple(int(v) for v in vocab_sizes)
    hidden = tuple(int(h) for h in hidden)
    if not vocab_sizes and not num_dense:
        raise ValueError("vocab_sizes: give at least one categorical column or num_dense > 0.")
    if any(v < 1 for v in vocab_sizes):
        raise ValueError(f"vocab_sizes: every size must be positive, got {vocab_sizes}.")
    if int(num_dense) < 0 or int(embed_dim) < 1 or int(out) < 1 or any(h < 1 for h in hidden):
        raise ValueError(f"num_dense must be >= 0 and embed_dim, out and hidden widths positive, got "
                         f"num_dense={num_dense}, embed_dim={embed_dim}, out={out}, hidden={hidden}.")
    return from_linen(EmbeddingMLP(vocab_sizes=vocab_sizes, num_dense=int(num_dense), embed_dim=int(embed_dim),
                                   hidden=hidden, out=int(out), activation=activation, head_bias=float(head_bias)))


def decision_layers(hidden: Sequence[int]) -> Tuple[str, ...]:
    """The layer names of :func:`embedding_mlp`'s decision layers, for ``adapt_filter``.

    Example:
      >>> decision_layers((64, 64))
      ('hidden_0', 'hidden_1', 'head')
    """
    return tuple(f"hidden_{i}" for i in range(len(tuple(hidden)))) + ("head",)
