"""The contract every learner honours (run over every learner in conftest.learner_cases)."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import episodes_for, learner_cases
from jaxmeta import train
from jaxmeta.episodes import take_episodes


@pytest.mark.parametrize("kind,factory", learner_cases())
def test_shapes_and_finite_values(kind, factory):
    learner = factory()
    eps = episodes_for(kind, jax.random.key(0))
    ep = take_episodes(eps, 0)
    # jitted (run op by op, each primitive would compile on its own: hundreds of compiles per learner)
    params = jax.jit(learner.init)(jax.random.key(1), ep)
    # init reads the example's shapes only (init_state passes zeros, or a sampler's eval_shape)
    chex.assert_trees_all_equal(train.init_state(learner, optax.sgd(0.1), jax.random.key(1), eps).params, params)
    task_params = jax.jit(learner.adapt)(params, ep, jax.random.key(2))
    loss, metrics = jax.jit(learner.loss)(params, task_params, ep)
    chex.assert_shape(loss, ())
    assert np.isfinite(float(loss))
    for name, value in metrics.items():
        chex.assert_shape(value, ())
        assert np.isfinite(float(value)), name
    out = jax.jit(learner.predict)(params, task_params, ep.query_x)
    assert out.shape[0] == ep.query_x.shape[0]
    assert np.isfinite(np.asarray(out)).all()


def _keep_gradients() -> optax.GradientTransformation:
    """An optax stage that passes the updates on and keeps them as its state: the step's meta-gradient."""
    return optax.GradientTransformation(lambda params: jax.tree_util.tree_map(jnp.zeros_like, params),
                                        lambda updates, state, params=None: (updates, updates))


@pytest.mark.parametrize("kind,factory", learner_cases())
def test_meta_step_compiles_once_equals_the_per_episode_loop_and_grads_every_leaf(kind, factory):
    learner = factory()
    chex.clear_trace_counter()
    # count traces of adapt inside the real jitted step: vmap traces it once per compilation
    counted = learner._replace(adapt=chex.assert_max_traces(learner.adapt, n=1))
    opt = optax.chain(_keep_gradients(), optax.adam(1e-3))
    eps1 = episodes_for(kind, jax.random.key(0))
    eps2 = episodes_for(kind, jax.random.key(1))
    state0 = train.init_state(counted, opt, jax.random.key(2), eps1)
    step = train.make_meta_step(counted, opt)
    state, m1 = step(state0, eps1, jax.random.key(3))
    state, m2 = step(state, eps2, jax.random.key(4))  # new data, same shapes: no retrace
    assert int(state.step) == 2
    assert np.isfinite(float(m2["loss"]))

    # the vmapped per-episode losses equal a loop over episodes, one at a time with no batching machinery (one
    # compiled program for every episode), and the meta-step's reported loss is their mean
    params, key, n = state0.params, jax.random.key(3), eps1.support_x.shape[0]
    batched, _ = jax.jit(functools.partial(train.episode_metrics, learner))(params, eps1, key)
    single = jax.jit(lambda p, ep, k: learner.loss(p, learner.adapt(p, ep, k), ep)[0])
    singles = [single(params, take_episodes(eps1, i), k) for i, k in enumerate(jax.random.split(key, n))]
    np.testing.assert_allclose(np.asarray(batched), np.asarray(singles), rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(float(m1["loss"]), float(np.mean(singles)), rtol=2e-5, atol=1e-6)

    # every meta-parameter leaf receives a meta-gradient (the one the second step's optimizer saw), and not one
    # of float rounding's size: a leaf the loss cannot depend on (a bias shared by every softmax logit) read
    # ~1e-9 run op by op and exactly 0 jitted
    paths = jax.tree_util.tree_flatten_with_path(state.opt_state[0])[0]
    largest = max(float(np.abs(np.asarray(g)).max()) for _, g in paths)
    for path, g in paths:
        assert np.all(np.isfinite(np.asarray(g))), jax.tree_util.keystr(path)
        assert np.abs(np.asarray(g)).max() > 1e-5 * largest, f"no meta-gradient for {jax.tree_util.keystr(path)}"


@pytest.mark.parametrize("batching", ["map", "unroll", "accumulate"])
@pytest.mark.parametrize("kind,factory", [c for c in learner_cases() if c.id in ("maml-classification", "meta_sgd-regression", "reptile-regression", "protonet-classification")])
def test_batching_strategies_agree(kind, factory, batching):
    learner = factory()
    # plain SGD at rate 1: the updated params differ by the meta-gradient itself (Adam would scale a leaf whose
    # gradient is float rounding, e.g. ProtoNet's last embedding bias that cancels in every distance, up to +-lr)
    opt = optax.sgd(1.0)
    eps = episodes_for(kind, jax.random.key(0))
    state = train.init_state(learner, opt, jax.random.key(1), eps)
    ref_state, ref_m = train.make_meta_step(learner, opt, batching="vmap")(state, eps, jax.random.key(2))
    new_state, new_m = train.make_meta_step(learner, opt, batching=batching)(state, eps, jax.random.key(2))
    chex.assert_trees_all_close(ref_state.params, new_state.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(ref_m["loss"]), float(new_m["loss"]), rtol=1e-5)
