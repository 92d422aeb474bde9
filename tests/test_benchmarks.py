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


def test_worker_profile_names_the_xla_instructions_of_the_step():
    from benchmarks import worker

    cfg = {"task": "sinusoid", "shots": 5, "queries": 5, "meta_batch": 4, "inner_steps": 2, "inner_lr": 0.01,
           "steps": 2, "warmup": 1}
    row = worker.run_jaxmeta(cfg, profile_steps=2)
    rows = row["top_ops"]
    assert rows and row["profile_steps"] == 2 and row["profiled_ms_per_step"] > 0
    assert all(set(r) == {"op", "ms_per_step", "share", "shape", "source"} for r in rows)
    assert 0.0 < row["dot_general_ms_per_step"] <= row["profiled_ms_per_step"]
    assert [r["ms_per_step"] for r in rows] == sorted((r["ms_per_step"] for r in rows), reverse=True)
    assert 0.0 < sum(r["share"] for r in rows) <= 1.0 + 1e-9
    assert any("dot_general" in r["source"] for r in rows)  # the MLP's matmuls are among the timed instructions


def test_hlo_ops_reads_names_shapes_and_sources():
    from benchmarks import worker

    text = ('  %fusion.3 = f32[4,8]{1,0} fusion(%p0), kind=kLoop, metadata={op_name="jit(step)/dense/add"}\n'
            '  ROOT %tuple.1 = (f32[4]{0}, s32[]) tuple(%a, %b)\n'
            '  %p0 = f32[4,8]{1,0} parameter(0)\n')
    assert worker.hlo_ops(text) == {"fusion.3": ("f32[4,8]{1,0}", "jit(step)/dense/add"),
                                    "tuple.1": ("(f32[4]{0}, s32[])", ""), "p0": ("f32[4,8]{1,0}", "")}
