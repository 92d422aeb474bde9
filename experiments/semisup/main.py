"""Semi-supervised few-shot Omniglot with distractors (Ren et al., ICLR 2018).

Data: the Omniglot minimal split (meta-train on the 5 alphabets of
images_background_small1, x4 rotations as extra classes; meta-test on the 3
alphabets only images_background_small2 has: 106 characters never seen in
training). Every character's 20 drawings are split once, per character, into
a labelled pool (``--labelled-fraction``, default half: 10 drawings) and an
unlabelled pool (the other 10); support and query come from the labelled pool,
the unlabelled set from the unlabelled pool (jaxmeta.scenarios.semisup_episodes).

Methods: supervised ProtoNet (ignores the unlabelled set), the three soft k-means
refinements of Ren et al. (soft k-means, soft k-means + distractor cluster,
masked soft k-means), MAML and semi-supervised MAML (entropy minimisation on
the unlabelled set in the inner loop, meta-learned weight). Each method trains
one model at ``--train-shots`` shots, with ``M`` unlabelled examples per class
and as many distractor classes as task classes; each is tested on the same
5-way test episodes (same key: identical labelled support and query sets for
every method and setting), at 1 and 5 shots, with and without 5 distractor
classes, and at several ``M`` (the plot). Results are means over 1000 test
episodes (5 queries per class) with 95% CIs, plus paired differences against
the supervised baseline of the same family.

Outputs under ``--workdir``: ``results.json``, ``accuracy_vs_unlabelled.png``,
and per method ``<method>/metrics.jsonl``, ``<method>/checkpoints/`` and
``<method>/evaluation.json`` (re-running resumes training and reuses finished
evaluations).
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
from jaxmeta import learners, losses, nets, scenarios, train
from jaxmeta.data import omniglot_splits

ACC = {"accuracy": losses.accuracy}
METRIC = ("protonet", "soft_kmeans", "distractor_cluster", "masked_soft_kmeans")
GRADIENT = ("maml", "semisup_maml")
METHODS = METRIC + GRADIENT
BASELINE = {"soft_kmeans": "protonet", "distractor_cluster": "protonet", "masked_soft_kmeans": "protonet",
            "semisup_maml": "maml"}
LABELS = {"protonet": "ProtoNet (supervised)", "soft_kmeans": "soft k-means", "distractor_cluster":
          "soft k-means + cluster", "masked_soft_kmeans": "masked soft k-means", "maml": "MAML",
          "semisup_maml": "semi-sup. MAML (entropy)"}


@dataclasses.dataclass(frozen=True)
class Config:
    methods: Tuple[str, ...] = dataclasses.field(default=METHODS, metadata={"help": f"any of {METHODS}"})
    protocol: str = dataclasses.field(default="minimal", metadata={"help": "minimal | standard"})
    labelled_fraction: float = dataclasses.field(default=0.5, metadata={"help": "labelled share of each class"})
    train_shots: int = dataclasses.field(default=1, metadata={"help": "shots of the training episodes"})
    unlabelled_per_class: int = dataclasses.field(default=5, metadata={"help": "M: unlabelled examples per class "
                                                                                "(train and main test table)"})
    # metric learners
    metric_steps: int = dataclasses.field(default=2000, metadata={"help": "ProtoNet-family training episodes (total)"})
    metric_warmstart_steps: int = dataclasses.field(default=1000, metadata={
        "help": "of which shared supervised ProtoNet pre-training (every ProtoNet method, the supervised one "
                "included, continues from it for the rest; 0: each trains from scratch)"})
    metric_train_ways: int = dataclasses.field(default=20, metadata={"help": "ways per training episode"})
    metric_train_distractors: int = dataclasses.field(default=20, metadata={"help": "distractor classes per "
                                                                                    "training episode"})
    metric_queries: int = dataclasses.field(default=5, metadata={"help": "queries per class when training"})
    metric_lr: float = dataclasses.field(default=1e-3, metadata={"help": "Adam learning rate (peak)"})
    mask_init: Tuple[float, ...] = dataclasses.field(default=(1.0, 1.0), metadata={
        "help": "(beta, gamma): threshold and slope of masked soft k-means' gates before training"})
    refine_lr_scale: float = dataclasses.field(default=10.0, metadata={
        "help": "learning rate of the refinement parameters (gate MLP, distractor radius) relative to the "
                "network's: they start untrained after the warm start and must move by factors, not percents"})
    # MAML family
    maml_steps: int = dataclasses.field(default=800, metadata={"help": "meta-steps (total)"})
    maml_warmstart_steps: int = dataclasses.field(default=600, metadata={
        "help": "of which shared plain-MAML pre-training (both MAML methods continue from it; 0: from scratch)"})
    maml_meta_batch: int = dataclasses.field(default=8, metadata={"help": "tasks per meta-step"})
    maml_train_unlabelled_per_class: int = dataclasses.field(default=2, metadata={
        "help": "unlabelled examples per class in semi-supervised MAML's training tasks (cost)"})
    maml_train_distractors: int = dataclasses.field(default=2, metadata={"help": "distractor classes per training task"})
    maml_queries: int = dataclasses.field(default=2, metadata={"help": "queries per class when training"})
    maml_inner_lr: float = dataclasses.field(default=0.4, metadata={"help": "inner SGD step size"})
    maml_inner_steps: int = dataclasses.field(default=1, metadata={"help": "inner steps when training"})
    maml_test_steps: int = dataclasses.field(default=3, metadata={"help": "inner steps at test"})
    maml_lr: float = dataclasses.field(default=1e-3, metadata={"help": "outer Adam learning rate (peak)"})
    maml_batching: str = dataclasses.field(default="auto", metadata={"help": common.MAML_BATCHING_HELP})
    maml_steps_per_call: int = dataclasses.field(default=2, metadata={"help": "MAML meta-steps per compiled call "
                                                                              "(compile time grows with it on CPU)"})
    unlabelled_weight: float = dataclasses.field(default=0.1, metadata={"help": "initial weight of the entropy term"})
    # shared
    schedule: str = dataclasses.field(default="cosine", metadata={"help": "constant | cosine (decay to 5%), per stage"})
    finetune_lr_scale: float = dataclasses.field(default=0.5, metadata={
        "help": "peak learning rate of the stage after a warm start, relative to the first stage's"})
    augment: bool = dataclasses.field(default=True, metadata={"help": "random affine distortions of training images"})
    steps_per_call: int = dataclasses.field(default=10, metadata={"help": "meta-steps per compiled call"})
    test_shots: Tuple[int, ...] = dataclasses.field(default=(1, 5), metadata={"help": "shots of the test tables"})
    test_distractors: int = dataclasses.field(default=5, metadata={"help": "distractor classes in the 'with "
                                                                            "distractors' tests"})
    test_queries: int = dataclasses.field(default=5, metadata={"help": "queries per class at test"})
    test_episodes: int = dataclasses.field(default=1000, metadata={"help": "test episodes per configuration"})
    sweep_unlabelled: Tuple[int, ...] = dataclasses.field(default=(0, 2, 5, 10), metadata={
        "help": "M values of the accuracy-vs-unlabelled plot (1-shot, with and without distractors)"})
    monitor_every: int = dataclasses.field(default=500, metadata={"help": "steps between monitoring evaluations"})
    monitor_episodes: int = dataclasses.field(default=100, metadata={"help": "episodes per monitoring evaluation"})
    seed: int = dataclasses.field(default=0, metadata={"help": "PRNG seed"})


QUICK = {"methods": ("protonet", "masked_soft_kmeans", "maml", "semisup_maml"), "metric_steps": 20,
         "metric_warmstart_steps": 10, "maml_steps": 10, "maml_warmstart_steps": 6,
         "metric_train_ways": 10, "metric_train_distractors": 5, "maml_meta_batch": 2, "test_episodes": 50,
         "monitor_every": 10, "monitor_episodes": 20, "sweep_unlabelled": (0, 5)}

TEST_WAYS = 5
EVAL_BATCH = 50
REFINE_PARAMS = ("distractor_cluster", "masked_soft_kmeans")  # methods with parameters besides the network


def check_config(config: Config) -> None:
    unknown = [m for m in config.methods if m not in METHODS]
    if unknown or not config.methods:
        raise ValueError(f"methods: unknown {unknown}; choose from {METHODS}.")
    labelled = int(round(config.labelled_fraction * 20))
    for shots in set(config.test_shots) | {config.train_shots}:
        if shots + config.test_queries > labelled or shots + config.metric_queries > labelled:
            raise ValueError(f"shots + queries = {shots + max(config.test_queries, config.metric_queries)} exceeds the "
                             f"{labelled} labelled drawings per character; lower --test-queries or raise "
                             "--labelled-fraction.")
    if config.train_shots + config.maml_queries > labelled:
        raise ValueError(f"train_shots + maml_queries = {config.train_shots + config.maml_queries} exceeds the "
                         f"{labelled} labelled drawings per character.")
    for name in ("metric", "maml"):
        total, first = getattr(config, f"{name}_steps"), getattr(config, f"{name}_warmstart_steps")
        if not 0 <= first <= total:
            raise ValueError(f"{name}_warmstart_steps: expected a number in [0, {name}_steps={total}], got {first}.")
    common.maml_batching(config.maml_batching)
    if len(config.mask_init) != 2 or min(config.mask_init) <= 0:
        raise ValueError(f"mask_init: expected two positive numbers (beta gamma), got {config.mask_init}.")
    if config.refine_lr_scale <= 0:
        raise ValueError(f"refine_lr_scale: expected a positive number, got {config.refine_lr_scale}.")
    if max(config.sweep_unlabelled + (config.unlabelled_per_class, config.maml_train_unlabelled_per_class)) > 20 - labelled:
        raise ValueError(f"unlabelled_per_class / sweep_unlabelled exceed the {20 - labelled} unlabelled drawings per "
                         "character; lower them or --labelled-fraction.")


def build_learner(config: Config, method: str, ways: int, inner_steps: int | None = None) -> learners.MetaLearner:
    if method == "protonet":
        return learners.protonet(nets.conv4(), num_ways=ways)
    if method in METRIC:
        return learners.semisup_protonet(nets.conv4(), num_ways=ways, refine=method, mask_init=tuple(config.mask_init))
    # MAML's Omniglot network: stride-2 convs, spatial mean, a linear head with N outputs; im2col convs make
    # the vmapped per-task weights batched matmuls (see benchmarks/README.md).
    net = nets.conv4(out=ways, downsample="stride", readout="mean", conv_impl="im2col")
    kw = dict(inner_lr=config.maml_inner_lr, metrics=ACC,
              inner_steps=config.maml_inner_steps if inner_steps is None else inner_steps)
    if method == "maml":
        return learners.maml(net, losses.softmax_cross_entropy, **kw)
    return learners.semisup_maml(net, losses.softmax_cross_entropy, unlabelled_weight=config.unlabelled_weight, **kw)


def batching(config: Config, method: str) -> str:
    """The meta-step's episode batching: ``vmap`` for the metric learners, ``--maml-batching`` for MAML's."""
    return "vmap" if method in METRIC else common.maml_batching(config.maml_batching)


def uses_unlabelled(method: str) -> bool:
    return method not in ("protonet", "maml")


def optimizer(config: Config, lr: float, steps: int, method: str = "protonet") -> optax.GradientTransformation:
    """Adam on the network; the refinement parameters of the soft k-means variants at ``refine_lr_scale`` x."""
    def adam(peak):
        if config.schedule == "constant":
            return optax.adam(peak)
        if config.schedule == "cosine":
            return optax.adam(optax.cosine_decay_schedule(peak, max(steps, 1), alpha=0.05))
        raise ValueError(f"schedule: expected 'constant' or 'cosine', got {config.schedule!r}.")

    if method not in REFINE_PARAMS or config.refine_lr_scale == 1.0:
        return adam(lr)
    labels = lambda params: {k: jax.tree_util.tree_map(lambda _: "net" if k == "net" else "refine", v)  # noqa: E731
                             for k, v in params.items()}
    return optax.multi_transform({"net": adam(lr), "refine": adam(lr * config.refine_lr_scale)}, labels)


def train_sampler(config: Config, method: str, pools):
    metric = method in METRIC
    semi = uses_unlabelled(method)
    ways = config.metric_train_ways if metric else TEST_WAYS
    per_class = (config.unlabelled_per_class if metric else config.maml_train_unlabelled_per_class) if semi else 0
    # (supervised methods never see unlabelled data)
    distractors = (config.metric_train_distractors if metric else config.maml_train_distractors) if semi else 0
    base = functools.partial(scenarios.semisup_episodes, labelled=pools[0], unlabelled=pools[1],
                             num_tasks=1 if metric else config.maml_meta_batch, ways=ways, shots=config.train_shots,
                             queries=config.metric_queries if metric else config.maml_queries,
                             unlabelled_per_class=per_class, distractors=distractors)
    if not config.augment:
        return base, ways
    fields = scenarios.UNLABELLED_FIELDS if per_class else ()

    def sample(key):
        k_sample, k_aug = jax.random.split(key)
        return scenarios.augment_episodes(k_aug, base(k_sample), aux_fields=fields)

    return sample, ways


def eval_batch(config: Config) -> int:
    """Test episodes per compiled evaluation call."""
    return min(EVAL_BATCH, config.test_episodes, config.monitor_episodes)


def test_sampler(config: Config, pools, shots: int, per_class: int, distractors: int):
    batch = eval_batch(config)
    return functools.partial(scenarios.semisup_episodes, labelled=pools[0], unlabelled=pools[1], num_tasks=batch,
                             ways=TEST_WAYS, shots=shots, queries=config.test_queries,
                             unlabelled_per_class=per_class, distractors=distractors)


def test_settings(config: Config):
    """(name, shots, M, D) of every evaluation: the main table, then the M sweep at 1 shot."""
    settings = []
    for shots in config.test_shots:
        for d in (0, config.test_distractors):
            settings.append((f"{shots}-shot M={config.unlabelled_per_class} D={d}", shots, config.unlabelled_per_class, d))
    for m in config.sweep_unlabelled:
        for d in ((0,) if m == 0 else (0, config.test_distractors)):
            name = f"1-shot M={m} D={d}"
            if name not in [s[0] for s in settings]:
                settings.append((name, 1, m, d))
    return settings


def train_method(config: Config, method: str, run_dir: str, train_pools, test_pools, key, *, steps: int, lr: float,
                 init_net=None, progress: bool, mesh=None):
    """Trains ``method`` for ``steps`` meta-steps, from scratch or from the network params ``init_net``.

    The MAML family's meta-batch is sharded over ``mesh`` (a metric learner trains on one episode per step).
    """
    metric = method in METRIC
    sample, train_ways = train_sampler(config, method, train_pools)
    learner = build_learner(config, method, train_ways)
    opt = optimizer(config, lr, steps, method)
    init_key, fit_key, monitor_key = jax.random.split(key, 3)
    state = None
    if init_net is not None:  # warm start: the shared network, fresh extra parameters and optimizer state
        state = train.init_state(learner, opt, init_key, jax.eval_shape(sample, init_key))  # (sampler not compiled)
        params = dict(state.params, net=init_net)
        state = train.MetaState(params, opt.init(params), jnp.zeros((), jnp.int32))
    monitor_learner = build_learner(config, method, TEST_WAYS, None if metric else config.maml_test_steps)
    monitor_sample = test_sampler(config, test_pools, config.train_shots, config.unlabelled_per_class,
                                  config.test_distractors)

    def monitor(params):
        result = train.evaluate(monitor_learner, params, monitor_sample, key=monitor_key,
                                num_episodes=config.monitor_episodes, mesh=common.eval_mesh(mesh, eval_batch(config)))
        return {"test_accuracy": result["accuracy"]["mean"]}

    chunk = config.steps_per_call if metric else config.maml_steps_per_call
    every = max(chunk, (config.monitor_every // chunk) * chunk)
    result = train.fit(learner, opt, sample, key=fit_key, num_steps=steps, state=state, device_sampling=True,
                       batching=batching(config, method), steps_per_call=chunk,
                       log_every=chunk * max(1, 50 // chunk), eval_fn=monitor,
                       eval_every=every, workdir=run_dir, checkpoint_every=every, progress=progress,
                       desc=os.path.basename(run_dir), mesh=train_mesh(config, method, mesh))
    train_seconds = max((r.get("train_seconds", 0.0) for r in result.history), default=0.0)
    return result.state.params, train_seconds, train_ways


def train_mesh(config: Config, method: str, mesh):
    """The devices ``method`` trains on: ``mesh`` for the MAML family's meta-batches, one for metric learners."""
    return common.stage_mesh(mesh, 1 if method in METRIC else config.maml_meta_batch, "--maml-meta-batch")


