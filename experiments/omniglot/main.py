"""Few-shot Omniglot: Prototypical Networks, Matching Networks and MAML with Conv-4.

Protocol ``minimal`` (default; the data on this machine): meta-train on the 5
alphabets of images_background_small1 (136 characters, x4 rotations as extra
classes), meta-test on the alphabets only images_background_small2 has
(Japanese_(katakana), Sanskrit, Tagalog: 106 characters never seen in
training); classes of a test episode are drawn across alphabets (and, for the
``within`` rows, all from one alphabet). Protocol ``standard`` (needs the full
zips): images_background (30 alphabets) / images_evaluation (20 alphabets).

Each *run* trains one model and tests it on every configuration it applies to
(1000 test episodes, 15 queries per class, 95% CI): a ProtoNet trained with
K shots is tested 5-way and 20-way at K shots; a MAML model (its head has N
outputs) at its own N-way K-shot, after several inner-step counts.

Outputs under ``--workdir``: ``results.json``, ``learning_curves.png``, and per
run ``<run>/metrics.jsonl`` + ``<run>/checkpoints/`` (re-running resumes).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import sys
from typing import Dict, List, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import common
from jaxmeta import learners, losses, nets, scenarios, train
from jaxmeta.data import omniglot_splits

ACC = {"accuracy": losses.accuracy}
RUN_PATTERN = re.compile(r"^(protonet|matching_net)_(\d+)shot$|^(maml|fomaml)_(\d+)w(\d+)s$")


@dataclasses.dataclass(frozen=True)
class Config:
    runs: Tuple[str, ...] = dataclasses.field(
        default=("protonet_1shot", "protonet_5shot", "maml_5w1s", "fomaml_5w1s"),
        metadata={"help": "runs: protonet_<K>shot, matching_net_<K>shot, maml_<N>w<K>s, fomaml_<N>w<K>s"})
    protocol: str = dataclasses.field(default="minimal", metadata={"help": "minimal | standard"})
    # metric learners
    metric_steps: int = dataclasses.field(default=4000, metadata={"help": "ProtoNet/MatchingNet training episodes"})
    metric_train_ways: int = dataclasses.field(default=60, metadata={"help": "ways per training episode"})
    metric_queries: int = dataclasses.field(default=5, metadata={"help": "queries per class when training"})
    metric_lr: float = dataclasses.field(default=1e-3, metadata={"help": "Adam learning rate (peak)"})
    metric_embedding: str = dataclasses.field(default="conv4", metadata={
        "help": "conv4 (64-d, the papers') | conv4_wide_out (no pooling after the last block: 576-d)"})
    # MAML family
    maml_steps: int = dataclasses.field(default=3000, metadata={"help": "meta-steps"})
    maml_meta_batch: int = dataclasses.field(default=32, metadata={"help": "tasks per meta-step"})
    maml_queries: int = dataclasses.field(default=1, metadata={"help": "queries per class when training"})
    maml_inner_lr: float = dataclasses.field(default=0.4, metadata={"help": "inner SGD step size"})
    maml_inner_steps: int = dataclasses.field(default=1, metadata={"help": "inner steps when training"})
    maml_test_steps: Tuple[int, ...] = dataclasses.field(default=(1, 3, 10), metadata={"help": "inner steps at test"})
    maml_lr: float = dataclasses.field(default=1e-3, metadata={"help": "outer Adam learning rate (peak)"})
    # shared
    schedule: str = dataclasses.field(default="cosine", metadata={"help": "constant | cosine (decay to 5%)"})
    augment: bool = dataclasses.field(default=True, metadata={"help": "random affine distortions of training images"})
    steps_per_call: int = dataclasses.field(default=10, metadata={"help": "meta-steps per compiled call"})
    test_episodes: int = dataclasses.field(default=1000, metadata={"help": "test episodes per configuration"})
    test_queries: int = dataclasses.field(default=15, metadata={"help": "queries per class at test"})
    monitor_every: int = dataclasses.field(default=500, metadata={"help": "steps between monitoring evaluations"})
    monitor_episodes: int = dataclasses.field(default=200, metadata={"help": "episodes per monitoring evaluation"})
    compute_dtype: str = dataclasses.field(default="float32", metadata={
        "help": "float32 | bfloat16 (bfloat16 compute, float32 meta-parameters)"})
    maml_batching: str = dataclasses.field(default="auto", metadata={"help": common.MAML_BATCHING_HELP})
    seed: int = dataclasses.field(default=0, metadata={"help": "PRNG seed"})


QUICK = {"runs": ("protonet_1shot", "maml_5w1s"), "metric_steps": 20, "maml_steps": 20, "metric_train_ways": 20,
         "maml_meta_batch": 4, "test_episodes": 50, "monitor_every": 10, "monitor_episodes": 20, "maml_test_steps": (1, 3)}


def parse_run(name: str) -> dict:
    """``protonet_5shot`` -> {"method": "protonet", "shots": 5}; ``maml_5w1s`` -> {..., "ways": 5}."""
    m = RUN_PATTERN.match(name)
    if m is None:
        raise ValueError(f"runs: cannot parse {name!r}; use protonet_<K>shot, matching_net_<K>shot, "
                         "maml_<N>w<K>s or fomaml_<N>w<K>s.")
    if m.group(1):
        return {"method": m.group(1), "shots": int(m.group(2))}
    return {"method": m.group(3), "ways": int(m.group(4)), "shots": int(m.group(5))}


def test_configs(run: dict) -> List[Tuple[int, int, bool]]:
    """(ways, shots, within_alphabet) a run is tested on."""
    if run["method"] in ("protonet", "matching_net"):
        configs = [(5, run["shots"], False), (20, run["shots"], False)]
        if run["shots"] == 1:
            configs.append((20, 1, True))
        return configs
    return [(run["ways"], run["shots"], False)]


def embedding(config: Config) -> nets.Network:
    dtype = common.compute_dtype(config.compute_dtype)
    if config.metric_embedding == "conv4":
        return nets.conv4(dtype=dtype)
    if config.metric_embedding == "conv4_wide_out":
        return nets.conv4(last_pool=False, dtype=dtype)
    raise ValueError(f"metric_embedding: expected conv4 or conv4_wide_out, got {config.metric_embedding!r}.")


def build_learner(config: Config, run: dict, ways: int, inner_steps: int | None = None) -> learners.MetaLearner:
    if run["method"] == "protonet":
        return learners.protonet(embedding(config), num_ways=ways)
    if run["method"] == "matching_net":
        return learners.matching_net(embedding(config), num_ways=ways)
    # MAML's Omniglot network: stride-2 convs, spatial mean, a linear head with N outputs. im2col convs make
    # the vmapped per-task weights batched matmuls (see benchmarks/README.md).
    net = nets.conv4(out=ways, downsample="stride", readout="mean", conv_impl="im2col",
                     dtype=common.compute_dtype(config.compute_dtype))
    steps = config.maml_inner_steps if inner_steps is None else inner_steps
    return learners.maml(net, losses.softmax_cross_entropy, inner_lr=config.maml_inner_lr, inner_steps=steps,
                         first_order=run["method"] == "fomaml", metrics=ACC)


def optimizer(config: Config, lr: float, steps: int) -> optax.GradientTransformation:
    if config.schedule == "constant":
        return optax.adam(lr)
    if config.schedule == "cosine":
        return optax.adam(optax.cosine_decay_schedule(lr, max(steps, 1), alpha=0.05))
    raise ValueError(f"schedule: expected 'constant' or 'cosine', got {config.schedule!r}.")


def train_sampler(config: Config, run: dict, data: jax.Array):
    metric = run["method"] in ("protonet", "matching_net")
    ways = config.metric_train_ways if metric else run["ways"]
    queries = config.metric_queries if metric else config.maml_queries
    num_tasks = 1 if metric else config.maml_meta_batch
    base = functools.partial(scenarios.fewshot_episodes, data=data, num_tasks=num_tasks, ways=ways,
                             shots=run["shots"], queries=queries)
    if not config.augment:
        return base, ways

    def sample(key):
        k_sample, k_aug = jax.random.split(key)
        return scenarios.augment_episodes(k_aug, base(k_sample))

    return sample, ways


def test_sampler(config: Config, test_data: jax.Array, groups: np.ndarray, ways: int, shots: int, within: bool,
                 batch: int):
    return functools.partial(scenarios.fewshot_episodes, data=test_data, num_tasks=batch, ways=ways, shots=shots,
                             queries=config.test_queries, groups=groups if within else None, within_group=within)


def eval_batch(ways: int) -> int:
    return 50 if ways <= 5 else 20


def run_one(config: Config, name: str, workdir: str, train_data, test_data, groups, key, *, progress: bool,
            mesh=None):
    run = parse_run(name)
    metric = run["method"] in ("protonet", "matching_net")
    # the MAML family's meta-batch is sharded over mesh (a metric learner trains on one many-way episode per
    # step), and so is every evaluation batch that splits evenly
    train_mesh = common.stage_mesh(mesh, 1 if metric else config.maml_meta_batch, "--maml-meta-batch")
    steps = config.metric_steps if metric else config.maml_steps
    lr = config.metric_lr if metric else config.maml_lr
    sample, train_ways = train_sampler(config, run, train_data)
    learner = build_learner(config, run, train_ways)
    first_ways, first_shots, _ = test_configs(run)[0]
    monitor_learner = build_learner(config, run, first_ways, None if metric else max(config.maml_test_steps))
    monitor_sample = test_sampler(config, test_data, groups, first_ways, first_shots, False, eval_batch(first_ways))
    train_key, monitor_key, test_key = jax.random.split(key, 3)

    def monitor(params):
        result = train.evaluate(monitor_learner, params, monitor_sample, key=monitor_key,
                                num_episodes=config.monitor_episodes, mesh=common.eval_mesh(mesh, eval_batch(first_ways)))
        return {"test_accuracy": result["accuracy"]["mean"]}

    batching = "vmap" if metric else common.maml_batching(config.maml_batching)
    # unroll=1: one rolled scan per call on every backend. Both networks avoid XLA's own convolution
    # gradients on CPU (conv4's default lowerings), so CPU's unrolled chunks buy nothing here: 10 steps per
    # call, random Omniglot-sized data, 2-core CPU (2026-12-03): ProtoNet 60-way 0.26 s/step either way,
    # first call 12 s against 38 s; MAML 5-way 1-shot meta-batch 32 0.19-0.23 against 0.21-0.25 s/step,
    # first call 16 s against 48 s
    result = train.fit(learner, optimizer(config, lr, steps), sample, key=train_key, num_steps=steps,
                       batching=batching, device_sampling=True, steps_per_call=config.steps_per_call, unroll=1,
                       log_every=config.steps_per_call * max(1, 50 // config.steps_per_call),
                       eval_fn=monitor, eval_every=config.monitor_every, workdir=os.path.join(workdir, name),
                       checkpoint_every=config.monitor_every, progress=progress, desc=name, mesh=train_mesh)
    train_seconds = max((r.get("train_seconds", 0.0) for r in result.history), default=0.0)
    params = result.state.params
    out = {"run": run, "train_seconds": train_seconds, "train_ways": train_ways, "steps": steps, "batching": batching,
           "train_devices": common.mesh_size(train_mesh), "config": dataclasses.asdict(config), "tests": {}}
    for ways, shots, within in test_configs(run):
        sample_test = test_sampler(config, test_data, groups, ways, shots, within, eval_batch(ways))
        label = f"{ways}-way {shots}-shot" + (" within-alphabet" if within else "")
        if metric:
            r = train.evaluate(build_learner(config, run, ways), params, sample_test, key=test_key,
                               num_episodes=config.test_episodes, mesh=common.eval_mesh(mesh, eval_batch(ways)))
            out["tests"][label] = {"accuracy": r["accuracy"]}
        else:
            out["tests"][label] = {}
            for inner in config.maml_test_steps:
                r = train.evaluate(build_learner(config, run, ways, inner), params, sample_test, key=test_key,
                                   num_episodes=config.test_episodes, mesh=common.eval_mesh(mesh, eval_batch(ways)))
                out["tests"][label][f"accuracy_{inner}_steps"] = r["accuracy"]
    return out, result.history


def plot_curves(histories: Dict[str, list], path: str) -> None:
    plt = common.pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, history in histories.items():
        tr = [r for r in history if r["kind"] == "train"]
        ev = [r for r in history if r["kind"] == "eval"]
        line = axes[0].plot([r["step"] for r in tr], [r["loss"] for r in tr], label=name, alpha=0.8)[0]
        axes[1].plot([r["step"] for r in ev], [100 * r["test_accuracy"] for r in ev], marker="o",
                     color=line.get_color(), label=name)
    axes[0].set_xlabel("meta-training step")
    axes[0].set_ylabel("training loss")
    axes[0].set_yscale("log")
    axes[1].set_xlabel("meta-training step")
    axes[1].set_ylabel("accuracy on unseen alphabets (%)\n(monitoring only, no model selection)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train_and_evaluate(config: Config, workdir: str, *, data_dir=None, progress: bool = True,
                       fresh: bool = False, mesh=None) -> dict:
    """Trains and tests every run of ``config``; writes ``results.json`` and the learning curves to ``workdir``.

    ``mesh``: shard the MAML family's meta-batches over these devices (``common.device_mesh``; ``None``: one).
    """
    common.maml_batching(config.maml_batching)  # a bad --maml-batching fails before any work
    for name in config.runs:
        run = parse_run(name)
        if run["method"] not in ("protonet", "matching_net"):
            common.stage_mesh(mesh, config.maml_meta_batch, "--maml-meta-batch")
        if run["shots"] + config.test_queries > 20:
            raise ValueError(f"{name}: shots + test_queries = {run['shots'] + config.test_queries} exceeds the 20 "
                             "drawings per character; lower --test-queries.")
    os.makedirs(workdir, exist_ok=True)
    train_set, test_set = omniglot_splits(config.protocol, data_dir=data_dir)
    train_data = jnp.asarray(train_set.images[..., None])
    test_data = jnp.asarray(test_set.images[..., None])
    groups = test_set.alphabet_ids
    if fresh:
        import shutil

        for name in config.runs:
            shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)
    key = jax.random.key(config.seed)
    results, histories = {}, {}
    for i, name in enumerate(config.runs):
        out, history = run_one(config, name, workdir, train_data, test_data, groups, jax.random.fold_in(key, i),
                               progress=progress, mesh=mesh)
        results[name], histories[name] = out, history
        for label, metrics in out["tests"].items():
            row = "  ".join(f"{k}: {100 * v['mean']:.2f}±{100 * v['ci95']:.2f}%" for k, v in metrics.items())
            print(f"{name:>16} | {label:<28} | {row} | train {out['train_seconds'] / 60:.1f} min", flush=True)
    path = os.path.join(workdir, "results.json")
    if os.path.exists(path):  # runs measured by earlier invocations in this workdir are kept
        with open(path) as f:
            previous = json.load(f)
        if previous.get("protocol") == config.protocol:
            results = {**{k: v for k, v in previous.get("results", {}).items() if k not in results}, **results}
    output = {
        "experiment": f"few-shot Omniglot, protocol {config.protocol}",
        "protocol": config.protocol,
        "split": {"train_alphabets": sorted(set(train_set.alphabets)), "train_classes": len(train_set.characters),
                  "test_alphabets": sorted(set(test_set.alphabets)), "test_classes": len(test_set.characters)},
        "metric": f"accuracy on {config.test_episodes} test episodes ({config.test_queries} queries/class), 95% CI",
        "results": results,
        "metadata": common.run_metadata(),
    }
    train.write_json(path, output)
    plot_curves(histories, os.path.join(workdir, "learning_curves.png"))
    return output


def main(argv=None) -> int:
    return common.run_experiment(argv, Config, QUICK, __doc__.split("\n\n")[0], train_and_evaluate, "omniglot",
                                 data_dir=True)


if __name__ == "__main__":
    sys.exit(main())
