"""Prototypical Networks (Snell, Swersky & Zemel, 2017)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmeta.learners.base import MetaLearner
from jaxmeta.learners.common import embedding_learner_params
from jaxmeta.learners.maml import _check_network
from jaxmeta.losses import accuracy, masked_mean, softmax_cross_entropy
from jaxmeta.losses.metric import prototype_logits, prototypes, view_alignment_loss
from jaxmeta.nets import Network

__all__ = ["protonet", "check_num_ways"]


def check_num_ways(num_ways) -> int:
    """The number of classes per episode as an ``int``; ``ValueError`` unless it is an integer >= 2.

    Metric learners need it statically (prototypes are a ``[num_ways, D]`` array).

    Example:
      >>> check_num_ways(5.0)
      5
      >>> check_num_ways(1)
      Traceback (most recent call last):
      ValueError: num_ways: expected an integer >= 2 (the static number of classes per episode), got 1.
    """
    if int(num_ways) != num_ways or num_ways < 2:
        raise ValueError(f"num_ways: expected an integer >= 2 (the static number of classes per episode), got {num_ways}.")
    return int(num_ways)


def protonet(
    net: Network,
    *,
    num_ways: int,
    distance: str = "euclidean",
    scale: float = 1.0,
    learn_scale: bool = False,
    views: bool = False,
    align: float = 0.0,
) -> MetaLearner:
    """Prototypical Networks as a :class:`MetaLearner`.

    ``adapt`` embeds the support set and averages each class's embeddings into
    a prototype (``task_params [N, D]``); ``loss`` is the cross-entropy of the
    softmax over ``-scale * |f(x) - c|^2`` (``"euclidean"``) or
    ``scale * cos(f(x), c)`` (``"cosine"``) for every query; ``predict``
    returns those logits. Support and query are embedded in separate calls, so
    batch-norm statistics never mix them (see :class:`jaxmeta.nets.TaskBatchNorm`).

    Args:
      net: the embedding network (e.g. ``nets.conv4()``).
      num_ways: ``N``, the static number of classes per episode (build another
        learner with the same params to test at another ``N``).
      distance: ``"euclidean"`` (squared, as the paper) or ``"cosine"``.
      scale: logit scale (temperature inverse); cosine similarities need a
        scale around 10 to train well.
      learn_scale: make the scale a meta-parameter (``meta_params["log_scale"]``).
      views: the net embeds each example in ``V`` views (``[B, V, D]``, e.g.
        the modalities of :func:`jaxmeta.nets.multimodal_encoder` with
        ``views=True``). ``adapt`` builds prototypes per view (``[V, N, D]``),
        ``predict`` returns ``[Q, V (query view), V (prototype view), N]``
        logits and ``loss`` averages the cross-entropy and accuracy over all
        ``V x V`` pairs: a query in any view must find its class among the
        prototypes of every view (cross-view alignment, e.g. strokes vs images).
      align: with ``views``, adds ``align`` times a per-example alignment term
        to the loss: :func:`jaxmeta.losses.view_alignment_loss` between every
        ordered pair of a query's views (each view must pick the *same
        example's* other view among the episode's other-class queries, scored
        with the learner's ``distance`` and scale), averaged over view pairs.
        It ties views drawing by drawing, where the prototypical term ties
        them only class by class. Reported as the ``"alignment"`` metric.

    Returns:
      A :class:`MetaLearner`; ``meta_params = {"net": ...[, "log_scale": ...]}``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxmeta import Episode, learners, nets
      >>> learner = learners.protonet(nets.mlp((16,), None), num_ways=2)
      >>> ep = Episode(jnp.array([[0.0], [1.0]]), jnp.array([0, 1]), jnp.array([[0.1], [0.9]]), jnp.array([0, 1]))
      >>> p = learner.init(jax.random.key(0), ep)
      >>> learner.adapt(p, ep, jax.random.key(1)).shape
      (2, 16)
    """
    net = _check_network(net)
    num_ways = check_num_ways(num_ways)
    if distance not in ("euclidean", "cosine"):
        raise ValueError(f"distance: expected 'euclidean' or 'cosine', got {distance!r}.")
    if align < 0 or (align and not views):
        raise ValueError(f"align: expected a weight >= 0, used only with views=True; got align={align}, "
                         f"views={views}.")
    init, current_scale = embedding_learner_params(net, num_ways, scale, learn_scale, "ProtoNet", views)

    def embed(meta_params, x):
        emb = net.apply(meta_params["net"], x)
        if emb.ndim != (3 if views else 2):
            want = "[B, V, D] (views=True)" if views else "[B, D] (pass views=True for [B, V, D])"
            raise ValueError(f"ProtoNet: expected the network to embed x as {want}, got shape {emb.shape}.")
        return emb

    def adapt(meta_params, episode, key):
        del key
        emb = embed(meta_params, episode.support_x)
        if views:
            return jax.vmap(lambda e: prototypes(e, episode.support_y, num_ways, episode.support_mask), 1)(emb)
        return prototypes(emb, episode.support_y, num_ways, episode.support_mask)

    def logits_of(meta_params, task_params, emb):
        logits = lambda q, c: prototype_logits(q, c, distance, current_scale(meta_params))
        if views:  # [Q, V, D] x [V, N, D] -> [Q, V, V, N]
            return jax.vmap(lambda q: jax.vmap(lambda c: logits(q, c), out_axes=1)(task_params), 1, 1)(emb)
        return logits(emb, task_params)

    def predict(meta_params, task_params, x):
        return logits_of(meta_params, task_params, embed(meta_params, x))

    def loss(meta_params, task_params, episode):
        emb = embed(meta_params, episode.query_x)
        logits = logits_of(meta_params, task_params, emb)
        y = episode.query_y
        if views:  # every (query view, prototype view) pair, averaged per query
            pairs = logits.shape[:3]
            y = jnp.broadcast_to(y[:, None, None], pairs).reshape(-1)
            logits = logits.reshape((-1, logits.shape[-1]))
            per_query = lambda v: v.reshape(pairs).mean(axis=(1, 2))
        else:
            per_query = lambda v: v
        value = masked_mean(per_query(softmax_cross_entropy(logits, y)), episode.query_mask)
        metrics = {"accuracy": masked_mean(per_query(accuracy(logits, y)), episode.query_mask)}
        if align:
            v = emb.shape[1]  # a static unroll over the V (V - 1) ordered view pairs (6 for 3 views)
            view_pairs = [(i, j) for i in range(v) for j in range(v) if i != j]
            terms = [view_alignment_loss(emb[:, i], emb[:, j], episode.query_y, current_scale(meta_params),
                                         episode.query_mask, distance) for i, j in view_pairs]
            metrics["alignment"] = masked_mean(sum(terms) / len(terms), episode.query_mask)
            value = value + align * metrics["alignment"]
        return value, metrics

    return MetaLearner(init, adapt, loss, predict)