def train_all(config: Config, workdir: str, train_pools, test_pools, key, *, progress: bool, mesh=None):
    """Every method's final params and training time (warm-start time included, shared by its family)."""
    trained, warm = {}, {}
    for method in config.methods:
        metric = method in METRIC
        family = "protonet" if metric else "maml"
        total = config.metric_steps if metric else config.maml_steps
        first = config.metric_warmstart_steps if metric else config.maml_warmstart_steps
        lr = config.metric_lr if metric else config.maml_lr
        init_net, warm_seconds = None, 0.0
        if first > 0:
            if family not in warm:
                params, seconds, _ = train_method(config, family, os.path.join(workdir, f"{family}_warmstart"),
                                                  train_pools, test_pools, jax.random.fold_in(key, 100 + len(warm)),
                                                  steps=first, lr=lr, progress=progress, mesh=mesh)
                warm[family] = (params["net"], seconds)
            init_net, warm_seconds = warm[family]
            lr = lr * config.finetune_lr_scale
        params, seconds, ways = train_method(config, method, os.path.join(workdir, method), train_pools, test_pools,
                                             jax.random.fold_in(key, METHODS.index(method)), steps=total - first,
                                             lr=lr, init_net=init_net, progress=progress, mesh=mesh)
        trained[method] = (params, warm_seconds + seconds, ways)
    return trained


