"""experiments/semisup: --help, bad input, and a tiny run on the real data."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import pytest

from jaxmeta import scenarios

from experiments.semisup import main as semisup


def test_semisup_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        semisup.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--unlabelled-per-class" in out and "--sweep-unlabelled" in out


def test_semisup_rejects_bad_config(tmp_path):
    with pytest.raises(ValueError, match="methods"):
        semisup.main(["--workdir", str(tmp_path), "--methods", "bogus"])
    with pytest.raises(ValueError, match="labelled drawings"):
        semisup.check_config(semisup.Config(test_queries=9, test_shots=(5,)))
    with pytest.raises(ValueError, match="maml_batching"):
        semisup.check_config(semisup.Config(maml_batching="pmap"))
    with pytest.raises(ValueError, match="unlabelled drawings"):
        semisup.check_config(semisup.Config(sweep_unlabelled=(0, 11)))


def test_test_settings_cover_table_and_sweep():
    names = [s[0] for s in semisup.test_settings(semisup.Config())]
    assert "1-shot M=5 D=0" in names and "5-shot M=5 D=5" in names and "1-shot M=0 D=0" in names
    assert "1-shot M=10 D=5" in names and len(names) == len(set(names))


@pytest.mark.data
def test_semisup_tiny_run(tmp_path):
    args = ["--quick", "--workdir", str(tmp_path), "--metric-steps", "4", "--metric-warmstart-steps", "2", "--maml-steps", "4",
            "--maml-warmstart-steps", "2", "--steps-per-call", "2", "--maml-steps-per-call", "2",
            "--metric-train-ways", "5", "--metric-train-distractors", "2", "--maml-meta-batch", "2",
            "--test-episodes", "10", "--monitor-every", "2", "--monitor-episodes", "10", "--test-shots", "1",
            "--sweep-unlabelled", "0", "5", "--no-progress", "--methods", "protonet", "masked_soft_kmeans"]
    # (the MAML methods run through the same code; their compile time is too long for a test, see
    # test_maml_methods_build_and_sample)
    assert semisup.main(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["results"]) == {"protonet", "masked_soft_kmeans"}
    assert results["results"]["protonet"]["batching"] == "vmap"
    assert semisup.batching(semisup.Config(), "maml") == "accumulate"  # auto, on CPU
    tests = results["results"]["masked_soft_kmeans"]["tests"]
    assert set(tests) == {"1-shot M=5 D=0", "1-shot M=5 D=5", "1-shot M=0 D=0"}
    assert tests["1-shot M=5 D=5"]["accuracy"]["n"] == 10
    assert "1-shot M=5 D=5" in results["results"]["masked_soft_kmeans"]["minus_protonet"]
    # the supervised baseline sees identical labelled episodes in every setting
    base = results["results"]["protonet"]["tests"]
    assert base["1-shot M=5 D=5"]["accuracy"] == base["1-shot M=0 D=0"]["accuracy"]
    assert "gain_over_protonet_no_distractors" in results["targets"]
    assert results["split"]["test_classes"] == 106 and results["split"]["labelled_per_class"] == 10
    assert (tmp_path / "accuracy_vs_unlabelled.png").stat().st_size > 0
    # a second run reuses the checkpoints and the finished evaluations
    assert semisup.main(args) == 0


def test_maml_methods_build_and_sample():
    config = semisup.Config(maml_meta_batch=3, augment=False)
    pools = scenarios.split_labelled(jax.random.key(0), jnp.zeros((20, 20, 28, 28, 1)))
    for method, params_keys, unlabelled in (("maml", {"net"}, 0), ("semisup_maml", {"net", "inner_term"}, 14)):
        sample, ways = semisup.train_sampler(config, method, pools)
        eps = sample(jax.random.key(1))
        assert ways == 5 and eps.support_x.shape == (3, 5, 28, 28, 1) and eps.query_x.shape == (3, 10, 28, 28, 1)
        assert eps.aux["unlabelled_x"].shape == (3, unlabelled, 28, 28, 1)  # (5 + 2 distractors) * 2
        learner = semisup.build_learner(config, method, ways)
        example = jax.tree_util.tree_map(lambda a: a[0], eps)
        assert set(jax.eval_shape(learner.init, jax.random.key(2), example)) == params_keys
