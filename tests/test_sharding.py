"""The sharded meta-step equals the single-device one (4 forced host devices, in a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import dataclasses, functools, jax, jax.numpy as jnp, numpy as np, optax
    assert jax.device_count() == 4, jax.devices()
    from jaxmeta import learners, losses, nets, scenarios, train

    data = jax.random.normal(jax.random.key(0), (10, 6, 5))
    cases = [(learners.maml(nets.mlp((16, 16), 1), losses.squared_error, inner_lr=0.05, inner_steps=2),
              functools.partial(scenarios.sinusoid, num_tasks=8, support_shots=5, query_shots=5)),
             (learners.protonet(nets.mlp((16,), None), num_ways=3),
              functools.partial(scenarios.fewshot_episodes, data=data, num_tasks=8, ways=3, shots=2, queries=2))]
    for learner, sample in cases:
        opt = optax.adam(1e-2)
        eps = sample(jax.random.key(1))
        state = train.init_state(learner, opt, jax.random.key(2), eps)
        single, m1 = train.make_meta_step(learner, opt)(state, eps, jax.random.key(3))
        mesh = train.episode_mesh()
        sharded_eps = train.shard_episodes(eps, mesh)
        assert len(sharded_eps.support_x.sharding.device_set) == 4
        multi, m4 = train.make_meta_step(learner, opt, mesh=mesh)(train.replicate(state, mesh), sharded_eps,
                                                                  jax.random.key(3))
        for a, b in zip(jax.tree_util.tree_leaves(single), jax.tree_util.tree_leaves(multi)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(float(m1["loss"]), float(m4["loss"]), rtol=1e-5)
        # the compiled training loop with on-device sampling, sharded
        loop1 = train.make_train_loop(learner, opt, sample, steps=3)
        loop4 = train.make_train_loop(learner, opt, sample, steps=3, mesh=mesh)
        s1, _ = loop1(state, jax.random.key(4))
        s4, _ = loop4(train.replicate(state, mesh), jax.random.key(4))
        for a, b in zip(jax.tree_util.tree_leaves(s1), jax.tree_util.tree_leaves(s4)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=2e-4)
        # fit with a mesh gives the single-device result
        f1 = train.fit(learner, opt, sample, key=jax.random.key(5), num_steps=4, log_every=2, progress=False)
        f4 = train.fit(learner, opt, sample, key=jax.random.key(5), num_steps=4, log_every=2, progress=False, mesh=mesh)
        for a, b in zip(jax.tree_util.tree_leaves(f1.state.params), jax.tree_util.tree_leaves(f4.state.params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=2e-4)
    try:
        train.shard_episodes(scenarios.sinusoid(jax.random.key(0), num_tasks=6, support_shots=2, query_shots=2),
                             train.episode_mesh())
    except ValueError as err:
        assert "multiple of the 4 devices" in str(err)
    else:
        raise AssertionError("a meta-batch of 6 on 4 devices should be rejected")
    # batching='accumulate' with a mesh: each device sums its own episodes' meta-gradients in a loop
    # (shard_map), the sums are added across devices; same result as one device's loop and as vmap
    for learner, sample in cases:
        opt = optax.sgd(1.0)
        eps = sample(jax.random.key(1))
        state = train.init_state(learner, opt, jax.random.key(2), eps)
        single, m1 = train.make_meta_step(learner, opt, batching="accumulate")(state, eps, jax.random.key(3))
        ref, _ = train.make_meta_step(learner, opt)(state, eps, jax.random.key(3))
        mesh = train.episode_mesh()
        step4 = train.make_meta_step(learner, opt, batching="accumulate", mesh=mesh)
        multi, m4 = step4(train.replicate(state, mesh), train.shard_episodes(eps, mesh), jax.random.key(3))
        for a, b, c in zip(*(jax.tree_util.tree_leaves(s.params) for s in (single, multi, ref))):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(np.asarray(b), np.asarray(c), rtol=1e-5, atol=1e-6)
        for k in m1:
            np.testing.assert_allclose(float(m1[k]), float(m4[k]), rtol=1e-5, atol=1e-7)
        loop4 = train.make_train_loop(learner, opt, sample, steps=2, batching="accumulate", mesh=mesh)
        s1, _ = train.make_train_loop(learner, opt, sample, steps=2, batching="accumulate")(state, jax.random.key(4))
        s4, _ = loop4(train.replicate(state, mesh), jax.random.key(4))
        for a, b in zip(jax.tree_util.tree_leaves(s1), jax.tree_util.tree_leaves(s4)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=2e-4)
    # a conv net with CPU's default lowering (conv3x3, whose kernel gradient has a vmap rule: a loop over
    # episodes), with vmap and map: each device maps its own episodes (shard_map), as accumulate does
    images = jax.random.uniform(jax.random.key(6), (6, 4, 14, 14, 1))
    eps = scenarios.fewshot_episodes(jax.random.key(7), images, num_tasks=8, ways=2, shots=1, queries=2)
    learner = learners.maml(nets.conv4(out=2, blocks=2, channels=4), losses.softmax_cross_entropy, inner_lr=0.4)
    opt = optax.sgd(1.0)
    state = train.init_state(learner, opt, jax.random.key(8), eps)
    ref, m1 = train.make_meta_step(learner, opt)(state, eps, jax.random.key(9))
    for batching in ("vmap", "map"):
        multi, m4 = train.make_meta_step(learner, opt, batching=batching, mesh=mesh)(
            train.replicate(state, mesh), train.shard_episodes(eps, mesh), jax.random.key(9))
        for a, b in zip(jax.tree_util.tree_leaves(ref.params), jax.tree_util.tree_leaves(multi.params)):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5, err_msg=batching)
        np.testing.assert_allclose(float(m1["loss"]), float(m4["loss"]), rtol=1e-5)
    try:  # inside jit, without shard_episodes' own check
        train.make_meta_step(cases[0][0], optax.sgd(0.1), batching="accumulate", mesh=train.episode_mesh())(
            train.init_state(cases[0][0], optax.sgd(0.1), jax.random.key(0), cases[0][1](jax.random.key(0))),
            scenarios.sinusoid(jax.random.key(0), num_tasks=6, support_shots=5, query_shots=5), jax.random.key(1))
    except ValueError as err:
        assert "divisible by 4" in str(err), err
    else:
        raise AssertionError("6 episodes on 4 devices should be rejected")
    # evaluation split over the devices: the same per-episode values (a given batch with a padded last chunk,
    # a short batch, a sampler), and a batch size the devices cannot split is rejected
    learner, sample = cases[0]
    params = learner.init(jax.random.key(2), jax.tree_util.tree_map(lambda a: a[0], sample(jax.random.key(1))))
    tests = scenarios.sinusoid(jax.random.key(11), num_tasks=10, support_shots=5, query_shots=5)
    for batch, size in ((tests, 8), (jax.tree_util.tree_map(lambda a: a[:6], tests), 8), (sample, 8)):
        kw = dict(key=jax.random.key(12), batch_size=size, return_values=True, num_episodes=16 if callable(batch) else None)
        r1 = train.evaluate(learner, params, batch, **kw)
        r4 = train.evaluate(learner, params, batch, mesh=mesh, **kw)
        np.testing.assert_allclose(r4["values"]["loss"], r1["values"]["loss"], rtol=1e-5, atol=1e-7)
    try:
        train.evaluate(learner, params, tests, key=jax.random.key(12), batch_size=6, mesh=mesh)
    except ValueError as err:
        assert "multiple of 4" in str(err), err
    else:
        raise AssertionError("6 episodes per call on 4 devices should be rejected")
    # an experiment script with --devices 4: its meta-batches sharded, the same numbers as on one device
    import tempfile
    from experiments import common
    from experiments.sinusoid import main as sinusoid_experiment
    cfg = sinusoid_experiment.Config(methods=("maml",), steps=4, steps_per_call=2, meta_batch=8, test_tasks=20,
                                     test_steps=(2,))
    one = sinusoid_experiment.train_and_evaluate(cfg, tempfile.mkdtemp(), progress=False)
    four = sinusoid_experiment.train_and_evaluate(cfg, tempfile.mkdtemp(), progress=False, mesh=common.device_mesh(4))
    assert (one["train_devices"], four["train_devices"]) == (1, 4)
    for k in ("0_steps", "2_steps"):
        np.testing.assert_allclose(four["results"]["maml"][k]["mean"], one["results"]["maml"][k]["mean"], rtol=1e-4)
    try:
        sinusoid_experiment.train_and_evaluate(dataclasses.replace(cfg, meta_batch=6), tempfile.mkdtemp(),
                                               progress=False, mesh=common.device_mesh(0))
    except ValueError as err:
        assert "--meta-batch 6: the meta-batch must be a multiple of the 4 devices" in str(err), err
    else:
        raise AssertionError("a meta-batch of 6 on 4 devices should be rejected before training")
    print("SHARDED-OK")
''')


def test_sharded_meta_step_equals_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "SHARDED-OK" in proc.stdout
