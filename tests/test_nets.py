"""Networks: shapes, the batch-norm mode, pooling."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmeta import nets


def test_conv4_shapes_and_layer_names():
    # (shapes only, from jax.eval_shape: run op by op, a Conv-4 init and apply compile hundreds of primitives)
    net = nets.conv4(out=5)
    params = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((2, 28, 28, 1)))
    assert sorted(params) == sorted([f"conv_{i}" for i in range(4)] + [f"norm_{i}" for i in range(4)] + ["head"])
    assert params["conv_0"]["kernel"].shape == (3, 3, 1, 64) and params["head"]["kernel"].shape == (64, 5)
    assert jax.eval_shape(net.apply, params, jnp.zeros((3, 28, 28, 1))).shape == (3, 5)
    emb = nets.conv4()
    p = jax.eval_shape(emb.init, jax.random.key(0), jnp.zeros((1, 28, 28)))
    assert jax.eval_shape(emb.apply, p, jnp.zeros((4, 28, 28))).shape == (4, 64)  # 28 -> 14 -> 7 -> 3 -> 1
    strided = nets.conv4(out=5, downsample="stride", readout="mean")
    p = jax.eval_shape(strided.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    assert "norm_0" in p and jax.eval_shape(strided.apply, p, jnp.zeros((2, 28, 28, 1))).shape == (2, 5)


def test_batch_norm_uses_the_batch_it_is_given_and_keeps_no_state():
    net = nets.conv4(blocks=1, channels=4, downsample="stride")
    params = net.init(jax.random.key(0), jnp.zeros((2, 8, 8, 1)))
    assert set(params["norm_0"]) == {"scale", "bias"}  # no running statistics anywhere
    x = jax.random.normal(jax.random.key(1), (6, 8, 8, 1))
    a = net.apply(params, x)
    # statistics are per call: the same example normalised within different batches differs
    b = net.apply(params, jnp.concatenate([x[:3], 10 * x[3:]]))
    assert not np.allclose(np.asarray(a[:3]), np.asarray(b[:3]))
    # and the layer is the plain batch-statistics formula
    layer = nets.TaskBatchNorm()
    v = layer.init(jax.random.key(0), x)
    y = layer.apply(v, x)
    np.testing.assert_allclose(np.asarray(y.mean(axis=(0, 1, 2))), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(y.var(axis=(0, 1, 2))), 1.0, atol=1e-3)


def test_vmapped_batch_norm_keeps_tasks_apart():
    net = nets.conv4(blocks=1, channels=4, downsample="stride")
    params = net.init(jax.random.key(0), jnp.zeros((2, 8, 8, 1)))
    tasks = jax.random.normal(jax.random.key(1), (3, 5, 8, 8, 1)) * jnp.arange(1, 4)[:, None, None, None, None]
    batched = jax.vmap(net.apply, in_axes=(None, 0))(params, tasks)
    for i in range(3):
        np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(net.apply(params, tasks[i])), rtol=1e-5,
                                   atol=1e-5)


def test_max_pool_matches_flax():
    x = jax.random.normal(jax.random.key(0), (2, 7, 9, 3))
    np.testing.assert_array_equal(np.asarray(nets.max_pool_2x2(x)), np.asarray(nn.max_pool(x, (2, 2), (2, 2))))


def test_max_pool_derivatives_equal_jnp_max_including_ties():
    # max_pool_2x2 writes its derivative rule out (for speed); it must give jnp.max's derivatives exactly,
    # ties included (split equally), to first and second order, forward and reverse
    def plain(x):
        b, h, w, c = x.shape
        return x[:, : h // 2 * 2, : w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))

    x = jnp.round(2 * jax.random.normal(jax.random.key(0), (2, 7, 9, 3)))  # integers: many exact ties
    v = jax.random.normal(jax.random.key(1), x.shape)

    def objective(pool):
        return lambda x: jnp.sum(jnp.sin(pool(x) * jnp.arange(1.0, 4.0)))

    derivatives = {
        "grad": lambda f: jax.grad(f)(x),
        "jvp": lambda f: jax.jvp(f, (x,), (v,))[1],
        "forward over reverse": lambda f: jax.jvp(jax.grad(f), (x,), (v,))[1],
        "reverse over reverse": lambda f: jax.grad(lambda y: jnp.vdot(jax.grad(f)(y), v))(x),
        "vmapped grad": lambda f: jax.vmap(jax.grad(f))(x[:, None]),
    }
    for name, derivative in derivatives.items():
        np.testing.assert_allclose(np.asarray(derivative(objective(nets.max_pool_2x2))),
                                   np.asarray(derivative(objective(plain))), rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("conv_impl", ["im2col", "xla_vjp"])
@pytest.mark.parametrize("size,c_in,c_out", [(6, 3, 4), (7, 3, 4), (7, 1, 12)])
def test_fused_block_equals_conv_norm_relu_pool_layers(size, c_in, c_out, conv_impl):
    # (7, 1, 12): few input channels, where the block takes its statistics from the patch Gram matrix
    x = jax.random.normal(jax.random.key(0), (5, size, size, c_in))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, c_in, c_out))
    scale = jnp.resize(jnp.array([1.5, -0.5, 0.0, 2.0]), c_out)  # negative and zero scales: the sign folding
    bias = jnp.resize(jnp.array([0.1, 0.2, -0.3, 0.0]), c_out)

    def layers(kernel, scale, bias, conv_bias):
        params = {"params": {"kernel": kernel, "bias": conv_bias}}
        y = nets.PatchConv(c_out).apply(params, x)
        y = nets.TaskBatchNorm().apply({"params": {"scale": scale, "bias": bias}}, y)
        return nets.max_pool_2x2(jax.nn.relu(y))

    def fused(kernel, scale, bias, conv_bias):
        return nets.conv_norm_relu_pool(x, kernel, scale, bias, conv_impl=conv_impl)

    args = (kernel, scale, bias, jnp.resize(jnp.array([0.3, -1.0, 2.0, 0.5]), c_out))  # cancels in batch norm
    out = jax.jit(fused)(*args)  # (jitted: op by op, every primitive of the derivatives compiles on its own)
    np.testing.assert_allclose(np.asarray(out), np.asarray(jax.jit(layers)(*args)), rtol=1e-5, atol=1e-5)
    w = jax.random.normal(jax.random.key(2), out.shape)
    grads = [jax.jit(jax.grad(lambda *a, f=f: jnp.vdot(jnp.tanh(f(*a)), w), argnums=(0, 1, 2, 3)))(*args)
             for f in (layers, fused)]
    for a, b in zip(*grads):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-4)
    # second order (MAML's meta-gradient differentiates the block's gradient again)
    def gradient_norm(f):
        return lambda k: sum(jnp.sum(g ** 2) for g in jax.grad(lambda *a: jnp.vdot(jnp.tanh(f(*a)), w),
                                                               argnums=(0, 1, 2))(k, *args[1:]))

    np.testing.assert_allclose(np.asarray(jax.jit(jax.grad(gradient_norm(fused)))(kernel)),
                               np.asarray(jax.jit(jax.grad(gradient_norm(layers)))(kernel)), rtol=2e-3, atol=2e-3)
    low = nets.conv_norm_relu_pool(x, kernel, scale, bias, conv_impl=conv_impl, dtype=jnp.bfloat16)
    assert low.dtype == jnp.bfloat16 and low.shape == (5, size // 2, size // 2, c_out)
    np.testing.assert_allclose(np.asarray(low, np.float32), np.asarray(out), rtol=0.1, atol=0.1)


def test_stateful_linen_modules_are_rejected():
    class WithBN(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.BatchNorm(use_running_average=False)(x)

    with pytest.raises(ValueError, match="TaskBatchNorm"):
        nets.from_linen(WithBN()).init(jax.random.key(0), jnp.zeros((2, 3)))


def test_bfloat16_compute_keeps_float32_params():
    net = nets.mlp((8,), 1, dtype=jnp.bfloat16)
    params = net.init(jax.random.key(0), jnp.zeros((1, 1)))
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))
    assert net.apply(params, jnp.ones((3, 1))).dtype == jnp.float32


def test_bad_network_arguments():
    with pytest.raises(ValueError, match="downsample"):
        nets.conv4(downsample="avg")
    with pytest.raises(ValueError, match="hidden"):
        nets.mlp((0,), 1)


@pytest.mark.parametrize("c_in", [1, 3])  # one channel has its own layout (patches as rows)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [3, 7, 8])
def test_patch_conv_equals_flax_conv(stride, size, c_in):
    x = jax.random.normal(jax.random.key(0), (2, size, size, c_in))
    conv, patch = nn.Conv(5, (3, 3), strides=(stride, stride), padding="SAME"), nets.PatchConv(5, stride)
    params = conv.init(jax.random.key(1), x)
    np.testing.assert_allclose(np.asarray(patch.apply(params, x)), np.asarray(conv.apply(params, x)), rtol=1e-5,
                               atol=1e-5)


def _lax_conv(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("c_in", [1, 3])  # one input channel: the kernel gradient's own layout
def test_conv3x3_value_and_derivatives_equal_lax_conv(c_in):
    x = jax.random.normal(jax.random.key(0), (2, 5, 6, c_in))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, c_in, 4))
    w = jax.random.normal(jax.random.key(2), (2, 5, 6, 4))

    def first(conv, x, kernel):
        return jax.grad(lambda x, k: jnp.vdot(jnp.tanh(conv(x, k)), w), argnums=(0, 1))(x, kernel)

    def second(conv, x, kernel):  # a function of both first derivatives, differentiated again (MAML's shape)
        return jax.grad(lambda x, k: sum(jnp.sum(jnp.sin(d)) for d in first(conv, x, k)), argnums=(0, 1))(x, kernel)

    np.testing.assert_allclose(np.asarray(nets.conv3x3(x, kernel)), np.asarray(_lax_conv(x, kernel)), rtol=1e-5,
                               atol=1e-5)
    for order in (first, second):
        for got, want in zip(order(nets.conv3x3, x, kernel), order(_lax_conv, x, kernel)):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4, err_msg=order.__name__)


def test_conv3x3_derivatives_match_finite_differences():
    from jax.test_util import check_grads

    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 2))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 2, 3))
    check_grads(lambda x, k: jnp.tanh(nets.conv3x3(x, k)), (x, kernel), order=2, modes=["rev"], eps=1e-2,
                atol=5e-2, rtol=5e-2)


def test_conv3x3_under_vmap_with_per_task_kernels_equals_a_loop():
    xs = jax.random.normal(jax.random.key(0), (3, 2, 5, 5, 2))
    kernels = jax.random.normal(jax.random.key(1), (3, 3, 3, 2, 4))

    def loss(x, k):
        return jnp.sum(jnp.tanh(nets.conv3x3(x, k)) ** 2)

    batched = jax.vmap(jax.grad(loss, argnums=(0, 1)))(xs, kernels)
    for i in range(3):
        for got, want in zip(batched, jax.grad(loss, argnums=(0, 1))(xs[i], kernels[i])):
            np.testing.assert_allclose(np.asarray(got[i]), np.asarray(want), rtol=1e-5, atol=1e-5)
    # one kernel shared by the vmapped episodes (ProtoNets): its gradient is the sum over episodes, first
    # and second order (the kernel gradient has a batching rule of its own)
    k = kernels[0]
    shared = jax.grad(lambda k: jax.vmap(loss, (0, None))(xs, k).sum())(k)
    np.testing.assert_allclose(np.asarray(shared), np.asarray(sum(jax.grad(loss, 1)(x, k) for x in xs)),
                               rtol=1e-5, atol=1e-5)

    def grad_norm(conv):
        inner = jax.grad(lambda k, x: jnp.sum(jnp.tanh(conv(x, k)) ** 2))
        return jax.grad(lambda k: jnp.sum(jax.vmap(inner, (None, 0))(k, xs) ** 2))(k)

    np.testing.assert_allclose(np.asarray(grad_norm(nets.conv3x3)), np.asarray(grad_norm(_lax_conv)), rtol=1e-4,
                               atol=1e-3)


def test_conv4_xla_vjp_equals_xla_and_rejects_strides():
    x = jax.random.normal(jax.random.key(0), (4, 14, 14, 1))
    for kw in ({}, {"norm": "layer"}, {"last_pool": False}):  # fused blocks, plain conv3x3 layers, both
        params = nets.conv4(out=3, blocks=2, channels=4, **kw).init(jax.random.key(1), x)
        ref = nets.conv4(out=3, blocks=2, channels=4, conv_impl="xla", **kw).apply(params, x)
        got = nets.conv4(out=3, blocks=2, channels=4, conv_impl="xla_vjp", **kw).apply(params, x)
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-4, atol=1e-4, err_msg=str(kw))
    with pytest.raises(ValueError, match="stride-1"):
        nets.conv4(downsample="stride", conv_impl="xla_vjp")
    with pytest.raises(ValueError, match="conv_impl"):
        nets.conv4(conv_impl="cudnn")


def test_conv4_auto_lowering_is_the_backends_fastest():
    # "auto" resolves when conv4 is called: the lowering benchmarks/README.md measured fastest per backend
    from jaxmeta.nets.conv import _default_conv_impl

    cpu = jax.default_backend() == "cpu"
    assert _default_conv_impl("max_pool") == ("xla_vjp" if cpu else "xla")
    assert _default_conv_impl("stride") == ("im2col" if cpu else "xla")
    x = jax.random.normal(jax.random.key(0), (2, 14, 14, 1))
    net = nets.conv4(out=3, blocks=2, channels=4)
    params = net.init(jax.random.key(1), x)
    explicit = nets.conv4(out=3, blocks=2, channels=4, conv_impl=_default_conv_impl("max_pool"))
    np.testing.assert_array_equal(np.asarray(net.apply(params, x)), np.asarray(explicit.apply(params, x)))
    if cpu:  # the documented limit of xla_vjp, and its way out
        with pytest.raises(TypeError, match="custom_vjp"):
            jax.jvp(lambda p: net.apply(p, x), (params,), (params,))
        jax.jvp(lambda p: nets.conv4(out=3, blocks=2, channels=4, conv_impl="xla").apply(p, x), (params,), (params,))


def test_conv4_last_pool_option():
    net = nets.conv4(last_pool=False)
    p = net.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    assert net.apply(p, jnp.zeros((2, 28, 28, 1))).shape == (2, 3 * 3 * 64)


@pytest.mark.parametrize("downsample", ["stride", "max_pool"])  # max_pool: im2col runs the fused block
def test_maml_meta_gradient_is_the_same_for_every_conv_lowering_and_batching(downsample):
    from jaxmeta import learners, losses, scenarios, train

    data = jax.random.uniform(jax.random.key(0), (6, 4, 14, 14, 1))  # 14 -> 7 -> 3: an odd map is cropped
    eps = scenarios.fewshot_episodes(jax.random.key(1), data, num_tasks=3, ways=2, shots=1, queries=2)
    results = {}
    # every batching with XLA's convolutions; the im2col lowering with vmap, where it replaces the per-task
    # weights' batched convolution (batching and lowering are independent code paths)
    lowerings = [("xla", ("loop",) + train.BATCHING), ("im2col", ("vmap",))]
    if downsample == "max_pool":  # conv3x3's written-out derivatives, second order (stride 1 only)
        lowerings.append(("xla_vjp", ("vmap", "accumulate")))
    for impl, batchings in lowerings:
        net = nets.conv4(out=2, blocks=2, channels=4, downsample=downsample, readout="mean", conv_impl=impl)
        learner = learners.maml(net, losses.softmax_cross_entropy, inner_lr=0.4, inner_steps=2)
        params = jax.jit(learner.init)(jax.random.key(2), jax.tree_util.tree_map(lambda a: a[0], eps))

        def reference(p):  # a per-task loop, no batching machinery
            total = 0.0
            keys = jax.random.split(jax.random.key(3), 3)
            for i in range(3):
                ep = jax.tree_util.tree_map(lambda a: a[i], eps)
                total = total + learner.loss(p, learner.adapt(p, ep, keys[i]), ep)[0]
            return total / 3

        for batching in batchings:
            objective = reference if batching == "loop" else (
                lambda p: train.episode_metrics(learner, p, eps, jax.random.key(3), batching)[0].mean())  # noqa
            results[(impl, batching)] = jax.jit(jax.grad(objective))(params)
    ref = jax.tree_util.tree_leaves(results[("xla", "loop")])
    for name, grads in results.items():
        for a, b in zip(ref, jax.tree_util.tree_leaves(grads)):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-4, atol=2e-5, err_msg=str(name))
