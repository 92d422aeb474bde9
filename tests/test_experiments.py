"""Experiment scripts: --help works and a tiny run writes results and plots."""

from __future__ import annotations

import json

import pytest

from experiments import common
from experiments.sinusoid import main as sinusoid


def test_sinusoid_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        sinusoid.main(["--help"])
    assert exit_info.value.code == 0
    assert "--workdir" in capsys.readouterr().out


def test_sinusoid_tiny_run_writes_results_and_plots(tmp_path):
    args = ["--quick", "--workdir", str(tmp_path), "--steps", "4", "--steps-per-call", "2", "--test-tasks", "20",
            "--test-steps", "2", "--no-progress"]
    assert sinusoid.main(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["results"]) == set(sinusoid.METHODS)
    for method in sinusoid.METHODS:
        assert set(results["results"][method]) == {"0_steps", "2_steps"}
        assert results["results"][method]["2_steps"]["n"] == 20
    assert (tmp_path / "predictions.png").stat().st_size > 0
    assert (tmp_path / "mse_vs_steps.png").stat().st_size > 0
    metrics = tmp_path / "maml" / "metrics.jsonl"
    logged = metrics.read_text()
    # running again resumes the finished method instead of retraining it (nothing new is logged)
    assert sinusoid.main(args[:-1] + ["--methods", "maml", "--no-progress"]) == 0
    assert metrics.read_text() == logged


def test_devices_flag_splits_the_cpu_before_jax_starts_and_says_what_it_cannot_do(tmp_path):
    import os
    import pathlib
    import subprocess
    import sys

    # a fresh process, as the scripts run: --devices 2 on a CPU splits it into two XLA host devices
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    code = "from experiments import common; m = common.device_mesh(2); import jax; print(m.devices.size, jax.device_count())"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          cwd=pathlib.Path(__file__).resolve().parents[1])
    assert proc.returncode == 0 and proc.stdout.split() == ["2", "2"], proc.stdout + proc.stderr[-2000:]
    # here JAX has started (this line makes sure, so that the calls below cannot split this worker), one device
    import jax

    assert jax.device_count() == 1
    with pytest.raises(ValueError, match="this process has 1 cpu device"):
        common.device_mesh(3)
    with pytest.raises(ValueError, match="expected 0 .every device. or a positive count"):
        sinusoid.main(["--workdir", str(tmp_path), "--devices", "-2"])
    from experiments.imputation import main as imputation

    with pytest.raises(ValueError, match="--devices 1"):
        imputation.train_and_evaluate(imputation.Config(), str(tmp_path), mesh=common.device_mesh(0))


def test_sinusoid_rejects_unknown_method(tmp_path):
    with pytest.raises(ValueError, match="methods"):
        sinusoid.main(["--workdir", str(tmp_path), "--methods", "bogus"])


def test_omniglot_help(capsys):
    from experiments.omniglot import main as omniglot

    with pytest.raises(SystemExit) as exit_info:
        omniglot.main(["--help"])
    assert exit_info.value.code == 0
    assert "--metric-train-ways" in capsys.readouterr().out


def test_omniglot_rejects_unknown_run(tmp_path):
    from experiments.omniglot import main as omniglot

    with pytest.raises(ValueError, match="cannot parse"):
        omniglot.parse_run("protonet_5way")
    with pytest.raises(ValueError, match="maml_batching"):
        common.maml_batching("pmap")


@pytest.mark.data
def test_omniglot_tiny_run(tmp_path):
    from experiments.omniglot import main as omniglot

    args = ["--quick", "--workdir", str(tmp_path), "--metric-steps", "4", "--maml-steps", "2", "--steps-per-call",
            "2", "--metric-train-ways", "5", "--maml-meta-batch", "2", "--test-episodes", "10", "--test-queries", "2",
            "--monitor-every", "2", "--monitor-episodes", "10", "--maml-test-steps", "1", "--no-progress"]
    assert omniglot.main(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    tests = results["results"]["protonet_1shot"]["tests"]
    assert set(tests) == {"5-way 1-shot", "20-way 1-shot", "20-way 1-shot within-alphabet"}
    assert tests["5-way 1-shot"]["accuracy"]["n"] == 10
    assert "accuracy_1_steps" in results["results"]["maml_5w1s"]["tests"]["5-way 1-shot"]
    # on CPU, MAML's meta-step accumulates per-episode gradients (auto); the metric learners vmap
    assert results["results"]["maml_5w1s"]["batching"] == "accumulate"
    assert results["results"]["protonet_1shot"]["batching"] == "vmap"
    assert results["split"]["test_classes"] == 106
    assert (tmp_path / "learning_curves.png").exists()
