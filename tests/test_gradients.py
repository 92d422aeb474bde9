"""MAML's meta-gradient: finite differences, the closed form, and first vs second order."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

from jaxmeta import Episode, learners, losses, nets


def _linear_net():
    return nets.from_linen(nn.Dense(1, use_bias=False))


def _meta_objective(learner, episode):
    def f(meta_params):
        task_params = learner.adapt(meta_params, episode, jax.random.key(0))
        return learner.loss(meta_params, task_params, episode)[0]

    return f


def _linear_episode(dtype):
    rng = np.random.default_rng(0)
    xs, xq = rng.normal(size=(6, 3)), rng.normal(size=(8, 3))
    w_true = rng.normal(size=(3, 1))
    return Episode(*(jnp.asarray(a, dtype) for a in (xs, xs @ w_true + 0.1, xq, xq @ w_true - 0.2)))


def test_maml_meta_gradient_matches_finite_differences_float64():
    with jax.enable_x64(True):
        net = nets.mlp((5,), 1, activation=jnp.tanh)
        rng = np.random.default_rng(1)
        ep = Episode(*(jnp.asarray(rng.normal(size=s)) for s in ((4, 2), (4, 1), (6, 2), (6, 1))))
        for learner in (
            learners.maml(net, losses.squared_error, inner_lr=0.1, inner_steps=3),
            learners.meta_sgd(net, losses.squared_error, inner_lr=0.1, inner_steps=2),
            learners.maml_plus_plus(net, losses.squared_error, inner_lr=0.1, inner_steps=2),
        ):
            params = jax.jit(learner.init)(jax.random.key(0), ep)
            params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
            assert jax.tree_util.tree_leaves(params)[0].dtype == jnp.float64
            check_grads(_meta_objective(learner, ep), (params,), order=1, modes=["rev"], eps=1e-5, atol=1e-6,
                        rtol=1e-6)


def test_maml_meta_gradient_matches_closed_form_on_linear_regression():
    with jax.enable_x64(True):
        ep = _linear_episode(jnp.float64)
        alpha = 0.05
        learner = learners.maml(_linear_net(), losses.squared_error, inner_lr=alpha, inner_steps=1)
        params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), learner.init(jax.random.key(0), ep))
        w = np.asarray(params["net"]["kernel"], np.float64)
        xs, ys, xq, yq = (np.asarray(a) for a in ep[:4])
        n, m = len(xs), len(xq)
        a_mat = np.eye(3) - 2 * alpha / n * xs.T @ xs
        w_adapted = a_mat @ w + 2 * alpha / n * xs.T @ ys
        grad_query = 2 / m * xq.T @ (xq @ w_adapted - yq)
        second_order = a_mat.T @ grad_query
        got = jax.grad(_meta_objective(learner, ep))(params)["net"]["kernel"]
        np.testing.assert_allclose(np.asarray(got), second_order, rtol=1e-10, atol=1e-12)

        fo = learners.fomaml(_linear_net(), losses.squared_error, inner_lr=alpha, inner_steps=1)
        got_fo = jax.grad(_meta_objective(fo, ep))(params)["net"]["kernel"]
        np.testing.assert_allclose(np.asarray(got_fo), grad_query, rtol=1e-10, atol=1e-12)
        # first order differs from second order where the support Hessian is not negligible
        assert np.abs(second_order - grad_query).max() > 1e-3


def test_first_order_equals_hand_written_stop_gradient():
    net = nets.mlp((6,), 1, activation=jnp.tanh)
    rng = np.random.default_rng(2)
    ep = Episode(*(jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((5, 1), (5, 1), (7, 1), (7, 1))))
    alpha, steps = 0.1, 2
    fo = learners.fomaml(net, losses.squared_error, inner_lr=alpha, inner_steps=steps)
    params = jax.jit(fo.init)(jax.random.key(0), ep)

    def hand_written(meta):
        p = meta["net"]
        for _ in range(steps):
            g = jax.grad(lambda q: jnp.mean(losses.squared_error(net.apply(q, ep.support_x), ep.support_y)))(p)
            p = jax.tree_util.tree_map(lambda a, b: a - alpha * jax.lax.stop_gradient(b), p, g)
        return jnp.mean(losses.squared_error(net.apply(p, ep.query_x), ep.query_y))

    expected = jax.grad(hand_written)(params)
    got = jax.grad(_meta_objective(fo, ep))(params)
    for a, b in zip(jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(got)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    so = learners.maml(net, losses.squared_error, inner_lr=alpha, inner_steps=steps)
    got_so = jax.grad(_meta_objective(so, ep))(params)
    diff = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree_util.tree_leaves(got),
                                                            jax.tree_util.tree_leaves(got_so)))
    assert diff > 1e-4, "second-order and first-order meta-gradients should differ on a nonlinear net"


def test_remat_and_scan_give_the_same_meta_gradient():
    net = nets.mlp((6,), 1, activation=jnp.tanh)
    rng = np.random.default_rng(3)
    ep = Episode(*(jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((5, 1), (5, 1), (7, 1), (7, 1))))
    base = learners.maml(net, losses.squared_error, inner_lr=0.1, inner_steps=3)
    params = jax.jit(base.init)(jax.random.key(0), ep)
    ref = jax.grad(_meta_objective(base, ep))(params)
    for variant in (learners.maml(net, losses.squared_error, inner_lr=0.1, inner_steps=3, remat=True),
                    learners.maml(net, losses.squared_error, inner_lr=0.1, inner_steps=3, unroll=1)):
        got = jax.grad(_meta_objective(variant, ep))(params)
        for a, b in zip(jax.tree_util.tree_leaves(ref), jax.tree_util.tree_leaves(got)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_remat_bounds_xla_temporaries_as_inner_steps_grow():
    """Second-order MAML's XLA temporaries grow with the inner steps; with remat they stay flat."""
    net = nets.mlp((64, 64), 1, activation=jnp.tanh)  # activations (2048 x 64 per layer) >> params (4k)
    rng = np.random.default_rng(5)
    ep = Episode(*(jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((2048, 1), (2048, 1), (64, 1), (64, 1))))

    def temp_mb(steps, remat):
        learner = learners.maml(net, losses.squared_error, inner_lr=0.01, inner_steps=steps, remat=remat)
        params = jax.jit(learner.init)(jax.random.key(0), ep)
        compiled = jax.jit(jax.grad(_meta_objective(learner, ep))).lower(params).compile()
        return compiled.memory_analysis().temp_size_in_bytes / 2**20

    plain = temp_mb(16, False) / temp_mb(2, False)
    remat = temp_mb(16, True) / temp_mb(2, True)
    assert plain > 3.0 and remat < 1.5, (plain, remat)


