"""Multi-modal episodes: packing, modality flags, same episodes across modalities, determinism."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmeta import validate_episode
from jaxmeta.scenarios import MODALITY_IDS, multimodal_episodes, pack_examples, unpack_examples

C, D, H, P = 12, 6, 4, 5


def _data():
    # every value encodes its drawing, so gathered examples can be traced back
    ids = np.arange(C * D, dtype=np.float32).reshape(C, D)
    images = np.broadcast_to(ids[:, :, None, None], (C, D, H, H)).copy()
    strokes = np.broadcast_to(-ids[:, :, None, None], (C, D, P, 3)).copy()
    return jnp.asarray(images), jnp.asarray(strokes)


def _episodes(key, s_mod, q_mod, **kw):
    images, strokes = _data()
    return multimodal_episodes(key, images, strokes, num_tasks=3, ways=4, shots=2, queries=3,
                               support_modality=s_mod, query_modality=q_mod, **kw)


def test_pack_unpack_round_trip_and_zero_fill():
    images, strokes = jnp.arange(3 * 16.0).reshape(3, 4, 4), jnp.arange(3 * 15.0).reshape(3, 5, 3) + 1
    x = pack_examples(images, strokes, jnp.array([0, 1, 2]))
    hi, hs, im, st = unpack_examples(x, (4, 4), (5, 3))
    np.testing.assert_array_equal(hi, [1, 0, 1])
    np.testing.assert_array_equal(hs, [0, 1, 1])
    np.testing.assert_array_equal(im[0], images[0])
    np.testing.assert_array_equal(im[1], 0)
    np.testing.assert_array_equal(st[0], 0)
    np.testing.assert_array_equal(st[2], strokes[2])
    with pytest.raises(ValueError, match="packed examples"):
        unpack_examples(x, (4, 4), (6, 3))


@pytest.mark.parametrize("s_mod, q_mod", [("image", "image"), ("stroke", "image"), ("image", "stroke"),
                                          ("both", "both"), ("random", "random")])
def test_examples_are_the_drawings_named_in_aux_with_their_modality(s_mod, q_mod):
    eps = _episodes(jax.random.key(1), s_mod, q_mod)
    validate_episode(eps, batched=True, num_ways=4)
    for side in ("support", "query"):
        x = np.asarray(getattr(eps, f"{side}_x"))
        index = np.asarray(eps.aux[f"{side}_index"])
        mod = np.asarray(eps.aux[f"{side}_modality"])
        has_i, has_s = x[..., 0], x[..., 1]
        np.testing.assert_array_equal(has_i, mod != MODALITY_IDS["stroke"])
        np.testing.assert_array_equal(has_s, mod != MODALITY_IDS["image"])
        np.testing.assert_array_equal(x[..., 2], np.where(has_i > 0, index, 0))          # image pixels = id
        np.testing.assert_array_equal(x[..., -1], np.where(has_s > 0, -index, 0))        # stroke values = -id
        want = {"image": {0}, "stroke": {1}, "both": {2}, "random": {0, 1, 2}}[s_mod if side == "support" else q_mod]
        assert set(np.unique(mod)) <= want
    # labels: class of a drawing is index // D, and labels are consistent within an episode
    for e in range(3):
        cls_s = np.asarray(eps.aux["support_index"][e]) // D
        cls_q = np.asarray(eps.aux["query_index"][e]) // D
        for n in range(4):
            assert len(set(cls_s[np.asarray(eps.support_y[e]) == n]) | set(cls_q[np.asarray(eps.query_y[e]) == n])) == 1
        assert not set(np.asarray(eps.aux["support_index"][e])) & set(np.asarray(eps.aux["query_index"][e]))


def test_same_key_gives_the_same_episodes_in_every_modality():
    key = jax.random.key(7)
    ref = _episodes(key, "image", "image")
    for s_mod, q_mod in (("stroke", "image"), ("both", "both"), ("random", "stroke")):
        other = _episodes(key, s_mod, q_mod)
        np.testing.assert_array_equal(other.aux["support_index"], ref.aux["support_index"])
        np.testing.assert_array_equal(other.aux["query_index"], ref.aux["query_index"])
        np.testing.assert_array_equal(other.query_y, ref.query_y)
    again = _episodes(key, "random", "random")
    np.testing.assert_array_equal(again.support_x, _episodes(key, "random", "random").support_x)
    assert not np.array_equal(_episodes(jax.random.key(8), "image", "image").aux["support_index"],
                              ref.aux["support_index"])


def test_random_modalities_follow_probs_and_jit():
    images, strokes = _data()
    sample = jax.jit(lambda k: multimodal_episodes(k, images, strokes, num_tasks=200, ways=4, shots=2, queries=3,
                                                   support_modality="random", query_modality="random",
                                                   probs=(0.5, 0.25, 0.25)))
    mod = np.asarray(sample(jax.random.key(0)).aux["query_modality"]).reshape(-1)
    freq = np.bincount(mod, minlength=3) / mod.size
    np.testing.assert_allclose(freq, [0.5, 0.25, 0.25], atol=0.03)


def test_bad_arguments_name_the_argument():
    images, strokes = _data()
    with pytest.raises(ValueError, match="support_modality"):
        multimodal_episodes(jax.random.key(0), images, strokes, num_tasks=1, ways=2, shots=1, queries=1,
                            support_modality="audio")
    with pytest.raises(ValueError, match="images, strokes"):
        multimodal_episodes(jax.random.key(0), images, strokes[:3], num_tasks=1, ways=2, shots=1, queries=1)
    with pytest.raises(ValueError, match="ways"):
        multimodal_episodes(jax.random.key(0), images, strokes, num_tasks=1, ways=20, shots=1, queries=1)
    with pytest.raises(ValueError, match="probs"):
        multimodal_episodes(jax.random.key(0), images, strokes, num_tasks=1, ways=2, shots=1, queries=1, probs=(1.0,))


def test_affine_points_follow_the_image_warp_of_the_same_key():
    from jaxmeta.scenarios import random_affine, random_affine_points

    # one dot per image at a known point: after the warp its ink centroid is where the point goes
    size, rng = 41, np.random.default_rng(0)
    offsets = rng.uniform(-8, 8, (6, 2)).astype(np.float32)  # (x, y) pixels from the centre, y down
    c = (size - 1) / 2
    yy, xx = np.mgrid[:size, :size]
    images = np.stack([np.exp(-((xx - c - ox) ** 2 + (yy - c - oy) ** 2) / 2.0) for ox, oy in offsets])
    points = np.concatenate([offsets[:, None, :], np.zeros((6, 1, 1), np.float32)], -1)
    key = jax.random.key(5)
    kw = dict(rotate=25.0, scale=0.2, shear=0.2, translate=0.0)
    warped = np.asarray(random_affine(key, jnp.asarray(images, jnp.float32), **kw))
    moved = np.asarray(random_affine_points(key, jnp.asarray(points), renormalise=False, **kw))
    mass = warped.sum(axis=(1, 2))
    centroid = np.stack([(warped * xx).sum((1, 2)) / mass - c, (warped * yy).sum((1, 2)) / mass - c], -1)
    np.testing.assert_allclose(centroid, moved[:, 0, :2], atol=0.15)
    assert not np.allclose(moved[:, 0, :2], offsets, atol=0.5)  # it did move them
    # renormalised: bounding box centred, longer side spanning [-1, 1]; extra channels untouched
    traj = jnp.asarray(rng.uniform(-1, 1, (4, 20, 3)), jnp.float32)
    out = np.asarray(random_affine_points(key, traj))
    span = out[..., :2].max(1) - out[..., :2].min(1)
    np.testing.assert_allclose(span.max(-1), 2.0, rtol=1e-5)
    np.testing.assert_allclose(out[..., :2].max(1) + out[..., :2].min(1), 0.0, atol=1e-5)
    np.testing.assert_array_equal(out[..., 2], np.asarray(traj)[..., 2])
    with pytest.raises(ValueError, match="points"):
        random_affine_points(key, jnp.zeros((4, 20)))


def test_augment_multimodal_keeps_flags_zero_fill_and_drawings():
    from jaxmeta.scenarios import augment_multimodal, random_affine

    key = jax.random.key(2)
    images = jax.random.uniform(key, (C, D, 8, 8))
    strokes = jax.random.uniform(jax.random.fold_in(key, 1), (C, D, P, 3), minval=-1, maxval=1)
    eps = multimodal_episodes(key, images, strokes, num_tasks=2, ways=4, shots=2, queries=3,
                              support_modality="random", query_modality="random")
    aug = jax.jit(lambda k, e: augment_multimodal(k, e, (8, 8), (P, 3)))(jax.random.key(3), eps)
    for name in ("support_x", "query_x"):
        x, y = np.asarray(getattr(eps, name)), np.asarray(getattr(aug, name))
        assert y.shape == x.shape
        np.testing.assert_array_equal(y[..., :2], x[..., :2])  # flags unchanged
        has_i, has_s, im, st = unpack_examples(jnp.asarray(y.reshape(-1, y.shape[-1])), (8, 8, 1), (P, 3))
        assert float(jnp.abs(im[has_i == 0]).max(initial=0.0)) == 0.0  # absent modalities stay zero
        assert float(jnp.abs(st[has_s == 0]).max(initial=0.0)) == 0.0
        assert not np.allclose(y, x)
    # the support images are exactly random_affine of the originals with the support key
    k_s, _ = jax.random.split(jax.random.key(3))
    _, _, im0, _ = unpack_examples(eps.support_x.reshape(-1, eps.support_x.shape[-1]), (8, 8, 1), (P, 3))
    _, _, im1, _ = unpack_examples(aug.support_x.reshape(-1, aug.support_x.shape[-1]), (8, 8, 1), (P, 3))
    has_image = np.asarray(eps.support_x.reshape(-1, eps.support_x.shape[-1])[:, 0])
    np.testing.assert_allclose(np.asarray(im1), np.asarray(random_affine(k_s, im0)) * has_image[:, None, None, None],
                               atol=1e-6)


def _strokes_of(drawing):
    """A resampled drawing's strokes as tuples of (x, y) points, split at the pen-up flags."""
    strokes = []
    for x, y, up in np.asarray(drawing).tolist():
        if up > 0.5 or not strokes:
            strokes.append([])
        strokes[-1].append((x, y))
    return [tuple(s) for s in strokes]


