"""Per-example losses and metrics of Gaussian predictions (neural processes).

Like every jaxmeta loss, each function returns one value per example ``[B]``,
summed over trailing target axes; the caller reduces (e.g. ``masked_mean``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["gaussian_nll", "gaussian_kl", "interval_coverage"]

_LOG_2PI = math.log(2.0 * math.pi)


def _per_example(values: jax.Array) -> jax.Array:
    return values.reshape(values.shape[0], -1).sum(axis=1)


def _check_same_shape(**arrays) -> None:
    shapes = {name: tuple(jnp.shape(a)) for name, a in arrays.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"expected equal shapes [B, ...], got {shapes}.")
    if not next(iter(shapes.values())):
        raise ValueError(f"expected arrays with a leading batch axis [B, ...], got scalars {shapes}.")


def gaussian_nll(mean: jax.Array, std: jax.Array, targets: jax.Array) -> jax.Array:
    """Negative log-likelihood of ``targets`` under ``N(mean, std^2)``: ``[B, ...] -> [B]``.

    Summed over trailing axes (independent dimensions).

    Args:
      mean: predicted means ``[B, ...]``.
      std: predicted standard deviations (positive), same shape.
      targets: observed values, same shape.

    Returns:
      ``[B]`` per-example negative log-likelihoods (nats).

    Example:
      >>> import jax.numpy as jnp
      >>> gaussian_nll(jnp.zeros((1, 1)), jnp.ones((1, 1)), jnp.zeros((1, 1)))  # log(2 pi) / 2
      Array([0.9189385], dtype=float32)
    """
    _check_same_shape(mean=mean, std=std, targets=targets)
    z = (targets - mean) / std
    return _per_example(0.5 * (z * z + _LOG_2PI) + jnp.log(std))


def gaussian_kl(mean_q: jax.Array, std_q: jax.Array, mean_p: jax.Array, std_p: jax.Array) -> jax.Array:
    """``KL(N(mean_q, std_q^2) || N(mean_p, std_p^2))`` of diagonal Gaussians: ``[B, ...] -> [B]``.

    Summed over trailing axes.

    Example:
      >>> import jax.numpy as jnp
      >>> gaussian_kl(jnp.ones((1, 2)), jnp.ones((1, 2)), jnp.zeros((1, 2)), jnp.ones((1, 2)))
      Array([1.], dtype=float32)
    """
    _check_same_shape(mean_q=mean_q, std_q=std_q, mean_p=mean_p, std_p=std_p)
    ratio = jnp.square(std_q / std_p)
    kl = 0.5 * (ratio + jnp.square((mean_q - mean_p) / std_p) - 1.0 - jnp.log(ratio))
    return _per_example(kl)


def interval_coverage(mean: jax.Array, std: jax.Array, targets: jax.Array, *, z: float = 1.959964) -> jax.Array:
    """Fraction of target values inside ``mean +- z * std``: ``[B, ...] -> [B]`` in ``[0, 1]``.

    With the default ``z`` this is the coverage of the central 95% interval of
    a Gaussian prediction; a calibrated model covers about 95% of targets.
    (Averaged, not summed, over trailing axes: it is a fraction.)

    Example:
      >>> import jax.numpy as jnp
      >>> interval_coverage(jnp.zeros((2, 1)), jnp.ones((2, 1)), jnp.array([[1.0], [3.0]]))
      Array([1., 0.], dtype=float32)
    """
    _check_same_shape(mean=mean, std=std, targets=targets)
    inside = (jnp.abs(targets - mean) <= z * std).astype(jnp.float32)
    return inside.reshape(inside.shape[0], -1).mean(axis=1)
