"""Neural processes: set invariances, masks, randomness, output layout, losses, errors, learning."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import classification_episodes, regression_episodes
from jaxmeta import learners, losses, scenarios, train
from jaxmeta.episodes import take_episodes

SMALL = dict(encoder_hidden=(16, 16), decoder_hidden=(16,))


def _cnp(kind="regression"):
    return learners.cnp(num_ways=3 if kind == "classification" else None, **SMALL)


def _np(kind="regression", **kw):
    return learners.neural_process(latent_hidden=(16, 16), latent_dim=4, predict_samples=4,
                                   num_ways=3 if kind == "classification" else None, **SMALL, **kw)


def _episode(kind):
    eps = regression_episodes(jax.random.key(0)) if kind == "regression" else classification_episodes(jax.random.key(0))
    return take_episodes(eps, 0)


def _pad_support(ep, extra):
    """Appends ``extra`` junk support examples marked as padding."""
    sx = jnp.concatenate([ep.support_x, 100.0 + jnp.ones((extra,) + ep.support_x.shape[1:])])
    junk_y = jnp.full((extra,) + ep.support_y.shape[1:], 7, ep.support_y.dtype)
    sy = jnp.concatenate([ep.support_y, junk_y])
    mask = jnp.concatenate([jnp.ones(ep.support_x.shape[0]), jnp.zeros(extra)])
    return ep._replace(support_x=sx, support_y=sy, support_mask=mask)


FACTORIES = [
    pytest.param(_cnp, id="cnp"),
    pytest.param(_np, id="np"),
    pytest.param(functools.partial(_np, deterministic_path=False), id="np_latent_only"),
]
# (factory, kind): a latent-only NP is regression only (classification raises: see the errors test)
CASES = [pytest.param(f.values[0], kind, id=f"{f.id}-{kind}") for f in FACTORIES
         for kind in ("regression", "classification") if not (f.id == "np_latent_only" and kind == "classification")]


@pytest.mark.parametrize("factory,kind", CASES)
def test_padding_the_support_set_changes_nothing(factory, kind):
    learner = factory(kind)
    ep = _episode(kind)
    params = jax.jit(learner.init)(jax.random.key(1), ep)
    key = jax.random.key(2)
    ref_tp = learner.adapt(params, ep, key)
    pad_tp = learner.adapt(params, _pad_support(ep, 3), key)
    for a, b in zip(jax.tree_util.tree_leaves(ref_tp), jax.tree_util.tree_leaves(pad_tp)):
        if jnp.issubdtype(a.dtype, jnp.floating):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(learner.predict(params, ref_tp, ep.query_x)),
                               np.asarray(learner.predict(params, pad_tp, ep.query_x)), rtol=1e-5, atol=1e-6)
    ref_loss = learner.loss(params, ref_tp, ep)[0]
    pad_loss = learner.loss(params, pad_tp, _pad_support(ep, 3))[0]
    np.testing.assert_allclose(float(ref_loss), float(pad_loss), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("factory,kind", CASES)
def test_set_encoder_is_permutation_invariant(factory, kind):
    learner = factory(kind)
    ep = _episode(kind)
    params = jax.jit(learner.init)(jax.random.key(1), ep)
    perm = jax.random.permutation(jax.random.key(3), ep.support_x.shape[0])
    shuffled = ep._replace(support_x=ep.support_x[perm], support_y=ep.support_y[perm])
    key = jax.random.key(2)
    a = learner.predict(params, learner.adapt(params, ep, key), ep.query_x)
    b = learner.predict(params, learner.adapt(params, shuffled, key), ep.query_x)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_cnp_classification_is_equivariant_to_relabelling():
    learner = _cnp("classification")
    ep = _episode("classification")
    params = jax.jit(learner.init)(jax.random.key(1), ep)
    relabel = jnp.array([2, 0, 1])  # class c becomes relabel[c]
    ep2 = ep._replace(support_y=relabel[ep.support_y], query_y=relabel[ep.query_y])
    logits = learner.predict(params, learner.adapt(params, ep, None), ep.query_x)
    logits2 = learner.predict(params, learner.adapt(params, ep2, None), ep.query_x)
    np.testing.assert_allclose(np.asarray(logits2[:, relabel]), np.asarray(logits), rtol=1e-5, atol=1e-6)


def test_latent_np_is_deterministic_per_key_and_random_across_keys():
    learner = _np()
    ep = _episode("regression")
    params = jax.jit(learner.init)(jax.random.key(1), ep)
    run = lambda k: learner.loss(params, learner.adapt(params, ep, k), ep)[0]  # noqa: E731
    assert float(run(jax.random.key(5))) == float(run(jax.random.key(5)))
    assert float(run(jax.random.key(5))) != float(run(jax.random.key(6)))
    pred = lambda k: learner.predict(params, learner.adapt(params, ep, k), ep.query_x)  # noqa: E731
    np.testing.assert_array_equal(np.asarray(pred(jax.random.key(5))), np.asarray(pred(jax.random.key(5))))


def test_cnp_regression_outputs_and_metrics_match_numpy():
    learner = _cnp()
    ep = _episode("regression")
    params = jax.jit(learner.init)(jax.random.key(1), ep)
    tp = learner.adapt(params, ep, None)
    out = np.asarray(learner.predict(params, tp, ep.query_x), np.float64)
    assert out.shape == (ep.query_x.shape[0], 1, 2)  # [B, D_y, (mean, std)]
    mean, std = out[..., 0], out[..., 1]
    assert (std > 0.01 - 1e-7).all()
    y = np.asarray(ep.query_y, np.float64)
    loss, metrics = learner.loss(params, tp, ep)
    nll = np.mean(0.5 * ((y - mean) / std) ** 2 + np.log(std) + 0.5 * math.log(2 * math.pi))
    np.testing.assert_allclose(float(loss), nll, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["mse"]), np.mean((y - mean) ** 2), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["coverage95"]), np.mean(np.abs(y - mean) <= 1.959964 * std), atol=1e-6)


def test_query_mask_excludes_padded_queries():
    learner = _cnp()
    ep = _episode("regression")
    params = jax.jit(learner.init)(jax.random.key(1), ep)
    tp = learner.adapt(params, ep, None)
    padded = ep._replace(query_x=jnp.concatenate([ep.query_x, jnp.ones((2, 1))]),
                         query_y=jnp.concatenate([ep.query_y, 1e3 * jnp.ones((2, 1))]),
                         query_mask=jnp.concatenate([jnp.ones(ep.query_x.shape[0]), jnp.zeros(2)]))
    np.testing.assert_allclose(float(learner.loss(params, tp, ep)[0]), float(learner.loss(params, tp, padded)[0]),
                               rtol=1e-6)


def test_np_predictive_is_the_moment_matched_mixture():
    learner = _np()
    ep = _episode("regression")
    params = jax.jit(learner.init)(jax.random.key(1), ep)
    tp = learner.adapt(params, ep, jax.random.key(2))
    out = learner.predict(params, tp, ep.query_x)
    _, metrics = learner.loss(params, tp, ep)
    mean = np.asarray(out[..., 0], np.float64)
    np.testing.assert_allclose(float(metrics["mse"]), np.mean((np.asarray(ep.query_y) - mean) ** 2), rtol=1e-5)
    assert {"elbo_nll", "kl", "nll", "coverage95"} <= set(metrics)
    assert float(metrics["kl"]) >= 0.0


def test_gaussian_losses_against_numpy():
    rng = np.random.default_rng(0)
    m, s, y = rng.normal(size=(5, 3)), rng.uniform(0.5, 2, size=(5, 3)), rng.normal(size=(5, 3))
    ref = (0.5 * ((y - m) / s) ** 2 + np.log(s) + 0.5 * np.log(2 * np.pi)).sum(1)
    np.testing.assert_allclose(np.asarray(losses.gaussian_nll(*(jnp.asarray(a) for a in (m, s, y)))), ref, rtol=1e-5)
    m2, s2 = rng.normal(size=(5, 3)), rng.uniform(0.5, 2, size=(5, 3))
    kl = (np.log(s2 / s) + (s**2 + (m - m2) ** 2) / (2 * s2**2) - 0.5).sum(1)
    got = losses.gaussian_kl(*(jnp.asarray(a) for a in (m, s, m2, s2)))
    np.testing.assert_allclose(np.asarray(got), kl, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="equal shapes"):
        losses.gaussian_nll(jnp.zeros((2, 1)), jnp.ones((2, 2)), jnp.zeros((2, 1)))


def test_bad_configuration_raises_naming_the_argument():
    with pytest.raises(ValueError, match="num_ways"):
        learners.cnp().init(jax.random.key(0), _episode("classification"))
    with pytest.raises(ValueError, match="num_ways"):
        learners.cnp(num_ways=3).init(jax.random.key(0), _episode("regression"))
    with pytest.raises(ValueError, match="support_y"):
        learners.cnp(num_ways=2).init(jax.random.key(0), _episode("classification"))  # labels go up to 2
    with pytest.raises(ValueError, match="encoder_hidden"):
        learners.cnp(encoder_hidden=())
    with pytest.raises(TypeError, match="decoder_hidden"):
        learners.cnp(decoder_hidden=5)
    with pytest.raises(ValueError, match="latent_dim"):
        learners.neural_process(latent_dim=0)
    with pytest.raises(ValueError, match="deterministic_path=True for classification"):
        learners.neural_process(deterministic_path=False, num_ways=3)
    with pytest.raises(TypeError, match="embedding"):
        learners.cnp(embedding="conv4")


def test_cnp_learns_sinusoids_in_a_thousand_steps():
    learner = learners.cnp(encoder_hidden=(32, 32), decoder_hidden=(32, 32))
    sample = functools.partial(scenarios.sinusoid, num_tasks=16, support_shots=10, query_shots=10)
    tests = scenarios.sinusoid(jax.random.key(9), num_tasks=50, support_shots=10, query_shots=20)
    opt = optax.adam(3e-3)
    state = train.init_state(learner, opt, jax.random.key(0), sample(jax.random.key(1)))
    before = train.evaluate(learner, state.params, tests, key=jax.random.key(2), batch_size=50)["mse"]["mean"]
    result = train.fit(learner, opt, sample, key=jax.random.key(3), num_steps=1000, state=state,
                       device_sampling=True, steps_per_call=500, unroll=1, log_every=500, progress=False)
    after = train.evaluate(learner, result.state.params, tests, key=jax.random.key(2), batch_size=50)["mse"]["mean"]
    assert after < 0.5 * before, (before, after)


def test_random_support_size_masks_a_random_subset():
    eps = scenarios.sinusoid(jax.random.key(0), num_tasks=50, support_shots=10, query_shots=2)
    out = scenarios.random_support_size(jax.random.key(1), eps, min_shots=2, max_shots=6)
    sizes = np.asarray(out.support_mask.sum(1))
    assert sizes.min() >= 2 and sizes.max() <= 6 and len(set(sizes.tolist())) > 1
    first_slot = np.asarray(out.support_mask[:, 0])
    assert 0 < first_slot.mean() < 1  # not always a prefix
    again = scenarios.random_support_size(jax.random.key(1), eps, min_shots=2, max_shots=6)
    np.testing.assert_array_equal(np.asarray(out.support_mask), np.asarray(again.support_mask))
    with pytest.raises(ValueError, match="min_shots"):
        scenarios.random_support_size(jax.random.key(1), eps, min_shots=0)
    with pytest.raises(ValueError, match="max_shots"):
        scenarios.random_support_size(jax.random.key(1), eps, min_shots=2, max_shots=11)
    combined = scenarios.random_support_size(jax.random.key(1), out, min_shots=1)
    assert (np.asarray(combined.support_mask) <= np.asarray(out.support_mask)).all()