def test_random_stroke_order_keeps_every_stroke_and_only_reorders_or_reverses_them():
    from jaxmeta.scenarios import random_stroke_order

    # three drawings of 12 points with strokes of different lengths (drawing 2: one stroke)
    starts = [[0, 3, 4, 9], [0, 6], [0]]
    drawings = []
    for i, s in enumerate(starts):
        up = np.zeros(12, np.float32)
        up[s] = 1.0
        xy = np.random.default_rng(i).normal(size=(12, 2)).astype(np.float32)
        drawings.append(np.concatenate([xy, up[:, None]], -1))
    pts = jnp.asarray(np.stack(drawings))
    fn = jax.jit(lambda k, p: random_stroke_order(k, p, order_noise=3.0, reverse=0.5))
    changed_order = changed_direction = False
    for seed in range(8):
        out = np.asarray(fn(jax.random.key(seed), pts))
        assert out.shape == pts.shape
        for before, after in zip(np.asarray(pts), out):
            old, new = _strokes_of(before), _strokes_of(after)
            assert after[0, 2] == 1.0 and len(new) == len(old)  # the pen-up flags mark the new stroke starts
            # the same strokes, each forwards or backwards
            assert sorted(min(s, s[::-1]) for s in new) == sorted(min(s, s[::-1]) for s in old)
            changed_order |= [min(s, s[::-1]) for s in new] != [min(s, s[::-1]) for s in old]
            changed_direction |= any(s not in old for s in new)
    assert changed_order and changed_direction
    # deterministic per key; no noise and no reversal leave the drawings alone
    np.testing.assert_array_equal(fn(jax.random.key(0), pts), fn(jax.random.key(0), pts))
    np.testing.assert_array_equal(random_stroke_order(jax.random.key(0), pts, order_noise=0.0, reverse=0.0), pts)
    with pytest.raises(ValueError, match="pen_up"):
        random_stroke_order(jax.random.key(0), pts[..., :2])
    with pytest.raises(ValueError, match="probability"):
        random_stroke_order(jax.random.key(0), pts, reverse=2.0)


