"""The learner contract: :class:`MetaLearner`."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

__all__ = ["MetaLearner"]


class MetaLearner(NamedTuple):
    """A meta-learner as pure functions (optax-style): every jaxmeta learner is one.

    Gradient-based (MAML, Meta-SGD, ANIL, Reptile, iMAML), metric-based
    (ProtoNets, Matching Networks) and model-based (neural processes,
    hypernetworks) learners all fit the same three training functions, so one
    meta-step, one training loop, one evaluator and one benchmark serve them all.

    Attributes:
      init: ``(key, example_episode) -> meta_params``. ``example_episode`` is one
        unbatched :class:`~jaxmeta.Episode`; only its shapes and dtypes are used.
      adapt: ``(meta_params, episode, key) -> task_params``. Uses the support
        set only (and ``episode.aux`` where a learner documents it): an inner
        loop for gradient-based learners, class prototypes for metric-based
        ones, a task representation for model-based ones.
      loss: ``(meta_params, task_params, episode) -> (scalar, metrics)``. The
        outer objective on the query set; ``metrics`` is a dict of scalars.
        ``make_meta_step`` differentiates ``loss(p, adapt(p, ep, k), ep)`` with
        respect to ``p``.
      predict: ``(meta_params, task_params, x) -> outputs`` for new inputs
        ``x [B, ...]`` (logits, regression outputs, ...). Not needed for
        training; it is what inference, plots and downstream tools call.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxmeta import Episode, learners, losses, nets
      >>> learner = learners.maml(nets.mlp((40, 40), 1), losses.squared_error, inner_lr=0.01)
      >>> ep = Episode(jnp.ones((5, 1)), jnp.ones((5, 1)), jnp.ones((10, 1)), jnp.ones((10, 1)))
      >>> params = learner.init(jax.random.key(0), ep)
      >>> task_params = learner.adapt(params, ep, jax.random.key(1))
      >>> loss, metrics = learner.loss(params, task_params, ep)
      >>> learner.predict(params, task_params, jnp.zeros((3, 1))).shape
      (3, 1)
    """

    init: Callable[..., Any]
    adapt: Callable[..., Any]
    loss: Callable[..., Any]
    predict: Callable[..., Any]
