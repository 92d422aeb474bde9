"""The shape contract and clear errors for bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import classification_episodes, regression_episodes
from jaxmeta import Episode, learners, losses, nets, train, validate_episode
from jaxmeta.episodes import stack_episodes, take_episodes


def _ep(**overrides):
    base = dict(support_x=jnp.zeros((10, 4)), support_y=jnp.arange(10) % 5,
                query_x=jnp.zeros((15, 4)), query_y=jnp.arange(15) % 5)
    base.update(overrides)
    return Episode(**base)


def test_valid_episode_passes():
    assert validate_episode(_ep(), num_ways=5) is not None
    validate_episode(regression_episodes(jax.random.key(0)), batched=True)
    validate_episode(classification_episodes(jax.random.key(0)), batched=True, num_ways=3)


@pytest.mark.parametrize(
    "overrides,error,field",
    [
        (dict(support_y=jnp.arange(9) % 5), ValueError, "support_y"),
        (dict(query_x=jnp.zeros((15, 5))), ValueError, "query_x"),
        (dict(query_y=jnp.arange(14) % 5), ValueError, "query_y"),
        (dict(support_x=jnp.zeros((10, 4), jnp.int32)), TypeError, "support_x"),
        (dict(support_y=(jnp.arange(10) % 5).astype(jnp.float32)), TypeError, "query_y"),
        (dict(support_x=jnp.zeros((10, 4)).at[3, 1].set(jnp.nan)), ValueError, "support_x"),
        (dict(query_x=jnp.zeros((15, 4)).at[0, 0].set(jnp.inf)), ValueError, "query_x"),
        (dict(query_y=jnp.arange(15) % 6), ValueError, "query_y"),
        (dict(support_y=jnp.arange(10) - 1), ValueError, "support_y"),
        (dict(support_mask=jnp.ones(9)), ValueError, "support_mask"),
        (dict(support_x=[[0.0] * 4] * 10), TypeError, "support_x"),
    ],
)
def test_bad_episodes_raise_naming_the_field(overrides, error, field):
    with pytest.raises(error, match=field):
        validate_episode(_ep(**overrides), num_ways=5)


def test_not_an_episode_is_a_type_error():
    with pytest.raises(TypeError, match="Episode"):
        validate_episode((jnp.zeros(3),) * 4)


def test_batched_episode_needs_the_same_leading_axis():
    eps = classification_episodes(jax.random.key(0))
    bad = eps._replace(query_y=eps.query_y[:2])
    with pytest.raises(ValueError, match="leading episode axis"):
        validate_episode(bad, batched=True)


def test_masked_padding_labels_are_not_range_checked():
    ep = _ep(query_y=jnp.concatenate([jnp.arange(14) % 5, jnp.array([99])]), query_mask=jnp.arange(15) < 14)
    validate_episode(ep, num_ways=5)


def test_meta_step_rejects_bad_shapes_before_running():
    learner = learners.maml(nets.mlp((4,), 1), losses.squared_error)
    eps = regression_episodes(jax.random.key(0))
    opt = optax.sgd(0.1)
    state = train.init_state(learner, opt, jax.random.key(1), eps)
    step = train.make_meta_step(learner, opt)
    with pytest.raises(ValueError, match="query_y"):
        step(state, eps._replace(query_y=eps.query_y[:, :3]), jax.random.key(2))


def test_init_rejects_labels_beyond_the_head_width():
    learner = learners.maml(nets.mlp((4,), 3), losses.softmax_cross_entropy)
    ep = take_episodes(classification_episodes(jax.random.key(0), ways=4), 0)
    with pytest.raises(ValueError, match="support_y"):
        learner.init(jax.random.key(1), ep)


def test_out_of_range_label_inside_jit_is_nan_not_a_wrong_class():
    value = jax.jit(losses.softmax_cross_entropy)(jnp.zeros((2, 3)), jnp.array([1, 3]))
    assert np.isfinite(value[0]) and np.isnan(value[1])


def test_fit_stops_on_divergence_with_a_clear_error():
    learner = learners.maml(nets.mlp((4,), 1), losses.squared_error, inner_lr=0.01)
    sample = lambda key: regression_episodes(key)  # noqa: E731
    with pytest.raises(FloatingPointError, match="diverged"):
        train.fit(learner, optax.sgd(1e6), sample, key=jax.random.key(0), num_steps=20, log_every=5,
                  progress=False)


def test_stack_and_take_roundtrip():
    ep = _ep()
    batch = stack_episodes([ep, ep, ep])
    assert batch.support_x.shape == (3, 10, 4)
    np.testing.assert_array_equal(take_episodes(batch, 1).query_y, ep.query_y)
    with pytest.raises(ValueError, match="at least one"):
        stack_episodes([])


def test_bad_factory_arguments_name_the_argument():
    net = nets.mlp()
    with pytest.raises(ValueError, match="inner_steps"):
        learners.maml(net, losses.squared_error, inner_steps=-1)
    with pytest.raises(ValueError, match="learn_inner_lr"):
        learners.maml(net, losses.squared_error, learn_inner_lr="bogus")
    with pytest.raises(ValueError, match="multi_step_loss"):
        learners.maml(net, losses.squared_error, inner_steps=2, multi_step_loss=[1.0])
    with pytest.raises(TypeError, match="net"):
        learners.maml(lambda x: x, losses.squared_error)
    with pytest.raises(ValueError, match="adapt_filter"):
        learners.anil(net, losses.squared_error, head=("heda",)).init(
            jax.random.key(0), take_episodes(regression_episodes(jax.random.key(0)), 0))
    with pytest.raises(TypeError, match="optimizer"):
        train.make_meta_step(learners.maml(net, losses.squared_error), "adam")
    with pytest.raises(ValueError, match="batching"):
        train.make_meta_step(learners.maml(net, losses.squared_error), optax.sgd(0.1), batching="pmap")