def evaluate_method(config: Config, method: str, params, test_pools, key, mesh=None
                    ) -> Tuple[dict, Dict[str, np.ndarray]]:
    """Accuracy on every test setting, plus the per-episode values (for paired differences).

    Each evaluation batch is split over ``mesh``'s devices when they split it evenly.
    """
    results, values, done = {}, {}, {}
    learner = build_learner(config, method, TEST_WAYS, None if method in METRIC else config.maml_test_steps)
    for name, shots, per_class, distractors in test_settings(config):
        if not uses_unlabelled(method):
            # a supervised method sees only the labelled sets, identical in every (M, D) setting (same key):
            # evaluate it once per shot count on episodes without unlabelled examples
            per_class = distractors = 0
        if (shots, per_class, distractors) not in done:
            r = train.evaluate(learner, params, test_sampler(config, test_pools, shots, per_class, distractors),
                               key=key, num_episodes=config.test_episodes, return_values=True,
                               mesh=common.eval_mesh(mesh, eval_batch(config)))
            done[(shots, per_class, distractors)] = (r["accuracy"], np.asarray(r["values"]["accuracy"]))
        acc, vals = done[(shots, per_class, distractors)]
        results[name] = {"shots": shots, "unlabelled_per_class": per_class, "distractors": distractors,
                         "accuracy": acc}
        values[name] = vals
    return results, values


