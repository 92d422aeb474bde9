"""Benchmark scripts stay runnable (smoke only: CI never times anything)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks import harness


@pytest.mark.parametrize("module", ["benchmarks.peers", "benchmarks.meta_step", "benchmarks.worker", "benchmarks.imputation"])
def test_help(module):
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=harness.ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and "usage" in proc.stdout


def test_worker_reports_time_flops_and_memory():
    cfg = {"task": "sinusoid", "shots": 5, "queries": 5, "meta_batch": 4, "inner_steps": 2, "inner_lr": 0.01,
           "steps": 3, "warmup": 1}
    row = harness.run_worker("jaxmeta", cfg, timeout=300)
    assert "error" not in row, row
    assert row["steps_timed"] == 3 and row["step_s_median"] > 0
    assert row["flops_per_step"] > 0 and row["compile_s"] > 0
    assert json.dumps(row)


def test_peer_gradient_check_when_torch_is_installed():
    pytest.importorskip("torch")
    cfg = {"task": "sinusoid", "shots": 5, "queries": 5, "meta_batch": 3, "inner_steps": 2, "inner_lr": 0.01,
           "steps": 1}
    row = harness.run_worker("torchfunc_loop", cfg, check_gradient=True, timeout=300)
    assert row.get("max_abs_diff_over_max_grad", 1.0) < 1e-4, row
