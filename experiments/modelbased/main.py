"""Model-based meta-learning and task similarity: neural processes vs MAML, warm starts from similar tasks.

Part 1, sinusoid regression (MAML's Section 5.1 tasks). MAML and Meta-SGD are
trained with the sinusoid experiment's own functions (MAML Table 2 protocol:
K=10, one inner step, 70,000 steps), a Conditional Neural Process and a
latent-variable Neural Process with the neural-process protocol (support sets
of 3..20 points via support masks, 10 target points). All are evaluated on the
same 600 test functions at K=5, 10 and 20 (100 query points each): MAML and
Meta-SGD after 1 and 10 inner steps, the neural processes in one forward pass
(MSE, negative log-likelihood and the fraction of query targets inside the
predicted 95% band).

Part 2, task similarity. A bank of known tasks stores the parameters MAML
reaches on them (many inner steps on a large support set) and their task
embeddings (the support-loss gradient at the meta-initialisation, or the
moments of the support set). A new task's inner loop starts from the
similarity-weighted mean of its nearest known tasks instead of the
meta-initialisation. Measured against the plain initialisation and against
the mean of the whole bank (same start for every task, no similarity) on
(a) sinusoids and (b) a real table, UCI Letter: a task predicts one standardised
column from the 15 others (the target column zeroed) within the rows that share
a value of column 0 (x-box); known tasks use even x-box values, new tasks odd
values. MAML and a CNP are trained on the known groups (the data-mining
scenario built by ``scenarios.tabular_regression``).

Part 3, Omniglot classification (``omniglot``): a CNP (class-wise mean of
encoded Conv-4 embeddings, a decoder scoring every (class, query) pair) against
Prototypical Networks on the same Conv-4, both trained on the Omniglot
experiment's minimal split (20-way episodes) and tested on 1000 5-way 1-shot
and 5-shot episodes of unseen alphabets (the same episodes for both).

Part 4, MovieLens ratings (``movielens``): a CNP reading a new user's K
support ratings (the cold-start network's feature embeddings as its input
map) against MAML on the cold-start experiment's own split, test episodes
and training stream (new users on existing items, K=5/10/20), MAE per user.

``--parts`` picks the parts; parts of an earlier run in the same workdir are
kept in ``results.json``.

Outputs under ``--workdir``: ``results.json``, ``sinusoid_predictions.png``
(the CNP's and NP's predictive mean and 95% band on test tasks, MAML after 10
steps for reference), ``mse_vs_shots.png``, ``warm_start.png``, and a folder
per trained model with ``metrics.jsonl`` and checkpoints (a run resumes).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time
from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import common
from experiments.coldstart import main as coldstart_experiment
from experiments.omniglot import main as omniglot_experiment
from experiments.sinusoid import main as sinusoid_experiment
from jaxmeta import data, learners, losses, nets, scenarios, train
from jaxmeta.scenarios import coldstart

SINUSOID_METHODS = ("maml", "meta_sgd", "cnp", "np")
PARTS = ("sinusoid", "letter", "omniglot", "movielens")
MOVIELENS_METHODS = ("cnp", "maml", "item_mean")
MOVIELENS_SCENARIO = "new_user_existing_item"


@dataclasses.dataclass(frozen=True)
class Config:
    methods: Tuple[str, ...] = dataclasses.field(default=SINUSOID_METHODS, metadata={"help": "sinusoid methods"})
    maml_steps: int = dataclasses.field(default=70000, metadata={"help": "MAML/Meta-SGD meta-steps (paper: 70000)"})
    np_steps: int = dataclasses.field(default=20000, metadata={"help": "CNP/NP meta-steps on sinusoids"})
    np_width: int = dataclasses.field(default=128, metadata={"help": "width of every CNP/NP layer"})
    latent_dim: int = dataclasses.field(default=64, metadata={"help": "size of the NP latent z"})
    np_min_shots: int = dataclasses.field(default=3, metadata={"help": "smallest training support set (CNP/NP)"})
    np_max_shots: int = dataclasses.field(default=20, metadata={"help": "largest training support set (CNP/NP)"})
    np_queries: int = dataclasses.field(default=10, metadata={"help": "target points per training task (CNP/NP)"})
    np_lr: float = dataclasses.field(default=1e-3, metadata={"help": "Adam step size for CNP/NP"})
    meta_batch: int = dataclasses.field(default=25, metadata={"help": "tasks per meta-step"})
    predict_samples: int = dataclasses.field(default=32, metadata={"help": "z samples for NP evaluation"})
    test_shots: Tuple[int, ...] = dataclasses.field(default=(5, 10, 20), metadata={"help": "K at test time"})
    test_tasks: int = dataclasses.field(default=600, metadata={"help": "test tasks (same for every method)"})
    test_queries: int = dataclasses.field(default=100, metadata={"help": "query points per test task"})
    bank_tasks: int = dataclasses.field(default=2000, metadata={"help": "known tasks in the bank"})
    bank_shots: int = dataclasses.field(default=50, metadata={"help": "support points per known sinusoid task"})
    bank_steps: int = dataclasses.field(default=100, metadata={"help": "inner steps that fit a known task"})
    warm_k: Tuple[int, ...] = dataclasses.field(default=(5, 20), metadata={"help": "nearest tasks to combine"})
    warm_steps: Tuple[int, ...] = dataclasses.field(default=(0, 10), metadata={"help": "inner steps after a start"})
    parts: Tuple[str, ...] = dataclasses.field(default=PARTS, metadata={
        "help": "parts to run (letter, omniglot, movielens need the data; a part without data is skipped)"})
    data_dir: str = dataclasses.field(default="", metadata={"help": "data folder (default: $JAXMETA_DATA)"})
    letter_steps: int = dataclasses.field(default=10000, metadata={"help": "MAML/CNP meta-steps on Letter"})
    letter_hidden: Tuple[int, ...] = dataclasses.field(default=(64, 64), metadata={"help": "Letter MAML MLP"})
    letter_inner_lr: float = dataclasses.field(default=0.05, metadata={"help": "Letter MAML inner step size"})
    letter_shots: Tuple[int, ...] = dataclasses.field(default=(5, 10), metadata={"help": "K of new Letter tasks"})
    letter_bank_shots: int = dataclasses.field(default=100, metadata={"help": "support rows per known Letter task"})
    omniglot_train_shots: Tuple[int, ...] = dataclasses.field(default=(1, 5), metadata={
        "help": "one ProtoNet and one CNP trained per K (tested 5-way at every omniglot_test_shots)"})
    omniglot_test_shots: Tuple[int, ...] = dataclasses.field(default=(1, 5), metadata={"help": "K of test episodes"})
    omniglot_steps: int = dataclasses.field(default=1000, metadata={"help": "training episodes per Omniglot model"})
    omniglot_train_ways: int = dataclasses.field(default=20, metadata={"help": "ways of a training episode"})
    omniglot_queries: int = dataclasses.field(default=5, metadata={"help": "queries per class when training"})
    omniglot_lr: float = dataclasses.field(default=1e-3, metadata={"help": "Adam peak step size (cosine decay)"})
    omniglot_cnp_width: int = dataclasses.field(default=128, metadata={"help": "width of the CNP's MLP layers"})
    omniglot_test_episodes: int = dataclasses.field(default=1000, metadata={"help": "5-way test episodes per K"})
    omniglot_steps_per_call: int = dataclasses.field(default=50, metadata={"help": "Omniglot steps per compiled call"})
    movielens_methods: Tuple[str, ...] = dataclasses.field(default=MOVIELENS_METHODS, metadata={
        "help": "cnp, maml (the cold-start experiment's training) and item_mean, on the cold-start test episodes"})
    movielens_steps: int = dataclasses.field(default=2000, metadata={
        "help": "meta-steps of the MovieLens CNP and MAML (cold-start default: 2000)"})
    movielens_shots: Tuple[int, ...] = dataclasses.field(default=(5, 10, 20), metadata={
        "help": "K of new users (the cold-start experiment's values; episodes padded to the largest)"})
    movielens_cnp_width: int = dataclasses.field(default=64, metadata={"help": "width of the MovieLens CNP layers"})
    steps_per_call: int = dataclasses.field(default=1000, metadata={"help": "meta-steps per compiled call"})
    seed: int = dataclasses.field(default=0, metadata={"help": "PRNG seed"})


QUICK = {"maml_steps": 300, "np_steps": 300, "np_width": 32, "latent_dim": 8, "test_tasks": 60,
         "test_shots": (5,), "bank_tasks": 100, "bank_steps": 10, "warm_k": (5,), "letter_steps": 200,
         "letter_shots": (5,), "steps_per_call": 100, "predict_samples": 4, "omniglot_train_shots": (1,),
         "omniglot_steps": 20, "omniglot_steps_per_call": 10, "omniglot_test_episodes": 50, "omniglot_cnp_width": 32,
         "movielens_steps": 100, "movielens_shots": (10,), "movielens_cnp_width": 16}


def _seconds(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    jax.block_until_ready(out)
    return out, time.perf_counter() - start


def training_seconds(model_dir: str) -> float:
    """Time the training loop of a model spent, over every (resumed) run: the last ``elapsed`` of its log."""
    records = [r for r in train.read_jsonl(os.path.join(model_dir, "metrics.jsonl")) if r.get("kind") == "train"]
    return float(records[-1]["elapsed"]) if records else float("nan")


def _fit(learner, sample, key, steps, workdir, config, *, progress, fresh, desc, lr, optimizer=None,
         steps_per_call=None, mesh=None):
    """Trains (or resumes) one model under ``workdir``; returns its params and training-loop seconds.

    ``optimizer`` defaults to ``optax.adam(lr)``; ``steps_per_call`` to ``config.steps_per_call``; ``mesh``
    (a :func:`stage_mesh`'s) shards the meta-batch.
    """
    if fresh and os.path.isdir(workdir):
        import shutil

        shutil.rmtree(workdir)
    chunk = min(steps_per_call or config.steps_per_call, steps)
    optimizer = optax.adam(lr) if optimizer is None else optimizer
    params, _ = _seconds(
        lambda: train.fit(learner, optimizer, sample, key=key, num_steps=steps, device_sampling=True,
                          steps_per_call=chunk, log_every=chunk, checkpoint_every=max(steps // 5 // chunk, 1) * chunk,
                          workdir=workdir, progress=progress, desc=desc, mesh=mesh).state.params)
    return params, training_seconds(workdir)


def _median(values) -> float:
    """Median with diverged (NaN) tasks counted as the worst possible value."""
    v = np.asarray(values, np.float64)
    return float(np.median(np.where(np.isnan(v), np.inf, v)))


def _summary(values) -> dict:
    return {**train.summarize(np.asarray(values)), "median": _median(values)}


def _paired(a, b) -> dict:
    """Mean (95% CI) and median of the per-task difference ``a - b`` (same tasks; negative: ``a`` is better)."""
    return _summary(np.asarray(a, np.float64) - np.asarray(b, np.float64))


def _evaluate(learner, params, episodes, key, metric="loss") -> Tuple[dict, np.ndarray]:
    """Every metric's summary (mean, 95% CI, median, diverged count) and the per-task values of ``metric``."""
    out = train.evaluate(learner, params, episodes, key=key, batch_size=200, return_values=True, nan_policy="report")
    values = out.pop("values")
    return {k: {**v, "median": _median(values[k])} for k, v in out.items()}, values[metric]


# ---------------------------------------------------------------------------------------------------- models
def neural_process_learner(config: Config, kind: str, *, predict_samples: int = 1) -> learners.MetaLearner:
    """The CNP (``kind="cnp"``) or latent NP (``"np"``) used on both scenarios."""
    w = config.np_width
    if kind == "cnp":
        return learners.cnp(encoder_hidden=(w, w, w), decoder_hidden=(w, w))
    return learners.neural_process(encoder_hidden=(w, w, w), decoder_hidden=(w, w), latent_hidden=(w, w, w),
                                   latent_dim=config.latent_dim, predict_samples=predict_samples)


def np_sampler(base_sampler, config: Config):
    """Training episodes for neural processes: ``np_max_shots`` support slots, a random number of them kept."""

    def sample(key):
        k_eps, k_mask = jax.random.split(key)
        return scenarios.random_support_size(k_mask, base_sampler(k_eps), min_shots=config.np_min_shots,
                                             max_shots=config.np_max_shots)

    return sample


def maml_warm_starts(config: Config, make_learner, bank_learner, params, net, known, tests, key, support_mean=None):
    """Plain initialisation vs bank mean vs nearest-task warm starts, after 0 and 10 inner steps.

    ``make_learner(steps)`` is the MAML learner with ``steps`` inner steps;
    ``bank_learner`` fits the known tasks (many steps, a rolled loop).
    """
    plain, plain_values, rows = {}, {}, {}
    last = max(config.warm_steps)
    for steps in config.warm_steps:
        res, plain_values[steps] = _evaluate(make_learner(steps), params, tests, key)
        plain[f"{steps}_steps"] = res["loss"]
    rows["plain_init"] = plain
    embeddings = {
        "gradient": lambda ep: learners.gradient_embedding(net.apply, losses.squared_error, params["net"], ep),
        "moments": learners.moment_embedding,
    }
    bank_seconds = {}
    for name, embed in embeddings.items():
        bank, bank_seconds[name] = _seconds(
            lambda: learners.build_task_bank(bank_learner, params, known, embed, key=jax.random.fold_in(key, 1),
                                             batch_size=200))
        if name == "gradient":  # the no-similarity baseline: start every task at the mean of the bank
            mean_bank = learners.task_bank(bank.embeddings[:1],
                                           jax.tree_util.tree_map(lambda p: p.mean(0, keepdims=True), bank.params))
            rows["bank_mean"] = {}
            for steps in config.warm_steps:
                learner = learners.warm_start(make_learner(steps), mean_bank, embed, k=1)
                res, values = _evaluate(learner, params, tests, key)
                rows["bank_mean"][f"{steps}_steps"] = {**res["loss"],
                                                       f"minus_plain_{last}_steps": _paired(values, plain_values[last]),
                                                       "minus_plain_same_steps": _paired(values, plain_values[steps])}
        for k in config.warm_k:
            row = {}
            for steps in config.warm_steps:
                learner = learners.warm_start(make_learner(steps), bank, embed, k=k, temperature=None)
                res, values = _evaluate(learner, params, tests, key)
                row[f"{steps}_steps"] = {**res["loss"], f"minus_plain_{last}_steps": _paired(values, plain_values[last]),
                                         "minus_plain_same_steps": _paired(values, plain_values[steps])}
            rows[f"warm_{name}_k{k}"] = row
    out = {"rows": rows, "bank_seconds": bank_seconds, "bank_tasks": int(known.support_x.shape[0])}
    if support_mean is not None:
        out["support_mean_baseline"] = support_mean
    return out


# ---------------------------------------------------------------------------------------------------- sinusoid
def run_sinusoid(config: Config, workdir: str, *, progress: bool, fresh: bool, mesh=None) -> dict:
    sin_cfg = sinusoid_experiment.Config(methods=("maml",), steps=config.maml_steps, meta_batch=config.meta_batch,
                                         test_tasks=config.test_tasks, test_queries=config.test_queries,
                                         steps_per_call=min(config.steps_per_call, config.maml_steps),
                                         seed=config.seed)
    # the sinusoid experiment's keys: same training stream and, at K=5, the same 600 test tasks
    train_key, test_key, eval_key = jax.random.split(jax.random.key(config.seed), 3)
    tests, tasks = {}, None
    for k in config.test_shots:  # same key: the same 600 functions at every K, only the points differ
        tests[k], tasks = scenarios.sinusoid(test_key, num_tasks=config.test_tasks, support_shots=k,
                                             query_shots=config.test_queries, return_tasks=True)
    results: Dict[str, dict] = {f"K={k}": {} for k in config.test_shots}
    params, seconds, values = {}, {}, {}
    for method in config.methods:
        if method in ("maml", "meta_sgd"):
            params[method], _ = sinusoid_experiment.train_method(
                sin_cfg, method, workdir, train_key, progress=progress, fresh=fresh, mesh=mesh)
            seconds[method] = training_seconds(os.path.join(workdir, method))
            for k in config.test_shots:
                row = {}
                for steps in (0, 1, 10):
                    learner = sinusoid_experiment.build_learner(sin_cfg, method, steps)
                    res, v = _evaluate(learner, params[method], tests[k], eval_key)
                    row[f"{steps}_steps"] = {"mse": res["loss"]}
                    values[(method, k, steps)] = v
                results[f"K={k}"][method] = row
        elif method in ("cnp", "np"):
            base = functools.partial(scenarios.sinusoid, num_tasks=config.meta_batch,
                                     support_shots=config.np_max_shots, query_shots=config.np_queries)
            params[method], seconds[method] = _fit(
                neural_process_learner(config, method), np_sampler(base, config), train_key, config.np_steps,
                os.path.join(workdir, method), config, progress=progress, fresh=fresh, desc=method, lr=config.np_lr,
                mesh=common.stage_mesh(mesh, config.meta_batch, "--meta-batch"))
            test_learner = neural_process_learner(config, method, predict_samples=config.predict_samples)
            for k in config.test_shots:
                res, v = _evaluate(test_learner, params[method], tests[k], eval_key, metric="mse")
                results[f"K={k}"][method] = {m: res[m] for m in ("mse", "nll", "coverage95")}
                values[(method, k, 0)] = v
        else:
            raise ValueError(f"methods: unknown method {method!r}; choose from {SINUSOID_METHODS}.")
        print(f"{method:>9} training loop {seconds[method]:6.1f}s  " + "  ".join(
            f"K={k}: " + _short(results[f"K={k}"][method]) for k in config.test_shots), flush=True)
    comparisons = {}
    for k in config.test_shots:
        for method in ("cnp", "np"):
            if (method, k, 0) in values and ("maml", k, 10) in values:
                comparisons[f"K={k}: {method} minus maml_10_steps"] = _paired(values[(method, k, 0)],
                                                                               values[("maml", k, 10)])
    out = {"results": results, "paired_mse_differences": comparisons, "train_seconds": seconds}
    if "maml" in params:
        maml_for = lambda steps: sinusoid_experiment.build_learner(sin_cfg, "maml", steps)  # noqa: E731
        known = scenarios.sinusoid(jax.random.fold_in(test_key, 7), num_tasks=config.bank_tasks,
                                   support_shots=config.bank_shots, query_shots=1)
        first_k = config.test_shots[0]
        net = nets.mlp(sin_cfg.hidden, 1)
        bank_learner = learners.maml(net, losses.squared_error, inner_lr=sin_cfg.inner_lr,
                                     inner_steps=config.bank_steps, unroll=1)
        ws = maml_warm_starts(config, maml_for, bank_learner, params["maml"], net, known, tests[first_k], eval_key)
        ws["test_shots"] = first_k
        out["warm_start"] = ws
    plot_sinusoid(config, sin_cfg, params, tests, tasks, os.path.join(workdir, "sinusoid_predictions.png"))
    return out


def _short(row: dict) -> str:
    if "10_steps" in row:
        return f"{row['10_steps']['mse']['mean']:.3f} (10 steps)"
    return f"{row['mse']['mean']:.3f}, cover {row['coverage95']['mean']:.2f}"


# ---------------------------------------------------------------------------------------------------- letter
def letter_column_tasks(table: np.ndarray, *, group_column: int = 0):
    """Rows for "predict column j from the others within a group" tasks on a standardised table.

    Every target column ``j != group_column`` gives a copy of the table with
    column ``j`` zeroed (so inputs keep their meaning across tasks) and target
    ``table[:, j]``; the group of a row is ``(j, value of group_column)``.

    Returns ``(X, y, groups, group_values)`` stacked over target columns.
    """
    mean, std = table.mean(0), table.std(0)
    z = (table - mean) / std
    xs, ys, groups, values = [], [], [], []
    for j in range(table.shape[1]):
        if j == group_column:
            continue
        x = z.copy()
        x[:, j] = 0.0
        xs.append(x)
        ys.append(z[:, j])
        groups.append(j * 1000 + table[:, group_column].astype(np.int64))
        values.append(table[:, group_column].astype(np.int64))
    return (np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.float32), np.concatenate(groups),
            np.concatenate(values))


