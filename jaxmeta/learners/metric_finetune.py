"""Meta fine-tuning of a metric network: adapt (part of) the embedding to each task's support set.

ProtoNets classify with a fixed embedding. Here the embedding itself is adapted
per task, MAML-style: a few gradient steps on a metric loss of the support set
change the selected parameters (e.g. only a projection ``head``), then the
prototypes are recomputed with the adapted embedding and the queries are
scored against them. The initial parameters (and, optionally, the inner
learning rates, one per parameter as in Meta-SGD) are meta-learned through the
inner loop, with the inner loop, rules and filters of the MAML family
(:mod:`jaxmeta.learners.inner`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmeta.learners.base import MetaLearner
from jaxmeta.learners.common import embedding_learner_params
from jaxmeta.learners.inner import FilterSpec, combine, inner_loop, partition, sgd_rule
from jaxmeta.learners.maml import _check_network
from jaxmeta.learners.protonet import check_num_ways
from jaxmeta.losses import accuracy, masked_mean, softmax_cross_entropy
from jaxmeta.losses.metric import batch_hard_triplet_loss, contrastive_loss, prototype_logits, prototypes
from jaxmeta.nets import Network

__all__ = ["metric_finetune", "SUPPORT_LOSSES"]

#: the support objectives :func:`metric_finetune` can adapt with
SUPPORT_LOSSES = ("prototypical", "triplet", "contrastive")


def _support_loss(kind, emb, y, mask, num_ways, scale, margin):
    if kind == "prototypical":
        # each support example against the support prototypes (itself included)
        logits = prototype_logits(emb, prototypes(emb, y, num_ways, mask), "euclidean", scale)
        return masked_mean(softmax_cross_entropy(logits, y), mask)
    if kind == "triplet":
        return masked_mean(batch_hard_triplet_loss(emb, y, margin, mask), mask)
    # contrastive over all pairs i != j (a static [S*S] set of pairs)
    s = emb.shape[0]
    a = jnp.repeat(emb, s, axis=0)
    b = jnp.tile(emb, (s, 1))
    same = (y[:, None] == y[None, :]).reshape(-1)
    w = (1.0 - jnp.eye(s)).reshape(-1)
    if mask is not None:
        w = w * (mask[:, None] * mask[None, :]).reshape(-1)
    return jnp.sum(w * contrastive_loss(a, b, same, margin)) / jnp.maximum(jnp.sum(w), 1.0)


def metric_finetune(
    net: Network,
    *,
    num_ways: int,
    inner_steps: int = 1,
    inner_lr: float = 0.1,
    learn_inner_lr: str | None = None,
    adapt_filter: FilterSpec = ("head",),
    support_loss: str = "prototypical",
    first_order: bool = False,
    scale: float = 1.0,
    margin: float = 1.0,
) -> MetaLearner:
    """A ProtoNet whose embedding is fine-tuned on each support set (MAML / Meta-SGD style).

    ``adapt``: ``inner_steps`` SGD steps on ``support_loss`` of the support
    embeddings, changing only the params ``adapt_filter`` selects; then the
    prototypes of the adapted embedding. ``loss``: prototypical cross-entropy of
    the queries (squared Euclidean distance times ``scale``), with accuracy.
    With ``inner_steps=0`` this is exactly :func:`~jaxmeta.learners.protonet`.

    Args:
      net: the embedding network (``[B, ...] -> [B, D]``).
      num_ways: ``N``, the static number of classes per episode.
      inner_steps: gradient steps per task.
      inner_lr: the inner step size (initial value when learned).
      learn_inner_lr: ``None`` (fixed), ``"scalar"`` or ``"per_parameter"``
        (Meta-SGD's learned per-parameter rates, ``meta_params["inner_lr"]``).
      adapt_filter: which params the inner loop adapts (layer-name prefixes
        such as ``("head",)``, ``None`` for all, or ``fn(path, leaf)``).
      support_loss: the inner objective: ``"prototypical"`` (each support
        example against the support prototypes), ``"triplet"`` (batch-hard) or
        ``"contrastive"`` (all pairs). Triplet needs two examples of a class
        (K >= 2); with K = 1 it is zero and nothing adapts.
      first_order: stop gradients through the inner gradients.
      scale: logit scale of the prototypical losses.
      margin: margin of the triplet / contrastive losses.

    Returns:
      A :class:`MetaLearner`; task params are ``{"net": adapted params,
      "prototypes": [N, D]}``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxmeta import Episode, learners, nets
      >>> learner = learners.metric_finetune(nets.mlp((8,), 4), num_ways=2, learn_inner_lr="per_parameter")
      >>> ep = Episode(jnp.array([[0.0], [1.0]]), jnp.array([0, 1]), jnp.array([[0.1], [0.9]]), jnp.array([0, 1]))
      >>> p = learner.init(jax.random.key(0), ep)
      >>> sorted(p["inner_lr"]["head"]), learner.adapt(p, ep, jax.random.key(1))["prototypes"].shape
      (['bias', 'kernel'], (2, 4))
    """
    net = _check_network(net)
    num_ways = check_num_ways(num_ways)
    inner_steps = int(inner_steps)
    if inner_steps < 0:
        raise ValueError(f"inner_steps: expected a non-negative integer, got {inner_steps}.")
    if learn_inner_lr not in (None, "scalar", "per_parameter"):
        raise ValueError(f"learn_inner_lr: expected None, 'scalar' or 'per_parameter', got {learn_inner_lr!r}.")
    if support_loss not in SUPPORT_LOSSES:
        raise ValueError(f"support_loss: expected one of {SUPPORT_LOSSES}, got {support_loss!r}.")
    embedding_init, _ = embedding_learner_params(net, num_ways, scale, False, "metric")

    def init(key, example):
        meta = embedding_init(key, example)  # checks the [B, D] embedding, the labels and scale
        adapted, _ = partition(meta["net"], adapt_filter)  # validates the filter
        if learn_inner_lr == "scalar":
            meta["inner_lr"] = jnp.asarray(inner_lr, jnp.float32)
        elif learn_inner_lr == "per_parameter":
            meta["inner_lr"] = jax.tree_util.tree_map(lambda p: jnp.full(p.shape, inner_lr, jnp.float32), adapted)
        return meta

    def adapt(meta_params, episode, key):
        del key
        adapted, frozen = partition(meta_params["net"], adapt_filter)
        rate = inner_lr if learn_inner_lr is None else meta_params["inner_lr"]

        def objective(a):
            emb = net.apply(combine(a, frozen), episode.support_x)
            return _support_loss(support_loss, emb, episode.support_y, episode.support_mask, num_ways, scale, margin)

        params = combine(inner_loop(objective, adapted, sgd_rule(rate), steps=inner_steps, first_order=first_order),
                         frozen)
        emb = net.apply(params, episode.support_x)
        return {"net": params, "prototypes": prototypes(emb, episode.support_y, num_ways, episode.support_mask)}

    def predict(meta_params, task_params, x):
        return prototype_logits(net.apply(task_params["net"], x), task_params["prototypes"], "euclidean", scale)

    def loss(meta_params, task_params, episode):
        logits = predict(meta_params, task_params, episode.query_x)
        value = masked_mean(softmax_cross_entropy(logits, episode.query_y), episode.query_mask)
        return value, {"accuracy": masked_mean(accuracy(logits, episode.query_y), episode.query_mask)}

    return MetaLearner(init, adapt, loss, predict)
