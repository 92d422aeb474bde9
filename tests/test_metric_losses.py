"""Metric losses and distances against NumPy references, with gradient checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxmeta import losses

RNG = np.random.default_rng(0)
A = RNG.normal(size=(6, 4)).astype(np.float32)
B = RNG.normal(size=(5, 4)).astype(np.float32)


def np_sq_euclid(a, b):
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def np_cosine(a, b):
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    return an @ bn.T


def np_log_softmax(z):
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def test_distances_match_numpy():
    np.testing.assert_allclose(losses.pairwise_squared_euclidean(A, B), np_sq_euclid(A, B), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(losses.pairwise_cosine_similarity(A, B), np_cosine(A, B), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(losses.pairwise_cosine_distance(A, B), 1 - np_cosine(A, B), rtol=1e-5, atol=1e-6)
    assert float(losses.pairwise_squared_euclidean(A, A).min()) >= 0.0


def test_prototypes_match_numpy_and_respect_the_mask():
    labels = np.array([0, 1, 2, 0, 1, 2])
    got = losses.prototypes(jnp.asarray(A), jnp.asarray(labels), 3)
    want = np.stack([A[labels == c].mean(0) for c in range(3)])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    mask = np.array([1, 1, 1, 0, 1, 1])
    got_masked = losses.prototypes(jnp.asarray(A), jnp.asarray(labels), 3, jnp.asarray(mask))
    np.testing.assert_allclose(got_masked[0], A[0], rtol=1e-6)
    # an absent class gets a zero prototype, no NaN
    assert np.all(np.asarray(losses.prototypes(jnp.asarray(A), jnp.asarray(labels), 4))[3] == 0)


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_prototypical_loss_matches_numpy(distance):
    protos = B[:3]
    labels = np.array([0, 1, 2, 2, 1, 0])
    scores = -2.0 * np_sq_euclid(A, protos) if distance == "euclidean" else 2.0 * np_cosine(A, protos)
    want = -np_log_softmax(scores)[np.arange(6), labels]
    got = losses.prototypical_loss(jnp.asarray(A), jnp.asarray(labels), jnp.asarray(protos), distance, scale=2.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_prototypical_loss_is_invariant_to_relabelling_classes():
    labels = jnp.array([0, 1, 2, 2, 1, 0])
    protos = jnp.asarray(B[:3])
    perm = jnp.array([2, 0, 1])  # class c becomes perm[c]
    base = losses.prototypical_loss(jnp.asarray(A), labels, protos)
    inverse = jnp.argsort(perm)
    relabelled = losses.prototypical_loss(jnp.asarray(A), perm[labels], protos[inverse])
    np.testing.assert_allclose(base, relabelled, rtol=1e-6)


def test_triplet_and_contrastive_match_numpy():
    a, p, n = A[:3], A[3:], B[:3]
    d = lambda x, y: np.sqrt(((x - y) ** 2).sum(1))  # noqa: E731
    np.testing.assert_allclose(losses.triplet_loss(a, p, n, margin=0.5),
                               np.maximum(d(a, p) - d(a, n) + 0.5, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(losses.triplet_loss(a, p, n, margin=0.5, squared=True),
                               np.maximum(((a - p) ** 2).sum(1) - ((a - n) ** 2).sum(1) + 0.5, 0), rtol=1e-5)
    same = np.array([True, False, True])
    want = np.where(same, d(a, p) ** 2, np.maximum(2.0 - d(a, p), 0) ** 2)
    np.testing.assert_allclose(losses.contrastive_loss(a, p, jnp.asarray(same), margin=2.0), want, rtol=1e-5)


def test_batch_hard_triplet_matches_brute_force():
    emb = RNG.normal(size=(8, 3)).astype(np.float32)
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 3])  # class 3 has no positive
    dist = np.sqrt(np_sq_euclid(emb, emb))
    want = []
    for i in range(8):
        pos = [dist[i, j] for j in range(8) if labels[j] == labels[i] and j != i]
        neg = [dist[i, j] for j in range(8) if labels[j] != labels[i]]
        want.append(max(max(pos) - min(neg) + 0.3, 0.0) if pos and neg else 0.0)
    got = losses.batch_hard_triplet_loss(jnp.asarray(emb), jnp.asarray(labels), margin=0.3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # masking an example removes it as an anchor and as a candidate
    mask = np.ones(8)
    mask[0] = 0
    got_masked = np.asarray(losses.batch_hard_triplet_loss(jnp.asarray(emb), jnp.asarray(labels), 0.3, jnp.asarray(mask)))
    assert got_masked[0] == 0.0 and got_masked[1] == 0.0  # example 1 lost its only positive


def test_gradients_are_correct():
    protos = jnp.asarray(B[:3])
    labels = jnp.array([0, 1, 2, 2, 1, 0])
    kw = dict(order=2, modes=["rev"], atol=5e-2, rtol=5e-2)
    check_grads(lambda a, b: losses.pairwise_squared_euclidean(a, b).sum(), (A, B), **kw)
    check_grads(lambda a, b: losses.pairwise_cosine_similarity(a, b).sum(), (A, B), **kw)
    check_grads(lambda a: losses.prototypes(a, labels, 3).sum(), (A,), **kw)
    check_grads(lambda a, c: losses.prototypical_loss(a, labels, c).sum(), (A, protos), **kw)
    check_grads(lambda a, c: losses.prototypical_loss(a, labels, c, "cosine", 5.0).sum(), (A, protos), **kw)
    check_grads(lambda a, p, n: losses.triplet_loss(a, p, n, margin=5.0).sum(), (A[:3], A[3:], B[:3]), **kw)
    check_grads(lambda a, b: losses.contrastive_loss(a, b, jnp.array([True, False, True]), 5.0).sum(),
                (A[:3], B[:3]), **kw)
    check_grads(lambda e: losses.batch_hard_triplet_loss(e, jnp.array([0, 0, 1, 1, 2, 2]), 5.0).sum(), (A,),
                order=1, modes=["rev"], atol=5e-2, rtol=5e-2)


def test_shape_errors_name_the_function():
    with pytest.raises(ValueError, match="pairwise_squared_euclidean"):
        losses.pairwise_squared_euclidean(A, B[:, :3])
    with pytest.raises(ValueError, match="prototypes"):
        losses.prototypes(jnp.asarray(A), jnp.zeros(5, jnp.int32), 3)
    with pytest.raises(ValueError, match="distance"):
        losses.prototype_logits(jnp.asarray(A), jnp.asarray(B), "manhattan")
    with pytest.raises(ValueError, match="one weight per example"):
        losses.mask_weights(jnp.ones(2), 3)


def test_view_alignment_matches_numpy_with_class_and_padding_exclusions():
    a, b = A[:5], B[:5]
    labels = np.array([0, 1, 0, 2, 1])
    mask = np.array([1, 1, 1, 1, 0], np.float32)
    logits = -2.0 * np_sq_euclid(a, b)
    want = []
    for i in range(5):
        cand = [j for j in range(5) if (labels[j] != labels[i] and mask[j]) or j == i]
        row = logits[i, cand]
        want.append((np.log(np.exp(row - row.max()).sum()) + row.max() - logits[i, i]) * mask[i])
    got = losses.view_alignment_loss(jnp.asarray(a), jnp.asarray(b), jnp.asarray(labels), 2.0, jnp.asarray(mask))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # no labels: every (unpadded) example is a candidate
    full = losses.view_alignment_loss(jnp.asarray(a), jnp.asarray(b))
    row = -np_sq_euclid(a, b)
    np.testing.assert_allclose(full, [np.log(np.exp(r).sum()) - r[i] for i, r in enumerate(row)], rtol=1e-5)
    g = jax.grad(lambda x: losses.view_alignment_loss(x, jnp.asarray(b), jnp.asarray(labels), 2.0,
                                                      jnp.asarray(mask)).sum())(jnp.asarray(a))
    assert np.isfinite(np.asarray(g)).all() and not np.asarray(g)[4].any()  # padded anchor: no gradient
    # cosine: scored like prototype_logits(distance="cosine")
    cos = 3.0 * np_cosine(a, b)
    np.testing.assert_allclose(losses.view_alignment_loss(jnp.asarray(a), jnp.asarray(b), scale=3.0, distance="cosine"),
                               [np.log(np.exp(r).sum()) - r[i] for i, r in enumerate(cos)], rtol=1e-5)
    with pytest.raises(ValueError, match="view_alignment_loss"):
        losses.view_alignment_loss(jnp.asarray(a), jnp.asarray(b[:, :2]))
