"""Hypernetwork: generated task models, set invariances, descriptions, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import classification_episodes, regression_episodes
from jaxmeta import learners, losses, nets
from jaxmeta.episodes import take_episodes

HYPER = dict(set_hidden=(16, 16), generator_hidden=(16,))


def _learners():
    return {
        "regression": learners.hypernetwork(nets.mlp((4,), 1), losses.squared_error,
                                            embedding=nets.mlp((8,), None), **HYPER),
        "classification": learners.hypernetwork(nets.mlp((), 3), losses.softmax_cross_entropy,
                                                embedding=nets.mlp((8,), None), **HYPER),
        "per_class": learners.hypernetwork(nets.mlp((), 3), losses.softmax_cross_entropy,
                                           embedding=nets.mlp((8,), None), per_class=True,
                                           metrics={"accuracy": losses.accuracy}, **HYPER),
    }


def _episode(kind):
    kind = "classification" if kind == "per_class" else kind
    eps = regression_episodes(jax.random.key(0)) if kind == "regression" else classification_episodes(jax.random.key(0))
    return take_episodes(eps, 0)


@pytest.mark.parametrize("kind", ["regression", "classification", "per_class"])
def test_task_params_are_the_task_models_params(kind):
    learner = _learners()[kind]
    ep = _episode(kind)
    params = jax.jit(learner.init)(jax.random.key(1), ep)
    task_params = learner.adapt(params, ep, jax.random.key(2))
    task_net = nets.mlp((4,), 1) if kind == "regression" else nets.mlp((), 3)
    kind = "classification" if kind == "per_class" else kind
    template = jax.jit(task_net.init)(jax.random.key(0), jnp.zeros((1, 8)))
    assert jax.tree_util.tree_structure(task_params) == jax.tree_util.tree_structure(template)
    for a, b in zip(jax.tree_util.tree_leaves(task_params), jax.tree_util.tree_leaves(template)):
        assert a.shape == b.shape
    # predict is the generated task model applied to the shared embedding
    emb = nets.mlp((8,), None).apply(params["embedding"], ep.query_x)
    np.testing.assert_allclose(np.asarray(learner.predict(params, task_params, ep.query_x)),
                               np.asarray(task_net.apply(task_params, emb)), rtol=1e-6)
    # different support sets give different task models
    other = take_episodes(regression_episodes(jax.random.key(7)) if kind == "regression"
                          else classification_episodes(jax.random.key(7)), 0)
    other_tp = learner.adapt(params, other, jax.random.key(2))
    assert not np.allclose(np.asarray(jax.tree_util.tree_leaves(other_tp)[0]),
                           np.asarray(jax.tree_util.tree_leaves(task_params)[0]))


@pytest.mark.parametrize("kind", ["regression", "classification", "per_class"])
def test_permutation_and_padding_invariance(kind):
    learner = _learners()[kind]
    ep = _episode(kind)
    params = jax.jit(learner.init)(jax.random.key(1), ep)
    ref = learner.adapt(params, ep, None)
    perm = jax.random.permutation(jax.random.key(3), ep.support_x.shape[0])
    shuffled = learner.adapt(params, ep._replace(support_x=ep.support_x[perm], support_y=ep.support_y[perm]), None)
    extra = 2
    padded_ep = ep._replace(
        support_x=jnp.concatenate([ep.support_x, 50.0 * jnp.ones((extra,) + ep.support_x.shape[1:])]),
        support_y=jnp.concatenate([ep.support_y, jnp.ones((extra,) + ep.support_y.shape[1:], ep.support_y.dtype)]),
        support_mask=jnp.concatenate([jnp.ones(ep.support_x.shape[0]), jnp.zeros(extra)]))
    padded = learner.adapt(params, padded_ep, None)
    for other in (shuffled, padded):
        for a, b in zip(jax.tree_util.tree_leaves(ref), jax.tree_util.tree_leaves(other)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_generator_starts_near_the_base_weights():
    learner = learners.hypernetwork(nets.mlp((4,), 1), losses.squared_error, init_scale=1e-4, **HYPER)
    ep = _episode("regression")
    params = jax.jit(learner.init)(jax.random.key(1), ep)
    flat = jax.flatten_util.ravel_pytree(learner.adapt(params, ep, None))[0]
    np.testing.assert_allclose(np.asarray(flat), np.asarray(params["base"]), atol=1e-3)


def test_task_description_from_aux():
    learner = learners.hypernetwork(nets.mlp((), 1), losses.squared_error, description_key="d", use_support=False,
                                    **HYPER)
    ep = _episode("regression")
    ep_a = ep._replace(aux={"d": jnp.array([1.0, 0.0])})
    ep_b = ep._replace(aux={"d": jnp.array([0.0, 1.0])})
    params = jax.jit(learner.init)(jax.random.key(1), ep_a)
    assert "set_encoder" not in params
    ta, tb = learner.adapt(params, ep_a, None), learner.adapt(params, ep_b, None)
    assert not np.allclose(np.asarray(ta["head"]["kernel"]), np.asarray(tb["head"]["kernel"]))
    # the support set is not read at all: changing it changes nothing
    tc = learner.adapt(params, ep_a._replace(support_y=ep.support_y + 3.0), None)
    np.testing.assert_array_equal(np.asarray(ta["head"]["kernel"]), np.asarray(tc["head"]["kernel"]))
    with pytest.raises(ValueError, match="description_key"):
        learner.adapt(params, ep, None)


def test_bad_configuration_raises():
    with pytest.raises(TypeError, match="task_net"):
        learners.hypernetwork("mlp", losses.squared_error)
    with pytest.raises(TypeError, match="embedding"):
        learners.hypernetwork(nets.mlp(), losses.squared_error, embedding=3)
    with pytest.raises(ValueError, match="description_key"):
        learners.hypernetwork(nets.mlp(), losses.squared_error, use_support=False)
    with pytest.raises(ValueError, match="init_scale"):
        learners.hypernetwork(nets.mlp(), losses.squared_error, init_scale=0.0)
    with pytest.raises(ValueError, match="support_y"):  # labels up to 2 but a 2-way task model
        learners.hypernetwork(nets.mlp((), 2), losses.softmax_cross_entropy).init(
            jax.random.key(0), _episode("classification"))


def test_per_class_generation_is_equivariant_to_relabelling_and_learns():
    import optax

    from conftest import classification_episodes
    from jaxmeta import train

    learner = _learners()["per_class"]
    ep = _episode("per_class")
    params = jax.jit(learner.init)(jax.random.key(1), ep)
    # give the generator a non-trivial output layer, then relabel the classes 0->2, 1->0, 2->1
    params["generator"]["head"] = jax.tree_util.tree_map(lambda w: w + 0.3, params["generator"]["head"])
    relabel = jnp.array([2, 0, 1])
    logits = learner.predict(params, learner.adapt(params, ep, None), ep.query_x)
    moved = learner.predict(params, learner.adapt(params, ep._replace(support_y=relabel[ep.support_y]), None),
                            ep.query_x)
    np.testing.assert_allclose(np.asarray(moved[:, relabel]), np.asarray(logits), rtol=1e-5, atol=1e-6)
    # it meta-learns with the shared meta-step (query accuracy above chance after a few hundred steps)
    opt = optax.adam(3e-3)
    state = train.init_state(learner, opt, jax.random.key(0), classification_episodes(jax.random.key(0)))
    step = train.make_meta_step(learner, opt)
    for i in range(150):
        state, metrics = step(state, classification_episodes(jax.random.key(100 + i)), jax.random.key(i))
    assert float(metrics["accuracy"]) > 0.6, metrics


def test_per_class_errors_say_what_to_change():
    ep = _episode("per_class")
    with pytest.raises(ValueError, match="head"):
        learners.hypernetwork(nets.mlp((4,), None), losses.softmax_cross_entropy, per_class=True,
                              **HYPER).init(jax.random.key(0), ep)
    with pytest.raises(ValueError, match="integer support_y"):
        learners.hypernetwork(nets.mlp((), 1), losses.squared_error, per_class=True, **HYPER).init(
            jax.random.key(0), _episode("regression"))
    with pytest.raises(ValueError, match="use_support"):
        learners.hypernetwork(nets.mlp((), 3), losses.softmax_cross_entropy, per_class=True, use_support=False,
                              description_key="d")
