"""N-way K-shot samplers: contract, determinism, host == device in distribution, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmeta import scenarios, validate_episode

C, M = 12, 10
# every example's value is its unique id: class * M + index
DATA = np.arange(C * M, dtype=np.float32).reshape(C, M, 1)


def _both(key, **kw):
    return (scenarios.fewshot_episodes(key, jnp.asarray(DATA), **kw),
            scenarios.fewshot_episodes_numpy(key, DATA, **kw))


@pytest.mark.parametrize("sampler", ["device", "host"])
def test_contract_labels_disjoint_and_consistent(sampler):
    kw = dict(num_tasks=50, ways=5, shots=2, queries=3)
    eps = _both(jax.random.key(0), **kw)[0 if sampler == "device" else 1]
    validate_episode(eps, batched=True, num_ways=5)
    assert eps.support_x.shape == (50, 10, 1) and eps.query_x.shape == (50, 15, 1)
    for e in range(50):
        s_ids, q_ids = np.asarray(eps.support_x[e, :, 0]), np.asarray(eps.query_x[e, :, 0])
        assert not set(s_ids) & set(q_ids), "support and query share an example"
        assert len(set(s_ids)) == 10 and len(set(q_ids)) == 15
        # the label of an example is the same class in support and query, classes distinct
        s_cls, q_cls = s_ids // M, q_ids // M
        for label in range(5):
            assert len(set(s_cls[np.asarray(eps.support_y[e]) == label])) == 1
            assert set(q_cls[np.asarray(eps.query_y[e]) == label]) == set(s_cls[np.asarray(eps.support_y[e]) == label])
        assert len(set(s_cls)) == 5


def test_deterministic_per_key():
    for i in range(2):
        a = _both(jax.random.key(3), num_tasks=4, ways=3, shots=1, queries=2)[i]
        b = _both(jax.random.key(3), num_tasks=4, ways=3, shots=1, queries=2)[i]
        c = _both(jax.random.key(4), num_tasks=4, ways=3, shots=1, queries=2)[i]
        np.testing.assert_array_equal(a.support_x, b.support_x)
        assert not np.array_equal(np.asarray(a.query_x), np.asarray(c.query_x))


def test_host_and_device_samplers_agree_in_distribution():
    kw = dict(num_tasks=3000, ways=4, shots=1, queries=2)
    dev, host = _both(jax.random.key(5), **kw)
    n = kw["num_tasks"]
    for eps in (dev, host):
        ids = np.concatenate([np.asarray(eps.support_x).reshape(n, -1), np.asarray(eps.query_x).reshape(n, -1)], 1)
        classes = np.bincount((ids[:, :: 3] // M).astype(int).ravel(), minlength=C)  # one example per class-slot
        examples = np.bincount(ids.astype(int).ravel(), minlength=C * M)
        # class frequency: 4/12 of episodes each; example frequency: each class slot uses 3 of M=10 examples
        expected_class = n * 4 / C
        assert np.all(np.abs(classes - expected_class) < 5 * np.sqrt(expected_class)), classes
        expected_example = expected_class * 3 / M
        assert np.all(np.abs(examples - expected_example) < 5 * np.sqrt(expected_example)), examples
        # support slot is uniform over a class's examples too (no position bias)
        support_pos = (np.asarray(eps.support_x)[..., 0].astype(int) % M).ravel()
        counts = np.bincount(support_pos, minlength=M)
        assert np.all(np.abs(counts - counts.mean()) < 5 * np.sqrt(counts.mean()))


def test_counts_restrict_examples_to_real_ones():
    counts = np.full(C, M)
    counts[:6] = 4
    for eps in _both(jax.random.key(6), num_tasks=200, ways=6, shots=2, queries=2, counts=counts):
        ids = np.concatenate([np.asarray(eps.support_x).ravel(), np.asarray(eps.query_x).ravel()]).astype(int)
        cls, idx = ids // M, ids % M
        assert np.all(idx[cls < 6] < 4)


def test_within_group_draws_one_group():
    groups = np.repeat(np.arange(3), 4)  # 3 groups of 4 classes
    for eps in _both(jax.random.key(7), num_tasks=100, ways=4, shots=1, queries=1, groups=groups,
                     within_group=True):
        cls = (np.asarray(eps.support_x)[..., 0] // M).astype(int)
        assert np.all(groups[cls] == groups[cls[:, :1]])
        assert len(np.unique(groups[cls[:, 0]])) == 3  # every group gets used


def test_impossible_requests_fail_before_compiling():
    with pytest.raises(ValueError, match="ways=13 is more than the 12 classes"):
        scenarios.fewshot_episodes(jax.random.key(0), jnp.asarray(DATA), num_tasks=1, ways=13, shots=1, queries=1)
    with pytest.raises(ValueError, match="shots \\+ queries = 11"):
        scenarios.fewshot_episodes_numpy(jax.random.key(0), DATA, num_tasks=1, ways=2, shots=5, queries=6)
    with pytest.raises(ValueError, match="no group has 5 classes"):
        scenarios.fewshot_episodes(jax.random.key(0), jnp.asarray(DATA), num_tasks=1, ways=5, shots=1, queries=1,
                                   groups=np.repeat(np.arange(3), 4), within_group=True)
    with pytest.raises(ValueError, match="shots"):
        scenarios.check_fewshot(DATA.shape, ways=2, shots=0, queries=1)


def test_device_sampler_runs_inside_jit():
    sample = jax.jit(lambda k: scenarios.fewshot_episodes(k, jnp.asarray(DATA), num_tasks=2, ways=3, shots=1,
                                                          queries=1))
    assert sample(jax.random.key(0)).support_y.shape == (2, 3)


def test_augment_keeps_shapes_and_changes_images():
    x = jnp.zeros((2, 4, 28, 28, 1)).at[..., 8:20, 8:20, :].set(1.0)
    eps = scenarios.fewshot_episodes(jax.random.key(0), x.reshape(2, 4, 28, 28, 1), num_tasks=2, ways=2, shots=1,
                                     queries=1)
    aug = scenarios.augment_episodes(jax.random.key(1), eps)
    assert aug.support_x.shape == eps.support_x.shape
    assert float(jnp.abs(aug.support_x - eps.support_x).max()) > 0.1
    same = scenarios.augment_episodes(jax.random.key(1), eps, rotate=0.0, scale=0.0, shear=0.0, translate=0.0)
    np.testing.assert_allclose(same.support_x, eps.support_x, atol=1e-5)
