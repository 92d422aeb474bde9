"""Plain ``jnp`` losses, distances and metrics; each returns per-example values."""

from jaxmeta.losses.basic import accuracy, masked_mean, softmax_cross_entropy, squared_error
from jaxmeta.losses.ranking import absolute_error, ndcg_at_k

__all__ = ["squared_error", "softmax_cross_entropy", "accuracy", "masked_mean", "absolute_error", "ndcg_at_k"]
