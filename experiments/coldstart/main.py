"""Cold-start recommendation on MovieLens-100K: meta-learning (MeLU's protocol) against baselines.

Each user is a task (support: K rated items, query: up to 10 other rated
items). An embedding + MLP rating network (MeLU's design) is meta-trained on
existing users rating existing items; MAML and Meta-SGD adapt only its
decision layers per user; ``ridge`` (R2-D2 / ALPaCA style) puts a closed-form
Bayesian linear head, solved per user on the support ratings with meta-learned
prior and precisions, on meta-learned features of the same body. Baselines run
on the same splits and test episodes: global mean, item mean, ``user_offset``
(item mean + the user's shrunk offset from the support ratings), ``mf`` (matrix
factorisation of the training ratings, the new user folded in by ridge
regression on the support ratings), the same network
trained on all training users without adaptation ("pretrained": MAML with zero
inner steps), and that network fine-tuned on each user's support set
("finetuned").

Reported per scenario (warm; new users on existing items; existing users on
new items; new users on new items) and K (5/10/20): MAE, RMSE and nDCG@3 of the
query items, each a mean over users with a 95% CI. Per user: MAE is the mean
absolute error of the user's query ratings, RMSE the root of their mean
squared error, and nDCG@3 ranks the query items by predicted rating with gain
2^rating - 1 and discount 1/log2(1 + rank) (ties keep the random query order).

Outputs under ``--workdir``: ``results.json``, ``mae_vs_k.png`` and per-method
``<method>/metrics.jsonl`` + ``<method>/checkpoints/`` (an interrupted run
resumes). ``--dev`` runs the same protocol on the existing users alone
(re-split into training and validation users), which is how the defaults were
chosen without looking at the test users.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
import time
from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import common
from jaxmeta import data as jdata
from jaxmeta import learners, losses, nets, train
from jaxmeta.scenarios import coldstart

META_METHODS = ("maml", "meta_sgd", "fomaml", "ridge")
NET_BASELINES = ("pretrained", "finetuned")
TABLE_BASELINES = ("global_mean", "item_mean", "user_offset", "mf")
METHODS = META_METHODS + NET_BASELINES + TABLE_BASELINES
METRICS = ("mae", "rmse", "ndcg3")
HEADLINE = ("new_user_existing_item", 10)


@dataclasses.dataclass(frozen=True)
class Config:
    methods: Tuple[str, ...] = dataclasses.field(
        default=("maml", "meta_sgd", "ridge", "pretrained", "finetuned", "global_mean", "item_mean", "user_offset",
                 "mf"),
        metadata={"help": f"methods to run, from {METHODS}"})
    scenarios: Tuple[str, ...] = dataclasses.field(default=coldstart.SCENARIOS, metadata={"help": "test scenarios"})
    shots: Tuple[int, ...] = dataclasses.field(default=(5, 10, 20), metadata={"help": "support sizes K at test time"})
    query_shots: int = dataclasses.field(default=10, metadata={"help": "most query items per user"})
    train_shots: Tuple[int, ...] = dataclasses.field(default=(5, 20),
                                                     metadata={"help": "support size range (min, max) in training"})
    steps: int = dataclasses.field(default=2000, metadata={"help": "meta-training steps per network"})
    meta_batch: int = dataclasses.field(default=32, metadata={"help": "users per meta-step"})
    outer_lr: float = dataclasses.field(default=1e-3, metadata={"help": "Adam step size of the outer loop"})
    inner_lr: float = dataclasses.field(default=0.1, metadata={"help": "inner SGD step size (Meta-SGD: initial rates)"})
    inner_steps: int = dataclasses.field(default=5, metadata={"help": "inner steps, training and test"})
    finetune_lr: float = dataclasses.field(default=0.01, metadata={"help": "fine-tuning SGD step size (baseline)"})
    finetune_steps: int = dataclasses.field(default=20, metadata={"help": "fine-tuning steps (baseline)"})
    ridge_features: int = dataclasses.field(default=64, metadata={
        "help": "ridge: width of the feature layer under the closed-form per-user head"})
    ridge_precision: float = dataclasses.field(default=1.0, metadata={
        "help": "ridge: initial prior precision (penalty) of the per-user head weights (meta-learned per feature)"})
    embed_dim: int = dataclasses.field(default=16, metadata={"help": "embedding width per feature"})
    hidden: Tuple[int, ...] = dataclasses.field(default=(64, 64), metadata={"help": "decision layer widths"})
    item_dropout: float = dataclasses.field(default=0.1, metadata={"help": "training rate of hiding the item id"})
    offset_shrinkage: Tuple[float, float] = dataclasses.field(default=(5.0, 5.0), metadata={
        "help": "user_offset baseline: pseudo-counts pulling the item bias and the user offset toward 0"})
    mf_factors: int = dataclasses.field(default=10, metadata={"help": "mf baseline: latent factors per item"})
    mf_penalty: Tuple[float, float] = dataclasses.field(default=(10.0, 2.0), metadata={
        "help": "mf baseline: ridge penalty of the factors in training (ALS) and of a new user's fold-in "
                "(chosen on the dev split)"})
    rating_shift: float = dataclasses.field(
        default=0.0, metadata={"help": "meta-augmentation: random per-user rating offset range in training"})
    user_features: bool = dataclasses.field(
        default=False, metadata={"help": "feed the demographic features (they let the network memorise training users)"})
    loss: str = dataclasses.field(default="mse", metadata={"help": "training loss: mse or mae"})
    new_user_fraction: float = dataclasses.field(default=0.2, metadata={"help": "share of users that are new"})
    new_item_fraction: float = dataclasses.field(default=0.2, metadata={"help": "share of items (newest) that are new"})
    warm_query_fraction: float = dataclasses.field(default=0.2,
                                                   metadata={"help": "latest share of ratings held out (warm)"})
    dev: bool = dataclasses.field(default=False, metadata={"help": "tune on existing users only (no test users)"})
    data_dir: str = dataclasses.field(default="", metadata={"help": "data folder (default: $JAXMETA_DATA)"})
    steps_per_call: int = dataclasses.field(default=500, metadata={"help": "meta-steps per compiled call"})
    eval_batch: int = dataclasses.field(default=128, metadata={"help": "test users per compiled call"})
    seed: int = dataclasses.field(default=0, metadata={"help": "PRNG seed (split, episodes, training)"})


QUICK = {"steps": 200, "steps_per_call": 100, "shots": (5, 10), "methods": ("maml", "pretrained", "finetuned",
                                                                         "global_mean", "item_mean", "user_offset",
                                                                         "mf")}


def check_config(config: Config) -> None:
    for m in config.methods:
        if m not in METHODS:
            raise ValueError(f"methods: unknown method {m!r}; choose from {METHODS}.")
    for s in config.scenarios:
        if s not in coldstart.SCENARIOS:
            raise ValueError(f"scenarios: unknown scenario {s!r}; choose from {coldstart.SCENARIOS}.")
    if config.loss not in ("mse", "mae"):
        raise ValueError(f"loss: expected 'mse' or 'mae', got {config.loss!r}.")
    if len(config.train_shots) not in (1, 2):
        raise ValueError(f"train_shots: expected K or (min K, max K), got {config.train_shots}.")
    if config.mf_factors < 1 or len(config.mf_penalty) != 2 or min(config.mf_penalty) <= 0:
        raise ValueError(f"mf_factors / mf_penalty: expected >= 1 factor and two positive penalties, got "
                         f"{config.mf_factors} / {config.mf_penalty}.")
    if len(config.offset_shrinkage) != 2 or min(config.offset_shrinkage) < 0:
        raise ValueError(f"offset_shrinkage: expected two pseudo-counts >= 0 (item, user), "
                         f"got {config.offset_shrinkage}.")
    if not config.shots or min(config.shots) < 1:
        raise ValueError(f"shots: expected positive support sizes, got {config.shots}.")


def load_data(config: Config, key):
    """Data, split and the training-rating mean; ``dev`` keeps only existing users and re-splits them."""
    ratings = jdata.load_movielens_100k(config.data_dir or None)
    data = coldstart.coldstart_data(ratings)
    if not config.user_features:
        data = data._replace(user_x=np.zeros_like(data.user_x))
    fractions = dict(new_user_fraction=config.new_user_fraction, new_item_fraction=config.new_item_fraction,
                     warm_query_fraction=config.warm_query_fraction)
    split = coldstart.coldstart_split(key, data, **fractions)
    if config.dev:
        keep = ~split.new_user[data.user]
        data = data._replace(user=data.user[keep], item=data.item[keep], rating=data.rating[keep],
                             timestamp=data.timestamp[keep])
        # test users keep their rows in the feature table but have no ratings left
        split = coldstart.coldstart_split(jax.random.fold_in(key, 1), data, **fractions)
    return data, split


def build_net(config: Config, data, mean_rating: float, method: str = "maml") -> nets.Network:
    """The rating network (``ridge``: the same body with a ``ridge_features``-wide feature layer as its head)."""
    if method == "ridge":
        return nets.embedding_mlp(data.vocab_sizes, num_dense=data.num_dense, embed_dim=config.embed_dim,
                                  hidden=config.hidden, out=config.ridge_features)
    return nets.embedding_mlp(data.vocab_sizes, num_dense=data.num_dense, embed_dim=config.embed_dim,
                              hidden=config.hidden, head_bias=mean_rating)


def build_learner(config: Config, net, method: str, *, test: bool = False,
                  mean_rating: float = 0.0) -> learners.MetaLearner:
    """The learner of ``method`` (``test``: the fine-tuned baseline's test-time loop)."""
    loss_fn = losses.squared_error if config.loss == "mse" else losses.absolute_error
    if method == "ridge":  # the per-user head is solved in closed form (no inner steps)
        return learners.ridge_head(net, loss_fn, precision=config.ridge_precision, bias_init=mean_rating,
                                   metrics={"mae": losses.absolute_error})
    kw = dict(adapt_filter=nets.decision_layers(config.hidden), metrics={"mae": losses.absolute_error})
    if method == "maml":
        return learners.maml(net, loss_fn, inner_lr=config.inner_lr, inner_steps=config.inner_steps, **kw)
    if method == "fomaml":
        return learners.fomaml(net, loss_fn, inner_lr=config.inner_lr, inner_steps=config.inner_steps, **kw)
    if method == "meta_sgd":
        return learners.meta_sgd(net, loss_fn, inner_lr=config.inner_lr, inner_steps=config.inner_steps, **kw)
    if method in NET_BASELINES:
        steps = config.finetune_steps if (method == "finetuned" and test) else 0
        return learners.maml(net, loss_fn, inner_lr=config.finetune_lr, inner_steps=steps, **kw)
    raise ValueError(f"methods: {method!r} is not a network method.")


def train_method(config: Config, net, method: str, sample, workdir: str, key, *, progress: bool, fresh: bool,
                 mean_rating: float = 0.0, mesh=None):
    """Meta-trains one network (resuming from ``workdir/<method>`` when possible), sharded over ``mesh`` if given."""
    learner = build_learner(config, net, method, mean_rating=mean_rating)
    method_dir = os.path.join(workdir, method)
    if fresh and os.path.isdir(method_dir):
        shutil.rmtree(method_dir)
    chunk = min(config.steps_per_call, config.steps)
    start = time.perf_counter()
    result = train.fit(learner, optax.adam(config.outer_lr), sample, key=key, num_steps=config.steps,
                       device_sampling=True, steps_per_call=chunk, log_every=chunk,
                       checkpoint_every=chunk * max(1, config.steps // chunk // 4), workdir=method_dir,
                       progress=progress, desc=method, mesh=common.stage_mesh(mesh, config.meta_batch, "--meta-batch"))
    jax.block_until_ready(result.state.params)
    seconds = time.perf_counter() - start
    trained = max((r.get("elapsed", 0.0) for r in result.history), default=seconds)
    return result.state.params, seconds, trained


def make_predictor(learner: learners.MetaLearner, batch: int):
    """``predict(params, episodes, key) -> [E, Q]``: adapt to each support set, predict the query ratings.

    Episodes go through one compiled function in chunks of ``batch`` (the last
    chunk padded), so every scenario and K reuse the same compilation.
    """

    @jax.jit
    def run(params, eps, key):
        def one(ep, k):
            task_params = learner.adapt(params, ep, k)
            return learner.predict(params, task_params, ep.query_x)[:, 0]

        return jax.vmap(one)(eps, jax.random.split(key, eps.support_x.shape[0]))

    def predict(params, episodes, key) -> np.ndarray:
        total = episodes.support_x.shape[0]
        out = []
        for i, start in enumerate(range(0, total, batch)):
            chunk = jax.tree_util.tree_map(lambda a: np.asarray(a)[start:start + batch], episodes)
            n = chunk.support_x.shape[0]
            if n < batch:
                chunk = jax.tree_util.tree_map(lambda a: np.concatenate([a, np.repeat(a[-1:], batch - n, 0)]), chunk)
            out.append(np.asarray(run(params, chunk, jax.random.fold_in(key, i)))[:n])
        return np.concatenate(out)

    return predict


def user_metrics(predictions, episodes) -> Dict[str, np.ndarray]:
    """Per-user MAE, RMSE and nDCG@3 of query predictions ``[E, Q]`` (masked)."""
    pred = jnp.asarray(predictions)[..., None]
    y, mask = episodes.query_y, episodes.query_mask
    per = jax.vmap(lambda p, t, m: (losses.masked_mean(losses.absolute_error(p, t), m),
                                    losses.masked_mean(losses.squared_error(p, t), m)))
    mae, mse = per(pred, y, mask)
    ndcg = losses.ndcg_at_k(pred[..., 0], y[..., 0], mask, k=3)
    return {"mae": np.asarray(mae), "rmse": np.sqrt(np.asarray(mse)), "ndcg3": np.asarray(ndcg)}


def _baseline_biases(data, split, shrinkage: Tuple[float, float]):
    """``(mu, item_bias)`` of the training ratings, the bias shrunk with ``shrinkage[0]`` pseudo-ratings."""
    ratings, items = data.rating[split.train].astype(np.float64), data.item[split.train]
    mean = float(ratings.mean())
    counts = np.bincount(items, minlength=data.num_items)
    sums = np.bincount(items, ratings - mean, data.num_items)
    return mean, sums / np.maximum(counts + shrinkage[0], 1e-12)


def _user_offsets(residual, mask, user_shrink: float):
    """Per-row offset ``sum(residual) / (n + b)`` over the masked entries (the last axis)."""
    return (residual * mask).sum(-1) / np.maximum(mask.sum(-1) + user_shrink, 1e-12)


def _ridge_from_sums(gram, rhs, penalty: float):
    """Ridge solutions ``[..., d]`` from per-row sums ``X^T X`` ``[..., d, d]`` and ``X^T y`` ``[..., d]``."""
    return np.linalg.solve(gram + penalty * np.eye(gram.shape[-1]), rhs[..., None])[..., 0]


def _ridge_solve(features, targets, mask, penalty: float):
    """Per-row ridge regression ``[..., n, d], [..., n] -> [..., d]`` over the masked examples."""
    f = features * mask[..., None]
    return _ridge_from_sums(np.einsum("...nd,...ne->...de", f, f), np.einsum("...nd,...n->...d", f, targets),
                            penalty)


def fit_item_factors(data, split, *, factors: int = Config.mf_factors, penalty: float = Config.mf_penalty[0],
                     shrinkage: Tuple[float, float] = Config.offset_shrinkage, iterations: int = 15,
                     seed: int = 0) -> np.ndarray:
    """Item factors ``[items, factors]`` of the ``mf`` baseline: alternating least squares on the training ratings.

    The targets are the residuals of the ``user_offset`` baseline (each training
    user's offset from all of the user's training ratings); user and item factors
    are solved in turn, each a ridge regression with ``penalty``. Items without
    training ratings (new items) get zero factors.

    Example:
      >>> import jax
      >>> from jaxmeta.scenarios import coldstart
      >>> data = coldstart.coldstart_data(coldstart.synthetic_ratings(jax.random.key(0)))
      >>> split = coldstart.coldstart_split(jax.random.key(1), data)
      >>> fit_item_factors(data, split, factors=3).shape == (data.num_items, 3)
      True
    """
    mean, item_bias = _baseline_biases(data, split, shrinkage)
    users, items = data.user[split.train], data.item[split.train]
    residual = data.rating[split.train].astype(np.float64) - mean - item_bias[items]
    n_users = data.num_users
    offsets = (np.bincount(users, residual, n_users)
               / np.maximum(np.bincount(users, minlength=n_users) + shrinkage[1], 1e-12))
    residual = residual - offsets[users]
    rng = np.random.default_rng(seed)
    user_f = rng.normal(0.0, 0.1, (n_users, factors))
    item_f = rng.normal(0.0, 0.1, (data.num_items, factors))

    def solve_rows(rows, n, feats):  # every user's (or item's) ridge regression at once, from bincount sums
        gram = np.stack([np.bincount(rows, feats[:, a] * feats[:, b], n)
                         for a in range(factors) for b in range(factors)], -1).reshape(n, factors, factors)
        rhs = np.stack([np.bincount(rows, feats[:, a] * residual, n) for a in range(factors)], -1)
        return _ridge_from_sums(gram, rhs, penalty)

    for _ in range(iterations):
        user_f = solve_rows(users, n_users, item_f[items])
        item_f = solve_rows(items, data.num_items, user_f[users])
    return item_f


def table_predictions(method: str, data, split, episodes, *,
                      shrinkage: Tuple[float, float] = Config.offset_shrinkage, item_factors=None,
                      fold_penalty: float = Config.mf_penalty[1]) -> np.ndarray:
    """Predictions ``[E, Q]`` of a baseline computed from the training ratings (no network).

    ``global_mean``: the mean training rating. ``item_mean``: the item's mean
    training rating (new items: the global mean). ``user_offset`` (the classic
    baseline predictor of collaborative filtering): global mean ``mu`` + item
    bias ``b_i = sum(r - mu) / (n_i + a)`` over the item's training ratings +
    user offset ``b_u = sum(r - mu - b_i) / (K + b)`` over the user's support
    ratings, with pseudo-counts ``(a, b) = shrinkage`` pulling both toward 0
    (new items: ``b_i = 0``). ``mf`` (matrix factorisation with fold-in):
    ``user_offset`` + ``q_i . p_u``, with ``item_factors`` ``q`` from
    :func:`fit_item_factors` and the new user's ``p_u`` the ridge regression
    (``fold_penalty``) of the support residuals on their items' factors.

    Example:
      >>> import jax
      >>> from jaxmeta.scenarios import coldstart
      >>> data = coldstart.coldstart_data(coldstart.synthetic_ratings(jax.random.key(0)))
      >>> split = coldstart.coldstart_split(jax.random.key(1), data)
      >>> test = coldstart.coldstart_episodes(jax.random.key(2), data, split, scenario="new_user_existing_item",
      ...                                     support_shots=3, query_shots=4)
      >>> table_predictions("user_offset", data, split, test.episodes).shape == test.episodes.query_y.shape[:2]
      True
    """
    if method not in TABLE_BASELINES:
        raise ValueError(f"methods: {method!r} is not a table baseline; choose from {TABLE_BASELINES}.")
    items = np.asarray(episodes.aux["query_item"])
    if method in ("global_mean", "item_mean"):
        mean, item_mean = _baseline_biases(data, split, (0.0, 0.0))  # new items: no ratings -> global mean
        return np.broadcast_to(mean if method == "global_mean" else (mean + item_mean)[items],
                               items.shape).astype(np.float32)
    mean, item_bias = _baseline_biases(data, split, shrinkage)
    support_items = np.asarray(episodes.aux["support_item"])
    mask = np.asarray(episodes.support_mask, np.float64)
    residual = np.asarray(episodes.support_y, np.float64)[..., 0] - mean - item_bias[support_items]
    offset = _user_offsets(residual, mask, shrinkage[1])
    pred = mean + item_bias[items] + offset[:, None]
    if method == "mf":
        if item_factors is None:
            raise ValueError("mf: pass item_factors=fit_item_factors(data, split, ...).")
        user_f = _ridge_solve(item_factors[support_items], residual - offset[:, None], mask, fold_penalty)
        pred = pred + np.einsum("eqd,ed->eq", item_factors[items], user_f)
    return pred.astype(np.float32)


def headline_check(results: dict, values: dict, methods) -> dict:
    """The issue's targets at (new users on existing items, K=10), computed from the results.

    ``values[method][metric]`` are the per-user values of that cell; the paired
    difference (best meta-learner minus best baseline, same users and query
    items) comes with its own 95% CI.
    """
    scenario, k = HEADLINE
    cell = results.get(scenario, {}).get(str(k))
    if not cell:
        return {"available": False}
    meta = [m for m in methods if m in META_METHODS and m in cell]
    base = [m for m in methods if m not in META_METHODS and m in cell]
    if not meta or not base:
        return {"available": False}
    best_meta = min(meta, key=lambda m: cell[m]["mae"]["mean"])
    best_base = min(base, key=lambda m: cell[m]["mae"]["mean"])
    best_base_ndcg = max(base, key=lambda m: cell[m]["ndcg3"]["mean"])
    ratio = cell[best_meta]["mae"]["mean"] / cell[best_base]["mae"]["mean"]
    return {
        "available": True, "scenario": scenario, "K": k,
        "best_meta_method": best_meta, "best_baseline_by_mae": best_base, "best_baseline_by_ndcg": best_base_ndcg,
        "mae_reduction": 1.0 - ratio,
        "paired_mae_difference": train.summarize(values[best_meta]["mae"] - values[best_base]["mae"]),
        "paired_ndcg3_difference": train.summarize(values[best_meta]["ndcg3"] - values[best_base_ndcg]["ndcg3"]),
        "mae_target_met": bool(ratio <= 0.97),
        "ndcg_target_met": bool(cell[best_meta]["ndcg3"]["mean"] > cell[best_base_ndcg]["ndcg3"]["mean"]),
    }


def plot(config: Config, results: dict, path: str) -> None:
    plt = common.pyplot()
    if plt is None:
        return
    scenarios = [s for s in config.scenarios if s in results]
    fig, axes = plt.subplots(1, len(scenarios), figsize=(4.2 * len(scenarios), 3.6), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios):
        shots = sorted(int(k) for k in results[scenario])
        for method in config.methods:
            means = [results[scenario][str(k)][method]["mae"]["mean"] for k in shots]
            cis = [results[scenario][str(k)][method]["mae"]["ci95"] for k in shots]
            ax.errorbar(shots, means, yerr=cis, marker="o", capsize=3, label=method)
        ax.set_title(scenario.replace("_", " "), fontsize=10)
        ax.set_xlabel("support ratings per user (K)")
        ax.set_xticks(shots)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("query MAE (mean over users, 95% CI)")
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train_and_evaluate(config: Config, workdir: str, *, progress: bool = True, fresh: bool = False,
                       mesh=None) -> dict:
    """Trains every network method, evaluates every method on the same episodes, writes results and a plot.

    ``mesh``: shard each meta-batch over these devices (``common.device_mesh``; ``None``: one device).
    """
    check_config(config)
    common.stage_mesh(mesh, config.meta_batch, "--meta-batch")  # a meta-batch the devices cannot split fails now
    os.makedirs(workdir, exist_ok=True)
    key = jax.random.key(config.seed)
    split_key, episode_key, train_key, eval_key = jax.random.split(key, 4)
    data, split = load_data(config, split_key)
    mean_rating = float(data.rating[split.train].mean())
    net_for = lambda method: build_net(config, data, mean_rating, method)
    train_shots = tuple(config.train_shots) if len(config.train_shots) == 2 else int(config.train_shots[0])
    samplers = {shift: coldstart.coldstart_sampler(data, split, num_tasks=config.meta_batch, support_shots=train_shots,
                                                   query_shots=config.query_shots, item_dropout=config.item_dropout,
                                                   rating_shift=shift)
                for shift in {0.0, config.rating_shift}}

    pad = max(config.shots)
    tests, users = {}, {}
    for scenario in config.scenarios:
        for k in config.shots:
            test = coldstart.coldstart_episodes(episode_key, data, split, scenario=scenario, support_shots=k,
                                                query_shots=config.query_shots, pad_support_to=pad)
            tests[scenario, k] = test.episodes
            users[scenario] = users.get(scenario, {})
            users[scenario][str(k)] = {"users": int(test.users.size), "skipped": test.num_skipped,
                                       "candidates": test.num_candidates}
            print(f"{scenario:>24} K={k:<2}  {test.users.size:4d} users  ({test.num_skipped} of "
                  f"{test.num_candidates} skipped: fewer than K+1 ratings)", flush=True)

    params, timings = {}, {}
    for method in config.methods:
        trained_as = "pretrained" if method == "finetuned" else method
        if method in TABLE_BASELINES or trained_as in params:
            continue
        # every network trains on the same task stream (same key)
        # (meta-augmentation is for meta-learners: the non-adapting network gets the plain ratings)
        sample = samplers[0.0 if trained_as == "pretrained" else config.rating_shift]
        params[trained_as], seconds, trained = train_method(config, net_for(trained_as), trained_as, sample, workdir,
                                                            train_key, progress=progress, fresh=fresh,
                                                            mean_rating=mean_rating, mesh=mesh)
        timings[trained_as] = {"wall_seconds": seconds, "train_seconds": trained}
        print(f"{trained_as:>12}  trained {config.steps} steps in {seconds:.1f}s", flush=True)

    item_factors = (fit_item_factors(data, split, factors=config.mf_factors, penalty=config.mf_penalty[0],
                                     shrinkage=config.offset_shrinkage, seed=config.seed)
                    if "mf" in config.methods else None)
    predictors = {m: make_predictor(build_learner(config, net_for(m), m, test=True, mean_rating=mean_rating),
                                    config.eval_batch)
                  for m in config.methods if m not in TABLE_BASELINES}
    results: Dict[str, dict] = {}
    headline_values: Dict[str, dict] = {}
    for (scenario, k), episodes in tests.items():
        cell = results.setdefault(scenario, {}).setdefault(str(k), {})
        for method in config.methods:
            if method in TABLE_BASELINES:
                pred = table_predictions(method, data, split, episodes, shrinkage=config.offset_shrinkage,
                                         item_factors=item_factors, fold_penalty=config.mf_penalty[1])
            else:
                trained_as = "pretrained" if method == "finetuned" else method
                pred = predictors[method](params[trained_as], episodes, eval_key)
            values = user_metrics(pred, episodes)
            cell[method] = {name: train.summarize(v) for name, v in values.items()}
            if (scenario, k) == HEADLINE:
                headline_values[method] = values
        row = "  ".join(f"{m}: {cell[m]['mae']['mean']:.3f}/{cell[m]['ndcg3']['mean']:.3f}" for m in config.methods)
        print(f"{scenario:>24} K={k:<2} MAE/nDCG@3  {row}", flush=True)

    check = headline_check(results, headline_values, config.methods)
    if check.get("available"):
        print(f"headline ({HEADLINE[0]}, K={HEADLINE[1]}): {check['best_meta_method']} MAE "
              f"{100 * check['mae_reduction']:.1f}% below {check['best_baseline_by_mae']} (target 3%: "
              f"{'met' if check['mae_target_met'] else 'not met'}); nDCG@3 above {check['best_baseline_by_ndcg']}: "
              f"{'yes' if check['ndcg_target_met'] else 'no'}; paired MAE difference "
              f"{check['paired_mae_difference']['mean']:+.4f} ± {check['paired_mae_difference']['ci95']:.4f}", flush=True)
    output = {
        "experiment": "cold-start recommendation on MovieLens-100K (MeLU protocol)",
        "split": "dev (existing users only, re-split)" if config.dev else "test",
        "config": dataclasses.asdict(config),
        "metrics": {"mae": "mean over users of the user's query MAE", "rmse": "mean over users of the user's "
                    "query RMSE", "ndcg3": "mean over users of nDCG@3, gain 2^r - 1, discount 1/log2(1 + rank)",
                    "ci95": "1.96 * std / sqrt(users)"},
        "users": users,
        "results": results,
        "headline": check,
        "train_seconds": timings,
        "train_devices": common.mesh_size(mesh),
        "metadata": common.run_metadata(),
    }
    train.write_json(os.path.join(workdir, "results.json"), output)
    plot(config, results, os.path.join(workdir, "mae_vs_k.png"))
    return output


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING)
    return common.run_experiment(argv, Config, QUICK, __doc__.split("\n\n")[0], train_and_evaluate,
                                 lambda config: "coldstart" + ("-dev" if config.dev else ""))


if __name__ == "__main__":
    sys.exit(main())
