"""Implicit MAML (Rajeswaran, Finn, Kakade & Levine, 2019)."""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.sparse.linalg import cg

from jaxmeta.learners.base import MetaLearner
from jaxmeta.learners.common import check_example_labels, check_metric_fns, supervised_loss
from jaxmeta.learners.inner import inner_loop, optax_rule, sgd_rule
from jaxmeta.learners.maml import _check_network
from jaxmeta.nets import Network

__all__ = ["imaml"]


def _zero_cotangent(tree):
    """Zero cotangents for a pytree of arrays (``float0`` for integer leaves)."""

    def zero(a):
        if jnp.issubdtype(jnp.result_type(a), jnp.inexact):
            return jnp.zeros_like(a)
        return np.zeros(np.shape(a), dtype=jax.dtypes.float0)

    return jax.tree_util.tree_map(zero, tree)


def imaml(
    net: Network,
    loss_fn: Callable,
    *,
    reg: float = 1.0,
    inner_lr: float = 0.01,
    inner_steps: int = 10,
    inner_optimizer: Optional[optax.GradientTransformation] = None,
    cg_steps: int = 5,
    unroll: Optional[Union[bool, int]] = None,
    metrics: Optional[Mapping[str, Callable]] = None,
) -> MetaLearner:
    """iMAML: meta-gradients through the inner optimum by implicit differentiation.

    ``adapt`` approximately solves the proximal inner problem
    ``phi* = argmin_phi L_support(phi) + reg/2 * |phi - theta|^2`` with
    ``inner_steps`` steps of SGD (or ``inner_optimizer``) from ``theta``. Its
    derivative is not obtained by back-propagating through those steps:
    a ``custom_vjp`` returns ``(I + H / reg)^{-1} v`` for an incoming cotangent
    ``v``, solved by ``cg_steps`` of conjugate gradient with Hessian-vector
    products of the support loss at ``phi*`` (``H``). Memory therefore does not
    grow with ``inner_steps``: nothing of the inner trajectory is stored.

    The meta-gradient is exact when the inner problem is solved exactly (and CG
    converges); ``reg`` trades how far ``phi`` may move from ``theta`` against
    how well-conditioned the linear system is. All parameters are adapted.

    Args:
      net: the network.
      loss_fn: per-example loss ``(outputs, targets) -> [B]``.
      reg: the proximal strength ``lambda`` (> 0).
      inner_lr: inner SGD step size (ignored with ``inner_optimizer``).
      inner_steps: inner optimisation steps.
      inner_optimizer: optional optax transformation for the inner problem.
      cg_steps: conjugate-gradient iterations for the implicit gradient.
      unroll: inner ``lax.scan`` unroll (``None``: per backend).
      metrics: extra query metrics ``{name: fn(outputs, targets) -> [B]}``.

    Returns:
      A :class:`MetaLearner` (``meta_params = {"net": ...}``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxmeta import learners, losses, nets, scenarios
      >>> learner = learners.imaml(nets.mlp((40, 40), 1), losses.squared_error, reg=1.0, inner_lr=0.02)
      >>> ep = jax.tree_util.tree_map(lambda a: a[0], scenarios.sinusoid(jax.random.key(0), num_tasks=1,
      ...                             support_shots=10, query_shots=10))
      >>> p = learner.init(jax.random.key(1), ep)
      >>> g = jax.grad(lambda p: learner.loss(p, learner.adapt(p, ep, None), ep)[0])(p)
      >>> sorted(g["net"])
      ['head', 'hidden_0', 'hidden_1']
    """
    net = _check_network(net)
    if not reg > 0:
        raise ValueError(f"reg: expected a positive proximal strength lambda, got {reg}.")
    if int(inner_steps) < 1 or int(cg_steps) < 1:
        raise ValueError(f"inner_steps and cg_steps must be >= 1, got {inner_steps} and {cg_steps}.")
    metric_fns = check_metric_fns(metrics)
    rule = optax_rule(inner_optimizer) if inner_optimizer is not None else sgd_rule(inner_lr)

    def support_loss(params, episode):
        out = net.apply(params, episode.support_x)
        return supervised_loss(out, episode.support_y, episode.support_mask, loss_fn, {})[0]

    def solve(theta, episode):
        theta = jax.lax.stop_gradient(theta)

        def objective(phi):
            prox = sum(jnp.sum(jnp.square(p - t)) for p, t in zip(jax.tree_util.tree_leaves(phi),
                                                                  jax.tree_util.tree_leaves(theta)))
            return support_loss(phi, episode) + 0.5 * reg * prox

        return inner_loop(objective, theta, rule, steps=inner_steps, first_order=True, unroll=unroll)

    @jax.custom_vjp
    def implicit_solve(theta, episode):
        return solve(theta, episode)

    def fwd(theta, episode):
        phi = solve(theta, episode)
        return phi, (phi, episode)

    def bwd(residuals, v):
        phi, episode = residuals
        grad_fn = jax.grad(lambda p: support_loss(p, episode))

        def matvec(x):
            # reverse over reverse (not jax.jvp of grad_fn): it also runs through custom_vjp layers
            # such as nets.conv3x3, which forbid forward mode
            hvp = jax.grad(lambda p: optax.tree_utils.tree_vdot(grad_fn(p), x))(phi)
            return jax.tree_util.tree_map(lambda a, h: a + h / reg, x, hvp)

        solution, _ = cg(matvec, v, maxiter=cg_steps)
        return solution, _zero_cotangent(episode)

    implicit_solve.defvjp(fwd, bwd)

    def init(key, example):
        params = net.init(key, example.support_x)
        check_example_labels(jax.eval_shape(net.apply, params, example.support_x).shape, example)
        return {"net": params}

    def adapt(meta_params, episode, key):
        del key
        return implicit_solve(meta_params["net"], episode)

    def loss(meta_params, task_params, episode):
        out = net.apply(task_params, episode.query_x)
        return supervised_loss(out, episode.query_y, episode.query_mask, loss_fn, metric_fns)

    def predict(meta_params, task_params, x):
        return net.apply(task_params, x)

    return MetaLearner(init, adapt, loss, predict)
