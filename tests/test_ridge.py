"""learners.ridge_head: the closed-form head equals the ridge / Bayesian-linear-regression solution, and its
meta-gradient (through the Cholesky solve) matches finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmeta import Episode, learners, losses, nets


def _episode(key, shots=7, queries=5, dim=3, outputs=2):
    k = jax.random.split(key, 4)
    x_s, x_q = jax.random.normal(k[0], (shots, dim)), jax.random.normal(k[1], (queries, dim))
    w = jax.random.normal(k[2], (dim, outputs))
    return Episode(x_s, x_s @ w + 0.1 * jax.random.normal(k[3], (shots, outputs)), x_q, x_q @ w)


def test_head_is_the_posterior_mean_of_bayesian_linear_regression():
    learner = learners.ridge_head(nets.mlp((6,), 4), precision=0.5, bias_init=1.5)
    ep = _episode(jax.random.key(0))
    p = jax.jit(learner.init)(jax.random.key(1), ep)
    p["log_precision"] = jnp.log(jnp.array([0.5, 1.0, 2.0, 3.0, 0.25]))
    p["prior_mean"] = p["prior_mean"] + 0.3
    w = np.asarray(learner.adapt(p, ep, None), np.float64)
    phi = np.asarray(nets.mlp((6,), 4).apply(p["net"], ep.support_x), np.float64)
    phi = np.concatenate([phi, np.ones((phi.shape[0], 1))], 1)
    lam = np.exp(np.asarray(p["log_precision"], np.float64))
    w0, y = np.asarray(p["prior_mean"], np.float64), np.asarray(ep.support_y)
    # argmin |y - phi w|^2 + sum_i lam_i |w_i - w0_i|^2, by solving the stacked least-squares problem
    a = np.concatenate([phi, np.diag(np.sqrt(lam))])
    b = np.concatenate([y, np.sqrt(lam)[:, None] * w0])
    expected = np.linalg.lstsq(a, b, rcond=None)[0]
    np.testing.assert_allclose(w, expected, rtol=1e-4, atol=1e-5)


def test_masked_support_rows_do_not_count():
    learner = learners.ridge_head(nets.mlp((6,), 4))
    ep = _episode(jax.random.key(2))
    p = jax.jit(learner.init)(jax.random.key(3), ep)
    mask = jnp.array([1, 1, 1, 0, 1, 0, 1], jnp.float32)
    junk = ep._replace(support_y=ep.support_y.at[3].set(1e3).at[5].set(-1e3), support_mask=mask)
    keep = np.flatnonzero(np.asarray(mask))
    only = ep._replace(support_x=ep.support_x[keep], support_y=ep.support_y[keep])
    np.testing.assert_allclose(learner.adapt(p, junk, None), learner.adapt(p, only, None), rtol=1e-4, atol=1e-5)


def test_meta_gradient_matches_finite_differences_float64():
    with jax.enable_x64(True):
        learner = learners.ridge_head(nets.mlp((5,), 3))
        ep = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), _episode(jax.random.key(4), outputs=1))
        p = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), learner.init(jax.random.key(5), ep))
        f = lambda p: learner.loss(p, learner.adapt(p, ep, None), ep)[0]
        grads = jax.grad(f)(p)
        flat, unravel = jax.flatten_util.ravel_pytree(p)
        g = jax.flatten_util.ravel_pytree(grads)[0]
        direction = jax.random.normal(jax.random.key(6), flat.shape, jnp.float64)
        eps = 1e-5
        fd = (f(unravel(flat + eps * direction)) - f(unravel(flat - eps * direction))) / (2 * eps)
        np.testing.assert_allclose(float(g @ direction), float(fd), rtol=1e-6)


def test_classification_is_equivariant_to_relabelling():
    learner = learners.ridge_head(nets.mlp((8,), 4), num_classes=3, metrics={"accuracy": losses.accuracy})
    x = jax.random.normal(jax.random.key(7), (6, 2))
    y = jnp.array([0, 0, 1, 1, 2, 2])
    ep = Episode(x, y, x, y)
    p = jax.jit(learner.init)(jax.random.key(8), ep)
    perm = jnp.array([2, 0, 1])
    out = learner.predict(p, learner.adapt(p, ep, None), x)
    out_perm = learner.predict(p, learner.adapt(p, ep._replace(support_y=perm[y]), None), x)
    np.testing.assert_allclose(out_perm[:, perm], out, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bad,match", [
    (dict(num_classes=1), "num_classes"),
    (dict(precision=0.0), "precision"),
])
def test_bad_settings_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        learners.ridge_head(nets.mlp((4,), 2), **bad)


def test_bad_targets_and_labels_raise_clear_errors():
    ep = _episode(jax.random.key(9))
    with pytest.raises(ValueError, match="num_classes=N"):
        learners.ridge_head(nets.mlp((4,), 2)).init(jax.random.key(0), ep._replace(support_y=jnp.zeros(7, jnp.int32)))
    labels = Episode(ep.support_x, jnp.array([0, 1, 2, 0, 1, 2, 5]), ep.query_x, jnp.zeros(5, jnp.int32))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        learners.ridge_head(nets.mlp((4,), 2), num_classes=3).init(jax.random.key(0), labels)
