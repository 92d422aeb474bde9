"""Training loop: determinism, exact resume, compiled loop == host loop, evaluation."""

from __future__ import annotations

import functools
import json
import logging
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmeta import Episode, learners, losses, nets, scenarios, train

SAMPLE = functools.partial(scenarios.sinusoid, num_tasks=5, support_shots=5, query_shots=5)


def _learner():
    return learners.maml(nets.mlp((8, 8), 1), losses.squared_error, inner_lr=0.01, inner_steps=1)


def _fit(num_steps, workdir=None, **kw):
    kw.setdefault("log_every", 5)
    return train.fit(_learner(), optax.adam(1e-2), SAMPLE, key=jax.random.key(7), num_steps=num_steps,
                     workdir=workdir, progress=False, **kw)


def test_same_key_same_result():
    a, b = _fit(10), _fit(10)
    chex.assert_trees_all_equal(a.state.params, b.state.params)
    c = train.fit(_learner(), optax.adam(1e-2), SAMPLE, key=jax.random.key(8), num_steps=10, progress=False)
    assert not np.allclose(np.asarray(a.state.params["net"]["head"]["kernel"]),
                           np.asarray(c.state.params["net"]["head"]["kernel"]))


def test_init_state_is_one_compiled_init_with_the_eager_values():
    # init_state jits learner.init (one compilation instead of hundreds of op-by-op ones: ~100 MB less
    # peak memory on the Omniglot reference); the params are those of an eager init
    learner = learners.maml(nets.conv4(out=3, channels=8, conv_impl="im2col"), losses.softmax_cross_entropy)
    labels = jnp.tile(jnp.arange(3), (2, 1))
    eps = Episode(jnp.zeros((2, 3, 16, 16, 1)), labels, jnp.ones((2, 3, 16, 16, 1)), labels)
    state = train.init_state(learner, optax.adam(1e-3), jax.random.key(1), eps)
    eager = learner.init(jax.random.key(1), jax.tree_util.tree_map(lambda a: a[0], eps))
    chex.assert_trees_all_close(state.params, eager, atol=1e-6)
    assert int(state.step) == 0