def paired(a: np.ndarray, b: np.ndarray) -> dict:
    """Mean and 95% CI of the per-episode difference a - b (same episodes)."""
    return train.summarize(np.asarray(a, np.float64) - np.asarray(b, np.float64))


def plot_sweep(config: Config, results: dict, path: str) -> None:
    plt = common.pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, d in zip(axes, (0, config.test_distractors)):
        for method, out in results.items():
            ms, means, cis = [], [], []
            for m in sorted(set(config.sweep_unlabelled)):
                name = f"1-shot M={m} D={0 if m == 0 else d}"
                if name in out["tests"]:
                    acc = out["tests"][name]["accuracy"]
                    ms.append(m), means.append(100 * acc["mean"]), cis.append(100 * acc["ci95"])
            ax.errorbar(ms, means, yerr=cis, marker="o", capsize=3, label=LABELS[method])
        ax.set_title(f"5-way 1-shot, {'no distractors' if d == 0 else f'{d} distractor classes'}")
        ax.set_xlabel("unlabelled examples per class (M)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"test accuracy (%), {config.test_episodes} episodes, 95% CI")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def targets(config: Config, results: dict, values: dict) -> dict:
    """The issue's numbers: semi-supervised gains at 1 shot, with and without distractors."""
    m, d = config.unlabelled_per_class, config.test_distractors
    clean, noisy = f"1-shot M={m} D=0", f"1-shot M={m} D={d}"
    out = {}
    if "protonet" in values and clean in values["protonet"]:
        semi = [x for x in ("soft_kmeans", "distractor_cluster", "masked_soft_kmeans") if x in values]
        if semi:
            best = max(semi, key=lambda x: values[x][clean].mean())
            gain = paired(values[best][clean], values["protonet"][clean])
            out["best_semisup_protonet"] = best
            out["gain_over_protonet_no_distractors"] = gain
            out["target_gain_at_least_2_points"] = gain["mean"] >= 0.02
            if "masked_soft_kmeans" in values:
                masked_gain = paired(values["masked_soft_kmeans"][noisy], values["protonet"][noisy])
                out["masked_gain_over_protonet_with_distractors"] = masked_gain
                out["gain_lost_with_distractors"] = gain["mean"] - masked_gain["mean"]
                out["target_lose_at_most_1_point"] = gain["mean"] - masked_gain["mean"] <= 0.01
    if "maml" in values and "semisup_maml" in values:
        for name in (clean, noisy):
            out[f"semisup_maml_minus_maml {name}"] = paired(values["semisup_maml"][name], values["maml"][name])
    return out


def load_split(config: Config, data_dir, key):
    train_set, test_set = omniglot_splits(config.protocol, data_dir=data_dir)
    k_train, k_test = jax.random.split(key)
    train_pools = scenarios.split_labelled(k_train, jnp.asarray(train_set.images[..., None]),
                                           labelled_fraction=config.labelled_fraction)
    test_pools = scenarios.split_labelled(k_test, jnp.asarray(test_set.images[..., None]),
                                          labelled_fraction=config.labelled_fraction)
    return train_set, test_set, train_pools, test_pools


def train_and_evaluate(config: Config, workdir: str, *, data_dir=None, progress: bool = True,
                       fresh: bool = False, mesh=None) -> dict:
    """Trains and tests every method of ``config``; writes ``results.json`` and the plots to ``workdir``.

    ``mesh``: shard the MAML family's meta-batches over these devices (``common.device_mesh``; ``None``: one).
    """
    check_config(config)
    for method in config.methods:
        train_mesh(config, method, mesh)  # a meta-batch the devices cannot split fails before any work
    os.makedirs(workdir, exist_ok=True)
    key = jax.random.key(config.seed)
    split_key, test_key, train_key = jax.random.split(key, 3)
    train_set, test_set, train_pools, test_pools = load_split(config, data_dir, split_key)
    if fresh:
        import shutil

        for name in config.methods + ("protonet_warmstart", "maml_warmstart"):
            shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)
    def eval_config(method):
        """The settings a method's cached evaluation must match (its refinement settings only where it has them)."""
        unused = {"methods", "monitor_every", "monitor_episodes", "maml_batching"}  # (speed only)
        other_family = "maml_" if method in METRIC else "metric_"  # the other family's training settings
        unused.update(k for k in dataclasses.asdict(config) if k.startswith(other_family))
        if method in METRIC:
            unused.add("unlabelled_weight")
        if method not in ("masked_soft_kmeans",):
            unused.add("mask_init")
        if method not in REFINE_PARAMS:
            unused.add("refine_lr_scale")
        return {k: v for k, v in dataclasses.asdict(config).items() if k not in unused}
    results, values = {}, {}
    trained = train_all(config, workdir, train_pools, test_pools, train_key, progress=progress, mesh=mesh)
    for method in config.methods:
        params, train_seconds, train_ways = trained[method]
        cache = os.path.join(workdir, method, "evaluation.json")
        cached = None
        if os.path.exists(cache):
            with open(cache) as f:
                cached = json.load(f)
        if cached is not None and cached.get("config") == json.loads(json.dumps(eval_config(method))):
            tests, vals = cached["tests"], {k: np.asarray(v) for k, v in cached["values"].items()}
        else:
            t0 = time.perf_counter()
            tests, vals = evaluate_method(config, method, params, test_pools, test_key, mesh)
            train.write_json(cache, {"config": eval_config(method), "tests": tests, "eval_seconds": time.perf_counter() - t0,
                                     "values": {k: v.tolist() for k, v in vals.items()}})
        out = {"train_seconds": train_seconds, "train_ways": train_ways, "batching": batching(config, method),
               "train_devices": common.mesh_size(train_mesh(config, method, mesh)), "tests": tests}
        if method in ("distractor_cluster",):
            out["distractor_radius"] = float(jnp.exp(params["log_distractor_radius"]))
        if method == "semisup_maml":
            out["entropy_weight"] = float(jnp.exp(params["inner_term"]["log_weight"]))
        results[method], values[method] = out, vals
        for name, r in tests.items():
            acc = r["accuracy"]
            print(f"{method:>20} | {name:<22} | accuracy {100 * acc['mean']:.2f}±{100 * acc['ci95']:.2f}% | "
                  f"train {train_seconds / 60:.1f} min", flush=True)
    for method in results:
        base = BASELINE.get(method)
        if base in values:
            results[method]["minus_" + base] = {n: paired(values[method][n], values[base][n]) for n in values[method]}
    summary = targets(config, results, values)
    output = {
        "experiment": f"semi-supervised few-shot Omniglot with distractors, protocol {config.protocol}",
        "config": dataclasses.asdict(config),
        "split": {"train_alphabets": sorted(set(train_set.alphabets)), "train_classes": len(train_set.characters),
                  "test_alphabets": sorted(set(test_set.alphabets)), "test_classes": len(test_set.characters),
                  "labelled_per_class": int(train_pools[0].shape[1]),
                  "unlabelled_per_class_pool": int(train_pools[1].shape[1])},
        "metric": f"5-way accuracy on {config.test_episodes} test episodes ({config.test_queries} queries/class), "
                  "95% CI; every method and setting sees the same labelled episodes; 'minus_*' are paired "
                  "per-episode differences",
        "results": results,
        "targets": summary,
        "metadata": common.run_metadata(),
    }
    train.write_json(os.path.join(workdir, "results.json"), output)
    plot_sweep(config, results, os.path.join(workdir, "accuracy_vs_unlabelled.png"))
    for k, v in summary.items():
        if isinstance(v, dict):
            v = f"{100 * v['mean']:+.2f}±{100 * v['ci95']:.2f} points"
        print(f"{k}: {v}")
    return output


def main(argv=None) -> int:
    return common.run_experiment(argv, Config, QUICK, __doc__.split("\n\n")[0], train_and_evaluate, "semisup",
                                 data_dir=True)


if __name__ == "__main__":
    sys.exit(main())
