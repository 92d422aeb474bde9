"""Hypernetwork: a network that writes the weights of each task's model.

``m_t = M(d(t); theta)``: a set encoder reads the support set (and/or a task
description from ``episode.aux``) into a task representation ``r``; a
generator maps ``r`` to a flat vector of weights; those weights (added to
meta-learned base weights) are the parameters of a small **task model**
``task_net`` that runs on top of a shared, meta-learned **embedding** network.
Both networks are any :class:`jaxmeta.nets.Network`, so the same learner gives
a linear head on a Conv-4 (few-shot image classification), an MLP on raw
tabular features (regression), and so on.

Meta-parameters: ``{"embedding" (optional), "set_encoder", "generator",
"base"}``; ``base`` is the flat vector of the task model's base weights.
Task parameters are the generated task model's params pytree, exactly what
``task_net.apply`` takes, so ``task_net.apply(task_params, embedding(x))`` is
the task's model and can be inspected, stored or fine-tuned like any other.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxmeta.learners.base import MetaLearner
from jaxmeta.learners.common import check_example_labels, check_metric_fns, check_widths, supervised_loss
from jaxmeta.learners.neural_process import masked_set_mean
from jaxmeta.losses.metric import prototypes
from jaxmeta.nets import Network, mlp

__all__ = ["hypernetwork"]


def _check_net(name: str, net) -> Network:
    if not (hasattr(net, "init") and callable(getattr(net, "apply", None))):
        raise TypeError(f"{name}: expected a jaxmeta.nets.Network (init, apply), got {type(net).__name__}.")
    return net


def hypernetwork(
    task_net: Network,
    loss_fn: Callable,
    *,
    embedding: Optional[Network] = None,
    set_hidden: Sequence[int] = (128, 128),
    generator_hidden: Sequence[int] = (128,),
    init_scale: float = 0.1,
    description_key: Optional[str] = None,
    use_support: bool = True,
    per_class: bool = False,
    metrics: Optional[Mapping[str, Callable]] = None,
) -> MetaLearner:
    """A hypernetwork meta-learner: support set (or description) in, task-model weights out.

    ``adapt``: embed the support inputs, encode every support example together
    with its target (``[f(x), y]`` for float targets, ``[f(x), one_hot(y)]``
    for integer labels, ``N`` being the task model's output width), take the
    masked mean (permutation invariant, padding ignored), optionally append
    ``episode.aux[description_key]``, and generate
    ``weights = base + generator(r)``. ``loss``: ``loss_fn`` of the generated
    task model on the query set (masked mean). No inner gradient steps.

    Args:
      task_net: the task model, a :class:`~jaxmeta.nets.Network` applied to the
        embedding's output, e.g. ``nets.mlp((), 5)`` (a linear 5-way head) or
        ``nets.mlp((32,), 1)``. Its output width is ``N`` for classification.
      loss_fn: per-example loss ``(outputs, targets) -> [B]``.
      embedding: shared input network (e.g. ``nets.conv4()``), meta-learned;
        ``None`` flattens the inputs.
      set_hidden: widths of the set encoder MLP (the last is the size of ``r``).
      generator_hidden: hidden widths of the generator MLP (its output layer has
        one unit per task-model weight).
      init_scale: the generator's output layer starts scaled by this factor, so
        that the first generated models are close to the base weights.
      description_key: optional key of a per-task vector in ``episode.aux``
        (a task description ``d(t)``, shape ``[T]``) fed to the generator.
      use_support: encode the support set (``False`` needs ``description_key``:
        the model is then generated from the description alone).
      per_class: classification only (integer labels). Generate the task
        model's output layer (``head``: kernel ``[H, N]``, bias ``[N]``) one
        class at a time: class ``c``'s column and bias are a shared base
        column plus ``generator(r_c)``, where ``r_c`` is the masked mean of
        ``set_encoder(f(x))`` over the class's support examples (joined with
        the description, if any). The generated classifier is then
        equivariant to relabelling (permuting the classes permutes its
        outputs) and works for any ``N``; the other task-model layers are
        meta-learned, shared weights. The default (``False``) writes every
        weight from one pooled representation of the support set, which
        suits regression but must learn class identity from one-hot labels.
      metrics: extra query metrics ``{name: fn(outputs, targets) -> [B]}``.

    Returns:
      A :class:`MetaLearner`; ``predict(meta_params, task_params, x)`` is the
      generated task model's output on ``x``.

    Example:
      >>> import jax, optax
      >>> from jaxmeta import learners, losses, nets, scenarios, train
      >>> learner = learners.hypernetwork(nets.mlp((16,), 1), losses.squared_error,
      ...                                 set_hidden=(32, 32), generator_hidden=(32,))
      >>> eps = scenarios.sinusoid(jax.random.key(0), num_tasks=8, support_shots=10, query_shots=10)
      >>> state = train.init_state(learner, optax.adam(1e-3), jax.random.key(1), eps)
      >>> state, metrics = train.make_meta_step(learner, optax.adam(1e-3))(state, eps, jax.random.key(2))
      >>> ep = jax.tree_util.tree_map(lambda a: a[0], eps)
      >>> task_params = learner.adapt(state.params, ep, jax.random.key(3))
      >>> sorted(task_params)   # the generated task model's own params
      ['head', 'hidden_0']
      >>> learner.predict(state.params, task_params, ep.query_x).shape
      (10, 1)
    """
    task_net = _check_net("task_net", task_net)
    if embedding is not None:
        embedding = _check_net("embedding", embedding)
    set_hidden = check_widths("set_hidden", set_hidden)
    generator_hidden = check_widths("generator_hidden", generator_hidden, allow_empty=True)
    init_scale = float(init_scale)
    if not init_scale > 0:
        raise ValueError(f"init_scale: expected a positive float, got {init_scale}.")
    if not use_support and description_key is None:
        raise ValueError("use_support=False needs description_key: the generator must read something.")
    metric_fns = check_metric_fns(metrics)
    set_encoder = mlp(set_hidden[:-1], set_hidden[-1])
    per_class = bool(per_class)
    if per_class and not use_support:
        raise ValueError("per_class=True generates each class's weights from its support examples; it needs "
                         "use_support=True.")

    def features(meta_params, x):
        if embedding is not None:
            x = embedding.apply(meta_params["embedding"], x)
        return x.reshape(x.shape[0], -1)

    def task_structure(f):
        """Static facts about the task model on features ``f``: (unravel, num_weights, output shape)."""
        shapes = jax.eval_shape(task_net.init, jax.random.key(0), f[:1])
        zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        flat, unravel = ravel_pytree(zeros)
        out_shape = jax.eval_shape(task_net.apply, zeros, f).shape
        return unravel, flat.shape[0], out_shape

    def set_inputs(f, y, out_shape):
        if jnp.issubdtype(y.dtype, jnp.integer):
            if len(out_shape) != 2:
                raise ValueError(f"task_net: integer labels need logits [B, N] from the task model, got {out_shape}.")
            return jnp.concatenate([f, jax.nn.one_hot(y, out_shape[-1], dtype=f.dtype)], axis=-1)
        return jnp.concatenate([f, y.reshape(y.shape[0], -1).astype(f.dtype)], axis=-1)

    def description(episode):
        if description_key is None:
            return None
        aux = episode.aux
        if not isinstance(aux, Mapping) or description_key not in aux:
            raise ValueError(f"description_key={description_key!r}: episode.aux must be a dict holding a "
                             f"[T] task description under that key, got aux={type(aux).__name__}.")
        d = jnp.asarray(aux[description_key])
        if d.ndim != 1:
            raise ValueError(f"episode.aux[{description_key!r}]: expected a vector [T] per episode, got {d.shape}.")
        return d.astype(jnp.float32)

    def split_head(tree):
        """(task-model params without ``head``, head kernel [H, N], head bias [N]) for ``per_class``."""
        head = tree.get("head") if isinstance(tree, Mapping) else None
        if not isinstance(head, Mapping) or set(head) != {"kernel", "bias"} or jnp.ndim(head["kernel"]) != 2:
            raise ValueError("per_class=True: task_net must end in a dense output layer named 'head' with kernel "
                             "[H, N] and bias [N] (e.g. nets.mlp((), N) or nets.mlp((32,), N)); got params "
                             f"{jax.tree_util.tree_map(jnp.shape, tree)}.")
        return {k: v for k, v in tree.items() if k != "head"}, head["kernel"], head["bias"]

    def class_representations(meta_params, episode, f, num_classes):
        h = set_encoder.apply(meta_params["set_encoder"], f)
        r = prototypes(h, episode.support_y, num_classes, episode.support_mask)  # [N, H_set]
        d = description(episode)
        if d is not None:
            r = jnp.concatenate([r, jnp.broadcast_to(d, (num_classes,) + d.shape)], axis=-1)
        return r

    def task_representation(meta_params, episode, f, out_shape):
        parts = []
        if use_support:
            h = set_encoder.apply(meta_params["set_encoder"], set_inputs(f, episode.support_y, out_shape))
            parts.append(masked_set_mean(h, episode.support_mask))
        d = description(episode)
        if d is not None:
            parts.append(d)
        return jnp.concatenate(parts)

    def generator_net(num_weights):
        return mlp(generator_hidden, num_weights)

    def init(key, example):
        k_emb, k_task, k_set, k_gen = jax.random.split(key, 4)
        params = {}
        if embedding is not None:
            params["embedding"] = embedding.init(k_emb, example.support_x)
        f = jax.eval_shape(lambda p: features(p, example.support_x), params)
        f = jnp.zeros(f.shape, f.dtype)
        template = task_net.init(k_task, f[:1])
        _, num_weights, out_shape = task_structure(f)
        check_example_labels(out_shape, example)
        if per_class:
            if not jnp.issubdtype(jnp.asarray(example.support_y).dtype, jnp.integer):
                raise ValueError("per_class=True is for classification: expected integer support_y, got "
                                 f"{jnp.asarray(example.support_y).dtype}.")
            rest, kernel, bias = split_head(template)
            params["base"] = {"rest": rest, "column": jnp.concatenate([kernel.mean(axis=1), bias.mean()[None]])}
            params["set_encoder"] = set_encoder.init(k_set, f)
            r = jax.eval_shape(lambda: class_representations(params, example, f, out_shape[-1]))
            generator = generator_net(kernel.shape[0] + 1).init(k_gen, jnp.zeros(r.shape, r.dtype))
            generator["head"] = jax.tree_util.tree_map(lambda w: w * init_scale, generator["head"])
            params["generator"] = generator
            return params
        params["base"] = ravel_pytree(template)[0]
        if use_support:
            set_in = jax.eval_shape(lambda: set_inputs(f, example.support_y, out_shape))
            params["set_encoder"] = set_encoder.init(k_set, jnp.zeros(set_in.shape, set_in.dtype))
        r = jax.eval_shape(lambda: task_representation(params, example, f, out_shape))
        generator = generator_net(num_weights).init(k_gen, jnp.zeros((1,) + r.shape, r.dtype))
        generator["head"] = jax.tree_util.tree_map(lambda w: w * init_scale, generator["head"])
        params["generator"] = generator
        return params

    def adapt(meta_params, episode, key):
        del key  # deterministic
        f = features(meta_params, episode.support_x)
        unravel, num_weights, out_shape = task_structure(f)
        if per_class:
            r = class_representations(meta_params, episode, f, out_shape[-1])
            hidden = meta_params["base"]["column"].shape[0] - 1
            columns = meta_params["base"]["column"] + generator_net(hidden + 1).apply(
                meta_params["generator"], r)  # [N, H + 1]
            return {**meta_params["base"]["rest"], "head": {"kernel": columns[:, :hidden].T, "bias": columns[:, hidden]}}
        r = task_representation(meta_params, episode, f, out_shape)
        delta = generator_net(num_weights).apply(meta_params["generator"], r[None])[0]
        return unravel(meta_params["base"] + delta)

    def predict(meta_params, task_params, x):
        return task_net.apply(task_params, features(meta_params, x))

    def loss(meta_params, task_params, episode):
        out = predict(meta_params, task_params, episode.query_x)
        return supervised_loss(out, episode.query_y, episode.query_mask, loss_fn, metric_fns)

    return MetaLearner(init, adapt, loss, predict)
