"""Imputation scenario, baselines and MetaImputer: tiny synthetic tables (one Letter test marked `data`)."""

import os

import jax
import numpy as np
import pytest

from jaxmeta import scenarios
from jaxmeta.impute import MetaImputer, iterative_ridge_impute, knn_impute, mean_impute


def _table(rows=120, cols=4, seed=0, rate=0.2):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(rows, 1))
    X = np.c_[z, 2 * z, -z, z**2, np.sin(z), np.abs(z)][:, :cols] + 0.05 * rng.normal(size=(rows, cols))
    M = rng.uniform(size=X.shape) >= rate
    return X, M


TINY = dict(k=6, hidden=(8,), adapt_steps=3, adapt_rows=60, batch_size=16)


# ----- masks ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_masks_rates_and_determinism(rate):
    X, _ = _table(rows=3000, cols=6)
    key = jax.random.key(3)
    for fn in (lambda k: scenarios.mcar_mask(k, X.shape, rate), lambda k: scenarios.mar_mask(k, X, rate),
               lambda k: scenarios.mnar_mask(k, X, rate)):
        m = np.asarray(fn(key))
        assert m.dtype == bool and m.shape == X.shape
        assert abs((1 - m.mean()) - rate) < 0.02
        assert np.array_equal(m, np.asarray(fn(key)))
        assert not np.array_equal(m, np.asarray(fn(jax.random.key(4))))


def test_mar_depends_on_observed_drivers_and_mnar_on_values():
    X, _ = _table(rows=4000, cols=6)
    m = np.asarray(scenarios.mar_mask(jax.random.key(0), X, 0.2))
    assert m.all(axis=0).sum() == 3  # half the columns are always observed (the drivers)
    m = np.asarray(scenarios.mnar_mask(jax.random.key(0), X, 0.3))
    for j in range(X.shape[1]):  # self-masking: hidden cells have larger values
        assert X[~m[:, j], j].mean() > X[m[:, j], j].mean()


def test_mask_errors():
    X, _ = _table()
    with pytest.raises(ValueError, match="rate"):
        scenarios.mcar_mask(jax.random.key(0), X.shape, 1.0)
    with pytest.raises(ValueError, match="rate"):
        scenarios.mar_mask(jax.random.key(0), X, 0.7)  # above the share of driven columns
    with pytest.raises(ValueError, match="2-D"):
        scenarios.mnar_mask(jax.random.key(0), X[:, 0], 0.2)


# ----- neighbours and episodes ----------------------------------------------------------------------------
def test_nearest_rows_matches_numpy_reference():
    X, M = _table(rows=50, cols=4)
    nb = scenarios.nearest_rows(X, M, 5, chunk=16)  # several chunks, last one padded
    Xz = np.where(M, X, 0.0)
    for q in (0, 17, 49):
        co = M[q] & M
        d = np.where(co.sum(1) > 0, ((Xz[q] - Xz) ** 2 * co).sum(1) / np.maximum(co.sum(1), 1), np.inf)
        d[q] = np.inf
        ref = np.argsort(d, kind="stable")[:5]
        np.testing.assert_allclose(np.asarray(nb.distance[q]), d[ref], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(nb.overlap[q]), co[np.asarray(nb.index[q])].sum(1) / 4)
        assert q not in np.asarray(nb.index[q]).tolist()


def test_imputation_episodes_contents():
    X, M = _table(rows=40, cols=4)
    rows, cols = np.array([0, 5, 9]), np.array([1, 2, 3])
    nb = scenarios.nearest_rows(X, M, 6, query_rows=rows)
    ep = scenarios.imputation_episodes(X, M, rows, cols, nb, targets=X[rows, cols])
    idx = np.asarray(nb.index)
    np.testing.assert_allclose(np.asarray(ep.support_mask), M[idx, cols[:, None]])
    np.testing.assert_allclose(np.asarray(ep.support_y[..., 0]), np.where(M, X, 0)[idx, cols[:, None]], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ep.query_y[:, 0, 0]), X[rows, cols], rtol=1e-6)
    mean = np.array([X[M[:, j], j].mean() for j in range(4)])
    np.testing.assert_allclose(np.asarray(ep.aux["column_mean"]), mean[cols], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ep.aux["missing_rate"]), 1 - M.mean(), rtol=1e-5)
    assert ep.aux["column"].tolist() == cols.tolist()
    assert np.asarray(ep.query_x[:, 0, 0]).tolist() == [0.0, 0.0, 0.0]  # the cell itself: distance 0