def run_letter(config: Config, workdir: str, *, progress: bool, fresh: bool, mesh=None) -> dict:
    table = data.load_letter(config.data_dir or None)
    X, y, groups, values = letter_column_tasks(table)
    known_rows, new_rows = values % 2 == 0, values % 2 == 1
    key = jax.random.fold_in(jax.random.key(config.seed), 2024)
    train_key, known_key, test_key, eval_key = jax.random.split(key, 4)
    train_sample = scenarios.tabular_regression(X[known_rows], y[known_rows], shots=10, queries=10,
                                                num_tasks=config.meta_batch, groups=groups[known_rows])
    net = nets.mlp(config.letter_hidden, 1)
    make_maml = lambda steps: learners.maml(net, losses.squared_error, inner_lr=config.letter_inner_lr,  # noqa: E731
                                            inner_steps=steps)
    seconds = {}
    maml_params, seconds["maml"] = _fit(make_maml(1), train_sample, train_key, config.letter_steps,
                                        os.path.join(workdir, "letter_maml"), config, progress=progress, fresh=fresh,
                                        desc="letter maml", lr=1e-3,
                                        mesh=common.stage_mesh(mesh, config.meta_batch, "--meta-batch"))
    np_base = scenarios.tabular_regression(X[known_rows], y[known_rows], shots=config.np_max_shots,
                                           queries=config.np_queries, num_tasks=config.meta_batch,
                                           groups=groups[known_rows])
    cnp_params, seconds["cnp"] = _fit(neural_process_learner(config, "cnp"), np_sampler(np_base, config), train_key,
                                      config.letter_steps, os.path.join(workdir, "letter_cnp"), config,
                                      progress=progress, fresh=fresh, desc="letter cnp", lr=config.np_lr,
                                      mesh=common.stage_mesh(mesh, config.meta_batch, "--meta-batch"))
    known = scenarios.tabular_regression(X[known_rows], y[known_rows], shots=config.letter_bank_shots, queries=1,
                                         num_tasks=config.bank_tasks, groups=groups[known_rows])(known_key)
    out = {"task_groups": {"known": int(len(np.unique(groups[known_rows]))),
                           "new": int(len(np.unique(groups[new_rows])))},
           "train_seconds": seconds, "by_shots": {}}
    for k in config.letter_shots:
        tests = scenarios.tabular_regression(X[new_rows], y[new_rows], shots=k, queries=config.test_queries,
                                             num_tasks=config.test_tasks, groups=groups[new_rows])(
            jax.random.fold_in(test_key, k))
        support_mean = np.mean((np.asarray(tests.query_y) - np.asarray(tests.support_y).mean(1, keepdims=True)) ** 2,
                               axis=(1, 2))
        res_cnp, _ = _evaluate(neural_process_learner(config, "cnp"), cnp_params, tests, eval_key, metric="mse")
        bank_learner = learners.maml(net, losses.squared_error, inner_lr=config.letter_inner_lr,
                                     inner_steps=config.bank_steps, unroll=1)
        ws = maml_warm_starts(config, make_maml, bank_learner, maml_params, net, known, tests, eval_key,
                              support_mean=_summary(support_mean))
        ws["rows"]["cnp"] = {m: res_cnp[m] for m in ("mse", "nll", "coverage95")}
        out["by_shots"][f"K={k}"] = ws
        rows = ws["rows"]
        best = min((r[s]["mean"], f"{n} {s}") for n, r in rows.items() if n.startswith("warm") for s in r)
        last = f"{max(config.warm_steps)}_steps"
        print(f"letter K={k}: MAML plain init, {last} {rows['plain_init'][last]['mean']:.3f}; best warm "
              f"start {best[0]:.3f} ({best[1]}); CNP {res_cnp['mse']['mean']:.3f}", flush=True)
    return out


