"""Semi-supervised few-shot learners: refined ProtoNets and MAML with unlabelled data.

Both read the episode's unlabelled set from ``episode.aux`` (the layout of
:func:`jaxmeta.scenarios.semisup_episodes`): ``aux["unlabelled_x"] [U, ...]``
and ``aux["unlabelled_mask"] [U]`` (optional; 0 marks padding). They never read
``aux["unlabelled_class"]`` (the answer key for evaluation).

* :func:`semisup_protonet`: Prototypical Networks whose support prototypes are
  refined with the unlabelled set by soft k-means, in the three variants of
  Ren et al. (ICLR 2018): ``"soft_kmeans"``, ``"distractor_cluster"`` (soft
  k-means with an extra cluster at the origin for distractors) and
  ``"masked_soft_kmeans"`` (a small network gates each unlabelled example's
  pull on each prototype). It is :func:`jaxmeta.learners.protonet` with a
  different ``adapt``: loss, predictions and distances are ProtoNets'.
* :func:`semisup_maml`: MAML whose inner loop also minimises the entropy of
  its predictions on the unlabelled set, with a meta-learned weight (an
  :class:`~jaxmeta.learners.InnerTerm` from :func:`entropy_term`).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxmeta.learners.base import MetaLearner
from jaxmeta.learners.inner import InnerTerm
from jaxmeta.learners.maml import _check_network, maml
from jaxmeta.learners.protonet import check_num_ways, protonet
from jaxmeta.losses import masked_mean
from jaxmeta.losses.clustering import distance_statistics, entropy, soft_kmeans_gates, soft_kmeans_refine
from jaxmeta.losses.metric import prototypes
from jaxmeta.nets import Network, mlp

__all__ = ["semisup_protonet", "entropy_term", "semisup_maml", "REFINEMENTS", "unlabelled_set"]

REFINEMENTS = ("soft_kmeans", "distractor_cluster", "masked_soft_kmeans")
_STATS = 5  # min, max, variance, skewness, kurtosis of normalised distances


def unlabelled_set(episode, field: str = "unlabelled_x", mask_field: str = "unlabelled_mask"):
    """``(x [U, ...], mask [U] or None)`` from ``episode.aux``, with a clear error when it is missing.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxmeta import Episode
      >>> ep = Episode(jnp.zeros((2, 3)), jnp.zeros(2, jnp.int32), jnp.zeros((2, 3)), jnp.zeros(2, jnp.int32),
      ...              aux={"unlabelled_x": jnp.zeros((4, 3))})
      >>> x, mask = unlabelled_set(ep)
      >>> x.shape, mask is None
      ((4, 3), True)
    """
    aux = episode.aux
    if not isinstance(aux, dict) or field not in aux:
        have = sorted(aux) if isinstance(aux, dict) else type(aux).__name__
        raise ValueError(f"episode.aux: a semi-supervised learner needs aux[{field!r}] (the unlabelled set, e.g. from "
                         f"jaxmeta.scenarios.semisup_episodes); the episode's aux holds {have}.")
    x = aux[field]
    if tuple(jnp.shape(x)[1:]) != tuple(jnp.shape(episode.support_x)[1:]):
        raise ValueError(f"episode.aux[{field!r}]: example shape {jnp.shape(x)[1:]} differs from support_x's "
                         f"{jnp.shape(episode.support_x)[1:]}.")
    mask = aux.get(mask_field)
    if mask is not None and jnp.shape(mask) != jnp.shape(x)[:1]:
        raise ValueError(f"episode.aux[{mask_field!r}]: expected one weight per unlabelled example, shape "
                         f"{jnp.shape(x)[:1]}, got {jnp.shape(mask)}.")
    return x, mask


def semisup_protonet(
    net: Network,
    *,
    num_ways: int,
    refine: str = "masked_soft_kmeans",
    refine_steps: int = 1,
    scale: float = 1.0,
    mask_hidden: int = 20,
    mask_init: tuple[float, float] = (1.0, 1.0),
    embed_together: bool = True,
) -> MetaLearner:
    """Prototypical Networks refined with unlabelled examples (Ren et al., 2018) as a :class:`MetaLearner`.

    ``adapt`` embeds the support set and the unlabelled set, averages each
    class's support embeddings into a prototype ``p_c``, then runs
    ``refine_steps`` soft k-means updates (:func:`jaxmeta.losses.soft_kmeans_refine`)::

        p~_c = (n_c p_c + sum_j w_jc u_j) / (n_c + sum_j w_jc)

    with the unlabelled embeddings ``u_j`` and weights ``w_jc`` from the variant:

    * ``"soft_kmeans"``: ``w_jc = softmax_c(-scale |u_j - p_c|^2)``;
    * ``"distractor_cluster"``: the same softmax with an extra cluster at the
      origin whose radius ``r`` is meta-learned (``meta_params["log_distractor_radius"]``,
      starting at ``r = 1``; class clusters have radius 1); the mass it takes
      is dropped;
    * ``"masked_soft_kmeans"``: soft k-means weights times gates
      ``sigmoid(-gamma_c (d~_jc - beta_c))``, with ``d~`` the distances
      normalised by their mean over the unlabelled set and ``(beta_c,
      gamma_c) = mask_init * exp(o_c)``, ``o_c`` predicted per class by an MLP
      (``mask_hidden`` ReLU units, ``meta_params["mask_net"]``) from the min,
      max, variance, skewness and kurtosis of ``d~_{.c}``. The MLP's output
      layer starts at zero, so every gate starts at ``mask_init``; the
      exponential lets training sharpen or loosen a gate by a factor with
      steps of the same size (Ren et al. also predict the gate's slope and
      threshold through ``exp``).

    ``loss`` and ``predict`` are ProtoNets' (:func:`jaxmeta.learners.protonet`,
    squared Euclidean distance) against the refined prototypes. An episode
    with an empty unlabelled set (``U = 0``) gives plain ProtoNets.

    Batch statistics: with ``embed_together`` (default) the support and the
    unlabelled set are embedded in one call, so a
    :class:`~jaxmeta.nets.TaskBatchNorm` normalises both with the same
    statistics (of support + unlabelled); the query set is embedded alone, as in
    ProtoNets. Masked (padded) unlabelled examples have no effect on the
    refinement, but they do enter batch statistics: pad only with networks
    without batch norm, or keep the unlabelled set exact (as
    :func:`jaxmeta.scenarios.semisup_episodes` does).

    Args:
      net: the embedding network (e.g. ``nets.conv4()``).
      num_ways: ``N``, the static number of classes per episode.
      refine: ``"soft_kmeans"``, ``"distractor_cluster"`` or ``"masked_soft_kmeans"``.
      refine_steps: soft k-means updates (the paper uses 1).
      scale: ProtoNets' logit scale, also the inverse temperature of the
        soft assignments.
      mask_hidden: hidden units of the masking MLP.
      mask_init: ``(beta, gamma)`` of the gates before training, both > 0
        (``beta``: threshold in units of the mean distance; ``gamma``: slope).
      embed_together: embed support and unlabelled examples in one call.

    Returns:
      A :class:`MetaLearner`; ``meta_params = {"net": ...}`` plus
      ``"log_distractor_radius"`` or ``"mask_net"`` for those variants.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxmeta import Episode, learners, nets
      >>> learner = learners.semisup_protonet(nets.mlp((16,), None), num_ways=2, refine="soft_kmeans")
      >>> ep = Episode(jnp.array([[0.0], [1.0]]), jnp.array([0, 1]), jnp.array([[0.1], [0.9]]), jnp.array([0, 1]),
      ...              aux={"unlabelled_x": jnp.array([[0.2], [0.8], [0.7]])})
      >>> p = learner.init(jax.random.key(0), ep)
      >>> learner.adapt(p, ep, jax.random.key(1)).shape
      (2, 16)
    """
    net = _check_network(net)
    num_ways = check_num_ways(num_ways)
    if refine not in REFINEMENTS:
        raise ValueError(f"refine: expected one of {REFINEMENTS}, got {refine!r}.")
    if int(refine_steps) != refine_steps or refine_steps < 1:
        raise ValueError(f"refine_steps: expected an integer >= 1, got {refine_steps}.")
    if int(mask_hidden) != mask_hidden or mask_hidden < 1:
        raise ValueError(f"mask_hidden: expected a positive integer, got {mask_hidden}.")
    base = protonet(net, num_ways=num_ways, distance="euclidean", scale=scale)
    if len(tuple(mask_init)) != 2 or not all(float(v) > 0 for v in mask_init):
        raise ValueError(f"mask_init: expected (beta, gamma) with both > 0, got {mask_init!r}.")
    mask_net = mlp((int(mask_hidden),), 2)
    log_init = jnp.log(jnp.asarray(mask_init, jnp.float32))  # (beta, gamma) = mask_init * exp(MLP output)

    def init(key, example):
        k_net, k_mask = jax.random.split(key)
        meta = base.init(k_net, example)
        unlabelled_set(example)  # checks the aux layout once, on the host
        if refine == "distractor_cluster":
            meta["log_distractor_radius"] = jnp.zeros((), jnp.float32)
        elif refine == "masked_soft_kmeans":
            mask_params = mask_net.init(k_mask, jnp.zeros((1, _STATS)))
            mask_params["head"] = jax.tree_util.tree_map(jnp.zeros_like, mask_params["head"])  # gates = mask_init
            meta["mask_net"] = mask_params
        return meta

    def gates(meta_params):
        def gate_fn(distances, mask):
            normalised, stats = distance_statistics(distances, mask)
            beta, gamma = jnp.moveaxis(jnp.exp(mask_net.apply(meta_params["mask_net"], stats) + log_init), 1, 0)
            return soft_kmeans_gates(normalised, beta, gamma)

        return gate_fn

    def adapt(meta_params, episode, key):
        ux, umask = unlabelled_set(episode)
        if ux.shape[0] == 0:
            return base.adapt(meta_params, episode, key)
        num_support = episode.support_x.shape[0]
        if embed_together:
            emb = net.apply(meta_params["net"], jnp.concatenate([episode.support_x, ux.astype(episode.support_x.dtype)]))
            support, unlabelled = emb[:num_support], emb[num_support:]
        else:
            support, unlabelled = net.apply(meta_params["net"], episode.support_x), net.apply(meta_params["net"], ux)
        onehot = jax.nn.one_hot(episode.support_y, num_ways, dtype=support.dtype)
        if episode.support_mask is not None:
            onehot = onehot * episode.support_mask.astype(support.dtype)[:, None]
        protos = prototypes(support, episode.support_y, num_ways, episode.support_mask)
        radius = jnp.exp(meta_params["log_distractor_radius"]) if refine == "distractor_cluster" else None
        gate_fn = gates(meta_params) if refine == "masked_soft_kmeans" else None
        return soft_kmeans_refine(protos, onehot.sum(axis=0), unlabelled, mask=umask, steps=int(refine_steps),
                                  scale=scale, distractor_radius=radius, gate_fn=gate_fn)

    return MetaLearner(init, adapt, base.loss, base.predict)


def entropy_term(weight: float = 1.0, *, learn_weight: bool = True, field: str = "unlabelled_x",
                 mask_field: str = "unlabelled_mask") -> InnerTerm:
    """Entropy minimisation on the unlabelled set as an inner-loop term.

    ``weight * masked_mean_j H(softmax(f_phi(x~_j)))`` over ``episode.aux[field]``.
    Minimising the entropy of the adapted model's predictions on unlabelled
    examples moves its decision boundaries away from dense regions of the
    task's unlabelled data (Grandvalet & Bengio, 2005), which is the
    assumption few-shot support sets are too small to exploit on their own.
    With ``learn_weight`` the weight is a meta-parameter (``{"log_weight"}``,
    starting at ``weight``): meta-training can turn the term down where it
    hurts (e.g. with distractors, whose entropy it also minimises). It gets
    a meta-gradient only through second-order MAML.

    Args:
      weight: the (initial) weight of the term, > 0.
      learn_weight: meta-learn the weight (log-parametrised).
      field, mask_field: where the unlabelled set lives in ``episode.aux``.

    Returns:
      An :class:`~jaxmeta.learners.InnerTerm` for ``maml(..., inner_term=...)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxmeta import Episode, nets
      >>> term = entropy_term(0.5)
      >>> net = nets.mlp((4,), 3)
      >>> ep = Episode(jnp.zeros((3, 2)), jnp.zeros(3, jnp.int32), jnp.zeros((3, 2)), jnp.zeros(3, jnp.int32),
      ...              aux={"unlabelled_x": jnp.ones((5, 2))})
      >>> tp = term.init(jax.random.key(0), ep)
      >>> term.loss(tp, net.apply, net.init(jax.random.key(1), ep.support_x), ep).shape
      ()
    """
    if not float(weight) > 0:
        raise ValueError(f"weight: expected a positive number, got {weight}.")

    def init(key, example):
        del key
        unlabelled_set(example, field, mask_field)
        return {"log_weight": jnp.log(jnp.asarray(weight, jnp.float32))} if learn_weight else {}

    def loss(term_params, apply_fn: Callable, params, episode):
        x, mask = unlabelled_set(episode, field, mask_field)
        if x.shape[0] == 0:
            return jnp.zeros((), jnp.float32)
        w = jnp.exp(term_params["log_weight"]) if learn_weight else weight
        return w * masked_mean(entropy(apply_fn(params, x)), mask)

    return InnerTerm(init, loss)


def semisup_maml(net: Network, loss_fn: Callable, *, unlabelled_weight: float = 1.0,
                 learn_unlabelled_weight: bool = True, **kwargs) -> MetaLearner:
    """MAML whose inner loop also minimises prediction entropy on the unlabelled set.

    :func:`jaxmeta.learners.maml` with ``inner_term=entropy_term(unlabelled_weight,
    learn_weight=learn_unlabelled_weight)``: each inner step descends
    ``support_loss + w * mean entropy(unlabelled)``. The support loss, the
    outer (query) loss and every other option are MAML's; with ``U = 0``
    unlabelled examples it is MAML. Entropy minimisation was chosen over
    confident pseudo-labels because it is smooth (no threshold to tune, a
    useful second-order meta-gradient for the weight ``w``) and uses every
    unlabelled example in proportion to the model's confidence.

    Args:
      net, loss_fn: as :func:`jaxmeta.learners.maml`.
      unlabelled_weight: (initial) weight ``w`` of the entropy term.
      learn_unlabelled_weight: meta-learn ``w`` (``meta_params["inner_term"]["log_weight"]``).
      **kwargs: any other :func:`jaxmeta.learners.maml` option.

    Example:
      >>> from jaxmeta import learners, losses, nets
      >>> learner = learners.semisup_maml(nets.mlp((8,), 3), losses.softmax_cross_entropy, inner_lr=0.1)
    """
    return maml(net, loss_fn, inner_term=entropy_term(unlabelled_weight, learn_weight=learn_unlabelled_weight),
                **kwargs)