def test_masked_cell_tasks_never_target_missing_cells():
    X, M = _table(rows=80, cols=4, rate=0.3)
    Xn = np.where(M, X, 1e6)  # a missing cell's content must never appear as a target or context value
    ep = scenarios.masked_cell_tasks(jax.random.key(0), Xn, M, k=5, num_rows=80, extra_rate=0.3)
    assert np.all(np.abs(np.asarray(ep.query_y)) < 1e5)
    assert np.all(np.abs(np.asarray(ep.support_y)) < 1e5)
    again = scenarios.masked_cell_tasks(jax.random.key(0), Xn, M, k=5, num_rows=80, extra_rate=0.3)
    np.testing.assert_array_equal(np.asarray(ep.query_y), np.asarray(again.query_y))


# ----- baselines ------------------------------------------------------------------------------------------
def test_baselines_against_numpy_references():
    X, M = _table(rows=60, cols=3)
    Xn = np.where(M, X, np.nan)
    np.testing.assert_allclose(mean_impute(Xn)[~M], np.broadcast_to(np.nanmean(Xn, 0), X.shape)[~M])
    F = knn_impute(Xn, k=3, search=10, scale=False)
    q, j = np.argwhere(~M)[0]
    co = M[q] & M
    Xz = np.where(M, X, 0)
    d = np.where(co.sum(1) > 0, ((Xz[q] - Xz) ** 2 * co).sum(1) / np.maximum(co.sum(1), 1), np.inf)
    d[q] = np.inf
    order = [r for r in np.argsort(d, kind="stable")[:10] if M[r, j]][:3]
    np.testing.assert_allclose(F[q, j], X[order, j].mean(), rtol=1e-5)
    R = iterative_ridge_impute(Xn)
    assert np.sqrt(np.mean((R - X)[~M] ** 2)) < np.sqrt(np.mean((mean_impute(Xn) - X)[~M] ** 2))


# ----- MetaImputer ----------------------------------------------------------------------------------------
def test_meta_imputer_contract_and_save_load(tmp_path):
    X, M = _table()
    X = np.round(X * 4)  # integer-valued columns are rounded back
    X[:, 1] += 0.5  # ... except this one
    Xn = np.where(M, X, np.nan)
    Xn[3] = np.nan  # a row with every cell missing must still be imputed
    before = Xn.copy()
    imp = MetaImputer(**TINY)
    out = imp.fit_transform(Xn)
    np.testing.assert_array_equal(Xn, before)  # input not modified in place
    assert out.shape == X.shape and np.isfinite(out).all()
    seen = ~np.isnan(Xn)
    np.testing.assert_array_equal(out[seen], Xn[seen])
    np.testing.assert_array_equal(out[:, [0, 2, 3]], np.round(out[:, [0, 2, 3]]))
    assert (out >= np.nanmin(Xn, 0)).all() and (out <= np.nanmax(Xn, 0)).all()
    expected = np.nanmean(Xn, 0)
    expected[[0, 2, 3]] = np.round(expected[[0, 2, 3]])
    np.testing.assert_allclose(out[3], expected, rtol=1e-5)
    p = str(tmp_path / "imp.npz")
    imp.save(p)
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(p).st_mode & 0o777 == 0o666 & ~umask  # the usual permissions, not the temporary file's 0600
    np.testing.assert_array_equal(MetaImputer.load(p).transform(Xn), out)
    new_rows = Xn[:10].copy()  # a new table: matched against the fitted rows
    assert np.isfinite(imp.transform(new_rows)).all()
    assert np.array_equal(MetaImputer(**TINY).fit_transform(Xn), out)  # deterministic per seed