def test_augment_multimodal_stroke_order_changes_only_the_trajectories():
    from jaxmeta.scenarios import augment_multimodal

    key = jax.random.key(4)
    images = jax.random.uniform(key, (C, D, 8, 8))
    up = jnp.zeros((C, D, P, 1)).at[:, :, :: 4].set(1.0)  # strokes of 4 points
    strokes = jnp.concatenate([jax.random.uniform(jax.random.fold_in(key, 1), (C, D, P, 2), minval=-1, maxval=1), up],
                              -1)
    eps = multimodal_episodes(key, images, strokes, num_tasks=1, ways=3, shots=1, queries=2,
                              support_modality="both", query_modality="both")
    run = jax.jit(lambda e, noise, rev: augment_multimodal(jax.random.key(5), e, (8, 8), (P, 3), order_noise=noise,
                                                          reverse=rev), static_argnums=(1, 2))
    plain, shuffled = run(eps, 0.0, 0.0), run(eps, 5.0, 0.5)
    x0, x1 = (e.support_x.reshape(-1, e.support_x.shape[-1]) for e in (plain, shuffled))
    _, _, im0, st0 = unpack_examples(x0, (8, 8, 1), (P, 3))
    _, _, im1, st1 = unpack_examples(x1, (8, 8, 1), (P, 3))
    np.testing.assert_array_equal(im1, im0)  # same distortion, same image
    assert not np.allclose(st1, st0)
    for a, b in zip(np.asarray(st0), np.asarray(st1)):  # same ink
        np.testing.assert_allclose(np.sort(a[:, :2], axis=0), np.sort(b[:, :2], axis=0), atol=1e-6)
