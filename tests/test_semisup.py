"""Semi-supervised few-shot: scenario contract, soft k-means against NumPy, masks, learners."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import classification_episodes
from jaxmeta import Episode, learners, losses, nets, scenarios, train, validate_episode
from jaxmeta.episodes import take_episodes

C, M = 16, 20
# every example's value is its unique id: class * M + index
DATA = np.arange(C * M, dtype=np.float32).reshape(C, M, 1)
IDENTITY = nets.Network(lambda key, x: {}, lambda params, x: x)


def _pools(key=jax.random.key(0), fraction=0.5):
    return scenarios.split_labelled(key, jnp.asarray(DATA), labelled_fraction=fraction)


# ---------------------------------------------------------------- scenario


def test_split_is_per_class_disjoint_and_deterministic():
    lab, unl = _pools()
    assert lab.shape == (C, 10, 1) and unl.shape == (C, 10, 1)
    for c in range(C):
        a, b = set(np.asarray(lab[c, :, 0])), set(np.asarray(unl[c, :, 0]))
        assert not a & b, "an example is both labelled and unlabelled"
        assert a | b == set(range(c * M, (c + 1) * M)), "the pools of a class are not a partition of its examples"
    lab2, _ = _pools()
    np.testing.assert_array_equal(lab, lab2)
    lab3, _ = _pools(jax.random.key(1))
    assert not np.array_equal(np.asarray(lab), np.asarray(lab3))
    assert scenarios.split_labelled(jax.random.key(0), DATA, labelled_fraction=0.25)[0].shape == (C, 5, 1)


def test_episodes_shapes_masks_and_disjointness():
    lab, unl = _pools()
    labelled_ids, unlabelled_ids = set(np.asarray(lab).ravel()), set(np.asarray(unl).ravel())
    N, K, Q, Mu, D = 4, 2, 3, 5, 3
    eps = scenarios.semisup_episodes(jax.random.key(1), lab, unl, num_tasks=30, ways=N, shots=K, queries=Q,
                                     unlabelled_per_class=Mu, distractors=D)
    validate_episode(eps, batched=True, num_ways=N)
    U = (N + D) * Mu
    assert eps.support_x.shape == (30, N * K, 1) and eps.query_x.shape == (30, N * Q, 1)
    assert eps.aux["unlabelled_x"].shape == (30, U, 1)
    assert eps.aux["unlabelled_mask"].shape == (30, U) and np.all(np.asarray(eps.aux["unlabelled_mask"]) == 1)
    assert eps.aux["unlabelled_class"].dtype == jnp.int32
    for e in range(30):
        s, q = np.asarray(eps.support_x[e, :, 0]), np.asarray(eps.query_x[e, :, 0])
        u, ucls = np.asarray(eps.aux["unlabelled_x"][e, :, 0]), np.asarray(eps.aux["unlabelled_class"][e])
        assert set(s) | set(q) <= labelled_ids and set(u) <= unlabelled_ids
        assert len(set(s) | set(q)) == N * (K + Q) and len(set(u)) == U, "examples repeat"
        task_of = {lab_: set(s[np.asarray(eps.support_y[e]) == lab_] // M) for lab_ in range(N)}
        assert all(len(v) == 1 for v in task_of.values())
        task_classes = {next(iter(v)) for v in task_of.values()}
        for lab_ in range(N):
            assert set(q[np.asarray(eps.query_y[e]) == lab_] // M) == task_of[lab_]
            # unlabelled examples of task class `lab_` carry that answer-key label, M of them
            assert set(u[ucls == lab_] // M) == task_of[lab_] and (ucls == lab_).sum() == Mu
        distractor_classes = set(u[ucls == -1] // M)
        assert len(distractor_classes) == D and (ucls == -1).sum() == D * Mu
        assert not distractor_classes & task_classes, "a distractor class is a task class"


def test_episodes_deterministic_and_labelled_part_independent_of_unlabelled_settings():
    lab, unl = _pools()
    kw = dict(num_tasks=5, ways=3, shots=1, queries=2)
    a = scenarios.semisup_episodes(jax.random.key(7), lab, unl, unlabelled_per_class=4, distractors=2, **kw)
    b = scenarios.semisup_episodes(jax.random.key(7), lab, unl, unlabelled_per_class=4, distractors=2, **kw)
    c = scenarios.semisup_episodes(jax.random.key(8), lab, unl, unlabelled_per_class=4, distractors=2, **kw)
    plain = scenarios.semisup_episodes(jax.random.key(7), lab, unl, unlabelled_per_class=0, distractors=0, **kw)
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
    assert not np.array_equal(np.asarray(a.support_x), np.asarray(c.support_x))
    np.testing.assert_array_equal(a.support_x, plain.support_x)
    np.testing.assert_array_equal(a.query_x, plain.query_x)
    assert plain.aux["unlabelled_x"].shape == (5, 0, 1)
    # and it runs inside jit
    jitted = jax.jit(lambda k: scenarios.semisup_episodes(k, lab, unl, unlabelled_per_class=4, distractors=2, **kw))
    np.testing.assert_array_equal(jitted(jax.random.key(7)).aux["unlabelled_x"], a.aux["unlabelled_x"])


def test_unlabelled_order_is_shuffled():
    lab, unl = _pools()
    eps = scenarios.semisup_episodes(jax.random.key(2), lab, unl, num_tasks=20, ways=3, shots=1, queries=1,
                                     unlabelled_per_class=3, distractors=2)
    first = np.asarray(eps.aux["unlabelled_class"][:, 0])
    assert (first == -1).any() and (first >= 0).any()


@pytest.mark.parametrize("kw,match", [
    (dict(ways=10, distractors=7), "ways \\+ distractors"),
    (dict(shots=6, queries=5), "shots \\+ queries"),
    (dict(unlabelled_per_class=11), "unlabelled_per_class"),
    (dict(distractors=-1), "distractors"),
    (dict(shots=0), "shots"),
])
def test_impossible_requests_raise(kw, match):
    lab, unl = _pools()
    args = dict(num_tasks=2, ways=3, shots=1, queries=2, unlabelled_per_class=2, distractors=1)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        scenarios.semisup_episodes(jax.random.key(0), lab, unl, **args)


def test_split_errors():
    with pytest.raises(ValueError, match="labelled_fraction"):
        scenarios.split_labelled(jax.random.key(0), DATA, labelled_fraction=1.0)
    with pytest.raises(ValueError, match="both pools"):
        scenarios.split_labelled(jax.random.key(0), DATA, labelled_fraction=0.01)
    with pytest.raises(ValueError, match="class-major"):
        scenarios.split_labelled(jax.random.key(0), np.zeros(5), labelled_fraction=0.5)
    lab, unl = _pools()
    with pytest.raises(ValueError, match="same classes"):
        scenarios.semisup_episodes(jax.random.key(0), lab, unl[:5], num_tasks=1, ways=2, shots=1, queries=1,
                                   unlabelled_per_class=1)


def test_augment_episodes_also_augments_unlabelled_images():
    lab, unl = scenarios.split_labelled(jax.random.key(0), jnp.ones((8, 20, 28, 28, 1)).at[..., 10:18, 10:18, :].set(0))
    eps = scenarios.semisup_episodes(jax.random.key(1), lab, unl, num_tasks=2, ways=2, shots=1, queries=1,
                                     unlabelled_per_class=2, distractors=1)
    aug = scenarios.augment_episodes(jax.random.key(2), eps, aux_fields=("unlabelled_x",))
    plain = scenarios.augment_episodes(jax.random.key(2), eps)
    assert aug.aux["unlabelled_x"].shape == eps.aux["unlabelled_x"].shape
    assert not np.allclose(aug.aux["unlabelled_x"], eps.aux["unlabelled_x"])
    np.testing.assert_array_equal(plain.aux["unlabelled_x"], eps.aux["unlabelled_x"])
    np.testing.assert_array_equal(aug.support_x, plain.support_x)  # support/query keys unchanged
    with pytest.raises(ValueError, match="aux_fields"):
        scenarios.augment_episodes(jax.random.key(2), eps, aux_fields=("nope",))


# ---------------------------------------------------------------- soft k-means vs NumPy


def _np_refine(protos, counts, u, mask, radius=None, gates=None, steps=1):
    """The paper's equations, written out with loops."""
    centres = protos.copy()
    for _ in range(steps):
        n_cls = len(protos)
        w = np.zeros((len(u), n_cls))
        for j in range(len(u)):
            logits = [-np.sum((u[j] - centres[c]) ** 2) for c in range(n_cls)]
            if radius is not None:
                logits.append(-np.sum(u[j] ** 2) / radius**2 - np.log(radius))
            e = np.exp(np.array(logits) - max(logits))
            w[j] = (e / e.sum())[:n_cls]
        if gates is not None:
            d = np.array([[np.sum((u[j] - centres[c]) ** 2) for c in range(n_cls)] for j in range(len(u))])
            w = w * gates(d, mask)
        new = np.zeros_like(protos)
        for c in range(n_cls):
            num = counts[c] * protos[c] + sum(mask[j] * w[j, c] * u[j] for j in range(len(u)))
            den = counts[c] + sum(mask[j] * w[j, c] for j in range(len(u)))
            new[c] = num / den
        centres = new
    return centres


