"""Pieces shared by the supervised learners: masked loss + metrics on a set."""

from __future__ import annotations

from typing import Callable, Mapping, Optional

import jax
import jax.numpy as jnp

from jaxmeta.losses import masked_mean

__all__ = ["supervised_loss", "support_objective", "check_metric_fns", "check_example_labels", "check_widths"]


def check_example_labels(output_shape, example) -> None:
    """For classification episodes, checks concrete labels against the output width.

    Called by ``init`` (on the host, before anything is compiled): a
    ``support_y``/``query_y`` label ``>= N`` for a network with ``N`` outputs
    raises a ``ValueError`` naming the field.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxmeta import Episode
      >>> ep = Episode(jnp.zeros((4, 2)), jnp.array([0, 1, 2, 5]), jnp.zeros((2, 2)), jnp.array([0, 1]))
      >>> check_example_labels((4, 3), ep)
      Traceback (most recent call last):
      ValueError: episode.support_y: labels must lie in [0, 3) for a network with 3 outputs, got values in [0, 5]. ...
    """
    if len(output_shape) != 2:
        return
    width = int(output_shape[-1])
    for name in ("support_y", "query_y"):
        y = getattr(example, name)
        if isinstance(y, jax.core.Tracer) or not jnp.issubdtype(jnp.asarray(y).dtype, jnp.integer):
            continue
        y = jnp.asarray(y)
        if y.size and (int(y.min()) < 0 or int(y.max()) >= width):
            raise ValueError(
                f"episode.{name}: labels must lie in [0, {width}) for a network with {width} outputs, got "
                f"values in [{int(y.min())}, {int(y.max())}]. Match the head width to the number of ways."
            )


def check_widths(name: str, widths, *, allow_empty: bool = False) -> tuple:
    """Validates a sequence of layer widths (``name`` is the argument named in errors).

    Example:
      >>> check_widths("hidden", [64, 64])
      (64, 64)
    """
    try:
        widths = tuple(int(w) for w in widths)
    except TypeError:
        raise TypeError(f"{name}: expected a sequence of layer widths such as (128, 128), got {widths!r}.") from None
    if (not widths and not allow_empty) or any(w <= 0 for w in widths):
        raise ValueError(f"{name}: expected {'' if allow_empty else 'a non-empty sequence of '}positive widths, "
                         f"got {widths}.")
    return widths


def check_metric_fns(metrics: Optional[Mapping[str, Callable]]) -> dict:
    """Validates a ``{name: fn(outputs, targets) -> [B]}`` dict of extra metrics.

    Example:
      >>> from jaxmeta.losses import accuracy
      >>> list(check_metric_fns({"acc": accuracy}))
      ['acc']
      >>> check_metric_fns({"loss": accuracy})
      Traceback (most recent call last):
      ValueError: metrics: 'loss' is reserved for the learner's loss.
    """
    metrics = dict(metrics or {})
    for name, fn in metrics.items():
        if not isinstance(name, str) or not callable(fn):
            raise TypeError(f"metrics: expected {{name: fn(outputs, targets) -> [B]}}, got {name!r}: {fn!r}.")
        if name == "loss":
            raise ValueError("metrics: 'loss' is reserved for the learner's loss.")
    return metrics


def supervised_loss(outputs, targets, mask, loss_fn: Callable, metric_fns: Mapping[str, Callable]):
    """Masked mean of ``loss_fn(outputs, targets)`` and of every extra metric.

    Returns ``(scalar_loss, {name: scalar})``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxmeta.losses import squared_error
      >>> supervised_loss(jnp.ones((2, 1)), jnp.zeros((2, 1)), None, squared_error, {})
      (Array(1., dtype=float32), {})
    """
    per_example = loss_fn(outputs, targets)
    if jnp.ndim(per_example) != 1:
        raise ValueError(
            f"loss_fn: must return one value per example (shape [B]), got shape {jnp.shape(per_example)}; "
            "jaxmeta losses are per-example and the learner reduces them."
        )
    loss = masked_mean(per_example, mask)
    return loss, {name: masked_mean(fn(outputs, targets), mask) for name, fn in metric_fns.items()}


def support_objective(apply_fn: Callable, loss_fn: Callable, frozen, episode) -> Callable:
    """The inner-loop objective ``adapted -> mean support loss`` for a partitioned network.

    ``frozen`` holds the params the inner loop does not adapt (``None`` holes
    where adapted params go, see :func:`jaxmeta.learners.partition`).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxmeta import Episode, losses, nets
      >>> from jaxmeta.learners import partition
      >>> net = nets.mlp((4,), 1)
      >>> ep = Episode(jnp.ones((3, 1)), jnp.ones((3, 1)), jnp.ones((2, 1)), jnp.ones((2, 1)))
      >>> adapted, frozen = partition(net.init(jax.random.key(0), ep.support_x), ("head",))
      >>> support_objective(net.apply, losses.squared_error, frozen, ep)(adapted).shape
      ()
    """
    from jaxmeta.learners.inner import combine

    def objective(adapted):
        out = apply_fn(combine(adapted, frozen), episode.support_x)
        return supervised_loss(out, episode.support_y, episode.support_mask, loss_fn, {})[0]

    return objective


def embedding_learner_params(net, num_ways: int, scale: float, learn_scale: bool, what: str, views: bool = False):
    """``init`` and ``scale_of`` for a metric learner over an embedding ``net`` with an optional learned logit scale.

    ``init(key, example)`` checks that the embedding is ``[B, D]`` (``[B, V, D]`` with ``views``) and the
    example's labels fit ``num_ways``, and returns ``{"net": ...[, "log_scale": ...]}``;
    ``scale_of(meta_params)`` is the logit scale (learned or fixed).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxmeta import Episode, nets
      >>> init, scale_of = embedding_learner_params(nets.mlp((4,), None), 2, 10.0, True, "ProtoNet")
      >>> ep = Episode(jnp.zeros((2, 1)), jnp.array([0, 1]), jnp.zeros((2, 1)), jnp.array([0, 1]))
      >>> round(float(scale_of(init(jax.random.key(0), ep))), 3)
      10.0
    """
    if not scale > 0:
        raise ValueError(f"scale: expected a positive number, got {scale}.")

    def init(key, example):
        params = net.init(key, example.support_x)
        out = jax.eval_shape(net.apply, params, example.support_x)
        if len(out.shape) != (3 if views else 2):
            want = "[B, V, D] (views=True)" if views else "[B, D]"
            fix = ("embed each example in every view" if views else
                   "flatten it" + (" (or, for V views per example, pass views=True to a learner that takes them)"
                                   if len(out.shape) == 3 else ""))
            raise ValueError(f"net: a {what} embedding must be {want}, got output shape {out.shape}; {fix}.")
        check_example_labels((out.shape[0], num_ways), example)
        meta = {"net": params}
        if learn_scale:
            meta["log_scale"] = jnp.log(jnp.asarray(scale, jnp.float32))
        return meta

    def scale_of(meta_params):
        return jnp.exp(meta_params["log_scale"]) if learn_scale else scale

    return init, scale_of
