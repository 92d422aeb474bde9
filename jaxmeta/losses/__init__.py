"""Plain ``jnp`` losses, distances and metrics; each returns per-example values."""

from jaxmeta.losses.basic import accuracy, masked_mean, softmax_cross_entropy, squared_error
from jaxmeta.losses.probabilistic import gaussian_kl, gaussian_nll, interval_coverage

__all__ = [
    "squared_error",
    "softmax_cross_entropy",
    "accuracy",
    "masked_mean",
    "gaussian_nll",
    "gaussian_kl",
    "interval_coverage",
]
