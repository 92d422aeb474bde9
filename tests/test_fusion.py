"""Fusion pieces: encoders, head fine-tuning learner, clustering/anomaly scores, rotations, experiment helpers."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmeta import Episode, learners, losses, nets, scenarios
from jaxmeta.data import OmniglotMultimodal, multimodal_rotations


def _packed(key, b=6, size=16, points=12):
    k1, k2, k3 = jax.random.split(key, 3)
    images = jax.random.uniform(k1, (b, size, size))
    strokes = jax.random.normal(k2, (b, points, 3))
    modality = jax.random.randint(k3, (b,), 0, 3)
    return scenarios.pack_examples(images, strokes, modality), modality


def _small_encoder(features_only=False):
    return nets.multimodal_encoder((16, 16, 1), (12, 3), dim=8, image_channels=4, stroke_channels=(8, 8),
                                   features_only=features_only)


def test_embeddings_do_not_depend_on_the_batch():
    # (jitted throughout here and below: run op by op, every primitive of these nets compiles on its own)
    x, _ = _packed(jax.random.key(0))
    net = _small_encoder()
    p = jax.jit(net.init)(jax.random.key(1), x)
    apply = jax.jit(net.apply)
    full = apply(p, x)
    for i in range(x.shape[0]):
        np.testing.assert_allclose(apply(p, x[i : i + 1])[0], full[i], rtol=1e-5, atol=1e-5)
    conv = nets.conv4(norm="layer", channels=4)
    img = jax.random.uniform(jax.random.key(2), (5, 16, 16, 1))
    pc = jax.jit(conv.init)(jax.random.key(3), img)
    apply = jax.jit(conv.apply)
    np.testing.assert_allclose(apply(pc, img[:2]), apply(pc, img)[:2], rtol=1e-5, atol=1e-5)


def test_fused_embedding_is_the_mean_of_the_modalities_then_head():
    key = jax.random.key(4)
    images = jax.random.uniform(key, (3, 16, 16))
    strokes = jax.random.normal(jax.random.fold_in(key, 1), (3, 12, 3))
    body = _small_encoder(features_only=True)
    full = _small_encoder()
    p = jax.jit(full.init)(key, scenarios.pack_examples(images, strokes, jnp.array([2, 2, 2])))
    pb = {k: v for k, v in p.items() if k != "head"}
    body_apply, full_apply = jax.jit(body.apply), jax.jit(full.apply)
    f = {m: body_apply(pb, scenarios.pack_examples(images, strokes, jnp.full(3, m))) for m in range(3)}
    np.testing.assert_allclose(f[2], (f[0] + f[1]) / 2, rtol=1e-5, atol=1e-5)
    head = nets.mlp((), 8)
    out = full_apply(p, scenarios.pack_examples(images, strokes, jnp.array([0, 1, 2])))
    ref = head.apply({"head": p["head"]}, jnp.stack([f[0][0], f[1][1], f[2][2]]))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    # an image-only example ignores whatever sits in the stroke slots
    other = scenarios.pack_examples(images, strokes * 0 + 7.0, jnp.zeros(3, jnp.int32))
    np.testing.assert_allclose(full_apply(p, other), full_apply(p, scenarios.pack_examples(images, strokes, jnp.zeros(3, jnp.int32))))


def test_stroke_encoder_rejects_bad_sizes():
    with pytest.raises(ValueError, match="channels"):
        nets.stroke_encoder(0)
    with pytest.raises(ValueError, match="divides the last conv width 6"):
        nets.stroke_encoder(8, channels=(6,), attention_layers=1, attention_heads=4)
    with pytest.raises(ValueError, match="attention_layers"):
        nets.multimodal_encoder((16, 16, 1), (12, 3), stroke_channels=(8,), stroke_attention=-1)
    with pytest.raises(ValueError, match="image_shape"):
        nets.multimodal_encoder((16, 16, 1, 1), (12, 3))


def test_stroke_attention_sees_the_whole_trajectory_and_stays_per_example():
    net = nets.stroke_encoder(8, channels=(8, 8), attention_layers=2, attention_heads=2)
    s = jax.random.normal(jax.random.key(5), (3, 16, 3))
    p = jax.jit(net.init)(jax.random.key(6), s)
    assert {"attention_0", "attention_1", "position", "attention_out_norm"} <= set(p["params"] if "params" in p else p)
    apply = jax.jit(net.apply)
    out = apply(p, s)
    assert out.shape == (3, 8)
    np.testing.assert_allclose(apply(p, s[:1]), out[:1], rtol=1e-5, atol=1e-5)  # no batch statistics
    # moving the last point changes the embedding (attention + pooling reach every time step)
    moved = s.at[:, -1, :2].add(1.0)
    assert not np.allclose(apply(p, moved), out)
    mm = nets.multimodal_encoder((16, 16, 1), (16, 3), dim=8, image_channels=4, stroke_channels=(8, 8),
                                 stroke_attention=1)
    x = scenarios.pack_examples(jnp.ones((2, 16, 16)), s[:2], jnp.array([1, 2]))
    assert jax.eval_shape(mm.apply, jax.eval_shape(mm.init, jax.random.key(7), x), x).shape == (2, 8)


def _blob_episode(key, ways=3, shots=2, queries=2, dim=4):
    k1, k2, k3 = jax.random.split(key, 3)
    means = 3.0 * jax.random.normal(k1, (ways, dim))
    ys, yq = jnp.repeat(jnp.arange(ways), shots), jnp.repeat(jnp.arange(ways), queries)
    return Episode(means[ys] + jax.random.normal(k2, (ways * shots, dim)), ys.astype(jnp.int32),
                   means[yq] + jax.random.normal(k3, (ways * queries, dim)), yq.astype(jnp.int32))


def test_metric_finetune_without_steps_is_protonet():
    ep = _blob_episode(jax.random.key(0))
    net = nets.mlp((), 5)
    ft = learners.metric_finetune(net, num_ways=3, inner_steps=0)
    proto = learners.protonet(net, num_ways=3)
    p = jax.jit(ft.init)(jax.random.key(1), ep)
    lf, mf = ft.loss(p, ft.adapt(p, ep, None), ep)
    lp, mp = proto.loss(p, proto.adapt(p, ep, None), ep)
    np.testing.assert_allclose(lf, lp, rtol=1e-6)
    np.testing.assert_allclose(mf["accuracy"], mp["accuracy"])


@pytest.mark.parametrize("support_loss", ["prototypical", "triplet", "contrastive"])
def test_metric_finetune_adapts_only_the_filtered_params_and_lowers_the_support_loss(support_loss):
    ep = _blob_episode(jax.random.key(2))
    net = nets.mlp((6,), 5)
    ft = learners.metric_finetune(net, num_ways=3, inner_steps=5, inner_lr=0.05, support_loss=support_loss,
                                  learn_inner_lr="per_parameter")
    p = jax.jit(ft.init)(jax.random.key(3), ep)
    task = ft.adapt(p, ep, None)
    np.testing.assert_array_equal(task["net"]["hidden_0"]["kernel"], p["net"]["hidden_0"]["kernel"])
    assert not np.allclose(task["net"]["head"]["kernel"], p["net"]["head"]["kernel"])
    from jaxmeta.learners.metric_finetune import _support_loss

    before = _support_loss(support_loss, net.apply(p["net"], ep.support_x), ep.support_y, None, 3, 1.0, 1.0)
    after = _support_loss(support_loss, net.apply(task["net"], ep.support_x), ep.support_y, None, 3, 1.0, 1.0)
    assert float(after) < float(before)
    # the meta-gradient reaches the learned per-parameter rates (Meta-SGD)
    grads = jax.grad(lambda q: ft.loss(q, ft.adapt(q, ep, None), ep)[0])(p)
    assert float(jnp.abs(grads["inner_lr"]["head"]["kernel"]).sum()) > 0


def test_metric_finetune_contrastive_matches_a_loop_reference():
    from jaxmeta.learners.metric_finetune import _support_loss

    emb = jax.random.normal(jax.random.key(5), (4, 3))
    y = jnp.array([0, 0, 1, 2])
    got = _support_loss("contrastive", emb, y, None, 3, 1.0, 1.5)
    e = np.asarray(emb, np.float64)
    vals = []
    for i, j in itertools.permutations(range(4), 2):
        d = math.sqrt(((e[i] - e[j]) ** 2).sum() + 1e-12)
        vals.append(d * d if y[i] == y[j] else max(1.5 - d, 0.0) ** 2)
    np.testing.assert_allclose(got, np.mean(vals), rtol=1e-5)


def test_metric_finetune_rejects_bad_options():
    with pytest.raises(ValueError, match="support_loss"):
        learners.metric_finetune(nets.mlp(), num_ways=3, support_loss="hinge")
    with pytest.raises(ValueError, match="learn_inner_lr"):
        learners.metric_finetune(nets.mlp(), num_ways=3, learn_inner_lr="per_layer_per_step")


def _nmi_reference(a, b):
    n = len(a)
    ca, cb = np.unique(a), np.unique(b)
    table = np.array([[np.sum((a == i) & (b == j)) for j in cb] for i in ca], np.float64)
    pij, pi, pj = table / n, table.sum(1) / n, table.sum(0) / n
    mi = sum(pij[i, j] * np.log(pij[i, j] / (pi[i] * pj[j])) for i in range(len(ca)) for j in range(len(cb))
             if pij[i, j] > 0)
    h = lambda p: -np.sum(p * np.log(p))
    return mi / ((h(pi) + h(pj)) / 2)


def _ari_reference(a, b):
    pairs = list(itertools.combinations(range(len(a)), 2))
    same_a = np.array([a[i] == a[j] for i, j in pairs])
    same_b = np.array([b[i] == b[j] for i, j in pairs])
    n11 = np.sum(same_a & same_b)
    total = len(pairs)
    expected = same_a.sum() * same_b.sum() / total
    return (n11 - expected) / ((same_a.sum() + same_b.sum()) / 2 - expected)


def test_nmi_and_ari_match_references():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, 40)
    b = np.where(rng.random(40) < 0.7, a, rng.integers(0, 5, 40))
    nmi = losses.normalized_mutual_info(jnp.asarray(a), jnp.asarray(b), 4, 5)
    ari = losses.adjusted_rand_index(jnp.asarray(a), jnp.asarray(b), 4, 5)
    np.testing.assert_allclose(nmi, _nmi_reference(a, b), rtol=1e-4)
    np.testing.assert_allclose(ari, _ari_reference(a, b), rtol=1e-4)
    perm = np.array([2, 0, 3, 1])[a]  # relabelling the clusters changes nothing
    np.testing.assert_allclose(losses.normalized_mutual_info(jnp.asarray(a), jnp.asarray(perm), 4, 4), 1.0, rtol=1e-6)


def test_roc_auc_matches_pairwise_counting_with_ties():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 6, 50).astype(np.float32)  # many ties
    pos = rng.random(50) < 0.4
    ref = np.mean([1.0 if s > t else 0.5 if s == t else 0.0 for s in scores[pos] for t in scores[~pos]])
    np.testing.assert_allclose(losses.roc_auc(jnp.asarray(scores), jnp.asarray(pos)), ref, rtol=1e-6)


def test_kmeans_recovers_separated_blobs_and_is_deterministic():
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(6, 5)) * 10
    labels = np.repeat(np.arange(6), 20)
    x = jnp.asarray(centres[labels] + rng.normal(size=(120, 5)), jnp.float32)
    a1, _, inertia = losses.kmeans(jax.random.key(0), x, 6)
    a2, _, _ = losses.kmeans(jax.random.key(0), x, 6)
    np.testing.assert_array_equal(a1, a2)
    assert float(losses.normalized_mutual_info(jnp.asarray(labels), a1, 6, 6)) > 0.99
    with pytest.raises(ValueError, match="num_clusters"):
        losses.kmeans(jax.random.key(0), x, 500)


def test_rotations_turn_trajectories_with_their_images():
    # render trajectory points into a grid: the rotated rendering must be the rotated image of the rendering
    rng = np.random.default_rng(3)
    pts = rng.uniform(-1, 1, (1, 1, 30, 3)).astype(np.float32)
    size = 21

    def render(p):
        img = np.zeros((size, size))
        cols = np.round((p[:, 0] + 1) / 2 * (size - 1)).astype(int)
        rows = np.round((p[:, 1] + 1) / 2 * (size - 1)).astype(int)
        img[rows, cols] = 1
        return img

    image = render(pts[0, 0])[None, None]
    data = OmniglotMultimodal(image, pts, ("A",), ("A/c1",), np.zeros((1, 1), np.int32))
    rot = multimodal_rotations(data)
    assert rot.characters == ("A/c1", "A/c1/rot90", "A/c1/rot180", "A/c1/rot270")
    for k in range(4):
        np.testing.assert_array_equal(render(rot.strokes[k, 0]), rot.images[k, 0])


def test_fusion_help_and_feature_sampler(capsys):
    from experiments.fusion import main as fusion

    with pytest.raises(SystemExit):
        fusion.main(["--help"])
    assert "--train-steps" in capsys.readouterr().out
    # feature episodes pick the same drawings as the packed episodes of the same key
    feats = np.arange(3 * 8 * 4 * 2, dtype=np.float32).reshape(3, 8 * 4, 2)
    sample = fusion.feature_sampler(feats, 8, 4, ways=3, shots=1, queries=2, num_tasks=2, s_mod="stroke",
                                    q_mod="image")
    ep = sample(jax.random.key(0))
    ref = scenarios.multimodal_episodes(jax.random.key(0), jnp.zeros((8, 4, 1, 1)), jnp.zeros((8, 4, 1, 3)),
                                        num_tasks=2, ways=3, shots=1, queries=2, support_modality="stroke",
                                        query_modality="image")
    np.testing.assert_array_equal(ep.support_x, feats[1][np.asarray(ref.aux["support_index"])])
    np.testing.assert_array_equal(ep.query_x, feats[0][np.asarray(ref.aux["query_index"])])


def test_views_embed_every_drawing_in_every_modality():
    key = jax.random.key(6)
    images = jax.random.uniform(key, (4, 16, 16))
    strokes = jax.random.normal(jax.random.fold_in(key, 1), (4, 12, 3))
    plain, views = _small_encoder(), nets.multimodal_encoder((16, 16, 1), (12, 3), dim=8, image_channels=4,
                                                             stroke_channels=(8, 8), views=True)
    both = scenarios.pack_examples(images, strokes, jnp.full(4, 2))
    p = jax.jit(plain.init)(key, both)
    out = jax.jit(views.apply)(p, both)  # same params
    assert out.shape == (4, 3, 8)
    plain_apply = jax.jit(plain.apply)
    for m in range(3):
        np.testing.assert_allclose(out[:, m], plain_apply(p, scenarios.pack_examples(images, strokes, jnp.full(4, m))),
                                   rtol=1e-5, atol=1e-5)


def test_protonet_views_loss_is_the_mean_over_modality_pairs():
    key = jax.random.key(7)
    images = jax.random.uniform(key, (12, 16, 16))
    strokes = jax.random.normal(jax.random.fold_in(key, 1), (12, 12, 3))
    ys, yq = jnp.array([0, 1, 2, 0, 1, 2]), jnp.array([0, 1, 2, 2, 1, 0])
    pack = lambda sl, m: scenarios.pack_examples(images[sl], strokes[sl], jnp.full(6, m))
    views_net = nets.multimodal_encoder((16, 16, 1), (12, 3), dim=8, image_channels=4, stroke_channels=(8, 8),
                                        views=True)
    multi = learners.protonet(views_net, num_ways=3, views=True)
    single = learners.protonet(_small_encoder(), num_ways=3)
    ep = Episode(pack(slice(0, 6), 2), ys, pack(slice(6, 12), 2), yq)
    p = jax.jit(multi.init)(key, ep)

    def loss_of(learner):  # jitted: one compiled program per learner, whatever the episode's modality flags
        return jax.jit(lambda q, e: learner.loss(q, learner.adapt(q, e, key), e))

    value, metrics = loss_of(multi)(p, ep)
    single_loss = loss_of(single)  # one program for the nine modality pairs
    losses_, accs = [], []
    for s_mod, q_mod in itertools.product(range(3), range(3)):
        v, m = single_loss(p, Episode(pack(slice(0, 6), s_mod), ys, pack(slice(6, 12), q_mod), yq))
        losses_.append(v)
        accs.append(m["accuracy"])
    np.testing.assert_allclose(value, np.mean(losses_), rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], np.mean(accs), rtol=1e-5)
    assert jax.eval_shape(lambda q: multi.predict(q, multi.adapt(q, ep, key), ep.query_x), p).shape == (6, 3, 3, 3)
    g = jax.jit(jax.grad(lambda q: multi.loss(q, multi.adapt(q, ep, key), ep)[0]))(p)
    assert all(bool(jnp.isfinite(x).all()) for x in jax.tree_util.tree_leaves(g))
    with pytest.raises(ValueError, match="views=True"):
        learners.protonet(views_net, num_ways=3).init(key, ep)
    with pytest.raises(ValueError, match=r"\[B, V, D\]"):
        learners.protonet(_small_encoder(), num_ways=3, views=True).init(key, ep)
    # align adds the mean view_alignment_loss over the 6 ordered view pairs of every query
    aligned = learners.protonet(views_net, num_ways=3, views=True, align=0.5)
    value_a, metrics_a = loss_of(aligned)(p, ep)
    emb = jax.jit(views_net.apply)(p["net"], ep.query_x)
    terms = [losses.view_alignment_loss(emb[:, i], emb[:, j], yq) for i in range(3) for j in range(3) if i != j]
    np.testing.assert_allclose(metrics_a["alignment"], np.mean(terms), rtol=1e-5)
    np.testing.assert_allclose(value_a, value + 0.5 * metrics_a["alignment"], rtol=1e-5)
    with pytest.raises(ValueError, match="align"):
        learners.protonet(_small_encoder(), num_ways=3, align=1.0)


def test_late_fusion_head_sums_the_modalities_distances():
    from experiments.fusion import main as fusion

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(3, 8 * 4, 6)).astype(np.float32)
    late = fusion.late_features(feats)
    assert late.shape == (3, 32, 12)
    np.testing.assert_array_equal(late[2], np.concatenate([feats[0], feats[1]], -1))
    head = nets.mlp((), 5)
    p = {"head": head.init(jax.random.key(0), jnp.zeros((1, 6)))["head"]}
    two = fusion.per_view(head)
    assert jax.tree_util.tree_structure(jax.jit(two.init)(jax.random.key(0), jnp.zeros((1, 12)))) == \
        jax.tree_util.tree_structure(p)
    # ProtoNet logits on the late features = image logits + stroke logits (squared distances add up)
    ys, yq = jnp.arange(4), jnp.arange(4)
    idx_s, idx_q = np.arange(0, 32, 8)[:4], np.arange(1, 32, 8)[:4]
    proto = lambda net, f: learners.protonet(net, num_ways=4)
    logits = {}
    for name, f, net in (("late", late[2], two), ("image", feats[0], head), ("stroke", feats[1], head)):
        ep = Episode(jnp.asarray(f[idx_s]), ys, jnp.asarray(f[idx_q]), yq)
        lrn = proto(net, f)
        logits[name] = lrn.predict({"net": p}, lrn.adapt({"net": p}, ep, None), ep.query_x)
    np.testing.assert_allclose(logits["late"], logits["image"] + logits["stroke"], rtol=1e-5, atol=1e-5)


def test_centring_moves_only_cross_modal_distances():
    from experiments.fusion import main as fusion

    rng = np.random.default_rng(1)
    test = rng.normal(size=(3, 10, 4)) + np.array([1.0, -2.0, 0.5])[:, None, None]
    train = rng.normal(size=(3, 30, 4)) + np.array([1.0, -2.0, 0.5])[:, None, None]
    ct, cr = fusion.centre_modalities(test, train)
    np.testing.assert_allclose(cr.mean(axis=1), 0.0, atol=1e-12)
    d = lambda a, b: ((a[:, None] - b[None]) ** 2).sum(-1)
    for m in range(3):  # within a modality: unchanged
        np.testing.assert_allclose(d(ct[m], ct[m]), d(test[m], test[m]), rtol=1e-10, atol=1e-10)
    # across modalities the mean offset is gone
    assert np.abs(ct[0].mean(0) - ct[1].mean(0)).max() < np.abs(test[0].mean(0) - test[1].mean(0)).max()


def test_fewshot_table_pairs_each_fusion_with_each_modality():
    from experiments.fusion import main as fusion

    config = fusion.Config(dim=4, test_episodes=6, test_queries=2)
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(3, 8 * 8, 4)).astype(np.float32)
    table = fusion.fewshot_table(config, lambda s, head: learners.protonet(head, num_ways=5),
                                 lambda s: {"net": {"head": nets.mlp((), 4).init(jax.random.key(0),
                                                                                 jnp.zeros((1, 4)))["head"]}},
                                 feats, (8, 8), jax.random.key(1))
    assert set(table) == set(fusion.MODES) | {"fused_late", "paired"}
    diff = table["paired"]["fused_late_minus_image"]["1-shot"]
    assert diff["n"] == 6
    np.testing.assert_allclose(diff["mean"], table["fused_late"]["1-shot"]["mean"] - table["image"]["1-shot"]["mean"],
                               atol=1e-6)
    assert set(table["paired"]) == {"fused_minus_image", "fused_minus_stroke", "fused_late_minus_image",
                                    "fused_late_minus_stroke"}


def test_test_time_augmentation_averages_the_drawing_and_its_distortions():
    from experiments.fusion import main as fusion

    config = fusion.Config(dim=4, image_channels=4, stroke_channels=(4,), stroke_attention=0, num_points=12)
    k1, k2 = jax.random.split(jax.random.key(0))
    images = np.asarray(jax.random.uniform(k1, (2, 3, 28, 28)) > 0.7, np.float32)
    strokes = np.asarray(jnp.tanh(jax.random.normal(k2, (2, 3, 12, 3))))
    data = OmniglotMultimodal(images, strokes, ("a", "a"), ("c1", "c2"), np.ones((2, 3), np.int32))
    x = scenarios.pack_examples(jnp.asarray(images[0]), jnp.asarray(strokes[0]), jnp.zeros(3, jnp.int32))
    params = fusion.encoder(config).init(jax.random.key(1), x)
    plain = fusion.embed_all(config, params, data, batch=4)
    assert plain.shape == (3, 6, 4)
    np.testing.assert_array_equal(fusion.embed_all(config, params, data, batch=4, augment=0), plain)
    key = jax.random.key(2)
    tta = fusion.embed_all(config, params, data, batch=4, augment=2, key=key)
    np.testing.assert_array_equal(tta, fusion.embed_all(config, params, data, batch=4, augment=2, key=key))
    # reference: the mean over the drawing and two distortions, the same one for a drawing's image and strokes
    total = plain.copy()
    for i in (1, 2):
        k = jax.random.fold_in(key, i)
        warped = data._replace(
            images=np.asarray(scenarios.random_affine(k, jnp.asarray(images.reshape(6, 28, 28)))).reshape(images.shape),
            strokes=np.asarray(scenarios.random_affine_points(k, jnp.asarray(strokes.reshape(6, 12, 3)))).reshape(
                strokes.shape))
        total += fusion.embed_all(config, params, warped, batch=4)
    np.testing.assert_allclose(tta, total / 3, rtol=1e-5, atol=1e-6)
    assert np.abs(tta - plain).max() > 1e-4