def _np_stats(d, mask):
    real = mask > 0
    norm = d / d[real].mean(0)
    out = []
    for c in range(d.shape[1]):
        x = norm[real, c]
        mu, var = x.mean(), x.var()
        out.append([x.min(), x.max(), var, ((x - mu) ** 3).mean() / var**1.5, ((x - mu) ** 4).mean() / var**2])
    return norm, np.array(out)


def _random_problem(seed, n=3, u=7, dim=4):
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(n, dim)).astype(np.float32)
    counts = rng.integers(1, 4, size=n).astype(np.float32)
    unl = (protos[rng.integers(0, n, size=u)] + 0.5 * rng.normal(size=(u, dim))).astype(np.float32)
    mask = np.ones(u, np.float32)
    return protos, counts, unl, mask


@pytest.mark.parametrize("radius", [None, 1.7])
@pytest.mark.parametrize("steps", [1, 3])
def test_soft_kmeans_refine_matches_numpy(radius, steps):
    protos, counts, unl, mask = _random_problem(0)
    got = losses.soft_kmeans_refine(jnp.asarray(protos), jnp.asarray(counts), jnp.asarray(unl), mask=jnp.asarray(mask),
                                    steps=steps, distractor_radius=radius)
    np.testing.assert_allclose(got, _np_refine(protos, counts, unl, mask, radius, steps=steps), rtol=1e-4, atol=1e-5)


