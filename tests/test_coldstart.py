"""Cold-start scenario, rating network and recommendation metrics (against NumPy references)."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmeta import Episode, learners, losses, nets, validate_episode
from jaxmeta.scenarios import coldstart


def toy_ratings(seed=0, num_users=40, num_items=50, per_user=(3, 30)):
    """A MovieLens-shaped data set: users with 3..30 ratings, items with dates and genres."""
    rng = np.random.default_rng(seed)
    user, item = [], []
    for u in range(num_users):
        n = rng.integers(*per_user)
        user += [u] * n
        item += list(rng.choice(num_items, n, replace=False))
    n = len(user)
    dates = np.datetime64("1950-01-01") + rng.integers(0, 48 * 365, num_items).astype("timedelta64[D]")
    dates[0] = np.datetime64("NaT")
    return SimpleNamespace(
        user=np.asarray(user), item=np.asarray(item), rating=rng.integers(1, 6, n),
        timestamp=rng.integers(8e8, 9e8, n), age=rng.integers(10, 70, num_users), gender=rng.integers(0, 2, num_users),
        occupation=rng.integers(0, 3, num_users), zip_code=np.array([f"{rng.integers(0, 99999):05d}" for _ in
                                                                    range(num_users)]), occupations=("a", "b", "c"),
        release_date=dates, genres=(rng.random((num_items, 4)) < 0.3).astype(np.float32))


@pytest.fixture(scope="module")
def toy():
    data = coldstart.coldstart_data(toy_ratings())
    return data, coldstart.coldstart_split(jax.random.key(0), data, new_user_fraction=0.25, new_item_fraction=0.2)


# ------------------------------------------------------------------ features and splits


def test_feature_encoding():
    raw = toy_ratings()
    raw.age[:7] = [5, 18, 24, 25, 45, 50, 56]
    raw.zip_code[:2] = ["94043", "T8H1N"]
    raw.release_date[1:5] = np.array(["1925-05-01", "1935-01-01", "1993-01-01", "2001-01-01"], "datetime64[D]")
    data = coldstart.coldstart_data(raw)
    np.testing.assert_array_equal(data.user_x[:7, 0], [0, 1, 1, 2, 4, 5, 6])
    np.testing.assert_array_equal(data.user_x[:2, 3], [9, 10])
    np.testing.assert_array_equal(data.item_x[:5, 0], [0, 1, 2, 11, 16])  # unknown, <1930, 1930s, 1993, >=1998
    np.testing.assert_array_equal(data.item_x[:, 1], np.arange(1, 51))
    assert data.vocab_sizes == (7, 2, 3, 11, 17, 51) and data.num_dense == 4 and data.num_features == 10


def test_bad_ratings_are_rejected():
    raw = toy_ratings()
    raw.rating[3] = 6
    with pytest.raises(ValueError, match="rating: 6.0 at row 3 is outside 1..5"):
        coldstart.coldstart_data(raw)
    raw = toy_ratings()
    raw.item[5] = 50
    with pytest.raises(ValueError, match="ratings.item: index 50 at row 5"):
        coldstart.coldstart_data(raw)
    raw = toy_ratings()
    raw.user[0] = -1
    with pytest.raises(ValueError, match="ratings.user"):
        coldstart.coldstart_data(raw)


def test_split_is_disjoint_deterministic_and_by_release_date(toy):
    data, split = toy
    again = coldstart.coldstart_split(jax.random.key(0), data, new_user_fraction=0.25, new_item_fraction=0.2)
    other = coldstart.coldstart_split(jax.random.key(1), data, new_user_fraction=0.25, new_item_fraction=0.2)
    for a, b in zip(split, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(split.new_user, other.new_user)
    assert split.new_user.sum() == 10
    assert not (split.train & split.warm_query).any()
    existing = ~split.new_user[data.user] & ~split.new_item[data.item]
    np.testing.assert_array_equal(split.train | split.warm_query, existing)
    # every new item was released no earlier than every existing item with a known date
    known = ~np.isnat(data.release_date)
    assert data.release_date[split.new_item].min() > data.release_date[~split.new_item & known].max()
    assert not split.new_item[0]  # unknown date: existing
    # warm queries are each user's latest existing-item ratings
    for u in np.flatnonzero(~split.new_user):
        held, kept = split.warm_query & (data.user == u), split.train & (data.user == u)
        if held.any():
            assert data.timestamp[held].min() >= data.timestamp[kept].max()
    with pytest.raises(ValueError, match="new_user_fraction"):
        coldstart.coldstart_split(jax.random.key(0), data, new_user_fraction=1.5)


@pytest.mark.parametrize("scenario", coldstart.SCENARIOS)
def test_episodes_respect_the_scenario(toy, scenario, caplog):
    data, split = toy
    with caplog.at_level(logging.INFO, logger="jaxmeta.scenarios.coldstart"):
        test = coldstart.coldstart_episodes(jax.random.key(3), data, split, scenario=scenario, support_shots=4,
                                            query_shots=5, pad_support_to=6)
    ep = test.episodes
    validate_episode(ep, batched=True)
    e = ep.support_x.shape[0]
    assert ep.support_x.shape == (e, 6, 10) and ep.query_x.shape == (e, 5, 10) and ep.query_y.shape == (e, 5, 1)
    np.testing.assert_array_equal(ep.support_mask.sum(1), 4)  # exactly K real support rows
    assert (np.asarray(ep.query_mask).sum(1) >= 1).all()
    assert test.num_skipped > 0 and f"skipped {test.num_skipped} of {test.num_candidates}" in caplog.text
    assert np.isfinite(np.asarray(ep.query_x)).all()
    new_user = scenario.startswith("new_user")
    new_item = scenario.endswith("new_item")
    key_of = {(u, i): r for u, i, r in zip(data.user, data.item, data.rating)}
    for row in range(e):
        u = int(test.users[row])
        assert split.new_user[u] == new_user
        sm, qm = np.asarray(ep.support_mask[row]) > 0, np.asarray(ep.query_mask[row]) > 0
        s_items = np.asarray(ep.aux["support_item"][row])[sm]
        q_items = np.asarray(ep.aux["query_item"][row])[qm]
        assert not set(s_items) & set(q_items)  # support and query are disjoint
        assert (split.new_item[np.r_[s_items, q_items]] == new_item).all()
        # targets are the user's ratings; features carry the user's row and (for existing items) the item id
        np.testing.assert_array_equal(np.asarray(ep.query_y[row, qm, 0]), [key_of[u, i] for i in q_items])
        np.testing.assert_array_equal(np.asarray(ep.query_x[row, qm, :4]), np.broadcast_to(data.user_x[u], (qm.sum(), 4)))
        np.testing.assert_array_equal(np.asarray(ep.query_x[row, qm, 5]), 0 if new_item else q_items + 1)
        assert not np.asarray(ep.support_x[row, ~sm]).any() and not np.asarray(ep.query_y[row, ~qm]).any()
        if scenario == "warm":
            assert all(split.train[(data.user == u) & (data.item == i)].any() for i in s_items)
            assert all(split.warm_query[(data.user == u) & (data.item == i)].any() for i in q_items)


def test_episodes_are_deterministic_and_nested_across_k(toy):
    data, split = toy
    make = lambda key, k: coldstart.coldstart_episodes(key, data, split, scenario="existing_user_new_item",  # noqa
                                                       support_shots=k, query_shots=3)
    a, b, c = make(jax.random.key(5), 3), make(jax.random.key(5), 3), make(jax.random.key(6), 3)
    for x, y in zip(jax.tree_util.tree_leaves(a.episodes), jax.tree_util.tree_leaves(b.episodes)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.episodes.aux["support_item"], c.episodes.aux["support_item"])
    big = make(jax.random.key(5), 5)
    rows = {u: i for i, u in enumerate(a.users)}
    for j, u in enumerate(big.users):  # the K=3 support set is inside the K=5 one
        assert set(np.asarray(a.episodes.aux["support_item"][rows[u]])) <= set(np.asarray(big.episodes.aux["support_item"][j]))
    assert big.num_skipped >= a.num_skipped


def test_users_with_too_few_ratings_are_skipped_never_nan(toy):
    data, split = toy
    with pytest.raises(ValueError, match="no user of scenario"):
        coldstart.coldstart_episodes(jax.random.key(0), data, split, scenario="new_user_new_item", support_shots=40)
    with pytest.raises(ValueError, match="scenario"):
        coldstart.coldstart_episodes(jax.random.key(0), data, split, scenario="cold", support_shots=4)
    with pytest.raises(ValueError, match="pad_support_to"):
        coldstart.coldstart_episodes(jax.random.key(0), data, split, scenario="warm", support_shots=4,
                                     pad_support_to=2)


def test_sampler_is_pure_jax_deterministic_and_uses_training_ratings_only(toy):
    data, split = toy
    sample = jax.jit(coldstart.coldstart_sampler(data, split, num_tasks=16, support_shots=(2, 5), query_shots=4,
                                                 item_dropout=0.5))
    ep = sample(jax.random.key(0))
    validate_episode(ep, batched=True)
    assert ep.support_x.shape == (16, 5, 10) and ep.query_x.shape == (16, 4, 10)
    for x, y in zip(jax.tree_util.tree_leaves(ep), jax.tree_util.tree_leaves(sample(jax.random.key(0)))):
        np.testing.assert_array_equal(x, y)
    sizes = np.asarray(ep.support_mask).sum(1)
    assert sizes.min() >= 2 and sizes.max() <= 5 and len(set(sizes)) > 1
    train_pairs = {(data.user_x[u].tobytes(), i + 1, r) for u, i, r in
                   zip(data.user[split.train], data.item[split.train], data.rating[split.train])}
    dropped = 0
    for x, y, m in ((ep.support_x, ep.support_y, ep.support_mask), (ep.query_x, ep.query_y, ep.query_mask)):
        x, y, m = np.asarray(x), np.asarray(y), np.asarray(m) > 0
        assert not x[~m].any()
        for row, target in zip(x[m], y[m][:, 0]):
            if row[5] == 0:
                dropped += 1  # item id hidden by item_dropout
                continue
            assert (row[:4].tobytes(), int(row[5]), target) in train_pairs
    assert dropped > 0
    with pytest.raises(ValueError, match="support_shots"):
        coldstart.coldstart_sampler(data, split, num_tasks=4, support_shots=(6, 3))
    with pytest.raises(ValueError, match="rating_shift"):
        coldstart.coldstart_sampler(data, split, num_tasks=4, rating_shift=-1.0)


def test_rating_shift_moves_a_whole_task_by_one_offset(toy):
    data, split = toy
    plain = coldstart.coldstart_sampler(data, split, num_tasks=32, support_shots=3, query_shots=4)
    shifted = coldstart.coldstart_sampler(data, split, num_tasks=32, support_shots=3, query_shots=4, rating_shift=1.0)
    a, b = plain(jax.random.key(7)), shifted(jax.random.key(7))
    np.testing.assert_array_equal(a.support_x, b.support_x)  # same users and items, only targets move
    offsets = []
    for ya, yb, m in ((a.support_y, b.support_y, a.support_mask), (a.query_y, b.query_y, a.query_mask)):
        d = np.asarray(yb - ya)[..., 0]
        m = np.asarray(m) > 0
        offsets.append(np.where(m, d, np.nan))
    both = np.concatenate(offsets, 1)
    per_task = np.nanmean(both, 1)
    np.testing.assert_allclose(both, np.where(np.isnan(both), np.nan, per_task[:, None]), atol=1e-5)
    assert np.abs(per_task).max() <= 1.0 and np.std(per_task) > 0.1


# ------------------------------------------------------------------ network


def test_embedding_mlp_and_decision_layer_adaptation(toy):
    data, split = toy
    net = nets.embedding_mlp(data.vocab_sizes, num_dense=data.num_dense, embed_dim=4, hidden=(8, 8), head_bias=3.5)
    test = coldstart.coldstart_episodes(jax.random.key(0), data, split, scenario="warm", support_shots=3)
    ep = jax.tree_util.tree_map(lambda a: a[0], test.episodes)
    learner = learners.maml(net, losses.squared_error, inner_lr=0.1, inner_steps=2,
                            adapt_filter=nets.decision_layers((8, 8)))
    meta = jax.jit(learner.init)(jax.random.key(1), ep)
    assert sorted(meta["net"]) == ["embed_0", "embed_1", "embed_2", "embed_3", "embed_4", "embed_5", "embed_dense",
                                   "head", "hidden_0", "hidden_1"]
    np.testing.assert_allclose(meta["net"]["head"]["bias"], [3.5])
    adapted = jax.jit(learner.adapt)(meta, ep, jax.random.key(2))
    for name in meta["net"]:
        same = all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(meta["net"][name]),
                                                        jax.tree_util.tree_leaves(adapted[name])))
        assert same == name.startswith("embed"), name
    bad = ep.query_x.at[0, 0].set(99.0)  # age bucket outside its table
    out = net.apply(meta["net"], bad)
    assert np.isnan(out[0]).all() and np.isfinite(out[1:]).all()
    with pytest.raises(ValueError, match="x: expected"):
        net.apply(meta["net"], ep.query_x[:, :5])


# ------------------------------------------------------------------ metrics vs NumPy


def ndcg_reference(scores, rel, mask, k, gain):
    """Plain NumPy nDCG@k of one list (stable ranking, padding removed first)."""
    scores, rel = scores[mask > 0], rel[mask > 0]
    if rel.size == 0:
        return 0.0
    g = 2.0 ** rel - 1 if gain == "exponential" else rel.astype(float)
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]
    disc = 1 / np.log2(np.arange(2, len(order) + 2))
    dcg = float(np.sum(g[order] * disc))
    idcg = float(np.sum(np.sort(g)[::-1][: len(order)] * disc))
    return dcg / idcg if idcg > 0 else 0.0


@pytest.mark.parametrize("gain", ["exponential", "linear"])
@pytest.mark.parametrize("k", [1, 3, 10])
def test_ndcg_matches_numpy(gain, k):
    rng = np.random.default_rng(k)
    scores = rng.integers(1, 4, (200, 7)).astype(np.float32)  # many ties
    rel = rng.integers(1, 6, (200, 7)).astype(np.float32)
    mask = (rng.random((200, 7)) < 0.7).astype(np.float32)
    mask[0] = 0
    mask[1] = [1, 0, 0, 0, 0, 0, 0]
    got = np.asarray(losses.ndcg_at_k(scores, rel, mask, k=k, gain=gain))
    want = [ndcg_reference(s, r, m, k, gain) for s, r, m in zip(scores, rel, mask)]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert got[0] == 0.0 and got[1] == 1.0


def test_ndcg_edge_cases():
    assert float(losses.ndcg_at_k(jnp.array([3.0, 2.0, 1.0]), jnp.array([3.0, 2.0, 1.0]))) == 1.0
    worst = float(losses.ndcg_at_k(jnp.array([1.0, 2.0]), jnp.array([5.0, 1.0]), k=1))
    assert worst == pytest.approx(1.0 / 31.0)
    assert np.isnan(losses.ndcg_at_k(jnp.array([jnp.nan, 1.0]), jnp.array([1.0, 2.0])))
    assert float(losses.ndcg_at_k(jnp.array([jnp.nan, 1.0]), jnp.array([1.0, 2.0]), jnp.array([0.0, 1.0]))) == 1.0
    np.testing.assert_array_equal(losses.ndcg_at_k(jnp.ones((2, 3, 4)), jnp.ones((2, 3, 4))).shape, (2, 3))
    with pytest.raises(ValueError, match="k:"):
        losses.ndcg_at_k(jnp.ones(3), jnp.ones(3), k=0)
    with pytest.raises(ValueError, match="gain"):
        losses.ndcg_at_k(jnp.ones(3), jnp.ones(3), gain="log")
    with pytest.raises(ValueError, match="mask"):
        losses.ndcg_at_k(jnp.ones(3), jnp.ones(3), jnp.ones(2))


def test_absolute_error_and_masked_mae_match_numpy():
    rng = np.random.default_rng(0)
    p, t = rng.normal(size=(20, 1)).astype(np.float32), rng.normal(size=(20, 1)).astype(np.float32)
    m = (rng.random(20) < 0.5).astype(np.float32)
    np.testing.assert_allclose(losses.absolute_error(p, t), np.abs(p - t)[:, 0], rtol=1e-6)
    np.testing.assert_allclose(losses.masked_mean(losses.absolute_error(p, t), m),
                               np.abs(p - t)[m > 0].mean(), rtol=1e-6)
    with pytest.raises(ValueError, match="targets"):
        losses.absolute_error(p, t[:, 0])


# ------------------------------------------------------------------ real data and the experiment


@pytest.mark.data
def test_movielens_scenarios_on_real_data():
    from jaxmeta.data import load_movielens_100k

    data = coldstart.coldstart_data(load_movielens_100k())
    split = coldstart.coldstart_split(jax.random.key(0), data)
    assert data.num_features == 25 and data.vocab_sizes == (7, 2, 21, 11, 17, 1683)
    assert split.new_user.sum() == 189 and split.new_item.sum() == 351
    test = coldstart.coldstart_episodes(jax.random.key(1), data, split, scenario="new_user_existing_item",
                                        support_shots=10)
    assert test.episodes.support_x.shape[1:] == (10, 25) and test.users.size + test.num_skipped == test.num_candidates
    assert np.isfinite(np.asarray(test.episodes.query_y)).all()


def test_table_baselines_match_a_per_user_loop():
    from experiments.coldstart import main as coldstart_main

    data = coldstart.coldstart_data(coldstart.synthetic_ratings(jax.random.key(0), num_users=40, num_items=30))
    split = coldstart.coldstart_split(jax.random.key(1), data)
    eps = coldstart.coldstart_episodes(jax.random.key(2), data, split, scenario="new_user_existing_item",
                                       support_shots=4, query_shots=5, pad_support_to=6).episodes
    train_r, train_i = data.rating[split.train].astype(np.float64), data.item[split.train]
    mu = train_r.mean()
    a, b = 3.0, 2.0
    pred = coldstart_main.table_predictions("user_offset", data, split, eps, shrinkage=(a, b))
    item_mean = coldstart_main.table_predictions("item_mean", data, split, eps)
    for e in range(pred.shape[0]):
        def bias(i):
            r = train_r[train_i == i]
            return (r - mu).sum() / (r.size + a)
        support = [(int(i), float(y)) for i, y, m in zip(np.asarray(eps.aux["support_item"][e]),
                                                         np.asarray(eps.support_y[e, :, 0]),
                                                         np.asarray(eps.support_mask[e])) if m]
        assert len(support) == 4  # padding rows are ignored
        offset = sum(y - mu - bias(i) for i, y in support) / (len(support) + b)
        for q, item in enumerate(np.asarray(eps.aux["query_item"][e])):
            np.testing.assert_allclose(pred[e, q], mu + bias(item) + offset, rtol=1e-5)
            rated = train_r[train_i == item]
            np.testing.assert_allclose(item_mean[e, q], rated.mean() if rated.size else mu, rtol=1e-5)
    # no item shrinkage and an infinitely shrunk user offset give back the item means
    no_user = coldstart_main.table_predictions("user_offset", data, split, eps, shrinkage=(0.0, 1e12))
    np.testing.assert_allclose(no_user, item_mean, rtol=1e-5)
    with pytest.raises(ValueError, match="table baseline"):
        coldstart_main.table_predictions("maml", data, split, eps)
    for bad in ((1.0,), (1.0, -1.0)):
        with pytest.raises(ValueError, match="offset_shrinkage"):
            coldstart_main.check_config(coldstart_main.Config(offset_shrinkage=bad))


def test_mf_baseline_fits_the_training_ratings_and_folds_in_each_user_by_ridge():
    from experiments.coldstart import main as coldstart_main

    data = coldstart.coldstart_data(coldstart.synthetic_ratings(jax.random.key(0), num_users=60, num_items=40))
    split = coldstart.coldstart_split(jax.random.key(1), data)
    shrink = (2.0, 3.0)
    factors = coldstart_main.fit_item_factors(data, split, factors=3, penalty=1.0, shrinkage=shrink)
    rated = np.bincount(data.item[split.train], minlength=data.num_items) > 0
    assert factors.shape == (data.num_items, 3) and rated.any() and not rated.all()
    np.testing.assert_array_equal(factors[~rated], 0.0)  # items without training ratings: no factors
    eps = coldstart.coldstart_episodes(jax.random.key(2), data, split, scenario="new_user_existing_item",
                                       support_shots=4, query_shots=5, pad_support_to=6).episodes
    offset = coldstart_main.table_predictions("user_offset", data, split, eps, shrinkage=shrink)
    pred = coldstart_main.table_predictions("mf", data, split, eps, shrinkage=shrink, item_factors=factors,
                                            fold_penalty=0.5)
    train_r, train_i = data.rating[split.train].astype(np.float64), data.item[split.train]
    mu = train_r.mean()
    for e in range(pred.shape[0]):  # a per-user loop: ridge on the support residuals after the offset baseline
        m = np.asarray(eps.support_mask[e]) > 0
        s_items = np.asarray(eps.aux["support_item"][e])[m]
        bias = np.array([(train_r[train_i == i] - mu).sum() / ((train_i == i).sum() + shrink[0]) for i in s_items])
        resid = np.asarray(eps.support_y[e, :, 0], np.float64)[m] - mu - bias
        resid = resid - resid.sum() / (m.sum() + shrink[1])
        q = factors[s_items]
        user = np.linalg.solve(q.T @ q + 0.5 * np.eye(3), q.T @ resid)
        expected = offset[e] + factors[np.asarray(eps.aux["query_item"][e])] @ user
        np.testing.assert_allclose(pred[e], expected, rtol=1e-4, atol=1e-4)
    # the factors explain part of the training residuals that the offset baseline leaves: each training
    # user's ridge fit on the item factors (what ALS solves for) lowers their squared error
    users, items = data.user[split.train], data.item[split.train]
    mean, item_bias = coldstart_main._baseline_biases(data, split, shrink)
    resid = train_r - mean - item_bias[items]
    resid -= (np.bincount(users, resid, data.num_users)
              / (np.bincount(users, minlength=data.num_users) + shrink[1]))[users]
    before = after = 0.0
    for u in np.unique(users):
        q, r = factors[items[users == u]], resid[users == u]
        fit = coldstart_main._ridge_solve(q[None], r[None], np.ones((1, r.size)), 1.0)[0]
        before, after = before + (r ** 2).sum(), after + ((r - q @ fit) ** 2).sum()
    assert after < 0.9 * before
    with pytest.raises(ValueError, match="item_factors"):
        coldstart_main.table_predictions("mf", data, split, eps)
    for bad in dict(mf_factors=0), dict(mf_penalty=(1.0, 0.0)), dict(mf_penalty=(1.0,)):
        with pytest.raises(ValueError, match="mf_"):
            coldstart_main.check_config(coldstart_main.Config(**bad))


def test_coldstart_help(capsys):
    from experiments.coldstart import main as coldstart_main

    with pytest.raises(SystemExit) as exit_info:
        coldstart_main.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--workdir" in out and "--inner-steps" in out


@pytest.mark.data
def test_coldstart_tiny_run_writes_results_and_plot(tmp_path):
    from experiments.coldstart import main as coldstart_main

    methods = ["maml", "ridge", "pretrained", "finetuned", "global_mean", "item_mean", "user_offset", "mf"]
    args = ["--quick", "--workdir", str(tmp_path), "--steps", "4", "--steps-per-call", "2", "--no-progress",
            "--shots", "5", "10", "--scenarios", "new_user_existing_item", "--methods", *methods,
            "--hidden", "8", "--embed-dim", "4", "--finetune-steps", "2", "--inner-steps", "1",
            "--ridge-features", "4"]
    assert coldstart_main.main(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    cell = results["results"]["new_user_existing_item"]["10"]
    assert set(cell) == set(methods)
    for method in cell.values():
        assert set(method) == {"mae", "rmse", "ndcg3"}
        assert np.isfinite(method["mae"]["mean"]) and method["mae"]["n"] == results["users"]["new_user_existing_item"]["10"]["users"]
        assert 0.0 <= method["ndcg3"]["mean"] <= 1.0 and method["rmse"]["mean"] >= method["mae"]["mean"]
    assert results["headline"]["available"] and "mae_target_met" in results["headline"]
    assert (tmp_path / "mae_vs_k.png").stat().st_size > 0
    assert (tmp_path / "maml" / "metrics.jsonl").exists()
    with pytest.raises(ValueError, match="methods"):
        coldstart_main.main(["--workdir", str(tmp_path), "--methods", "bogus"])