def test_accumulate_batching_holds_one_episode_at_a_time():
    """batching='accumulate' sums per-episode meta-gradients in a loop: XLA's temporaries are about one
    episode's, where vmap's (and map's, whose backward keeps every episode's residuals) are the batch's."""
    import optax

    from jaxmeta import train

    net = nets.mlp((64, 64), 1, activation=jnp.tanh)
    rng = np.random.default_rng(6)
    eps = Episode(*(jnp.asarray(rng.normal(size=s), jnp.float32)
                    for s in ((8, 512, 1), (8, 512, 1), (8, 512, 1), (8, 512, 1))))
    learner = learners.maml(net, losses.squared_error, inner_lr=0.01, inner_steps=2)
    opt = optax.sgd(0.1)
    state = train.init_state(learner, opt, jax.random.key(0), eps)

    def temp_mb(batching):
        step = train.make_meta_step(learner, opt, batching=batching)
        return step.lower(state, eps, jax.random.key(1)).compile().memory_analysis().temp_size_in_bytes / 2**20

    vmap, map_, accumulate = temp_mb("vmap"), temp_mb("map"), temp_mb("accumulate")
    assert accumulate < vmap / 4 and accumulate < map_ / 4, (vmap, map_, accumulate)


def test_reptile_gradient_is_theta_minus_phi():
    net = nets.mlp((6,), 1)
    rng = np.random.default_rng(4)
    ep = Episode(*(jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((5, 1), (5, 1), (7, 1), (7, 1))))
    learner = learners.reptile(net, losses.squared_error, inner_lr=0.1, inner_steps=3)
    params = jax.jit(learner.init)(jax.random.key(0), ep)
    phi = learner.adapt(params, ep, jax.random.key(1))
    got = jax.grad(_meta_objective(learner, ep))(params)["net"]
    for g, t, p in zip(*(jax.tree_util.tree_leaves(x) for x in (got, params["net"], phi))):
        np.testing.assert_allclose(np.asarray(g), np.asarray(t - p), rtol=1e-5, atol=1e-7)


