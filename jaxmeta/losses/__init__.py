"""Plain ``jnp`` losses, distances and metrics; each returns per-example values."""

from jaxmeta.losses.basic import (
    absolute_error,
    accuracy,
    mask_weights,
    masked_mean,
    softmax_cross_entropy,
    squared_error,
)
from jaxmeta.losses.ranking import ndcg_at_k
from jaxmeta.losses.clustering import (
    distance_statistics,
    entropy,
    refine_prototypes,
    soft_kmeans_gates,
    soft_kmeans_refine,
    soft_kmeans_weights,
)
from jaxmeta.losses.downstream import adjusted_rand_index, contingency, kmeans, normalized_mutual_info, roc_auc
from jaxmeta.losses.metric import (
    batch_hard_triplet_loss,
    contrastive_loss,
    view_alignment_loss,
    pairwise_cosine_distance,
    pairwise_cosine_similarity,
    pairwise_squared_euclidean,
    prototype_logits,
    prototypes,
    prototypical_loss,
    triplet_loss,
)
from jaxmeta.losses.probabilistic import gaussian_kl, gaussian_nll, interval_coverage

__all__ = [
    "squared_error",
    "softmax_cross_entropy",
    "accuracy",
    "masked_mean",
    "mask_weights",
    "pairwise_squared_euclidean",
    "pairwise_cosine_similarity",
    "pairwise_cosine_distance",
    "prototypes",
    "prototype_logits",
    "prototypical_loss",
    "triplet_loss",
    "batch_hard_triplet_loss",
    "contrastive_loss",
    "view_alignment_loss",
    "absolute_error",
    "ndcg_at_k",
    "gaussian_nll",
    "gaussian_kl",
    "interval_coverage",
    "soft_kmeans_weights",
    "soft_kmeans_refine",
    "refine_prototypes",
    "distance_statistics",
    "soft_kmeans_gates",
    "entropy",
    "kmeans",
    "contingency",
    "normalized_mutual_info",
    "adjusted_rand_index",
    "roc_auc",
]
