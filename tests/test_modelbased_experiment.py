"""experiments/modelbased: --help, a tiny end-to-end run, and the Letter task builder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments.modelbased import main as modelbased

TINY = ["--no-progress", "--maml-steps", "4", "--np-steps", "4", "--steps-per-call", "2", "--np-width", "8",
        "--latent-dim", "2", "--test-tasks", "12", "--test-queries", "10", "--test-shots", "5", "--bank-tasks", "12",
        "--bank-steps", "2", "--warm-k", "2", "--predict-samples", "2", "--letter-steps", "4",
        "--letter-shots", "5", "--letter-bank-shots", "10", "--warm-steps", "1"]


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        modelbased.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--workdir" in out and "--np-steps" in out


def test_tiny_run_writes_results_and_plots(tmp_path):
    args = TINY + ["--workdir", str(tmp_path), "--methods", "maml", "cnp", "np", "--parts", "sinusoid"]
    assert modelbased.main(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    k5 = results["sinusoid"]["results"]["K=5"]
    assert set(k5) == {"maml", "cnp", "np"}
    assert k5["maml"]["10_steps"]["mse"]["n"] == 12
    for method in ("cnp", "np"):
        assert set(k5[method]) == {"mse", "nll", "coverage95"}
        assert 0.0 <= k5[method]["coverage95"]["mean"] <= 1.0
    assert "K=5: cnp minus maml_10_steps" in results["sinusoid"]["paired_mse_differences"]
    rows = results["sinusoid"]["warm_start"]["rows"]
    assert {"plain_init", "bank_mean", "warm_gradient_k2", "warm_moments_k2"} <= set(rows)
    assert "letter" not in results
    for name in ("sinusoid_predictions.png", "mse_vs_shots.png", "warm_start.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "cnp" / "metrics.jsonl").exists()


def test_unknown_method_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="methods"):
        modelbased.main(["--workdir", str(tmp_path), "--methods", "bogus"])
    with pytest.raises(ValueError, match="parts"):
        modelbased.main(["--workdir", str(tmp_path), "--parts", "mnist"])
    with pytest.raises(ValueError, match="movielens_methods"):
        modelbased.main(["--workdir", str(tmp_path), "--parts", "movielens", "--movielens-methods", "svd"])


def test_letter_column_tasks_zero_the_target_and_group_rows():
    rng = np.random.default_rng(0)
    table = rng.integers(0, 4, size=(50, 4)).astype(np.float32)
    X, y, groups, values = modelbased.letter_column_tasks(table, group_column=0)
    assert X.shape == (150, 4) and y.shape == (150,)  # three target columns
    z = (table - table.mean(0)) / table.std(0)
    for i, j in enumerate((1, 2, 3)):
        block = slice(50 * i, 50 * (i + 1))
        assert (X[block, j] == 0).all()
        np.testing.assert_allclose(y[block], z[:, j], rtol=1e-6)
        np.testing.assert_array_equal(groups[block], j * 1000 + table[:, 0].astype(int))
    np.testing.assert_array_equal(values, np.tile(table[:, 0].astype(int), 3))


@pytest.mark.data
def test_tiny_letter_run(tmp_path):
    args = TINY + ["--workdir", str(tmp_path), "--methods", "cnp", "--parts", "letter"]
    assert modelbased.main(args) == 0
    letter = json.loads((tmp_path / "results.json").read_text())["letter"]
    rows = letter["by_shots"]["K=5"]["rows"]
    assert {"plain_init", "bank_mean", "warm_gradient_k2", "cnp"} <= set(rows)
    assert letter["by_shots"]["K=5"]["support_mean_baseline"]["n"] == 12


@pytest.mark.data
@pytest.mark.default_prng  # (the MovieLens user split, and so the item-mean MAE below, is the one users get)
def test_tiny_omniglot_and_movielens_run_keeps_earlier_parts(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"letter": {"kept": True}}))
    args = ["--no-progress", "--workdir", str(tmp_path), "--parts", "omniglot", "movielens",
            "--omniglot-train-shots", "1", "--omniglot-test-shots", "1", "--omniglot-steps", "2",
            "--omniglot-steps-per-call", "1", "--omniglot-train-ways", "5", "--omniglot-cnp-width", "8",
            "--omniglot-test-episodes", "50", "--movielens-steps", "4", "--movielens-shots", "10",
            "--movielens-cnp-width", "8", "--movielens-methods", "cnp", "item_mean"]
    assert modelbased.main(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["letter"] == {"kept": True} and "sinusoid" not in results
    omniglot = results["omniglot"]
    assert omniglot["split"]["test_classes"] == 106
    cell = omniglot["results"]["5-way 1-shot"]
    assert set(cell) == {"protonet, trained 1-shot", "cnp, trained 1-shot"}
    for stats in cell.values():
        assert stats["n"] == 50 and 0.0 <= stats["mean"] <= 1.0
    assert "5-way 1-shot, trained 1-shot: cnp minus protonet" in omniglot["paired_accuracy_differences"]
    movielens = results["movielens"]
    k10 = movielens["results"]["K=10"]
    assert set(k10) == {"cnp", "item_mean"}
    assert k10["cnp"]["mae"]["n"] == k10["item_mean"]["mae"]["n"] > 100  # new users with 11+ ratings
    # the item mean of the training ratings does not depend on training: the cold-start experiment's value
    assert abs(k10["item_mean"]["mae"]["mean"] - 0.808) < 0.001
    assert 0.0 <= k10["cnp"]["coverage95"]["mean"] <= 1.0
    assert "K=10: cnp minus item_mean" in movielens["paired_mae_differences"]
