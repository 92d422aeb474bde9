"""Sinusoid regression: MAML's Section 5.1 / Table 2 protocol.

Meta-train a 1-40-40-1 ReLU MLP on sinusoid tasks (amplitude U[0.1, 5], phase
U[0, pi], x U[-5, 5]) with K=10 support and 10 query points per task, meta-batch
25, one inner SGD step (alpha 0.01) and Adam (1e-3); then evaluate at K=5 on the
same 600 test tasks for every method after 1, 5 and 10 inner steps.

Methods: MAML (second order), first-order MAML, Meta-SGD, and the "pretrained"
baseline (the same network trained on all tasks jointly, i.e. MAML with zero
inner steps, then fine-tuned at test time like the others).

Outputs under ``--workdir``: ``results.json`` (MSE mean and 95% CI per method
and step count), ``predictions.png`` (true curve, support points, pre- and
post-update predictions on test tasks), ``mse_vs_steps.png``, and per-method
``<method>/metrics.jsonl`` + ``<method>/checkpoints/`` (an interrupted run
resumes where it stopped).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import optax

from experiments import common
from jaxmeta import learners, losses, nets, scenarios, train

METHODS = ("maml", "fomaml", "meta_sgd", "pretrained")


@dataclasses.dataclass(frozen=True)
class Config:
    methods: Tuple[str, ...] = dataclasses.field(default=METHODS, metadata={"help": "methods to run"})
    steps: int = dataclasses.field(default=70000, metadata={"help": "meta-training iterations (paper: 70000)"})
    meta_batch: int = dataclasses.field(default=25, metadata={"help": "tasks per meta-step"})
    train_shots: int = dataclasses.field(default=10, metadata={"help": "support points per training task (K)"})
    train_queries: int = dataclasses.field(default=10, metadata={"help": "query points per training task"})
    inner_lr: float = dataclasses.field(default=0.01, metadata={"help": "inner SGD step size alpha"})
    outer_lr: float = dataclasses.field(default=1e-3, metadata={"help": "Adam step size beta"})
    hidden: Tuple[int, ...] = dataclasses.field(default=(40, 40), metadata={"help": "hidden layer widths"})
    test_tasks: int = dataclasses.field(default=600, metadata={"help": "test tasks (same for every method)"})
    test_shots: int = dataclasses.field(default=5, metadata={"help": "support points per test task"})
    test_queries: int = dataclasses.field(default=100, metadata={"help": "query points per test task"})
    test_steps: Tuple[int, ...] = dataclasses.field(default=(1, 5, 10), metadata={"help": "inner steps at test"})
    steps_per_call: int = dataclasses.field(default=1000, metadata={"help": "meta-steps per compiled call"})
    compute_dtype: str = dataclasses.field(default="float32", metadata={
        "help": "float32 | bfloat16 (bfloat16 compute, float32 meta-parameters)"})
    seed: int = dataclasses.field(default=0, metadata={"help": "PRNG seed"})


QUICK = {"steps": 400, "steps_per_call": 100, "test_tasks": 100}


def build_learner(config: Config, method: str, inner_steps: int) -> learners.MetaLearner:
    """The learner for ``method`` with ``inner_steps`` inner steps (training or test time)."""
    net = nets.mlp(config.hidden, 1, dtype=common.compute_dtype(config.compute_dtype))
    if method == "maml":
        return learners.maml(net, losses.squared_error, inner_lr=config.inner_lr, inner_steps=inner_steps)
    if method == "fomaml":
        return learners.fomaml(net, losses.squared_error, inner_lr=config.inner_lr, inner_steps=inner_steps)
    if method == "meta_sgd":
        return learners.meta_sgd(net, losses.squared_error, inner_lr=config.inner_lr, inner_steps=inner_steps)
    if method == "pretrained":
        return learners.maml(net, losses.squared_error, inner_lr=config.inner_lr, inner_steps=inner_steps)
    raise ValueError(f"methods: unknown method {method!r}; choose from {METHODS}.")


def train_method(config: Config, method: str, workdir: str, key, *, progress: bool, fresh: bool, mesh=None):
    """Meta-trains one method (resuming from ``workdir/<method>`` when possible), sharded over ``mesh`` if given."""
    learner = build_learner(config, method, 0 if method == "pretrained" else 1)
    sample = functools.partial(scenarios.sinusoid, num_tasks=config.meta_batch, support_shots=config.train_shots,
                               query_shots=config.train_queries)
    method_dir = os.path.join(workdir, method)
    if fresh and os.path.isdir(method_dir):
        import shutil

        shutil.rmtree(method_dir)
    start = time.perf_counter()
    # unroll=1: one rolled scan per call on every backend. The MLP has no convolutions, so CPU's unrolled
    # chunks buy nothing: benchmarks/README.md, loop suite (0.97 against 1.02 ms/step, 2 against 7 s to compile)
    result = train.fit(learner, optax.adam(config.outer_lr), sample, key=key, num_steps=config.steps,
                       device_sampling=True, steps_per_call=config.steps_per_call, unroll=1,
                       log_every=config.steps_per_call, checkpoint_every=max(config.steps // 5, 1) //
                       config.steps_per_call * config.steps_per_call or config.steps_per_call,
                       workdir=method_dir, progress=progress, desc=method,
                       mesh=common.stage_mesh(mesh, config.meta_batch, "--meta-batch"))
    jax.block_until_ready(result.state.params)
    return result.state.params, time.perf_counter() - start


def evaluate_method(config: Config, method: str, params, test_episodes, key) -> Dict[str, dict]:
    """Query MSE (mean, 95% CI) after 0 and each of ``test_steps`` inner steps."""
    out = {}
    for steps in (0,) + tuple(config.test_steps):
        learner = build_learner(config, method, steps)
        out[f"{steps}_steps"] = train.evaluate(learner, params, test_episodes, key=key, batch_size=200,
                                                nan_policy="report")["loss"]
    return out


def plot(config: Config, params_by_method, test_episodes, tasks, path: str, mse_path: str, results) -> None:
    plt = common.pyplot()
    if plt is None:
        return
    grid = jnp.linspace(-5.0, 5.0, 200)[:, None]
    shown = [m for m in ("maml", "meta_sgd", "pretrained") if m in params_by_method]
    n_tasks = 3
    fig, axes = plt.subplots(len(shown), n_tasks, figsize=(4.2 * n_tasks, 3.0 * len(shown)), squeeze=False)
    for row, method in enumerate(shown):
        for col in range(n_tasks):
            ep = jax.tree_util.tree_map(lambda a: a[col], test_episodes)
            ax = axes[row, col]
            truth = tasks.amplitude[col] * jnp.sin(grid[:, 0] - tasks.phase[col])
            ax.plot(grid[:, 0], truth, color="black", lw=2, label="true function")
            ax.scatter(ep.support_x[:, 0], ep.support_y[:, 0], color="tab:red", zorder=5, label=f"{config.test_shots} support points")
            for steps, style in ((0, ":"), (1, "--"), (10, "-")):
                learner = build_learner(config, method, steps)
                tp = learner.adapt(params_by_method[method], ep, jax.random.key(0))
                pred = learner.predict(params_by_method[method], tp, grid)[:, 0]
                label = "pre-update" if steps == 0 else f"after {steps} step{'s' if steps > 1 else ''}"
                ax.plot(grid[:, 0], pred, ls=style, label=label)
            ax.set_ylim(-6, 6)  # amplitudes are at most 5; a diverged prediction leaves the frame
            ax.set_title(f"{method}, test task {col}")
            if col == 0 and row == 0:
                ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for method, res in results.items():
        steps = sorted(int(k.split("_")[0]) for k in res)
        means = [res[f"{s}_steps"]["mean"] for s in steps]
        cis = [res[f"{s}_steps"]["ci95"] for s in steps]
        line = ax.errorbar(steps, means, yerr=cis, marker="o", capsize=3, label=method)
        for s_, key in ((s_, f"{s_}_steps") for s_ in steps):
            if res[key]["nonfinite"]:
                ax.annotate(f"{method}: diverged on {res[key]['nonfinite']}/{res[key]['n']} tasks", (s_, 1.0),
                            xycoords=("data", "axes fraction"), rotation=90, va="top", ha="right", fontsize=7,
                            color=line[0].get_color())
    ax.set_xlabel("inner gradient steps at test time")
    ax.set_ylabel(f"query MSE, K={config.test_shots} ({config.test_tasks} tasks, 95% CI)")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(mse_path, dpi=110)
    plt.close(fig)


def train_and_evaluate(config: Config, workdir: str, *, progress: bool = True, fresh: bool = False,
                       mesh=None) -> dict:
    """Runs every method of ``config`` and writes ``results.json`` and plots to ``workdir``.

    ``mesh``: shard each meta-batch over these devices (``common.device_mesh``; ``None``: one device).
    """
    for m in config.methods:
        if m not in METHODS:
            raise ValueError(f"methods: unknown method {m!r}; choose from {METHODS}.")
    common.stage_mesh(mesh, config.meta_batch, "--meta-batch")  # a meta-batch the devices cannot split fails now
    os.makedirs(workdir, exist_ok=True)
    key = jax.random.key(config.seed)
    train_key, test_key, eval_key = jax.random.split(key, 3)
    test_episodes, tasks = scenarios.sinusoid(test_key, num_tasks=config.test_tasks, support_shots=config.test_shots,
                                              query_shots=config.test_queries, return_tasks=True)
    results, timings, params_by_method = {}, {}, {}
    for method in config.methods:
        # every method trains on the same task stream (same key) and is tested on the same tasks
        params, seconds = train_method(config, method, workdir, train_key, progress=progress, fresh=fresh, mesh=mesh)
        params_by_method[method] = params
        timings[method] = seconds
        results[method] = evaluate_method(config, method, params, test_episodes, eval_key)
        row = "  ".join(f"{k}: {v['mean']:.3f}±{v['ci95']:.3f}" + (f" ({v['nonfinite']} diverged)" if v["nonfinite"] else "")
                        for k, v in results[method].items())
        print(f"{method:>10}  train {seconds:6.1f}s  MSE  {row}", flush=True)
    output = {
        "experiment": "sinusoid regression (MAML Table 2 protocol)",
        "config": dataclasses.asdict(config),
        "metric": f"query MSE at K={config.test_shots}, mean over {config.test_tasks} test tasks, 95% CI",
        "paper_maml_5shot": {"1_steps": 0.67, "5_steps": 0.38, "10_steps": 0.35},
        "results": results,
        "train_seconds": timings,
        "train_devices": common.mesh_size(mesh),
        "metadata": common.run_metadata(),
    }
    train.write_json(os.path.join(workdir, "results.json"), output)
    plot(config, params_by_method, test_episodes, tasks, os.path.join(workdir, "predictions.png"),
         os.path.join(workdir, "mse_vs_steps.png"), results)
    return output


def main(argv=None) -> int:
    return common.run_experiment(argv, Config, QUICK, __doc__.split("\n\n")[0], train_and_evaluate, "sinusoid")


if __name__ == "__main__":
    sys.exit(main())