def test_compiler_options_change_speed_not_numbers():
    # on CPU the meta-step is compiled with convolutions kept off YNNPACK's one-thread path; the step's
    # numbers equal a plain jax.jit of the same step
    assert train.compiler_options("gpu") == {}
    if jax.default_backend() == "cpu":
        assert train.compiler_options() == {
            "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
    learner = learners.maml(nets.conv4(out=3, blocks=2, channels=8, conv_impl="xla_vjp"), losses.softmax_cross_entropy,
                            inner_lr=0.1)
    labels = jnp.tile(jnp.arange(3), (2, 2))
    x = jax.random.normal(jax.random.key(0), (2, 6, 8, 8, 1))
    eps = Episode(x, labels, x[:, ::-1], labels)
    opt = optax.adam(1e-2)
    state = train.init_state(learner, opt, jax.random.key(1), eps)
    got = train.make_meta_step(learner, opt, batching="accumulate")(state, eps, jax.random.key(2))
    plain = jax.jit(train.make_meta_step(learner, opt, batching="accumulate", jit=False))(state, eps, jax.random.key(2))
    chex.assert_trees_all_close(got, plain, rtol=1e-5, atol=1e-6)


def test_compiler_options_yield_to_the_users_flags_and_to_an_xla_that_rejects_them(monkeypatch):
    from jaxmeta.train import meta_step

    try:
        meta_step._accepted_options.cache_clear()
        monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution")
        assert train.compiler_options("cpu") == {}
        meta_step._accepted_options.cache_clear()
        monkeypatch.delenv("XLA_FLAGS")
        monkeypatch.setattr(meta_step, "_CPU_OPTIONS", {"xla_cpu_experimental_ynn_fusion_type": "NO_SUCH_TYPE"})
        with pytest.warns(RuntimeWarning, match="compiling without"):
            assert train.compiler_options("cpu") == {}
    finally:
        meta_step._accepted_options.cache_clear()


def test_checkpoint_stop_resume_equals_uninterrupted(tmp_path):
    full = _fit(20, str(tmp_path / "full"), checkpoint_every=10)
    part = _fit(10, str(tmp_path / "resumed"), checkpoint_every=10)
    assert int(part.state.step) == 10
    resumed = _fit(20, str(tmp_path / "resumed"), checkpoint_every=10)  # picks up at step 10
    assert int(resumed.state.step) == 20
    chex.assert_trees_all_equal(full.state.params, resumed.state.params)
    chex.assert_trees_all_equal(full.state.opt_state, resumed.state.opt_state)
    # the log of the resumed run has each step once, like the uninterrupted one
    steps = [r["step"] for r in train.read_jsonl(str(tmp_path / "resumed" / "metrics.jsonl")) if r["kind"] == "train"]
    assert steps == [5, 10, 15, 20]
    # restored state has the same pytree types (NamedTuples survive the round trip)
    assert type(resumed.state) is train.MetaState
    assert jax.tree_util.tree_structure(resumed.state) == jax.tree_util.tree_structure(full.state)


def test_resume_with_device_sampling_is_exact(tmp_path, caplog):
    kw = dict(device_sampling=True, steps_per_call=5, unroll=1, checkpoint_every=10)  # (rolled: compiles fast)
    full = _fit(20, str(tmp_path / "a"), **kw)
    _fit(10, str(tmp_path / "b"), **kw)
    resumed = _fit(20, str(tmp_path / "b"), **kw)
    chex.assert_trees_all_equal(full.state.params, resumed.state.params)
    # re-opening the finished run only reads its checkpoint: the state to restore onto is built from
    # shapes, so neither the sampler nor the network's init is compiled
    jax.clear_caches()
    with jax.log_compiles(True), caplog.at_level(logging.WARNING, logger="jax"):
        again = _fit(20, str(tmp_path / "b"), **kw)
    compiled = {m.split(" of ")[1].split(" in ")[0] for m in caplog.messages if m.startswith("Finished XLA compilation")}
    assert compiled and not compiled & {"jit(init)", "jit(sinusoid)"}, compiled  # (key handling compiles)
    chex.assert_trees_all_equal(full.state.params, again.state.params)
    assert type(again.state) is train.MetaState


def test_compiled_loop_matches_host_loop():
    host = _fit(10)
    device = _fit(10, device_sampling=True, steps_per_call=5)
    chex.assert_trees_all_close(host.state.params, device.state.params, rtol=1e-5, atol=1e-6)


def test_fit_with_a_rolled_loop_equals_the_default():
    default = _fit(10, device_sampling=True, steps_per_call=5)
    rolled = _fit(10, device_sampling=True, steps_per_call=5, unroll=1)
    chex.assert_trees_all_close(default.state.params, rolled.state.params, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="device_sampling"):
        _fit(10, unroll=1)


def test_train_loop_chunks_on_cpu_give_the_scan_result():
    # 40 steps on CPU run as 4 calls of one compiled 10-step chunk (no loop in the program);
    # an explicit unroll keeps one scan. Both are the same 40 meta-steps with the same keys.
    learner, opt = _learner(), optax.adam(1e-3)
    sample = functools.partial(scenarios.sinusoid, num_tasks=4, support_shots=5, query_shots=5)
    state = train.init_state(learner, opt, jax.random.key(0), sample(jax.random.key(1)))
    chunked, m1 = train.make_train_loop(learner, opt, sample, steps=40)(state, jax.random.key(2))
    scanned, m2 = train.make_train_loop(learner, opt, sample, steps=40, unroll=1)(state, jax.random.key(2))
    assert m1["loss"].shape == m2["loss"].shape == (40,) and int(chunked.step) == 40
    chex.assert_trees_all_close(chunked.params, scanned.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(m1["loss"], m2["loss"], rtol=1e-5, atol=1e-6)


def test_fit_logs_and_evaluates(tmp_path):
    tests = scenarios.sinusoid(jax.random.key(99), num_tasks=20, support_shots=5, query_shots=10)
    eval_fn = functools.partial(train.evaluate, _learner(), episodes=tests, key=jax.random.key(0))
    result = _fit(10, str(tmp_path), eval_fn=lambda p: eval_fn(p), eval_every=5)
    kinds = [(r["step"], r["kind"]) for r in result.history]
    assert kinds == [(5, "train"), (5, "eval"), (10, "train"), (10, "eval")]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["kind"] for x in lines] == ["train", "eval", "train", "eval"]
    assert set(result.history[1]["loss"]) == {"mean", "ci95", "std", "n", "nonfinite"}


def test_existing_run_is_never_silently_overwritten(tmp_path):
    _fit(10, str(tmp_path), checkpoint_every=5)
    with pytest.raises(FileExistsError, match="resume=True"):
        _fit(5, str(tmp_path), checkpoint_every=5, resume=False)
    # resuming a finished run is a no-op that returns its state
    again = _fit(10, str(tmp_path), checkpoint_every=5)
    assert int(again.state.step) == 10


def test_checkpoint_of_another_configuration_is_a_clear_error(tmp_path):
    _fit(5, str(tmp_path), checkpoint_every=5)
    other = learners.maml(nets.mlp((3,), 1), losses.squared_error)
    with pytest.raises(ValueError, match="does not match"):
        train.fit(other, optax.adam(1e-2), SAMPLE, key=jax.random.key(7), num_steps=10, workdir=str(tmp_path),
                  progress=False)


def test_intervals_must_align_with_steps_per_call():
    with pytest.raises(ValueError, match="multiple of steps_per_call"):
        _fit(10, device_sampling=True, steps_per_call=4, log_every=6)
    with pytest.raises(ValueError, match="device_sampling"):
        _fit(10, steps_per_call=5)


def test_evaluate_reports_mean_and_ci():
    learner = _learner()
    tests = scenarios.sinusoid(jax.random.key(1), num_tasks=50, support_shots=5, query_shots=10)
    params = learner.init(jax.random.key(0), jax.tree_util.tree_map(lambda a: a[0], tests))
    result = train.evaluate(learner, params, tests, key=jax.random.key(2), batch_size=16, return_values=True)
    values = result["values"]["loss"]
    assert values.shape == (50,)
    assert result["loss"]["n"] == 50
    np.testing.assert_allclose(result["loss"]["mean"], values.mean(), rtol=1e-6)
    np.testing.assert_allclose(result["loss"]["ci95"], 1.96 * values.std(ddof=1) / np.sqrt(50), rtol=1e-6)
    # chunked evaluation gives the same per-episode values as one big batch
    whole = train.evaluate(learner, params, tests, key=jax.random.key(2), batch_size=50, return_values=True)
    assert whole["loss"]["n"] == 50
    # a sampler works too
    sampled = train.evaluate(learner, params, functools.partial(scenarios.sinusoid, num_tasks=8, support_shots=5,
                                                                query_shots=10),
                             key=jax.random.key(3), num_episodes=20)
    assert sampled["loss"]["n"] == 20


def test_evaluate_nan_policy():
    learner = learners.maml(nets.mlp((8,), 1), losses.squared_error, inner_lr=1e4, inner_steps=3)
    tests = scenarios.sinusoid(jax.random.key(1), num_tasks=10, support_shots=5, query_shots=10)
    params = learner.init(jax.random.key(0), jax.tree_util.tree_map(lambda a: a[0], tests))
    with pytest.raises(FloatingPointError, match="nan_policy"):
        train.evaluate(learner, params, tests, key=jax.random.key(2))
    report = train.evaluate(learner, params, tests, key=jax.random.key(2), nan_policy="report")
    assert report["loss"]["nonfinite"] > 0


def test_write_json_is_atomic_and_jsonable(tmp_path):
    path = tmp_path / "sub" / "r.json"
    train.write_json(str(path), {"a": jnp.float32(1.5), "b": np.arange(3), "c": float("nan")})
    data = json.loads(path.read_text())
    assert data == {"a": 1.5, "b": [0, 1, 2], "c": "nan"}
    assert not [p for p in os.listdir(path.parent) if p.startswith(".tmp")]
    # the usual permissions of a new file (umask applied), not the 0600 of a temporary file
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
