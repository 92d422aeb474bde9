"""A meta-learned feature network with a closed-form ridge (Bayesian linear) head per task.

The inner loop is solved exactly instead of by gradient steps (R2-D2,
Bertinetto et al., 2019; ALPaCA, Harrison et al., 2018): the network ``f``
maps every input to features, a constant 1 is appended (the bias), and each
task's linear head ``W [F + 1, O]`` is the posterior mean of Bayesian linear
regression on the support set with a meta-learned Gaussian prior
``W ~ N(W0, diag(1 / lambda))`` (unit noise variance)::

    W = W0 + (Phi^T M Phi + diag(lambda))^{-1} Phi^T M (Y - Phi W0)

``Phi`` holds the support features, ``M`` the support mask (padding never
counts), ``Y`` the targets (one-hot labels for classification). ``f``,
``W0`` and the per-feature prior precisions ``lambda`` are meta-parameters, and
the outer gradient flows through the solve (a Cholesky factorisation of an
``(F + 1) x (F + 1)`` matrix), so it is exact and costs no unrolled steps.
With a large precision for the bias the head behaves like a shrunk per-task
offset, with small ones like least squares on the support set.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional

import jax
import jax.numpy as jnp

from jaxmeta.learners.base import MetaLearner
from jaxmeta.learners.common import check_example_labels, check_metric_fns, supervised_loss
from jaxmeta.learners.maml import _check_network
from jaxmeta.losses import mask_weights, softmax_cross_entropy, squared_error
from jaxmeta.nets import Network

__all__ = ["ridge_head"]


def _with_bias(features):
    return jnp.concatenate([features, jnp.ones(features.shape[:-1] + (1,), features.dtype)], axis=-1)


def ridge_head(
    net: Network,
    loss_fn: Optional[Callable] = None,
    *,
    num_classes: Optional[int] = None,
    precision: float = 1.0,
    learn_precision: bool = True,
    bias_init: float = 0.0,
    metrics: Optional[Mapping[str, Callable]] = None,
) -> MetaLearner:
    """Feature network + a per-task linear head solved in closed form (ridge / Bayesian linear regression).

    ``adapt`` embeds the support set with ``net`` (``[S, F]``), appends a bias
    column and returns the posterior-mean head ``W [F + 1, O]`` (module
    docstring); ``predict`` is ``[f(x), 1] @ W``; ``loss`` is the masked mean of
    ``loss_fn`` on the query set. No inner steps, no inner learning rate: the
    support fit is exact, and the outer gradient goes through the solve.

    Regression episodes carry float targets ``[S, O]``; with ``num_classes=N``
    the episodes carry integer labels, the head is fit to one-hot targets and
    ``predict`` returns ``N`` logits times a meta-learned scale (R2-D2). For
    classification the prior mean is zero and not learned, so the head is
    equivariant to relabelling the classes.

    Args:
      net: the feature network ``x [B, ...] -> [B, F]``.
      loss_fn: per-example query loss ``(outputs, targets) -> [B]``; default
        :func:`jaxmeta.losses.squared_error` for regression and
        :func:`jaxmeta.losses.softmax_cross_entropy` for classification.
      num_classes: ``N`` for classification; ``None`` for regression.
      precision: initial prior precision ``lambda`` of every head weight (the
        ridge penalty; larger = stronger pull toward the prior mean).
      learn_precision: meta-learn one precision per feature (``meta_params
        ["log_precision"]``, ``[F + 1]``); otherwise it stays ``precision``.
      bias_init: initial prior mean of the bias weight (regression), e.g. the
        mean target, so training starts from the mean predictor.
      metrics: extra query metrics ``{name: fn(outputs, targets) -> [B]}``.

    Returns:
      A :class:`MetaLearner`; ``meta_params = {"net", "prior_mean" (regression),
      "log_precision", "log_scale" (classification)}``, ``task_params`` the head
      ``[F + 1, O]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxmeta import Episode, learners, nets
      >>> learner = learners.ridge_head(nets.mlp((16,), 8))
      >>> x = jnp.linspace(-1, 1, 10)[:, None]
      >>> ep = Episode(x, 2 * x + 1, x, 2 * x + 1)
      >>> p = learner.init(jax.random.key(0), ep)
      >>> learner.adapt(p, ep, None).shape  # 8 features + bias, 1 output
      (9, 1)
      >>> loss, _ = learner.loss(p, learner.adapt(p, ep, None), ep)
      >>> bool(loss < 0.1)  # a ridge fit of a line on random features, before any meta-training
      True
    """
    net = _check_network(net)
    classification = num_classes is not None
    if classification and (int(num_classes) != num_classes or num_classes < 2):
        raise ValueError(f"num_classes: expected an integer >= 2 (or None for regression), got {num_classes}.")
    if not precision > 0:
        raise ValueError(f"precision: expected a positive prior precision (ridge penalty), got {precision}.")
    if loss_fn is None:
        loss_fn = softmax_cross_entropy if classification else squared_error
    metric_fns = check_metric_fns(metrics)

    def check_features(shape):
        if len(shape) != 2:
            raise ValueError(f"ridge_head: expected the network to map x to features [B, F], got shape {shape}.")

    def features(meta_params, x):
        h = net.apply(meta_params["net"], x)
        check_features(h.shape)
        return _with_bias(h)

    def targets(y):
        if classification:
            if not jnp.issubdtype(y.dtype, jnp.integer) or y.ndim != 1:
                raise ValueError(f"ridge_head: with num_classes, expected integer labels [S], got {y.dtype} {y.shape}.")
            return jax.nn.one_hot(y, num_classes)
        if y.ndim != 2 or not jnp.issubdtype(y.dtype, jnp.floating):
            raise ValueError(f"ridge_head: expected float regression targets [S, O] (pass num_classes=N for labels), "
                             f"got {y.dtype} {y.shape}.")
        return y

    def init(key, example):
        params = net.init(key, example.support_x)
        shape = jax.eval_shape(net.apply, params, example.support_x).shape
        check_features(shape)
        if classification:  # labels against the N logits the head writes
            check_example_labels((shape[0], num_classes), example)
        outputs = num_classes if classification else targets(jnp.asarray(example.support_y)).shape[-1]
        width = shape[-1] + 1
        meta = {"net": params, "log_precision": jnp.full((width,), jnp.log(precision), jnp.float32)}
        if classification:
            meta["log_scale"] = jnp.zeros((), jnp.float32)
        else:
            meta["prior_mean"] = jnp.zeros((width, outputs), jnp.float32).at[-1].set(bias_init)
        return meta

    def prior(meta_params, outputs):
        lam = jnp.exp(meta_params["log_precision"])
        if not learn_precision:
            lam = jax.lax.stop_gradient(lam)
        mean = meta_params["prior_mean"] if not classification else jnp.zeros((lam.shape[0], outputs), lam.dtype)
        return mean, lam

    def adapt(meta_params, episode, key):
        del key  # the solve is deterministic
        phi = features(meta_params, episode.support_x)
        y = targets(episode.support_y).astype(phi.dtype)
        w0, lam = prior(meta_params, y.shape[-1])
        m = mask_weights(episode.support_mask, phi.shape[0], phi.dtype)
        weighted = phi * m[:, None]
        gram = weighted.T @ phi + jnp.diag(lam)
        factor = jax.scipy.linalg.cho_factor(gram, lower=True)
        return w0 + jax.scipy.linalg.cho_solve(factor, weighted.T @ (y - phi @ w0))

    def predict(meta_params, task_params, x):
        out = features(meta_params, x) @ task_params
        return out * jnp.exp(meta_params["log_scale"]) if classification else out

    def loss(meta_params, task_params, episode):
        out = predict(meta_params, task_params, episode.query_x)
        return supervised_loss(out, episode.query_y, episode.query_mask, loss_fn, metric_fns)

    return MetaLearner(init, adapt, loss, predict)
