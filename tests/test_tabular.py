"""Tabular few-shot tasks from (X, y): determinism, labels, disjointness, groups, errors; the Letter reader."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from jaxmeta import data, scenarios, validate_episode


def _table(rows=200, classes=8):
    X = np.stack([np.arange(rows), np.arange(rows) % classes], 1).astype(np.float32)  # column 0 = row id
    y = np.array([f"class{c}" for c in np.arange(rows) % classes])
    return X, y


def test_classification_episodes_are_deterministic_and_well_formed():
    X, y = _table()
    sample = scenarios.tabular_classification(X, y, ways=5, shots=3, queries=4, num_tasks=6)
    eps = sample(jax.random.key(0))
    again = sample(jax.random.key(0))
    other = sample(jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(eps.support_x), np.asarray(again.support_x))
    assert not np.array_equal(np.asarray(eps.support_x), np.asarray(other.support_x))
    validate_episode(eps, batched=True, num_ways=5)
    assert eps.support_x.shape == (6, 15, 2) and eps.query_x.shape == (6, 20, 2)
    for e in range(6):
        s_rows = np.asarray(eps.support_x[e, :, 0]).astype(int)
        q_rows = np.asarray(eps.query_x[e, :, 0]).astype(int)
        assert not set(s_rows) & set(q_rows)  # disjoint
        assert len(set(s_rows)) == 15 and len(set(q_rows)) == 20  # no row twice
        original = {}
        for rows, labels in ((s_rows, eps.support_y[e]), (q_rows, eps.query_y[e])):
            for r, label in zip(rows, np.asarray(labels)):
                original.setdefault(int(label), set()).add(y[r])
        assert sorted(original) == list(range(5))
        assert all(len(v) == 1 for v in original.values())  # one original class per new label
        assert len({next(iter(v)) for v in original.values()}) == 5  # five distinct classes


def test_classification_errors_name_the_problem():
    X, y = _table(rows=40, classes=8)  # 5 rows per class
    with pytest.raises(ValueError, match="ways=9"):
        scenarios.tabular_classification(X, y, ways=9, shots=1, queries=1, num_tasks=1)
    with pytest.raises(ValueError, match="largest class has 5"):
        scenarios.tabular_classification(X, y, ways=2, shots=3, queries=3, num_tasks=1)
    with pytest.raises(ValueError, match="shots"):
        scenarios.tabular_classification(X, y, ways=2, shots=0, queries=3, num_tasks=1)
    with pytest.raises(ValueError, match="y"):
        scenarios.tabular_classification(X, y[:-1], ways=2, shots=1, queries=1, num_tasks=1)
    with pytest.raises(ValueError, match="NaN"):
        scenarios.tabular_classification(np.where(X == 3, np.nan, X), y, ways=2, shots=1, queries=1, num_tasks=1)
    with pytest.raises(TypeError, match="X"):
        scenarios.tabular_classification(np.array([["a"]] * 40), y, ways=2, shots=1, queries=1, num_tasks=1)


def test_regression_groups_and_random_subsets():
    rng = np.random.default_rng(0)
    rows = 300
    groups = rng.integers(0, 6, size=rows) * 10  # values 0, 10, ..., 50
    X = np.stack([np.arange(rows), groups], 1).astype(np.float32)
    y = rng.normal(size=rows)
    sample = scenarios.tabular_regression(X, y, shots=5, queries=7, num_tasks=10, groups=groups, group_ids=True)
    eps = sample(jax.random.key(0))
    validate_episode(eps, batched=True)
    assert eps.support_y.shape == (10, 5, 1) and eps.query_x.shape == (10, 7, 2)
    np.testing.assert_array_equal(np.asarray(eps.support_x), np.asarray(sample(jax.random.key(0)).support_x))
    values = np.unique(groups)
    for e in range(10):
        s_rows = np.asarray(eps.support_x[e, :, 0]).astype(int)
        q_rows = np.asarray(eps.query_x[e, :, 0]).astype(int)
        assert not set(s_rows) & set(q_rows)
        group = values[int(eps.aux["group"][e])]
        assert (groups[s_rows] == group).all() and (groups[q_rows] == group).all()
        np.testing.assert_allclose(np.asarray(eps.support_y[e, :, 0]), y[s_rows].astype(np.float32))
    ungrouped = scenarios.tabular_regression(X, y, shots=5, queries=7, num_tasks=4)(jax.random.key(1))
    assert ungrouped.aux is None and ungrouped.support_x.shape == (4, 5, 2)
    assert len(set(np.asarray(ungrouped.support_x[:, :, 0]).ravel().tolist())) > 5


def test_regression_errors():
    X, y = np.zeros((30, 2)), np.zeros(30)
    groups = np.arange(30) % 3  # 10 rows per group
    with pytest.raises(ValueError, match="largest: 10"):
        scenarios.tabular_regression(X, y, shots=6, queries=5, num_tasks=1, groups=groups)
    with pytest.raises(ValueError, match="largest: 30"):
        scenarios.tabular_regression(X, y, shots=26, queries=5, num_tasks=1)
    with pytest.raises(ValueError, match="groups"):
        scenarios.tabular_regression(X, y, shots=2, queries=2, num_tasks=1, groups=groups[:-1])
    with pytest.raises(ValueError, match="group_ids"):
        scenarios.tabular_regression(X, y, shots=2, queries=2, num_tasks=1, group_ids=True)
    with pytest.raises(TypeError, match="numeric"):
        scenarios.tabular_regression(X, np.array(["a"] * 30), shots=2, queries=2, num_tasks=1)


def test_sampler_runs_inside_jit():
    X, y = _table()
    sample = scenarios.tabular_classification(X, y, ways=3, shots=2, queries=2, num_tasks=4)
    np.testing.assert_array_equal(np.asarray(jax.jit(sample)(jax.random.key(3)).query_x),
                                  np.asarray(sample(jax.random.key(3)).query_x))


def test_data_path_needs_a_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("JAXMETA_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="JAXMETA_DATA"):
        data.load_letter()
    with pytest.raises(FileNotFoundError, match="nonexistent-folder"):
        data.load_letter("/nonexistent-folder")
    with pytest.raises(FileNotFoundError, match="letter.csv"):
        data.load_letter(tmp_path)


@pytest.mark.data
def test_letter_reader_on_disk():
    X = data.load_letter(os.environ["JAXMETA_DATA"])
    assert X.shape == (20000, 16) and X.dtype == np.float32
    assert X.min() == 0 and X.max() == 15
    np.testing.assert_array_equal(X[0], [2, 8, 3, 5, 1, 8, 13, 0, 6, 6, 10, 8, 0, 8, 0, 8])


def test_letter_reader_rejects_a_corrupt_file(tmp_path):
    (tmp_path / "uci").mkdir()
    (tmp_path / "uci" / "letter.csv").write_text("Cat 1\n1\n")
    with pytest.raises(ValueError, match="sha256"):
        data.load_letter(str(tmp_path))


def test_rows_are_drawn_uniformly():
    X = np.arange(10, dtype=np.float32)[:, None]  # row id as the feature
    eps = scenarios.tabular_regression(X, np.zeros(10), shots=1, queries=2, num_tasks=4000)(jax.random.key(0))
    support = np.asarray(eps.support_x[:, 0, 0]).astype(int)
    every = np.concatenate([support[:, None], np.asarray(eps.query_x[:, :, 0]).astype(int)], 1)
    assert all(len(set(r)) == 3 for r in every.tolist())  # without replacement
    np.testing.assert_allclose(np.bincount(support, minlength=10) / 4000, 0.1, atol=0.02)  # support slot uniform
    np.testing.assert_allclose(np.bincount(every.ravel(), minlength=10) / 4000, 0.3, atol=0.03)