# ---------------------------------------------------------------------------------------------------- omniglot
OMNIGLOT_METHODS = ("protonet", "cnp")


def omniglot_learner(config: Config, method: str, ways: int) -> learners.MetaLearner:
    """ProtoNet or CNP on the same Conv-4 embedding; neither has per-class weights, so one set of params
    trained on ``omniglot_train_ways``-way episodes is tested 5-way."""
    if method == "protonet":
        return learners.protonet(nets.conv4(), num_ways=ways)
    w = config.omniglot_cnp_width
    return learners.cnp(embedding=nets.conv4(), encoder_hidden=(w, w), decoder_hidden=(w,), num_ways=ways)


def run_omniglot(config: Config, workdir: str, *, progress: bool, fresh: bool, mesh=None) -> dict:
    """ProtoNet vs CNP on the Omniglot experiment's minimal split (unseen alphabets), 5-way test episodes.

    Both train on one many-way episode per step, so they run on one device whatever ``mesh``.
    """
    train_set, test_set = data.omniglot_splits("minimal", data_dir=config.data_dir or None)
    train_images, test_images = jnp.asarray(train_set.images[..., None]), jnp.asarray(test_set.images[..., None])
    # the Omniglot experiment's samplers and schedule (no augmentation: short runs do not overfit)
    om = omniglot_experiment.Config(metric_train_ways=config.omniglot_train_ways,
                                    metric_queries=config.omniglot_queries, augment=False,
                                    test_episodes=config.omniglot_test_episodes, seed=config.seed)
    key = jax.random.fold_in(jax.random.key(config.seed), 3)
    out = {"split": {"train_alphabets": sorted(set(train_set.alphabets)), "train_classes": len(train_set.characters),
                     "test_alphabets": sorted(set(test_set.alphabets)), "test_classes": len(test_set.characters)},
           "metric": f"accuracy on {config.omniglot_test_episodes} 5-way test episodes ({om.test_queries} "
                     "queries/class, the same episodes for every model), 95% CI",
           "train_seconds": {}, "results": {}, "paired_accuracy_differences": {}}
    for train_shots in config.omniglot_train_shots:
        sample, ways = omniglot_experiment.train_sampler(om, {"method": "protonet", "shots": train_shots},
                                                         train_images)
        values = {}
        for method in OMNIGLOT_METHODS:
            name = f"omniglot_{method}_{train_shots}shot"
            params, out["train_seconds"][name] = _fit(
                omniglot_learner(config, method, ways), sample, jax.random.fold_in(key, train_shots),
                config.omniglot_steps, os.path.join(workdir, name), config, progress=progress, fresh=fresh, desc=name,
                lr=config.omniglot_lr, optimizer=omniglot_experiment.optimizer(om, config.omniglot_lr,
                                                                               config.omniglot_steps),
                steps_per_call=config.omniglot_steps_per_call)
            for test_shots in config.omniglot_test_shots:
                test_sample = omniglot_experiment.test_sampler(om, test_images, test_set.alphabet_ids, 5, test_shots,
                                                               False, omniglot_experiment.eval_batch(5))
                res = train.evaluate(omniglot_learner(config, method, 5), params, test_sample,
                                     key=jax.random.fold_in(key, 1000 + test_shots),
                                     num_episodes=config.omniglot_test_episodes, return_values=True)
                values[method, test_shots] = res["values"]["accuracy"]
                label = f"5-way {test_shots}-shot"
                out["results"].setdefault(label, {})[f"{method}, trained {train_shots}-shot"] = res["accuracy"]
                print(f"omniglot {method:>8} (trained {ways}-way {train_shots}-shot, {out['train_seconds'][name]:.0f}s)"
                      f" | {label}: {100 * res['accuracy']['mean']:.2f} +- {100 * res['accuracy']['ci95']:.2f}%",
                      flush=True)
        for test_shots in config.omniglot_test_shots:
            out["paired_accuracy_differences"][f"5-way {test_shots}-shot, trained {train_shots}-shot: cnp minus "
                                               "protonet"] = _paired(values["cnp", test_shots],
                                                                     values["protonet", test_shots])
    out["train_ways"], out["train_steps"] = config.omniglot_train_ways, config.omniglot_steps
    return out