@pytest.mark.parametrize("method", ["cnp", "maml"])
def test_meta_train_then_fit_beats_mean(method):
    tables = [scenarios.synthetic_table(jax.random.key(i), 150, 4) for i in range(2)]
    imp = MetaImputer.meta_train(tables, key=jax.random.key(0), steps=60, missing_rates=(0.2,), rows_per_table=150,
                                 method=method, **dict(TINY, adapt_steps=20))
    assert imp.meta_params is not None and imp.timings_["meta_train_s"] > 0
    X, M = _table(rows=150)
    Xn = np.where(M, X, np.nan)
    out = imp.fit_transform(Xn)
    err = lambda F: np.sqrt(np.mean((F - X)[~M] ** 2))  # noqa: E731
    assert err(out) < err(mean_impute(Xn))


def test_bad_input_errors():
    X, M = _table()
    Xn = np.where(M, X, np.nan)
    imp = MetaImputer(**TINY)
    bad = Xn.copy()
    bad[:, 2] = np.nan
    with pytest.raises(ValueError, match=r"column\(s\) \[2\] are entirely NaN"):
        imp.fit(bad)
    with pytest.raises(ValueError, match="no observed"):
        imp.fit(np.full((10, 3), np.nan))
    with pytest.raises(TypeError, match="numeric dtype"):
        imp.fit(np.array([["a", "b"], ["c", "d"]]))
    bad = Xn.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="inf"):
        imp.fit(bad)
    with pytest.raises(ValueError, match="2-D"):
        imp.fit(Xn[:, 0])
    with pytest.raises(ValueError, match="transform: call fit"):
        MetaImputer(**TINY).transform(Xn)
    imp.fit(Xn)
    with pytest.raises(ValueError, match="has 3 columns but fit saw 4"):
        imp.transform(Xn[:, :3])
    with pytest.raises(ValueError, match="method"):
        MetaImputer("gain")


@pytest.mark.data
def test_letter_imputation_small_run():
    from jaxmeta.data.uci import load_letter

    if not os.environ.get("JAXMETA_DATA"):
        pytest.skip("JAXMETA_DATA is not set")
    X = load_letter()[:2000].astype(np.float64)
    M = np.asarray(scenarios.mcar_mask(jax.random.key(0), X.shape, 0.2))
    Xn = np.where(M, X, np.nan)
    out = MetaImputer(k=16, hidden=(32,), adapt_steps=100, adapt_rows=1000, batch_size=128).fit_transform(Xn)
    span = X.max(0) - X.min(0)
    err = lambda F: np.sqrt(np.mean(((F - X) / span)[~M] ** 2))  # noqa: E731
    assert np.array_equal(out, np.round(out))
    assert err(out) < err(mean_impute(Xn))


# ----- bad input: a clear error, the caller's array untouched ------------------------------------------------
def _bad_tables():
    X, M = _table()
    Xn = np.where(M, X, np.nan)
    col = Xn.copy()
    col[:, 2] = np.nan
    inf = Xn.copy()
    inf[0, 0] = np.inf
    return [
        (col, ValueError, r"column\(s\) \[2\] are entirely NaN"),
        (np.full((10, 3), np.nan), ValueError, "no observed"),
        (np.array([["a", "b"], ["c", "d"]]), TypeError, "numeric dtype"),
        (np.array([[1.0, None], [2.0, 3.0]], dtype=object), TypeError, "numeric dtype"),
        (inf, ValueError, "inf"),
        (Xn[:, 0].copy(), ValueError, "2-D"),
    ]


@pytest.mark.parametrize("case", range(6))
def test_bad_tables_raise_and_leave_input_unchanged(case):
    bad, error, message = _bad_tables()[case]
    before = bad.copy()
    for call in (MetaImputer(**TINY).fit, MetaImputer(**TINY).fit_transform, mean_impute, knn_impute,
                 iterative_ridge_impute):
        with pytest.raises(error, match=message):
            call(bad)
        if bad.dtype == object or bad.dtype.kind == "U":
            assert (bad == before).all() if bad.dtype.kind == "U" else bad.tolist() == before.tolist()
        else:
            np.testing.assert_array_equal(bad, before)  # NaN-aware equality: nothing modified in place


