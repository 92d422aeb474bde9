"""Neural processes: the Conditional Neural Process and the latent-variable Neural Process.

Model-based meta-learners (Garnelo et al., 2018a, 2018b): a network reads the
support set and outputs the task's predictor in one forward pass, with no
gradient steps at test time.

* An **encoder** maps every support pair to a representation; a
  permutation-invariant, mask-aware **aggregation** (the masked mean, so
  padded examples marked ``support_mask == 0`` never count) turns the set into
  one task representation ``r``.
* A **decoder** maps ``(r, x*)`` to the prediction for a query input ``x*``:
  a Gaussian (mean and a positive std, trained by Gaussian negative
  log-likelihood) for float targets, logits for integer class labels.
* The **latent** variant adds a global latent ``z`` with prior ``q(z | support)``
  and posterior ``q(z | support + query)``; it is trained on the ELBO
  ``E_q[-log p(y* | z, x*)] + KL(posterior || prior) / Q`` per query point.

Regression episodes carry float targets ``[S, ...]``: the encoder reads
``[f(x), y]`` per support point. Classification episodes carry ``int`` labels
in ``[0, N)``: the deterministic encoder reads ``f(x)`` and aggregates **per
class** (the class-wise mean, as ProtoNets do, but learned), and the decoder
scores every ``(class representation, x*)`` pair, which keeps the model
equivariant to relabelling the classes. ``f`` is an optional embedding network
(e.g. ``nets.conv4()`` for images); without one the inputs are flattened.

Meta-parameters are a dict of network params: ``embedding`` (optional),
``encoder`` and ``decoder`` (deterministic path), ``latent_encoder`` and
``latent_head`` (latent path). Task parameters are the task representation:
``{"r": ...}`` and, for the latent variant, ``{"z_mean", "z_std", "key"}``
(``adapt``'s key is kept so that ``loss`` and ``predict`` can sample ``z``).
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp

from jaxmeta.learners.base import MetaLearner
from jaxmeta.learners.common import check_example_labels, check_metric_fns, check_widths
from jaxmeta.losses import (
    accuracy,
    gaussian_kl,
    gaussian_nll,
    interval_coverage,
    mask_weights,
    masked_mean,
    softmax_cross_entropy,
    squared_error,
)
from jaxmeta.nets import Network, mlp

__all__ = ["cnp", "neural_process", "masked_set_mean", "class_set_mean"]


def masked_set_mean(h: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
    """Permutation-invariant mean of set elements ``h [S, R]`` over ``mask [S] != 0``: ``-> [R]``.

    Padded elements (``mask == 0``) do not count, so padding a set never
    changes the result. A fully masked set gives zeros.

    Example:
      >>> import jax.numpy as jnp
      >>> masked_set_mean(jnp.array([[1.0], [3.0], [100.0]]), jnp.array([1, 1, 0]))
      Array([2.], dtype=float32)
    """
    if mask is None:
        return jnp.mean(h, axis=0)
    m = mask.astype(h.dtype)
    return jnp.sum(h * m[:, None], axis=0) / jnp.maximum(jnp.sum(m), 1.0)


def class_set_mean(h: jax.Array, labels: jax.Array, num_ways: int, mask: Optional[jax.Array] = None) -> jax.Array:
    """Mean of ``h [S, R]`` per class ``0..num_ways-1`` (static): ``-> [N, R]``.

    ``one_hot(labels, N).T @ h / counts``: no data-dependent shapes; masked or
    out-of-range labels do not count; an empty class gives zeros.

    Example:
      >>> import jax.numpy as jnp
      >>> class_set_mean(jnp.array([[1.0], [3.0], [5.0]]), jnp.array([0, 0, 1]), 2)
      Array([[2.],
             [5.]], dtype=float32)
    """
    onehot = jax.nn.one_hot(labels, num_ways, dtype=h.dtype)
    if mask is not None:
        onehot = onehot * mask.astype(h.dtype)[:, None]
    counts = jnp.sum(onehot, axis=0)
    return (onehot.T @ h) / jnp.maximum(counts, 1.0)[:, None]


def _set_net(widths: tuple) -> Network:
    """An MLP whose last layer is linear (the representation layer)."""
    return mlp(widths[:-1], widths[-1])


def _is_classification(y) -> bool:
    return jnp.issubdtype(y.dtype, jnp.integer)


def _build(
    *,
    latent: bool,
    embedding: Optional[Network],
    encoder_hidden,
    decoder_hidden,
    latent_hidden,
    latent_dim: int,
    deterministic_path: bool,
    num_ways: Optional[int],
    min_std: float,
    predict_samples: int,
    metrics,
) -> MetaLearner:
    if embedding is not None and not (hasattr(embedding, "init") and callable(getattr(embedding, "apply", None))):
        raise TypeError(f"embedding: expected a jaxmeta.nets.Network or None, got {type(embedding).__name__}.")
    decoder_hidden = check_widths("decoder_hidden", decoder_hidden, allow_empty=True)
    if deterministic_path:
        encoder_hidden = check_widths("encoder_hidden", encoder_hidden)
    if latent:
        latent_hidden = check_widths("latent_hidden", latent_hidden)
        latent_dim = int(latent_dim)
        if latent_dim < 1:
            raise ValueError(f"latent_dim: expected a positive integer, got {latent_dim}.")
        predict_samples = int(predict_samples)
        if predict_samples < 1:
            raise ValueError(f"predict_samples: expected a positive integer, got {predict_samples}.")
    if num_ways is not None:
        num_ways = int(num_ways)
        if num_ways < 2:
            raise ValueError(f"num_ways: expected at least 2 classes, got {num_ways}.")
        if not deterministic_path:
            # the decoder would see (x*, z) for every class alike: equal logits, chance accuracy, no gradient
            raise ValueError(f"num_ways={num_ways} with deterministic_path=False: a latent-only neural process has one "
                             "global z and no per-class representation, so it gives every class the same logit; use "
                             "deterministic_path=True for classification.")
    min_std = float(min_std)
    if not (min_std >= 0.0 and math.isfinite(min_std)):
        raise ValueError(f"min_std: expected a non-negative float, got {min_std}.")
    metric_fns = check_metric_fns(metrics)
    encoder = _set_net(encoder_hidden) if deterministic_path else None
    latent_encoder = _set_net(latent_hidden) if latent else None
    latent_head = mlp((latent_hidden[-1],), 2 * latent_dim) if latent else None

    def decoder(out: int) -> Network:
        # out == 1: one logit per (query, class) pair from a shared head; a bias would shift every
        # logit alike, which softmax ignores, so it would never receive a gradient
        return mlp(decoder_hidden, out, head_bias=out != 1)

    # ----- pieces shared by init / adapt / loss / predict -------------------------------------------
    def features(params, x):
        if embedding is not None:
            x = embedding.apply(params["embedding"], x)
        return x.reshape(x.shape[0], -1)

    def flat_targets(y):
        return y.reshape(y.shape[0], -1).astype(jnp.float32)

    def set_inputs(f, y):
        """What a set encoder reads per example: ``[f(x), y]`` or ``[f(x), one_hot(y)]``."""
        if _is_classification(y):
            return jnp.concatenate([f, jax.nn.one_hot(y, num_ways, dtype=f.dtype)], axis=-1)
        return jnp.concatenate([f, flat_targets(y).astype(f.dtype)], axis=-1)

    def representation(params, f, y, mask):
        if _is_classification(y):  # class-wise aggregation of the encoded inputs: [N, R]
            return class_set_mean(encoder.apply(params["encoder"], f), y, num_ways, mask)
        return masked_set_mean(encoder.apply(params["encoder"], set_inputs(f, y)), mask)  # [R]

    def latent_stats(params, f, y, mask):
        s = masked_set_mean(latent_encoder.apply(params["latent_encoder"], set_inputs(f, y)), mask)
        mean, raw = jnp.split(latent_head.apply(params["latent_head"], s[None])[0], 2)
        return mean, 0.1 + 0.9 * jax.nn.sigmoid(raw)  # bounded std keeps the KL well conditioned

    def decode(params, r, z, f_q, classification: bool):
        """Decoder outputs for query features ``f_q [B, D]``: logits ``[B, N]`` or ``(mean, std) [B, Dy]``."""
        b = f_q.shape[0]
        if classification:
            parts = [jnp.broadcast_to(f_q[:, None, :], (b, num_ways, f_q.shape[-1]))]
            if r is not None:
                parts.append(jnp.broadcast_to(r[None], (b,) + r.shape))
            if z is not None:
                parts.append(jnp.broadcast_to(z[None, None], (b, num_ways, z.shape[-1])))
            inputs = jnp.concatenate(parts, axis=-1).reshape(b * num_ways, -1)
            return decoder(1).apply(params["decoder"], inputs).reshape(b, num_ways)
        parts = [f_q]
        if r is not None:
            parts.append(jnp.broadcast_to(r[None], (b, r.shape[-1])))
        if z is not None:
            parts.append(jnp.broadcast_to(z[None], (b, z.shape[-1])))
        out = decoder(params["decoder"]["head"]["kernel"].shape[-1]).apply(params["decoder"], jnp.concatenate(parts, -1))
        mean, raw = jnp.split(out, 2, axis=-1)
        return mean, min_std + jax.nn.softplus(raw)

    def regression_metrics(mean, std, y, mask, nll_values=None):
        y = flat_targets(y)
        nll = gaussian_nll(mean, std, y) if nll_values is None else nll_values
        out = {
            "mse": masked_mean(squared_error(mean, y), mask),
            "nll": masked_mean(nll, mask),
            "coverage95": masked_mean(interval_coverage(mean, std, y), mask),
        }
        out.update({name: masked_mean(fn(mean.reshape(y.shape), y), mask) for name, fn in metric_fns.items()})
        return out

    def classification_metrics(logits, y, mask):
        out = {"accuracy": masked_mean(accuracy(logits, y), mask)}
        out.update({name: masked_mean(fn(logits, y), mask) for name, fn in metric_fns.items()})
        return out

    def prior_samples(task_params, key):
        eps = jax.random.normal(key, (predict_samples, latent_dim), task_params["z_mean"].dtype)
        return task_params["z_mean"] + task_params["z_std"] * eps  # [M, Z]

    def predictive(meta_params, task_params, f_q, classification: bool):
        """Prediction from the support set only: mixture over prior samples of ``z`` for the latent variant.

        Returns logits ``[B, N]`` or ``(mean, std, nll_fn)``; ``nll_fn(y)`` is the
        mixture's per-example negative log-likelihood.
        """
        r = task_params.get("r")
        if not latent:
            return decode(meta_params, r, None, f_q, classification)
        _, k_pred = jax.random.split(task_params["key"])
        zs = prior_samples(task_params, k_pred)
        outs = jax.vmap(lambda z: decode(meta_params, r, z, f_q, classification))(zs)
        if classification:  # log of the mixture of the M categorical predictions
            return jax.nn.logsumexp(jax.nn.log_softmax(outs), axis=0) - math.log(predict_samples)
        means, stds = outs  # [M, B, Dy]
        mean = jnp.mean(means, axis=0)
        std = jnp.sqrt(jnp.maximum(jnp.mean(stds**2 + means**2, axis=0) - mean**2, 0.0) + 1e-12)

        def nll_fn(y):
            log_liks = -jax.vmap(lambda m, s: gaussian_nll(m, s, y))(means, stds)  # [M, B]
            return -(jax.nn.logsumexp(log_liks, axis=0) - math.log(predict_samples))

        return mean, std, nll_fn

    # ----- the MetaLearner ------------------------------------------------------------------------
    def init(key, example):
        classification = _is_classification(example.support_y)
        if classification and num_ways is None:
            raise ValueError("num_ways: episodes with integer labels are classification; pass num_ways=N "
                             "(the number of classes per episode).")
        if not classification and num_ways is not None:
            raise ValueError(f"num_ways={num_ways} is for classification, but the example episode has float "
                             f"targets ({example.support_y.dtype}); drop num_ways for regression.")
        if classification:
            check_example_labels((1, num_ways), example)
        keys = jax.random.split(key, 5)
        params = {}
        x = example.support_x
        if embedding is not None:
            params["embedding"] = embedding.init(keys[0], x)
        f = jax.eval_shape(lambda p: features(p, x), params)
        f = jnp.zeros(f.shape, f.dtype)
        set_in = jax.eval_shape(lambda: set_inputs(f, example.support_y))
        set_in = jnp.zeros(set_in.shape, set_in.dtype)
        width = f.shape[-1]
        if deterministic_path:
            params["encoder"] = encoder.init(keys[1], f if classification else set_in)
            width += encoder_hidden[-1]
        if latent:
            params["latent_encoder"] = latent_encoder.init(keys[2], set_in)
            params["latent_head"] = latent_head.init(keys[3], jnp.zeros((1, latent_hidden[-1]), f.dtype))
            width += latent_dim
        out = 1 if classification else 2 * flat_targets(example.support_y).shape[-1]
        params["decoder"] = decoder(out).init(keys[4], jnp.zeros((1, width), f.dtype))
        return params

    def adapt(meta_params, episode, key):
        f = features(meta_params, episode.support_x)
        task_params = {}
        if deterministic_path:
            task_params["r"] = representation(meta_params, f, episode.support_y, episode.support_mask)
        if latent:
            mean, std = latent_stats(meta_params, f, episode.support_y, episode.support_mask)
            task_params.update(z_mean=mean, z_std=std, key=key)
        return task_params

    def loss(meta_params, task_params, episode):
        classification = _is_classification(episode.query_y)
        f_q = features(meta_params, episode.query_x)
        y, mask = episode.query_y, episode.query_mask
        if not latent:
            if classification:
                logits = decode(meta_params, task_params["r"], None, f_q, True)
                return masked_mean(softmax_cross_entropy(logits, y), mask), classification_metrics(logits, y, mask)
            mean, std = decode(meta_params, task_params["r"], None, f_q, False)
            nll = gaussian_nll(mean, std, flat_targets(y))
            return masked_mean(nll, mask), regression_metrics(mean, std, y, mask, nll)
        # latent: posterior q(z | support + query), one reparameterised sample, KL to the prior q(z | support)
        f_s = features(meta_params, episode.support_x)
        s_mask = mask_weights(episode.support_mask, f_s.shape[0], f_q.dtype)
        q_mask = mask_weights(mask, f_q.shape[0], f_q.dtype)
        post_mean, post_std = latent_stats(
            meta_params, jnp.concatenate([f_s, f_q]), jnp.concatenate([episode.support_y, y]),
            jnp.concatenate([s_mask, q_mask]))
        k_post, _ = jax.random.split(task_params["key"])
        z = post_mean + post_std * jax.random.normal(k_post, post_mean.shape, post_mean.dtype)
        kl = gaussian_kl(post_mean[None], post_std[None], task_params["z_mean"][None], task_params["z_std"][None])[0]
        kl_per_point = kl / jnp.maximum(jnp.sum(q_mask), 1.0)
        r = task_params.get("r")
        if classification:
            recon = masked_mean(softmax_cross_entropy(decode(meta_params, r, z, f_q, True), y), mask)
            logits = predictive(meta_params, task_params, f_q, True)  # metrics are aux: never differentiated
            m = classification_metrics(logits, y, mask)
            m["nll"] = masked_mean(softmax_cross_entropy(logits, y), mask)
        else:
            mean, std = decode(meta_params, r, z, f_q, False)
            recon = masked_mean(gaussian_nll(mean, std, flat_targets(y)), mask)
            p_mean, p_std, nll_fn = predictive(meta_params, task_params, f_q, False)
            m = regression_metrics(p_mean, p_std, y, mask, nll_fn(flat_targets(y)))
        m.update(elbo_nll=recon, kl=kl)
        return recon + kl_per_point, m

    def predict(meta_params, task_params, x):
        f_q = features(meta_params, x)
        classification = meta_params["decoder"]["head"]["kernel"].shape[-1] == 1  # regression has 2 * D_y outputs
        out = predictive(meta_params, task_params, f_q, classification)
        if classification:
            return out
        return jnp.stack(out[:2], axis=-1)

    return MetaLearner(init, adapt, loss, predict)


def cnp(
    *,
    embedding: Optional[Network] = None,
    encoder_hidden: Sequence[int] = (128, 128, 128),
    decoder_hidden: Sequence[int] = (128, 128),
    num_ways: Optional[int] = None,
    min_std: float = 0.01,
    metrics: Optional[Mapping[str, Callable]] = None,
) -> MetaLearner:
    """Conditional Neural Process (Garnelo et al., 2018): one forward pass per task, no inner loop.

    ``adapt`` encodes every support example and takes the masked mean (the
    task representation ``r``: ``[R]`` for regression, ``[N, R]`` class-wise
    for classification); ``loss`` decodes the query set from ``r`` and returns
    the mean negative log-likelihood (Gaussian for float targets, softmax
    cross-entropy for integer labels).

    Args:
      embedding: optional network applied to every input first (e.g.
        ``nets.conv4()``), meta-learned with the rest; ``None`` flattens inputs.
      encoder_hidden: widths of the encoder MLP; the last one is the linear
        representation layer (``R``).
      decoder_hidden: hidden widths of the decoder MLP (its output layer is
        added: ``2 * D_y`` for regression, one logit per class).
      num_ways: ``N`` for classification episodes (integer labels in
        ``[0, N)``); leave ``None`` for regression.
      min_std: lower bound of the predicted standard deviation
        (``std = min_std + softplus(raw)``); keeps the likelihood bounded.
      metrics: extra query metrics ``{name: fn(outputs, targets) -> [B]}``;
        for regression ``outputs`` is the predicted mean.

    Returns:
      A :class:`MetaLearner`. ``loss``'s metrics: regression ``mse`` (of the
      predicted mean), ``nll`` (equal to the loss) and ``coverage95`` (fraction
      of query targets inside the central 95% interval ``mean +- 1.96 std``);
      classification ``accuracy``. ``predict(meta_params, task_params, x)``
      returns logits ``[B, N]`` for classification and, for regression,
      ``[B, D_y, 2]`` with the target's trailing axes flattened into ``D_y``:
      ``out[..., 0]`` is the mean and ``out[..., 1]`` the standard deviation.

    Example:
      >>> import jax, optax
      >>> from jaxmeta import learners, scenarios, train
      >>> learner = learners.cnp(encoder_hidden=(32, 32), decoder_hidden=(32,))
      >>> eps = scenarios.sinusoid(jax.random.key(0), num_tasks=8, support_shots=5, query_shots=10)
      >>> state = train.init_state(learner, optax.adam(1e-3), jax.random.key(1), eps)
      >>> state, metrics = train.make_meta_step(learner, optax.adam(1e-3))(state, eps, jax.random.key(2))
      >>> sorted(metrics)
      ['coverage95', 'grad_norm', 'loss', 'mse', 'nll']
      >>> ep = jax.tree_util.tree_map(lambda a: a[0], eps)
      >>> out = learner.predict(state.params, learner.adapt(state.params, ep, jax.random.key(3)), ep.query_x)
      >>> out.shape  # [B, D_y, (mean, std)]
      (10, 1, 2)
    """
    return _build(latent=False, embedding=embedding, encoder_hidden=encoder_hidden, decoder_hidden=decoder_hidden,
                  latent_hidden=None, latent_dim=0, deterministic_path=True, num_ways=num_ways, min_std=min_std,
                  predict_samples=1, metrics=metrics)


def neural_process(
    *,
    embedding: Optional[Network] = None,
    latent_hidden: Sequence[int] = (128, 128, 128),
    latent_dim: int = 64,
    deterministic_path: bool = True,
    encoder_hidden: Sequence[int] = (128, 128, 128),
    decoder_hidden: Sequence[int] = (128, 128),
    num_ways: Optional[int] = None,
    min_std: float = 0.01,
    predict_samples: int = 16,
    metrics: Optional[Mapping[str, Callable]] = None,
) -> MetaLearner:
    """Latent-variable Neural Process (Garnelo et al., 2018b), trained on the ELBO.

    A global latent ``z`` explains the task. ``adapt`` computes the prior
    ``q(z | support) = N(z_mean, z_std^2)`` (and, with ``deterministic_path``,
    the CNP representation ``r``, as in the ANP paper's "NP" baseline) and keeps
    ``adapt``'s key. ``loss`` computes the posterior ``q(z | support + query)``,
    draws one reparameterised ``z`` from it with that key, and returns the
    per-query-point negative ELBO ``mean NLL(y* | z, x*) + KL(posterior || prior) / Q``.

    Because the loss looks at the query targets (through the posterior), its
    value is a training objective, not a test score. The test scores are the
    metrics, computed from the support set only: ``predict_samples`` draws of
    ``z`` from the prior, mixed (``mse`` of the mixture mean, ``nll`` of the
    mixture, ``coverage95`` of the moment-matched Gaussian; ``accuracy`` and
    ``nll`` of the averaged class probabilities for classification), plus
    ``elbo_nll`` and ``kl``. ``predict_samples`` only affects the metrics and
    ``predict``, so a learner built with a different value can evaluate the
    same meta-parameters (cheap training, accurate evaluation).

    Args:
      embedding: optional input network (see :func:`cnp`).
      latent_hidden: widths of the latent path's set encoder MLP.
      latent_dim: size of ``z``.
      deterministic_path: also use the CNP representation ``r``. Classification
        needs it (its class-wise ``r`` is what tells the classes apart), so
        ``deterministic_path=False`` with ``num_ways`` raises.
      encoder_hidden, decoder_hidden, num_ways, min_std, metrics: as :func:`cnp`.
      predict_samples: draws of ``z`` for the predictive distribution.

    Returns:
      A :class:`MetaLearner`; ``predict`` returns the same layout as
      :func:`cnp` (``[B, D_y, 2]`` mean and std of the moment-matched mixture,
      or logits ``[B, N]`` as log mixture probabilities), sampled with the key
      stored by ``adapt`` (deterministic per key).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxmeta import learners, scenarios
      >>> learner = learners.neural_process(latent_hidden=(32,), latent_dim=8, encoder_hidden=(32,),
      ...                                   decoder_hidden=(32,))
      >>> ep = jax.tree_util.tree_map(lambda a: a[0], scenarios.sinusoid(
      ...     jax.random.key(0), num_tasks=1, support_shots=5, query_shots=10))
      >>> params = learner.init(jax.random.key(1), ep)
      >>> task_params = learner.adapt(params, ep, jax.random.key(2))
      >>> loss, metrics = learner.loss(params, task_params, ep)
      >>> sorted(metrics)
      ['coverage95', 'elbo_nll', 'kl', 'mse', 'nll']
      >>> learner.predict(params, task_params, jnp.zeros((3, 1))).shape
      (3, 1, 2)
    """
    return _build(latent=True, embedding=embedding, encoder_hidden=encoder_hidden, decoder_hidden=decoder_hidden,
                  latent_hidden=latent_hidden, latent_dim=latent_dim, deterministic_path=bool(deterministic_path),
                  num_ways=num_ways, min_std=min_std, predict_samples=predict_samples, metrics=metrics)
