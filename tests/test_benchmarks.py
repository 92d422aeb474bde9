"""Benchmark scripts stay runnable (smoke only: CI never times anything)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from benchmarks import harness, worker


@pytest.mark.parametrize("module", ["benchmarks.peers", "benchmarks.meta_step", "benchmarks.worker", "benchmarks.imputation",
                                    "benchmarks.conv_products"])
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


def test_worker_shards_the_episodes_over_forced_host_devices():
    cfg = {"task": "sinusoid", "shots": 5, "queries": 5, "meta_batch": 4, "inner_steps": 2, "inner_lr": 0.01,
           "steps": 3, "warmup": 1, "batching": "accumulate"}
    one = harness.run_worker("jaxmeta", cfg, timeout=300)
    two = harness.run_worker("jaxmeta", dict(cfg, host_devices=2), timeout=300)
    assert "error" not in two, two
    assert one["devices"] == 1 and two["devices"] == 2
    assert two["flops_per_step"] == one["flops_per_step"]  # counted on the unsharded step
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)  # same data, same start, 6 steps


def test_step_flops_counts_every_episode_of_a_looped_step():
    import jax
    import optax

    from jaxmeta import Episode, train

    cfg = {"task": "sinusoid", "shots": 5, "queries": 5, "meta_batch": 4, "inner_steps": 2, "inner_lr": 0.01}
    learner, _ = worker.jax_learner(cfg)
    episodes = Episode(*(jax.numpy.asarray(a) for a in worker.make_data(cfg)))
    opt = optax.adam(1e-3)
    state = train.init_state(learner, opt, jax.random.key(0), episodes)
    key = jax.random.key(1)

    def xla_count(batching):
        return worker._flops(train.make_meta_step(learner, opt, batching=batching).lower(state, episodes, key).compile())

    exact = xla_count("unroll")  # straight-line code: XLA counts every episode
    assert xla_count("accumulate") < 0.5 * exact  # a loop over episodes: XLA counts its body once
    assert worker.step_flops(learner, opt, state, episodes, key) == pytest.approx(exact, rel=1e-2)


@pytest.mark.skipif(shutil.which("taskset") is None or not hasattr(os, "sched_getaffinity"),
                    reason="pinning needs Linux's taskset")
def test_matmul_peak_on_given_cores_runs_pinned_to_them():
    peak = harness.matmul_peak(sizes=(64,), rounds=1, repeats=1, cores=[0])
    assert peak["cpus"] == 1 and peak["cores"] == [0] and peak["peak_gflops"] > 0
    assert set(peak["by_size"]) == {64}


def test_peer_gradient_check_when_torch_is_installed():
    pytest.importorskip("torch")
    cfg = {"task": "sinusoid", "shots": 5, "queries": 5, "meta_batch": 3, "inner_steps": 2, "inner_lr": 0.01,
           "steps": 1}
    row = harness.run_worker("torchfunc_loop", cfg, check_gradient=True, timeout=300)
    assert row.get("max_abs_diff_over_max_grad", 1.0) < 1e-4, row


def test_worker_profile_names_the_xla_instructions_of_the_step():

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

    text = ('  %fusion.3 = f32[4,8]{1,0} fusion(%p0), kind=kLoop, metadata={op_name="jit(step)/dense/add"}\n'
            '  ROOT %tuple.1 = (f32[4]{0}, s32[]) tuple(%a, %b)\n'
            '  %p0 = f32[4,8]{1,0} parameter(0)\n')
    assert worker.hlo_ops(text) == {"fusion.3": ("f32[4,8]{1,0}", "jit(step)/dense/add"),
                                    "tuple.1": ("(f32[4]{0}, s32[])", ""), "p0": ("f32[4,8]{1,0}", "")}


def test_conv_product_forms_agree():
    import jax
    import numpy as np

    from benchmarks import conv_products

    x, g = jax.random.normal(jax.random.key(0), (2, 3, 6, 6, 4))
    k = jax.random.normal(jax.random.key(1), (3, 3, 4, 4))
    by_kind = {}
    for label, (kind, fn) in conv_products.forms(6, 4).items():
        by_kind.setdefault(kind, []).append((label, np.asarray(fn(x, g, k))))
    assert set(by_kind) == {"forward", "input", "weight"}
    for kind, outs in by_kind.items():
        assert len(outs) >= 2
        for label, out in outs[1:]:
            np.testing.assert_allclose(out, outs[0][1], rtol=1e-4, atol=1e-4, err_msg=label)


def test_worker_peak_memory_is_its_own_not_the_harness():
    # ru_maxrss would carry this (harness) process's resident set into the worker; VmHWM does not
    import numpy as np


    ballast = np.ones(2**30 // 8)  # 1 GB resident here
    cfg = {"task": "sinusoid", "shots": 5, "queries": 5, "meta_batch": 2, "inner_steps": 1, "inner_lr": 0.01,
           "steps": 1, "warmup": 1}
    row = harness.run_worker("jaxmeta", cfg, timeout=300)
    assert "error" not in row, row
    assert 0 < row["peak_rss_mb"] < worker.peak_rss_mb()  # the worker (JAX, tiny MLP) is leaner than this process
    del ballast


@pytest.mark.parametrize("module", ["benchmarks.harness", "benchmarks.conv_products", "benchmarks.worker"])
def test_docstring_examples(module):
    # pytest's --doctest-modules covers the library; the benchmarks' examples run here
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_time_budget_stops_a_slow_row_after_the_least_steps():
    calls = []
    times = worker.time_steps(lambda: (calls.append(1), time.sleep(0.02)), {"steps": 50, "time_budget_s": 0.05,
                                                                            "min_steps": 3})
    assert 3 <= len(times) < 50 and len(calls) == len(times)
    assert len(worker.time_steps(lambda: None, {"steps": 7})) == 7  # no budget: every step