def test_anil_adapts_only_the_head():
    net = nets.mlp((6,), 1)
    rng = np.random.default_rng(5)
    ep = Episode(*(jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((5, 1), (5, 1), (7, 1), (7, 1))))
    learner = learners.anil(net, losses.squared_error, inner_lr=0.1, inner_steps=2)
    params = jax.jit(learner.init)(jax.random.key(0), ep)
    adapted = learner.adapt(params, ep, jax.random.key(1))
    np.testing.assert_array_equal(adapted["hidden_0"]["kernel"], params["net"]["hidden_0"]["kernel"])
    assert np.abs(np.asarray(adapted["head"]["kernel"] - params["net"]["head"]["kernel"])).max() > 0


def test_meta_sgd_multi_step_clamps_per_step_rates():
    net = nets.mlp((4,), 1)
    rng = np.random.default_rng(6)
    ep = Episode(*(jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((5, 1), (5, 1), (7, 1), (7, 1))))
    trained = learners.maml_plus_plus(net, losses.squared_error, inner_steps=2, inner_lr=0.1)
    params = jax.jit(trained.init)(jax.random.key(0), ep)
    longer = learners.maml_plus_plus(net, losses.squared_error, inner_steps=5, inner_lr=0.1)
    loss, _ = longer.loss(params, longer.adapt(params, ep, jax.random.key(1)), ep)
    assert np.isfinite(float(loss))


def test_imaml_meta_gradient_matches_the_implicit_closed_form():
    """Linear regression: L_s(w) = |Xs w - ys|^2 / n is quadratic with Hessian H = 2 Xs^T Xs / n, so
    phi* = (H + reg I)^-1 (reg w + 2 Xs^T ys / n) and d L_q(phi*)/dw = (I + H/reg)^-1 grad L_q(phi*)."""
    with jax.enable_x64(True):
        ep = _linear_episode(jnp.float64)
        reg = 2.0
        learner = learners.imaml(_linear_net(), losses.squared_error, reg=reg, inner_lr=0.1, inner_steps=300,
                                 cg_steps=10)
        params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), learner.init(jax.random.key(0), ep))
        w = np.asarray(params["net"]["kernel"])
        xs, ys, xq, yq = (np.asarray(a) for a in ep[:4])
        n, m = len(xs), len(xq)
        hess = 2 * xs.T @ xs / n
        phi = np.linalg.solve(hess + reg * np.eye(3), reg * w + 2 * xs.T @ ys / n)
        np.testing.assert_allclose(np.asarray(learner.adapt(params, ep, None)["kernel"]), phi, rtol=1e-8)
        grad_query = 2 / m * xq.T @ (xq @ phi - yq)
        want = np.linalg.solve(np.eye(3) + hess / reg, grad_query)
        got = jax.grad(_meta_objective(learner, ep))(params)["net"]["kernel"]
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-8, atol=1e-10)


def test_imaml_runs_through_reverse_mode_only_layers():
    """iMAML's Hessian-vector products are reverse over reverse, so a ``custom_vjp`` layer (no forward
    mode) such as ``nets.conv3x3`` gives the same meta-gradient as ``lax.conv``."""
    from jaxmeta import scenarios

    data = jax.random.uniform(jax.random.key(0), (4, 3, 8, 8, 1))
    ep = jax.tree_util.tree_map(lambda a: a[0], scenarios.fewshot_episodes(jax.random.key(1), data, num_tasks=1,
                                                                           ways=2, shots=1, queries=2))
    grads = []
    for impl in ("xla", "xla_vjp"):
        learner = learners.imaml(nets.conv4(out=2, blocks=2, channels=4, conv_impl=impl), losses.softmax_cross_entropy,
                                 reg=1.0, inner_lr=0.1, inner_steps=2, cg_steps=3)
        params = jax.jit(learner.init)(jax.random.key(2), ep)
        grads.append(jax.jit(jax.grad(_meta_objective(learner, ep)))(params))
    for got, want in zip(*(jax.tree_util.tree_leaves(g) for g in reversed(grads))):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5)