# ---------------------------------------------------------------------------------------------------- movielens
def _shift_ratings(episodes, delta: float):
    return episodes._replace(support_y=episodes.support_y + delta, query_y=episodes.query_y + delta)


def movielens_cnp(config: Config, cold, embed_dim: int) -> learners.MetaLearner:
    """A CNP on the cold-start rows: the cold-start network's embeddings (and one layer) as its feature map."""
    w = config.movielens_cnp_width
    embed = nets.embedding_mlp(cold.vocab_sizes, num_dense=cold.num_dense, embed_dim=embed_dim, hidden=(w,), out=w)
    return learners.cnp(embedding=embed, encoder_hidden=(w, w), decoder_hidden=(w, w))


def run_movielens(config: Config, workdir: str, *, progress: bool, fresh: bool, mesh=None) -> dict:
    """CNP vs MAML (decision layers) vs item mean on the cold-start experiment's new-user test episodes."""
    for m in config.movielens_methods:
        if m not in MOVIELENS_METHODS:
            raise ValueError(f"movielens_methods: unknown method {m!r}; choose from {MOVIELENS_METHODS}.")
    cs = coldstart_experiment.Config(methods=tuple(m for m in config.movielens_methods if m != "cnp"),
                                     scenarios=(MOVIELENS_SCENARIO,), shots=tuple(config.movielens_shots),
                                     steps=config.movielens_steps, data_dir=config.data_dir, seed=config.seed,
                                     steps_per_call=min(500, config.movielens_steps))
    coldstart_experiment.check_config(cs)
    # the cold-start experiment's keys: the same split, test episodes, training stream and evaluation keys
    split_key, episode_key, train_key, eval_key = jax.random.split(jax.random.key(cs.seed), 4)
    cold, split = coldstart_experiment.load_data(cs, split_key)
    mean_rating = float(cold.rating[split.train].mean())
    sampler = coldstart.coldstart_sampler(cold, split, num_tasks=cs.meta_batch, support_shots=tuple(cs.train_shots),
                                          query_shots=cs.query_shots, item_dropout=cs.item_dropout)
    tests = {k: coldstart.coldstart_episodes(episode_key, cold, split, scenario=MOVIELENS_SCENARIO, support_shots=k,
                                             query_shots=cs.query_shots, pad_support_to=max(cs.shots)).episodes
             for k in cs.shots}
    mdir = os.path.join(workdir, "movielens")
    out = {"scenario": MOVIELENS_SCENARIO, "train_seconds": {}, "results": {}, "paired_mae_differences": {},
           "metric": "per user: query MAE, RMSE, nDCG@3 (the cold-start experiment's definitions); mean over users, "
                     "95% CI; paired = per-user difference on the same users and query items (negative: better)"}
    predictions = {}
    if "maml" in config.movielens_methods:
        net = coldstart_experiment.build_net(cs, cold, mean_rating)
        params, _, out["train_seconds"]["maml"] = coldstart_experiment.train_method(
            cs, net, "maml", sampler, mdir, train_key, progress=progress, fresh=fresh, mesh=mesh)
        predict = coldstart_experiment.make_predictor(coldstart_experiment.build_learner(cs, net, "maml", test=True),
                                                      cs.eval_batch)
        predictions["maml"] = {k: predict(params, ep, eval_key) for k, ep in tests.items()}
    cnp_extra = {}
    if "cnp" in config.movielens_methods:
        learner = movielens_cnp(config, cold, cs.embed_dim)
        centred = lambda key: _shift_ratings(sampler(key), -mean_rating)  # noqa: E731 (targets around 0)
        params, out["train_seconds"]["cnp"] = _fit(
            learner, centred, train_key, config.movielens_steps, os.path.join(mdir, "cnp"), config, progress=progress,
            fresh=fresh, desc="movielens cnp", lr=cs.outer_lr, steps_per_call=cs.steps_per_call,
            mesh=common.stage_mesh(mesh, cs.meta_batch, "the MovieLens part's meta-batch"))
        predict = coldstart_experiment.make_predictor(learner, cs.eval_batch)
        predictions["cnp"] = {}
        for k, ep in tests.items():
            predictions["cnp"][k] = predict(params, _shift_ratings(ep, -mean_rating), eval_key)[..., 0] + mean_rating
            res, _ = _evaluate(learner, params, _shift_ratings(ep, -mean_rating), eval_key, metric="mse")
            cnp_extra[k] = {"coverage95": res["coverage95"], "nll": res["nll"]}
    if "item_mean" in config.movielens_methods:
        predictions["item_mean"] = {k: coldstart_experiment.table_predictions("item_mean", cold, split, ep)
                                    for k, ep in tests.items()}
    for k, ep in tests.items():
        values = {m: coldstart_experiment.user_metrics(predictions[m][k], ep) for m in predictions}
        cell = out["results"][f"K={k}"] = {m: {name: train.summarize(v) for name, v in vals.items()}
                                           for m, vals in values.items()}
        if k in cnp_extra:
            cell["cnp"].update(cnp_extra[k])
        for other in ("maml", "item_mean"):
            if "cnp" in values and other in values:
                out["paired_mae_differences"][f"K={k}: cnp minus {other}"] = _paired(values["cnp"]["mae"],
                                                                                     values[other]["mae"])
        print(f"movielens new users K={k} ({ep.support_x.shape[0]} users) MAE: " + "  ".join(
            f"{m} {cell[m]['mae']['mean']:.3f} +- {cell[m]['mae']['ci95']:.3f}" for m in cell), flush=True)
    return out


