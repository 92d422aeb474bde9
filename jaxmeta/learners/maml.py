"""The MAML family: MAML, first-order MAML, Meta-SGD, ANIL and MAML++ options.

One factory, :func:`maml`, builds all of them; the named factories are the
same learner with the paper's options set, so there is one implementation to
test and to benchmark.

Meta-parameters are ``{"net": params}`` plus ``{"inner_lr": ...}`` when the
inner learning rate is learned. Task parameters are the adapted network params
(the same pytree as ``meta_params["net"]``), so ``net.apply(task_params, x)``
is the adapted model.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import optax

from jaxmeta.learners.base import MetaLearner
from jaxmeta.learners.common import check_example_labels, check_metric_fns, supervised_loss, support_objective
from jaxmeta.learners.inner import FilterSpec, InnerTerm, combine, inner_loop, optax_rule, partition, sgd_rule
from jaxmeta.losses import masked_mean
from jaxmeta.nets import Network

__all__ = ["maml", "fomaml", "meta_sgd", "anil", "maml_plus_plus"]

_LR_MODES = (None, "scalar", "per_layer", "per_parameter", "per_layer_per_step")


def _check_network(net) -> Network:
    if not (hasattr(net, "init") and hasattr(net, "apply") and callable(net.apply)):
        raise TypeError(f"net: expected a jaxmeta.nets.Network (init, apply), got {type(net).__name__}.")
    return net


def maml(
    net: Network,
    loss_fn: Callable,
    *,
    inner_lr: float = 0.01,
    inner_steps: int = 1,
    inner_optimizer: Optional[optax.GradientTransformation] = None,
    first_order: bool = False,
    learn_inner_lr: Optional[str] = None,
    adapt_filter: FilterSpec = None,
    multi_step_loss: Union[None, str, Sequence[float]] = None,
    remat: bool = False,
    unroll: Optional[Union[bool, int]] = None,
    metrics: Optional[Mapping[str, Callable]] = None,
    inner_term: Optional[InnerTerm] = None,
) -> MetaLearner:
    """Model-Agnostic Meta-Learning (Finn et al., 2017) and its variants.

    ``adapt`` runs ``inner_steps`` gradient steps on the support loss
    (``lax.scan``); ``loss`` is the query loss of the adapted params. The
    meta-gradient flows through the inner loop (second order) unless
    ``first_order``.

    Args:
      net: the network (``jaxmeta.nets``).
      loss_fn: per-example loss ``(outputs, targets) -> [B]``, e.g.
        ``losses.squared_error`` or ``losses.softmax_cross_entropy``.
      inner_lr: inner SGD learning rate (the initial value when learned).
      inner_steps: inner gradient steps (0 gives a non-adapting learner: the
        "pretrained" baseline trained on all tasks jointly).
      inner_optimizer: any optax transformation for the inner loop instead of
        SGD (its state is fresh per task). Adam needs ``eps_root > 0`` for
        second-order meta-gradients. Exclusive with ``learn_inner_lr``.
      first_order: stop the gradient through inner gradients (FOMAML).
      learn_inner_lr: ``None`` (fixed), ``"scalar"``, ``"per_layer"`` (one rate
        per parameter tensor), ``"per_parameter"`` (Meta-SGD) or
        ``"per_layer_per_step"`` (MAML++'s LSLR).
      adapt_filter: which params the inner loop adapts: ``None`` (all), layer
        name prefixes like ``("head",)`` (ANIL), or ``fn(path, leaf) -> bool``.
      multi_step_loss: MAML++'s multi-step loss: ``"uniform"`` or a sequence of
        ``inner_steps`` weights; the outer loss is the weighted sum of query
        losses after every inner step. Task params then carry a leading
        ``[inner_steps]`` axis (``predict`` uses the last step).
      remat: rematerialise each inner step (``jax.checkpoint``): memory of the
        second-order meta-gradient stops growing with the stored activations of
        every step, at the cost of recomputing them.
      unroll: inner ``lax.scan`` unroll (``None``: per backend, see
        :func:`jaxmeta.learners.inner.inner_loop`).
      metrics: extra query metrics ``{name: fn(outputs, targets) -> [B]}``, e.g.
        ``{"accuracy": losses.accuracy}``.
      inner_term: an :class:`~jaxmeta.learners.InnerTerm` added to the support
        loss in the inner loop (e.g. entropy on unlabelled examples, see
        :func:`jaxmeta.learners.semisup_maml`); its parameters are
        ``meta_params["inner_term"]``.

    Returns:
      A :class:`MetaLearner`.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from jaxmeta import learners, losses, nets, scenarios, train
      >>> learner = learners.maml(nets.mlp((40, 40), 1), losses.squared_error, inner_lr=0.01)
      >>> episodes = scenarios.sinusoid(jax.random.key(0), num_tasks=25, support_shots=10, query_shots=10)
      >>> state = train.init_state(learner, optax.adam(1e-3), jax.random.key(1), episodes)
      >>> step = train.make_meta_step(learner, optax.adam(1e-3))
      >>> state, metrics = step(state, episodes, jax.random.key(2))
      >>> sorted(metrics)
      ['grad_norm', 'loss']
    """
    net = _check_network(net)
    inner_steps = int(inner_steps)
    if inner_steps < 0:
        raise ValueError(f"inner_steps: expected a non-negative integer, got {inner_steps}.")
    if learn_inner_lr not in _LR_MODES:
        raise ValueError(f"learn_inner_lr: expected one of {_LR_MODES}, got {learn_inner_lr!r}.")
    if inner_optimizer is not None and learn_inner_lr is not None:
        raise ValueError("inner_optimizer and learn_inner_lr are exclusive: a learned rate implies inner SGD.")
    if inner_optimizer is not None and not isinstance(inner_optimizer, optax.GradientTransformation):
        raise TypeError(f"inner_optimizer: expected an optax.GradientTransformation, got {type(inner_optimizer).__name__}.")
    if learn_inner_lr == "per_layer_per_step" and inner_steps < 1:
        raise ValueError("learn_inner_lr='per_layer_per_step' needs inner_steps >= 1.")
    weights = None
    if multi_step_loss is not None:
        if inner_steps < 1:
            raise ValueError("multi_step_loss needs inner_steps >= 1.")
        if isinstance(multi_step_loss, str):
            if multi_step_loss != "uniform":
                raise ValueError(f"multi_step_loss: expected 'uniform' or a sequence of weights, got {multi_step_loss!r}.")
            weights = jnp.full((inner_steps,), 1.0 / inner_steps)
        else:
            weights = jnp.asarray(multi_step_loss, jnp.float32)
            if weights.shape != (inner_steps,):
                raise ValueError(f"multi_step_loss: expected {inner_steps} weights (one per inner step), got shape {weights.shape}.")
    metric_fns = check_metric_fns(metrics)
    if inner_term is not None and not isinstance(inner_term, InnerTerm):
        raise TypeError(f"inner_term: expected a jaxmeta.learners.InnerTerm, got {type(inner_term).__name__}.")

    def init(key, example):
        params = net.init(key, example.support_x)
        check_example_labels(jax.eval_shape(net.apply, params, example.support_x).shape, example)
        meta = {"net": params}
        adapted, _ = partition(params, adapt_filter)  # also validates the filter
        if learn_inner_lr == "scalar":
            meta["inner_lr"] = jnp.asarray(inner_lr, jnp.float32)
        elif learn_inner_lr == "per_layer":
            meta["inner_lr"] = jax.tree_util.tree_map(lambda p: jnp.asarray(inner_lr, jnp.float32), adapted)
        elif learn_inner_lr == "per_parameter":
            meta["inner_lr"] = jax.tree_util.tree_map(lambda p: jnp.full(p.shape, inner_lr, jnp.float32), adapted)
        elif learn_inner_lr == "per_layer_per_step":
            meta["inner_lr"] = jax.tree_util.tree_map(lambda p: jnp.full((inner_steps,), inner_lr, jnp.float32), adapted)
        if inner_term is not None:
            meta["inner_term"] = inner_term.init(jax.random.fold_in(key, 1), example)
        return meta

    def rule_for(meta_params):
        if inner_optimizer is not None:
            return optax_rule(inner_optimizer)
        if learn_inner_lr is None:
            return sgd_rule(inner_lr)
        return sgd_rule(meta_params["inner_lr"], per_step=learn_inner_lr == "per_layer_per_step")

    def adapt(meta_params, episode, key):
        del key  # MAML's adaptation is deterministic
        adapted, frozen = partition(meta_params["net"], adapt_filter)

        support_loss = support_objective(net.apply, loss_fn, frozen, episode)

        def objective(a):
            if inner_term is None:
                return support_loss(a)
            term = inner_term.loss(meta_params["inner_term"], net.apply, combine(a, frozen), episode)
            return support_loss(a) + term

        result = inner_loop(objective, adapted, rule_for(meta_params), steps=inner_steps,
                            first_order=first_order, remat=remat, unroll=unroll, collect=weights is not None)
        if weights is None:
            return combine(result, frozen)
        _, trajectory = result
        stacked_frozen = jax.tree_util.tree_map(lambda f: jnp.broadcast_to(f, (inner_steps,) + f.shape), frozen)
        return combine(trajectory, stacked_frozen)

    def query(params, episode):
        out = net.apply(params, episode.query_x)
        return supervised_loss(out, episode.query_y, episode.query_mask, loss_fn, metric_fns)

    def loss(meta_params, task_params, episode):
        if weights is None:
            return query(task_params, episode)
        losses_t, metrics_t = jax.vmap(query, in_axes=(0, None))(task_params, episode)
        final = jax.tree_util.tree_map(lambda m: m[-1], metrics_t)
        final["final_step_loss"] = losses_t[-1]
        return jnp.sum(weights * losses_t), final

    def predict(meta_params, task_params, x):
        if weights is not None:
            task_params = jax.tree_util.tree_map(lambda p: p[-1], task_params)
        return net.apply(task_params, x)

    return MetaLearner(init, adapt, loss, predict)


def fomaml(net: Network, loss_fn: Callable, **kwargs) -> MetaLearner:
    """First-order MAML: :func:`maml` with ``first_order=True``.

    Example:
      >>> from jaxmeta import learners, losses, nets
      >>> learner = learners.fomaml(nets.mlp(), losses.squared_error, inner_lr=0.01)
    """
    return maml(net, loss_fn, first_order=True, **kwargs)


def meta_sgd(net: Network, loss_fn: Callable, *, inner_lr: float = 0.01, **kwargs) -> MetaLearner:
    """Meta-SGD (Li et al., 2017): a learned learning rate per parameter.

    :func:`maml` with ``learn_inner_lr="per_parameter"``; ``inner_lr`` is the
    initial value of every rate. The rates are meta-parameters
    (``meta_params["inner_lr"]``), trained by the same outer optimizer.

    Example:
      >>> from jaxmeta import learners, losses, nets
      >>> learner = learners.meta_sgd(nets.mlp(), losses.squared_error, inner_lr=0.01)
    """
    return maml(net, loss_fn, inner_lr=inner_lr, learn_inner_lr="per_parameter", **kwargs)


def anil(net: Network, loss_fn: Callable, *, head: FilterSpec = ("head",), **kwargs) -> MetaLearner:
    """ANIL (Raghu et al., 2020): adapt only the head, keep the body frozen per task.

    :func:`maml` with ``adapt_filter=head``. The body is still meta-learned by
    the outer loop; the inner loop differentiates only through the head, which
    is what makes it cheap.

    Example:
      >>> from jaxmeta import learners, losses, nets
      >>> learner = learners.anil(nets.conv4(out=5), losses.softmax_cross_entropy, inner_lr=0.4)
    """
    return maml(net, loss_fn, adapt_filter=head, **kwargs)


def maml_plus_plus(
    net: Network,
    loss_fn: Callable,
    *,
    inner_steps: int = 5,
    inner_lr: float = 0.1,
    multi_step_loss: Union[None, str, Sequence[float]] = "uniform",
    **kwargs,
) -> MetaLearner:
    """MAML++ (Antoniou et al., 2019): learned per-layer per-step rates and the multi-step loss.

    :func:`maml` with ``learn_inner_lr="per_layer_per_step"`` and
    ``multi_step_loss``. (MAML++'s other fixes are elsewhere in jaxmeta:
    per-task batch statistics are how :class:`jaxmeta.nets.TaskBatchNorm`
    always works; cosine annealing is an optax schedule on the outer optimizer.
    Annealing the multi-step weights over training is not done: pass the weights
    you want, or rebuild the learner with new weights between phases.)

    Example:
      >>> from jaxmeta import learners, losses, nets
      >>> learner = learners.maml_plus_plus(nets.mlp(), losses.squared_error, inner_steps=5)
    """
    return maml(net, loss_fn, inner_steps=inner_steps, inner_lr=inner_lr, learn_inner_lr="per_layer_per_step",
                multi_step_loss=multi_step_loss, **kwargs)