def test_transform_errors_leave_input_unchanged():
    X, M = _table()
    Xn = np.where(M, X, np.nan)
    imp = MetaImputer(**TINY).fit(Xn)
    for bad, message in ((Xn[:, :3].copy(), "has 3 columns but fit saw 4"), (np.full((5, 4), np.nan), "no observed"),
                         (np.where(np.isnan(Xn), np.inf, Xn), "inf")):
        before = bad.copy()
        with pytest.raises(ValueError, match=message):
            imp.transform(bad)
        np.testing.assert_array_equal(bad, before)
    before = Xn.copy()
    imp.transform(Xn)
    np.testing.assert_array_equal(Xn, before)


def test_no_complete_row_and_all_missing_rows_still_imputed():
    X, _ = _table(rows=80)
    Xn = X.copy()
    Xn[np.arange(80), np.arange(80) % 4] = np.nan  # every row misses one cell: no complete row
    Xn[[5, 6]] = np.nan  # and two rows miss every cell
    out = MetaImputer(**TINY).fit_transform(Xn)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[5], np.nanmean(Xn, 0), rtol=1e-5)  # column means of the fitted table
    np.testing.assert_array_equal(out[~np.isnan(Xn)], Xn[~np.isnan(Xn)])
    for call in (mean_impute, knn_impute, iterative_ridge_impute):
        assert np.isfinite(call(Xn)).all()


# ----- kNN-residual tasks and compiled programs --------------------------------------------------------------
def test_centred_tasks_are_knn_residuals():
    X, M = _table(rows=60, cols=4)
    rows, cols = np.array([0, 7, 9]), np.array([1, 2, 0])
    nb = scenarios.nearest_rows(X, M, 12, query_rows=rows)
    plain = scenarios.imputation_episodes(X, M, rows, cols, nb, targets=X[rows, cols])
    cent = scenarios.imputation_episodes(X, M, rows, cols, nb, targets=X[rows, cols], centre=True)
    assert np.asarray(plain.aux["offset"]).tolist() == [0.0, 0.0, 0.0]
    knn = []  # NumPy reference: mean of the first KNN neighbours that observe the column
    for e in range(3):
        idx = [r for r in np.asarray(nb.index[e]) if M[r, cols[e]]][: scenarios.imputation.KNN]
        knn.append(X[idx, cols[e]].mean())
    np.testing.assert_allclose(np.asarray(cent.aux["offset"]), knn, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(cent.query_y[:, 0, 0]) + knn, X[rows, cols], rtol=1e-5, atol=1e-6)
    sm = np.asarray(cent.support_mask)
    np.testing.assert_allclose(np.asarray(cent.support_y[..., 0]),
                               (np.asarray(plain.support_y[..., 0]) - np.array(knn)[:, None]) * sm, atol=1e-6)


def test_fit_transform_compiles_once_per_configuration():
    X, M = _table(rows=150)
    Xn = np.where(M, X, np.nan)
    first = MetaImputer(**TINY)
    first.fit_transform(Xn)
    prog = first._programs
    sizes = (prog.step._cache_size(), prog.predict._cache_size())
    second = MetaImputer(**dict(TINY, seed=1))  # same configuration, a different table size and seed
    assert second._programs is prog
    second.fit_transform(Xn[:100])
    assert (prog.step._cache_size(), prog.predict._cache_size()) == sizes


# ----- the Letter experiment's helpers ---------------------------------------------------------------------
def test_experiment_rejects_unknown_method_and_scores_like_gain(tmp_path):
    from experiments.imputation import main as exp

    with pytest.raises(ValueError, match="unknown method 'gain'"):
        exp.train_and_evaluate(exp.Config(methods=("gain",)), str(tmp_path))
    X = np.array([[0.0, 10.0], [2.0, 20.0], [4.0, 30.0]])
    lo, hi = X.min(0), X.max(0)
    seen = np.array([[True, False], [False, True], [True, True]])
    filled = np.where(seen, X, [[0, 14.6], [1.4, 0], [0, 0]])  # rounded to 15 and 1 before scoring
    expected = np.sqrt(((15 - 10) / 20) ** 2 / 2 + ((1 - 2) / 4) ** 2 / 2)
    assert abs(exp.rmse(filled, (X - lo) / (hi - lo), seen, lo, hi) - expected) < 1e-12
    v = [0.1, 0.12, 0.11, 0.13, 0.09]
    assert abs(exp._ci95(v) - 2.776 * np.std(v, ddof=1) / np.sqrt(5)) < 1e-12
