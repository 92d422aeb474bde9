"""ProtoNets and Matching Networks against hand computations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import classification_episodes
from jaxmeta import Episode, learners, nets, train
from jaxmeta.episodes import take_episodes

IDENTITY = nets.Network(lambda key, x: {}, lambda params, x: x)


def test_protonet_with_identity_embedding_is_nearest_class_mean():
    ep = take_episodes(classification_episodes(jax.random.key(0), ways=3, shots=4, queries=5), 0)
    learner = learners.protonet(IDENTITY, num_ways=3)
    params = jax.jit(learner.init)(jax.random.key(1), ep)
    protos = learner.adapt(params, ep, jax.random.key(2))
    sx, sy, qx = (np.asarray(a) for a in (ep.support_x, ep.support_y, ep.query_x))
    means = np.stack([sx[sy == c].mean(0) for c in range(3)])
    np.testing.assert_allclose(protos, means, rtol=1e-5, atol=1e-6)
    logits = learner.predict(params, protos, ep.query_x)
    np.testing.assert_allclose(logits, -((qx[:, None] - means[None]) ** 2).sum(-1), rtol=1e-4, atol=1e-4)


def test_protonet_ignores_masked_support_padding():
    ep = take_episodes(classification_episodes(jax.random.key(0), ways=3, shots=2, queries=2), 0)
    learner = learners.protonet(IDENTITY, num_ways=3)
    params = jax.jit(learner.init)(jax.random.key(1), ep)
    padded = Episode(jnp.concatenate([ep.support_x, 100 + jnp.zeros((2, ep.support_x.shape[1]))]),
                     jnp.concatenate([ep.support_y, jnp.array([0, 1], jnp.int32)]), ep.query_x, ep.query_y,
                     support_mask=jnp.concatenate([jnp.ones(6), jnp.zeros(2)]))
    np.testing.assert_allclose(learner.adapt(params, padded, None), learner.adapt(params, ep, None), rtol=1e-6)


def test_matching_net_is_attention_over_support_labels():
    ep = take_episodes(classification_episodes(jax.random.key(3), ways=3, shots=2, queries=2), 0)
    learner = learners.matching_net(IDENTITY, num_ways=3, scale=4.0, learn_scale=False)
    params = jax.jit(learner.init)(jax.random.key(1), ep)
    logp = learner.predict(params, learner.adapt(params, ep, None), ep.query_x)
    sx, sy, qx = (np.asarray(a) for a in (ep.support_x, ep.support_y, ep.query_x))
    cos = (qx / np.linalg.norm(qx, axis=1, keepdims=True)) @ (sx / np.linalg.norm(sx, axis=1, keepdims=True)).T
    att = np.exp(4 * cos) / np.exp(4 * cos).sum(1, keepdims=True)
    probs = att @ np.eye(3)[sy]
    np.testing.assert_allclose(np.exp(logp), probs, rtol=1e-4, atol=1e-6)


def _noisy_episodes(key, num_tasks=8, ways=3, shots=2, queries=4):
    """Class signal in 2 dims, strong noise in 14 others: raw nearest-mean is poor, a learned
    embedding that drops the noise dims is good."""
    eps = classification_episodes(key, num_tasks=num_tasks, ways=ways, shots=shots, queries=queries, dim=16)
    scale = jnp.concatenate([jnp.ones(2), 6 * jnp.ones(14)])
    k1, k2 = jax.random.split(jax.random.fold_in(key, 1))
    sx = eps.support_x.at[..., 2:].set(jax.random.normal(k1, eps.support_x[..., 2:].shape)) * scale
    qx = eps.query_x.at[..., 2:].set(jax.random.normal(k2, eps.query_x[..., 2:].shape)) * scale
    return eps._replace(support_x=sx, query_x=qx)


@pytest.mark.parametrize("factory", [lambda e: learners.protonet(e, num_ways=3),
                                     lambda e: learners.matching_net(e, num_ways=3)])
def test_metric_learners_learn_with_the_shared_meta_step(factory):
    learner = factory(nets.mlp((32,), None))
    opt = optax.adam(1e-2)
    sample = _noisy_episodes
    result = train.fit(learner, opt, sample, key=jax.random.key(0), num_steps=150, log_every=30, progress=False)
    logs = [r for r in result.history if r["kind"] == "train"]
    assert logs[-1]["accuracy"] > logs[0]["accuracy"] + 0.1
    assert logs[-1]["loss"] < 0.7 * logs[0]["loss"]


def test_metric_learner_errors():
    with pytest.raises(ValueError, match="num_ways"):
        learners.protonet(nets.mlp(), num_ways=1)
    with pytest.raises(ValueError, match="distance"):
        learners.protonet(nets.mlp(), num_ways=3, distance="l1")
    ep = take_episodes(classification_episodes(jax.random.key(0), ways=4), 0)
    with pytest.raises(ValueError, match="support_y"):
        learners.protonet(nets.mlp((4,), None), num_ways=3).init(jax.random.key(0), ep)
