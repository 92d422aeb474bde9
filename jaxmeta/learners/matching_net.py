"""Matching Networks (Vinyals et al., 2016), without full-context embeddings."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmeta.learners.base import MetaLearner
from jaxmeta.learners.common import embedding_learner_params
from jaxmeta.learners.maml import _check_network
from jaxmeta.learners.protonet import check_num_ways
from jaxmeta.losses import accuracy, mask_weights, masked_mean
from jaxmeta.losses.metric import pairwise_cosine_similarity
from jaxmeta.nets import Network

__all__ = ["matching_net"]


def matching_net(net: Network, *, num_ways: int, scale: float = 10.0, learn_scale: bool = True) -> MetaLearner:
    """Matching Networks as a :class:`MetaLearner` (no full-context embeddings).

    A query's class distribution is an attention-weighted vote of the support
    labels: ``p(y|x) = sum_i softmax_i(scale * cos(f(x), f(x_i))) * onehot(y_i)``.
    Support and query share one embedding ``f``; the paper's full-context
    embeddings (LSTMs over the support set) are not implemented -- the paper
    reports they matter little on Omniglot, and without them the learner is a
    pure function of each example's embedding, like ProtoNets. Padded support
    examples (``support_mask`` 0) get no attention.

    Args:
      net: embedding network.
      num_ways: ``N`` classes per episode (static).
      scale: cosine-similarity scale inside the attention softmax.
      learn_scale: learn the scale (``meta_params["log_scale"]``).

    Returns:
      A :class:`MetaLearner`; ``predict`` returns log-probabilities ``[B, N]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxmeta import Episode, learners, nets
      >>> learner = learners.matching_net(nets.mlp((16,), None), num_ways=2)
      >>> ep = Episode(jnp.array([[0.0], [1.0]]), jnp.array([0, 1]), jnp.array([[0.1], [0.9]]), jnp.array([0, 1]))
      >>> p = learner.init(jax.random.key(0), ep)
      >>> learner.predict(p, learner.adapt(p, ep, jax.random.key(1)), ep.query_x).shape
      (2, 2)
    """
    net = _check_network(net)
    num_ways = check_num_ways(num_ways)
    init, current_scale = embedding_learner_params(net, num_ways, scale, learn_scale, "Matching Network")

    def adapt(meta_params, episode, key):
        del key
        emb = net.apply(meta_params["net"], episode.support_x)
        weights = mask_weights(episode.support_mask, emb.shape[0], emb.dtype)
        return {"embeddings": emb, "labels": jax.nn.one_hot(episode.support_y, num_ways, dtype=emb.dtype),
                "mask": weights}

    def predict(meta_params, task_params, x):
        emb = net.apply(meta_params["net"], x)
        sims = current_scale(meta_params) * pairwise_cosine_similarity(emb, task_params["embeddings"])
        sims = jnp.where(task_params["mask"][None, :] > 0, sims, -jnp.inf)
        attention = jax.nn.softmax(sims, axis=1)  # [B, S]
        probs = attention @ task_params["labels"]  # [B, N]
        return jnp.log(jnp.clip(probs, 1e-12, 1.0))

    def loss(meta_params, task_params, episode):
        logp = predict(meta_params, task_params, episode.query_x)
        nll = -jnp.take_along_axis(logp, episode.query_y[:, None].astype(jnp.int32), axis=1)[:, 0]
        value = masked_mean(nll, episode.query_mask)
        return value, {"accuracy": masked_mean(accuracy(logp, episode.query_y), episode.query_mask)}

    return MetaLearner(init, adapt, loss, predict)
