"""Task embeddings, similarity, the task bank and warm starts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmeta import Episode, learners, losses, nets, scenarios
from jaxmeta.episodes import take_episodes


def _maml(steps=2):
    return learners.maml(nets.mlp((8,), 1), losses.squared_error, inner_lr=0.05, inner_steps=steps)


def _known(num=12):
    return scenarios.sinusoid(jax.random.key(0), num_tasks=num, support_shots=20, query_shots=5)


def test_moment_embedding_matches_numpy_and_ignores_order_and_padding():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 2)).astype(np.float32), rng.normal(size=(6, 1)).astype(np.float32)
    ep = Episode(jnp.asarray(x), jnp.asarray(y), jnp.zeros((1, 2)), jnp.zeros((1, 1)))
    z = np.concatenate([x, y], 1)
    rows, cols = np.triu_indices(3)
    ref = np.concatenate([z.mean(0), (z[:, rows] * z[:, cols]).mean(0)])
    np.testing.assert_allclose(np.asarray(learners.moment_embedding(ep)), ref, rtol=1e-5, atol=1e-6)
    perm = rng.permutation(6)
    shuffled = ep._replace(support_x=ep.support_x[perm], support_y=ep.support_y[perm])
    np.testing.assert_allclose(np.asarray(learners.moment_embedding(shuffled)), ref, rtol=1e-5, atol=1e-6)
    padded = ep._replace(support_x=jnp.concatenate([ep.support_x, 9 * jnp.ones((2, 2))]),
                         support_y=jnp.concatenate([ep.support_y, 9 * jnp.ones((2, 1))]),
                         support_mask=jnp.array([1, 1, 1, 1, 1, 1, 0, 0]))
    np.testing.assert_allclose(np.asarray(learners.moment_embedding(padded)), ref, rtol=1e-5, atol=1e-6)
    # classification: labels are arbitrary ids and are left out
    cls = Episode(jnp.asarray(x), jnp.arange(6) % 2, jnp.zeros((1, 2)), jnp.zeros((1,), jnp.int32))
    assert learners.moment_embedding(cls, second_moments=False).shape == (2,)


def test_gradient_embedding_is_the_support_gradient():
    net = nets.mlp((4,), 1)
    ep = take_episodes(_known(1), 0)
    params = jax.jit(net.init)(jax.random.key(0), ep.support_x)
    g = learners.gradient_embedding(net.apply, losses.squared_error, params, ep)
    ref = jax.grad(lambda p: losses.squared_error(net.apply(p, ep.support_x), ep.support_y).mean())(params)
    np.testing.assert_allclose(np.asarray(g), np.asarray(jax.flatten_util.ravel_pytree(ref)[0]), rtol=1e-6)


def test_similarity_values():
    a = jnp.array([1.0, 1.0])
    b = jnp.array([[2.0, 2.0], [1.0, -1.0], [-1.0, -1.0]])
    np.testing.assert_allclose(np.asarray(learners.task_similarity(a, b)), [1.0, 0.0, -1.0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(learners.task_similarity(a, b, metric="euclidean")), [-2.0, -4.0, -8.0])
    with pytest.raises(ValueError, match="metric"):
        learners.task_similarity(a, b, metric="manhattan")
    with pytest.raises(ValueError, match="same size"):
        learners.task_similarity(a, jnp.ones(3))


def test_bank_and_nearest_tasks():
    learner = _maml()
    known = _known()
    params = jax.jit(learner.init)(jax.random.key(1), take_episodes(known, 0))
    bank = learners.build_task_bank(learner, params, known, learners.moment_embedding, key=jax.random.key(2),
                                    batch_size=5)  # 12 tasks in chunks of 5: the last chunk wraps
    assert bank.embeddings.shape == (12, 5)
    keys = jax.random.split(jax.random.key(2), 12)
    for i in (0, 11):
        ep = take_episodes(known, i)
        ref = learner.adapt(params, ep, keys[i])
        np.testing.assert_allclose(np.asarray(bank.params["head"]["kernel"][i]), np.asarray(ref["head"]["kernel"]),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(bank.embeddings[i]), np.asarray(learners.moment_embedding(ep)),
                                   rtol=1e-5, atol=1e-6)
        idx, w = learners.nearest_tasks(bank, bank.embeddings[i], k=3)
        assert int(idx[0]) == i and float(w[0]) == float(w.max())
        np.testing.assert_allclose(float(w.sum()), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="k"):
        learners.nearest_tasks(bank, bank.embeddings[0], k=13)
    with pytest.raises(ValueError, match="embedding"):
        learners.nearest_tasks(bank, jnp.zeros(4), k=1)
    with pytest.raises(ValueError, match="params"):
        learners.task_bank(jnp.zeros((3, 2)), {"w": jnp.zeros((2, 4))})


def test_warm_start_starts_from_the_neighbours():
    known = _known()
    zero_steps = _maml(steps=0)
    params = jax.jit(zero_steps.init)(jax.random.key(1), take_episodes(known, 0))
    stored = jax.tree_util.tree_map(lambda p: jnp.stack([p + 0.1 * i for i in range(12)]), params["net"])
    embeddings = jax.vmap(learners.moment_embedding)(known)
    bank = learners.task_bank(embeddings, stored)
    ep = take_episodes(known, 4)
    warm = learners.warm_start(zero_steps, bank, learners.moment_embedding, k=1)
    task_params = warm.adapt(params, ep, jax.random.key(0))  # 0 inner steps: the start itself
    np.testing.assert_allclose(np.asarray(task_params["head"]["bias"]), np.asarray(params["net"]["head"]["bias"] + 0.4),
                               rtol=1e-6)
    half = learners.warm_start(zero_steps, bank, learners.moment_embedding, k=1, mix=0.5)
    np.testing.assert_allclose(np.asarray(half.adapt(params, ep, None)["head"]["bias"]),
                               np.asarray(params["net"]["head"]["bias"] + 0.2), rtol=1e-6)
    # mix=0 is the plain learner, inner steps included
    plain, wrapped = _maml(steps=3), learners.warm_start(_maml(steps=3), bank, learners.moment_embedding, k=2, mix=0.0)
    a, b = plain.adapt(params, ep, None), wrapped.adapt(params, ep, None)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6)
    # the wrapped learner still runs through the compiled evaluator
    from jaxmeta import train

    result = train.evaluate(warm, params, known, key=jax.random.key(3), batch_size=6)
    assert result["loss"]["n"] == 12
    with pytest.raises(ValueError, match="mix"):
        learners.warm_start(zero_steps, bank, learners.moment_embedding, mix=2.0)
    with pytest.raises(TypeError, match="bank"):
        learners.warm_start(zero_steps, {"embeddings": embeddings}, learners.moment_embedding)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_nearest_tasks_ranks_by_task_similarity(metric):
    rng = np.random.default_rng(0)
    emb = jnp.asarray(rng.normal(size=(30, 6)), jnp.float32)
    bank = learners.task_bank(emb, {"w": jnp.zeros(30)})
    query = jnp.asarray(rng.normal(size=6), jnp.float32)
    sims = learners.task_similarity((query - bank.center) / bank.scale, (emb - bank.center) / bank.scale,
                                    metric=metric)
    idx, w = learners.nearest_tasks(bank, query, k=4, metric=metric, temperature=0.5)
    np.testing.assert_array_equal(np.asarray(idx), np.argsort(-np.asarray(sims))[:4])
    np.testing.assert_allclose(np.asarray(w), np.asarray(jax.nn.softmax(jnp.sort(sims)[::-1][:4] / 0.5)), rtol=1e-4)