def test_distance_statistics_and_gates_match_numpy():
    _, _, unl, mask = _random_problem(1, u=9)
    d = np.random.default_rng(2).uniform(0.5, 5.0, size=(9, 3)).astype(np.float32)
    mask[[2, 5]] = 0.0
    norm, stats = losses.distance_statistics(jnp.asarray(d), jnp.asarray(mask), eps=0.0)
    ref_norm, ref_stats = _np_stats(d, mask)
    np.testing.assert_allclose(np.asarray(norm)[mask > 0], ref_norm[mask > 0], rtol=1e-5)
    np.testing.assert_allclose(stats, ref_stats, rtol=1e-3, atol=1e-5)
    beta, gamma = np.array([1.0, 0.8, 1.2]), np.array([2.0, 5.0, 1.0])
    gates = losses.soft_kmeans_gates(norm, jnp.asarray(beta), jnp.asarray(gamma))
    np.testing.assert_allclose(gates, 1 / (1 + np.exp(gamma * (np.asarray(norm) - beta))), rtol=1e-5)


def test_masked_soft_kmeans_refine_matches_numpy():
    protos, counts, unl, mask = _random_problem(3)
    beta, gamma = np.array([1.0, 0.9, 1.1]), np.array([3.0, 2.0, 4.0])

    def np_gates(d, m):
        norm, _ = _np_stats(d, m)
        return 1 / (1 + np.exp(gamma * (norm - beta)))

    def jnp_gates(d, m):
        norm, _ = losses.distance_statistics(d, m, eps=0.0)
        return losses.soft_kmeans_gates(norm, jnp.asarray(beta), jnp.asarray(gamma))

    got = losses.soft_kmeans_refine(jnp.asarray(protos), jnp.asarray(counts), jnp.asarray(unl), mask=jnp.asarray(mask),
                                    gate_fn=jnp_gates)
    np.testing.assert_allclose(got, _np_refine(protos, counts, unl, mask, gates=np_gates), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("radius,gated", [(None, False), (2.0, False), (None, True)])
def test_masked_unlabelled_examples_have_no_effect(radius, gated):
    protos, counts, unl, mask = _random_problem(4)
    gate_fn = None
    if gated:
        gate_fn = lambda d, m: losses.soft_kmeans_gates(losses.distance_statistics(d, m)[0], jnp.ones(3), 2 * jnp.ones(3))  # noqa: E731
    kw = dict(steps=2, distractor_radius=radius, gate_fn=gate_fn)
    ref = losses.soft_kmeans_refine(jnp.asarray(protos), jnp.asarray(counts), jnp.asarray(unl), mask=jnp.asarray(mask), **kw)
    junk = np.full((4, unl.shape[1]), 1e3, np.float32)  # far away: would dominate any statistic if counted
    padded = np.concatenate([unl[:3], junk, unl[3:]])
    pmask = np.concatenate([mask[:3], np.zeros(4, np.float32), mask[3:]])
    got = losses.soft_kmeans_refine(jnp.asarray(protos), jnp.asarray(counts), jnp.asarray(padded), mask=jnp.asarray(pmask), **kw)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_refine_is_identity_without_unlabelled_weight():
    protos, counts, unl, mask = _random_problem(5)
    out = losses.refine_prototypes(jnp.asarray(protos), jnp.asarray(counts), jnp.asarray(unl), jnp.zeros((7, 3)))
    np.testing.assert_allclose(out, protos, rtol=1e-6)


# ---------------------------------------------------------------- learners


def _semisup_episode(key, ways=3, shots=2, queries=2, per_class=3, distractors=1, dim=8):
    """Gaussian blobs with an unlabelled set: per_class examples of each task class + distractor blobs."""
    eps = classification_episodes(key, num_tasks=1, ways=ways + distractors, shots=shots, queries=queries + per_class,
                                  dim=dim)
    ep = take_episodes(eps, 0)
    keep_s = np.asarray(ep.support_y) < ways
    qy = np.asarray(ep.query_y)
    q_idx = np.concatenate([np.flatnonzero(qy == c)[:queries] for c in range(ways)])
    u_idx = np.concatenate([np.flatnonzero(qy == c)[queries:] for c in range(ways + distractors)])
    ux = ep.query_x[u_idx]
    return Episode(ep.support_x[keep_s], ep.support_y[keep_s], ep.query_x[q_idx], ep.query_y[q_idx],
                   aux={"unlabelled_x": ux, "unlabelled_mask": jnp.ones(len(u_idx))})


@pytest.mark.parametrize("refine", learners.semisup.REFINEMENTS)
def test_semisup_protonet_with_identity_embedding_equals_reference(refine):
    ep = _semisup_episode(jax.random.key(0))
    learner = learners.semisup_protonet(IDENTITY, num_ways=3, refine=refine, mask_init=(0.8, 3.0))
    params = jax.jit(learner.init)(jax.random.key(1), ep)
    if refine == "masked_soft_kmeans":  # the output layer starts at zero: give it weights so the MLP matters
        head = params["mask_net"]["head"]
        params["mask_net"]["head"] = {"kernel": 0.3 * jax.random.normal(jax.random.key(9), head["kernel"].shape),
                                      "bias": jnp.array([0.1, -0.2])}
    got = learner.adapt(params, ep, None)
    sx, sy = np.asarray(ep.support_x), np.asarray(ep.support_y)
    protos = np.stack([sx[sy == c].mean(0) for c in range(3)])
    counts = np.bincount(sy, minlength=3).astype(np.float32)
    ux, mask = np.asarray(ep.aux["unlabelled_x"]), np.ones(len(ep.aux["unlabelled_x"]), np.float32)
    radius, gates = None, None
    if refine == "distractor_cluster":
        radius = 1.0
    if refine == "masked_soft_kmeans":
        mlp = nets.mlp((20,), 2)

        def gates(d, m):
            norm, stats = _np_stats(d, m)
            out = np.exp(np.asarray(mlp.apply(params["mask_net"], jnp.asarray(stats, jnp.float32))))
            beta, gamma = 0.8 * out[:, 0], 3.0 * out[:, 1]
            return 1 / (1 + np.exp(gamma * (norm - beta)))
    np.testing.assert_allclose(got, _np_refine(protos, counts, ux, mask, radius, gates), rtol=1e-3, atol=1e-4)
    # predictions are ProtoNets' logits against the refined prototypes
    logits = learner.predict(params, got, ep.query_x)
    np.testing.assert_allclose(logits, -((np.asarray(ep.query_x)[:, None] - np.asarray(got)[None]) ** 2).sum(-1),
                               rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("refine", learners.semisup.REFINEMENTS)
def test_semisup_protonet_ignores_padded_unlabelled_examples(refine):
    ep = _semisup_episode(jax.random.key(2))
    net = nets.mlp((16,), None)  # no batch statistics, so padding can have no effect at all
    learner = learners.semisup_protonet(net, num_ways=3, refine=refine)
    params = jax.jit(learner.init)(jax.random.key(3), ep)
    ux = ep.aux["unlabelled_x"]
    padded = ep._replace(aux={"unlabelled_x": jnp.concatenate([ux, 50.0 + jnp.zeros((5, ux.shape[1]))]),
                              "unlabelled_mask": jnp.concatenate([jnp.ones(ux.shape[0]), jnp.zeros(5)])})
    np.testing.assert_allclose(learner.adapt(params, padded, None), learner.adapt(params, ep, None), rtol=1e-5,
                               atol=1e-5)


def test_masked_soft_kmeans_gates_start_at_mask_init():
    ep = _semisup_episode(jax.random.key(5))
    learner = learners.semisup_protonet(IDENTITY, num_ways=3, refine="masked_soft_kmeans", mask_init=(0.5, 10.0))
    params = jax.jit(learner.init)(jax.random.key(6), ep)
    sx, sy = np.asarray(ep.support_x), np.asarray(ep.support_y)
    protos = np.stack([sx[sy == c].mean(0) for c in range(3)])
    counts = np.bincount(sy, minlength=3).astype(np.float32)
    ux = np.asarray(ep.aux["unlabelled_x"])

    def gates(d, m):
        norm, _ = _np_stats(d, m)
        return 1 / (1 + np.exp(10.0 * (norm - 0.5)))
    want = _np_refine(protos, counts, ux, np.ones(len(ux), np.float32), None, gates)
    np.testing.assert_allclose(learner.adapt(params, ep, None), want, rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="mask_init"):
        learners.semisup_protonet(IDENTITY, num_ways=3, refine="masked_soft_kmeans", mask_init=(0.5, 0.0))


def test_semisup_protonet_without_unlabelled_is_protonet():
    ep = _semisup_episode(jax.random.key(4))
    empty = ep._replace(aux={"unlabelled_x": ep.aux["unlabelled_x"][:0], "unlabelled_mask": jnp.zeros(0)})
    net = nets.conv4(channels=4, blocks=2)
    images = lambda x: jnp.tile(x[:, :4, None, None], (1, 1, 8, 2)).reshape(x.shape[0], 8, 8, 1)  # noqa: E731
    empty = empty._replace(support_x=images(empty.support_x), query_x=images(empty.query_x),
                           aux={"unlabelled_x": jnp.zeros((0, 8, 8, 1)), "unlabelled_mask": jnp.zeros(0)})
    semi = learners.semisup_protonet(net, num_ways=3, refine="soft_kmeans")
    plain = learners.protonet(net, num_ways=3)
    params = jax.jit(semi.init)(jax.random.key(5), empty)
    np.testing.assert_allclose(semi.adapt(params, empty, None), plain.adapt(params, empty, None), rtol=1e-6)


def test_soft_kmeans_refinement_helps_on_blobs():
    """With an identity embedding and blobs, refined prototypes classify queries better than support means."""
    gains = []
    for seed in range(20):
        ep = _semisup_episode(jax.random.key(seed), ways=5, shots=1, queries=10, per_class=10, distractors=0, dim=4)
        ref = learners.semisup_protonet(IDENTITY, num_ways=5, refine="soft_kmeans")
        base = learners.protonet(IDENTITY, num_ways=5)
        p = jax.jit(ref.init)(jax.random.key(0), ep)
        acc = lambda learner: float(learner.loss(p, learner.adapt(p, ep, None), ep)[1]["accuracy"])  # noqa: E731
        gains.append(acc(ref) - acc(base))
    assert np.mean(gains) > 0.02, gains


def test_semisup_learner_errors():
    ep = _semisup_episode(jax.random.key(0))
    with pytest.raises(ValueError, match="refine"):
        learners.semisup_protonet(IDENTITY, num_ways=3, refine="kmeans")
    with pytest.raises(ValueError, match="unlabelled_x"):
        learners.semisup_protonet(IDENTITY, num_ways=3).init(jax.random.key(0), ep._replace(aux=None))
    with pytest.raises(ValueError, match="example shape"):
        bad = ep._replace(aux={"unlabelled_x": jnp.zeros((4, 3))})
        learners.semisup_protonet(IDENTITY, num_ways=3).init(jax.random.key(0), bad)
    with pytest.raises(ValueError, match="weight"):
        learners.entropy_term(0.0)
    with pytest.raises(TypeError, match="inner_term"):
        learners.maml(nets.mlp(), losses.softmax_cross_entropy, inner_term=lambda *a: 0.0)


def test_entropy_term_matches_numpy_and_ignores_padding():
    ep = _semisup_episode(jax.random.key(6))
    net = nets.mlp((8,), 3)
    params = jax.jit(net.init)(jax.random.key(0), ep.support_x)
    term = learners.entropy_term(0.3, learn_weight=True)
    tp = jax.jit(term.init)(jax.random.key(1), ep)
    logits = np.asarray(net.apply(params, ep.aux["unlabelled_x"]), np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    ref = 0.3 * np.mean(-(p * np.log(p)).sum(1))
    np.testing.assert_allclose(float(term.loss(tp, net.apply, params, ep)), ref, rtol=1e-5)
    ux = ep.aux["unlabelled_x"]
    padded = ep._replace(aux={"unlabelled_x": jnp.concatenate([ux, jnp.ones((3, ux.shape[1]))]),
                              "unlabelled_mask": jnp.concatenate([jnp.ones(ux.shape[0]), jnp.zeros(3)])})
    np.testing.assert_allclose(float(term.loss(tp, net.apply, params, padded)), ref, rtol=1e-5)


def test_semisup_maml_inner_loop_uses_unlabelled_set():
    """One inner SGD step equals a step on support loss + w * entropy, computed by hand with jax.grad."""
    ep = _semisup_episode(jax.random.key(7))
    net = nets.mlp((8,), 3)
    learner = learners.semisup_maml(net, losses.softmax_cross_entropy, inner_lr=0.1, unlabelled_weight=0.5)
    plain = learners.maml(net, losses.softmax_cross_entropy, inner_lr=0.1)
    params = jax.jit(learner.init)(jax.random.key(0), ep)
    assert set(params) == {"net", "inner_term"}

    def objective(p):
        ce = losses.softmax_cross_entropy(net.apply(p, ep.support_x), ep.support_y).mean()
        return ce + 0.5 * losses.entropy(net.apply(p, ep.aux["unlabelled_x"])).mean()

    g = jax.grad(objective)(params["net"])
    expected = jax.tree_util.tree_map(lambda p, g_: p - 0.1 * g_, params["net"], g)
    got = learner.adapt(params, ep, None)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, expected)
    # differs from plain MAML's step, and the learned weight gets a meta-gradient
    assert not np.allclose(got["head"]["kernel"], plain.adapt({"net": params["net"]}, ep, None)["head"]["kernel"])
    grads = jax.grad(lambda p: learner.loss(p, learner.adapt(p, ep, None), ep)[0])(params)
    assert abs(float(grads["inner_term"]["log_weight"])) > 0


def test_semisup_learners_train_with_the_shared_loop():
    lab, unl = scenarios.split_labelled(jax.random.key(0), jax.random.normal(jax.random.key(1), (12, 20, 6)) +
                                        3 * jax.random.normal(jax.random.key(2), (12, 1, 6)))
    sample = lambda k: scenarios.semisup_episodes(k, lab, unl, num_tasks=4, ways=3, shots=1, queries=3,  # noqa: E731
                                                  unlabelled_per_class=3, distractors=2)
    learner = learners.semisup_protonet(nets.mlp((16,), None), num_ways=3, refine="masked_soft_kmeans")
    result = train.fit(learner, optax.adam(1e-2), sample, key=jax.random.key(3), num_steps=20, device_sampling=True,
                       steps_per_call=10, unroll=1, log_every=10, progress=False)  # (rolled: compiles fast)
    assert np.isfinite(result.history[-1]["loss"])
    r = train.evaluate(learner, result.state.params, sample, key=jax.random.key(4), num_episodes=8)
    assert r["accuracy"]["n"] == 8