# ---------------------------------------------------------------------------------------------------- plots
def plot_sinusoid(config, sin_cfg, params, tests, tasks, path):
    plt = common.pyplot()
    if plt is None or not any(m in params for m in ("cnp", "np")):
        return
    shown = sorted({config.test_shots[0], config.test_shots[-1]})
    rows = [(m, k) for m in ("cnp", "np") if m in params for k in shown]
    grid = jnp.linspace(-5.0, 5.0, 200)[:, None]
    n_tasks = 3
    fig, axes = plt.subplots(len(rows), n_tasks, figsize=(4.2 * n_tasks, 2.9 * len(rows)), squeeze=False)
    maml = sinusoid_experiment.build_learner(sin_cfg, "maml", 10)
    maml_curve = jax.jit(lambda p, ep: maml.predict(p, maml.adapt(p, ep, None), grid)[:, 0])
    for r, (method, k) in enumerate(rows):
        learner = neural_process_learner(config, method, predict_samples=config.predict_samples)
        band = jax.jit(lambda p, ep, key: learner.predict(p, learner.adapt(p, ep, key), grid)[:, 0])
        for col in range(n_tasks):
            ep = jax.tree_util.tree_map(lambda a: a[col], tests[k])
            ax = axes[r, col]
            truth = tasks.amplitude[col] * jnp.sin(grid[:, 0] - tasks.phase[col])
            out = band(params[method], ep, jax.random.key(col))
            mean, std = out[:, 0], out[:, 1]
            ax.fill_between(grid[:, 0], mean - 1.96 * std, mean + 1.96 * std, color="tab:blue", alpha=0.25,
                            label="95% band")
            ax.plot(grid[:, 0], truth, color="black", lw=2, label="true function")
            ax.plot(grid[:, 0], mean, color="tab:blue", label=f"{method.upper()} mean")
            if "maml" in params:
                ax.plot(grid[:, 0], maml_curve(params["maml"], ep), color="tab:orange", ls="--",
                        label="MAML, 10 steps")
            ax.scatter(ep.support_x[:, 0], ep.support_y[:, 0], color="tab:red", zorder=5, label=f"K={k} support")
            ax.set_ylim(-6, 6)
            ax.set_title(f"{method.upper()}, K={k}, test task {col}")
            if r == 0 and col == 0:
                ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_mse_vs_shots(plt, sin: dict, workdir: str) -> None:
    shots = [int(k.split("=")[1]) for k in sin]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for method in SINUSOID_METHODS:
        if method not in sin[f"K={shots[0]}"]:
            continue
        # Meta-SGD's learned rates are trained for one step; more steps diverge on part of the tasks
        steps = {"maml": "10_steps", "meta_sgd": "1_steps"}.get(method)
        stats = [sin[f"K={k}"][method][steps]["mse"] if steps else sin[f"K={k}"][method]["mse"] for k in shots]
        label = {"10_steps": f"{method} (10 steps)", "1_steps": f"{method} (1 step)"}.get(steps,
                                                                                       f"{method} (one forward pass)")
        ax.errorbar(shots, [float(s["mean"]) for s in stats], yerr=[float(s["ci95"]) for s in stats], marker="o",
                    capsize=3, label=label)
    ax.set_xlabel("support points K")
    ax.set_ylabel("query MSE (95% CI)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "mse_vs_shots.png"), dpi=110)
    plt.close(fig)


def plot_summary(output: dict, workdir: str) -> None:
    plt = common.pyplot()
    if plt is None:
        return
    if "results" in output.get("sinusoid", {}):
        _plot_mse_vs_shots(plt, output["sinusoid"]["results"], workdir)

    panels = []
    if "warm_start" in output.get("sinusoid", {}):
        panels.append((f"sinusoid, K={output['sinusoid']['warm_start']['test_shots']}",
                       output["sinusoid"]["warm_start"]["rows"]))
    for k, ws in output.get("letter", {}).get("by_shots", {}).items():
        panels.append((f"UCI Letter, {k}", ws["rows"]))
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (title, rows) in zip(axes[0], panels):
        step_keys = [k for k in rows["plain_init"]]
        names = list(rows)
        names = [n for n in names if all(s in rows[n] for s in step_keys)]
        x = np.arange(len(names))
        width = 0.8 / len(step_keys)
        for j, key in enumerate(step_keys):
            steps = int(key.split("_")[0])
            stats = [rows[n][key] for n in names]
            means = np.array([float(s_["mean"]) for s_ in stats])  # a diverged task makes a mean NaN or huge
            cap = 3.0 * max(float(v["mean"]) for v in rows["plain_init"].values())
            shown = np.where(np.isfinite(means) & (means <= cap), means, cap)
            errs = [min(float(s_["ci95"]), 0.9 * m) if m < cap else 0.0 for s_, m in zip(stats, shown)]
            pos = x + width * (j - (len(step_keys) - 1) / 2)
            ax.bar(pos, shown, width, yerr=errs, capsize=2, label=f"{steps} inner steps",
                   hatch=None if j == 0 else "//")
            for p_, m, s_ in zip(pos, means, stats):
                if not (np.isfinite(m) and m <= cap):
                    ax.text(p_, cap * 0.9, f"mean off scale (diverged task); median {s_.get('median', float('nan')):.2f}",
                            rotation=90, ha="center", va="top", fontsize=6)
        ax.set_yscale("log")
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
        ax.set_title(title)
        ax.set_ylabel("query MSE, log scale (95% CI)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "warm_start.png"), dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------- entry
def train_and_evaluate(config: Config, workdir: str, *, progress: bool = True, fresh: bool = False,
                       mesh=None) -> dict:
    """Runs the chosen parts and writes ``results.json`` and the plots to ``workdir``.

    Parts measured by an earlier invocation in the same ``workdir`` and not run
    now are kept in ``results.json`` (so parts can be run one at a time).
    ``mesh``: shard the meta-batches over these devices (``common.device_mesh``; ``None``: one device).
    """
    for part in config.parts:
        if part not in PARTS:
            raise ValueError(f"parts: unknown part {part!r}; choose from {PARTS}.")
    for m in config.methods:
        if m not in SINUSOID_METHODS:
            raise ValueError(f"methods: unknown method {m!r}; choose from {SINUSOID_METHODS}.")
    if not config.test_shots:
        raise ValueError("test_shots: give at least one K.")
    if not config.warm_steps or min(config.warm_steps) < 0:
        raise ValueError(f"warm_steps: expected non-negative inner step counts, got {config.warm_steps}.")
    if {"sinusoid", "letter"} & set(config.parts):  # a meta-batch the devices cannot split fails before any work
        common.stage_mesh(mesh, config.meta_batch, "--meta-batch")
    if "movielens" in config.parts:
        common.stage_mesh(mesh, coldstart_experiment.Config.meta_batch, "the MovieLens part's meta-batch")
    os.makedirs(workdir, exist_ok=True)
    start = time.perf_counter()
    output = {
        "experiment": "model-based meta-learning (CNP, NP) vs MAML/Meta-SGD on sinusoids; warm starts from "
                      "similar tasks on sinusoids and UCI Letter; CNP vs ProtoNet on Omniglot; CNP vs MAML on "
                      "MovieLens new users",
        "config": dataclasses.asdict(config),
        "metric": f"query MSE (mean over {config.test_tasks} test tasks, 95% CI); coverage95 = fraction of query "
                  "targets inside the predicted central 95% interval; paired differences are per-task MSE "
                  "differences on the same tasks (negative = better); Omniglot and MovieLens: see their parts",
        "timing": "train_seconds: each model's training-loop time from its metrics.jsonl (summed over resumed runs); "
                  "total_seconds: this invocation (training is skipped when a finished checkpoint exists)",
    }
    path = os.path.join(workdir, "results.json")
    runners = {"sinusoid": run_sinusoid, "letter": run_letter, "omniglot": run_omniglot, "movielens": run_movielens}
    for part in PARTS:
        if part not in config.parts:
            continue
        if part == "sinusoid":
            output[part] = run_sinusoid(config, workdir, progress=progress, fresh=fresh, mesh=mesh)
            continue
        try:  # the data parts are skipped (with the reason) where their data set is missing
            output[part] = runners[part](config, workdir, progress=progress, fresh=fresh, mesh=mesh)
        except (FileNotFoundError, ValueError) as err:
            if "data_dir" not in str(err) and "not found" not in str(err):
                raise
            output[part] = {"skipped": str(err)}
            print(f"{part}: skipped ({err})", file=sys.stderr)
    output["total_seconds"] = time.perf_counter() - start
    output["train_devices"] = common.mesh_size(mesh)  # (the Omniglot part's one-episode steps run on one)
    output["metadata"] = common.run_metadata()
    if os.path.exists(path):  # parts measured by earlier invocations in this workdir are kept (read at the end)
        with open(path) as f:
            previous = json.load(f)
        output.update({part: previous[part] for part in PARTS if part in previous and part not in config.parts})
    train.write_json(path, output)
    plot_summary(output, workdir)
    return output


def main(argv=None) -> int:
    return common.run_experiment(argv, Config, QUICK, __doc__.split("\n\n")[0], train_and_evaluate, "modelbased")


if __name__ == "__main__":
    sys.exit(main())
