"""Reptile (Nichol, Achiam & Schulman, 2018)."""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Union

import jax
import jax.numpy as jnp
import optax

from jaxmeta.learners.base import MetaLearner
from jaxmeta.learners.common import check_example_labels, check_metric_fns, supervised_loss, support_objective
from jaxmeta.learners.inner import FilterSpec, combine, inner_loop, optax_rule, partition, sgd_rule
from jaxmeta.learners.maml import _check_network
from jaxmeta.nets import Network

__all__ = ["reptile"]


def reptile(
    net: Network,
    loss_fn: Callable,
    *,
    inner_lr: float = 0.01,
    inner_steps: int = 5,
    inner_optimizer: Optional[optax.GradientTransformation] = None,
    adapt_filter: FilterSpec = None,
    unroll: Optional[Union[bool, int]] = None,
    metrics: Optional[Mapping[str, Callable]] = None,
) -> MetaLearner:
    """Reptile: move the initialisation towards the task-adapted weights.

    ``adapt`` runs ``inner_steps`` steps of SGD (or ``inner_optimizer``) on the
    support set and stops the gradient. ``loss`` is
    ``0.5 * ||meta_params - stop_gradient(task_params)||^2``, whose gradient is
    exactly Reptile's direction ``theta - phi``; averaged over the episode
    batch by ``make_meta_step`` and applied by ``optax.sgd(epsilon)`` this is
    the batched Reptile update ``theta += epsilon * (mean(phi) - theta)``
    (any optax optimizer may replace plain SGD). The query loss of the adapted
    weights (and any ``metrics``) is reported as ``query_loss`` etc.

    Args:
      net: the network.
      loss_fn: per-example loss for the inner loop and the reported query metrics.
      inner_lr: inner SGD learning rate (ignored with ``inner_optimizer``).
      inner_steps: inner steps per task.
      inner_optimizer: optax transformation for the inner loop (Reptile's paper
        used Adam with ``b1=0``).
      adapt_filter: which params are adapted (see :func:`maml`).
      unroll: inner ``lax.scan`` unroll.
      metrics: extra query metrics ``{name: fn(outputs, targets) -> [B]}``.

    Example:
      >>> import optax
      >>> from jaxmeta import learners, losses, nets
      >>> learner = learners.reptile(nets.mlp(), losses.squared_error, inner_lr=0.02, inner_steps=5)
      >>> outer = optax.sgd(0.1)    # Reptile's outer step size epsilon
    """
    net = _check_network(net)
    metric_fns = check_metric_fns(metrics)
    rule = optax_rule(inner_optimizer) if inner_optimizer is not None else sgd_rule(inner_lr)

    def init(key, example):
        params = net.init(key, example.support_x)
        check_example_labels(jax.eval_shape(net.apply, params, example.support_x).shape, example)
        partition(params, adapt_filter)
        return {"net": params}

    def adapt(meta_params, episode, key):
        del key
        adapted, frozen = partition(meta_params["net"], adapt_filter)

        support_loss = support_objective(net.apply, loss_fn, frozen, episode)
        phi = inner_loop(support_loss, adapted, rule, steps=inner_steps, first_order=True, unroll=unroll)
        return jax.lax.stop_gradient(combine(phi, frozen))

    def loss(meta_params, task_params, episode):
        diffs = jax.tree_util.tree_map(lambda t, p: jnp.sum(jnp.square(t - p)), meta_params["net"], task_params)
        distance = 0.5 * sum(jax.tree_util.tree_leaves(diffs))
        out = net.apply(task_params, episode.query_x)
        query_loss, metrics_ = supervised_loss(out, episode.query_y, episode.query_mask, loss_fn, metric_fns)
        return distance, {"query_loss": query_loss, **metrics_}

    def predict(meta_params, task_params, x):
        return net.apply(task_params, x)

    return MetaLearner(init, adapt, loss, predict)
