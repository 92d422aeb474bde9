"""Shared fixtures: tiny episodes and a registry of every learner for the contract suite."""

from __future__ import annotations

import gc
import os
import resource
import shutil
import tempfile

# One compilation cache on disk for this run's processes (the pytest-xdist workers, and the subprocesses
# tests start, which inherit the environment): about three quarters of the suite's time is XLA compiling,
# and the same program often compiles in several modules or workers (the per-module jax.clear_caches
# below empties the in-memory cache). A fresh folder per run, made by the first process (the xdist
# controller, before it starts the workers) and removed by it at the end; set JAXMETA_TEST_NO_CACHE=1 to
# compile everything afresh. No size limit: a limit makes every write lock the folder and add up the size
# of every entry in it, which slowed the run down as the cache grew (a half-written entry read by another
# worker fails to decompress, and JAX then compiles the program itself).
# Do not lower XLA's LLVM optimisation level to save compile time: XLA_FLAGS=
# --xla_backend_optimization_level=0 ran the suite in 14.3 instead of 23.3 min (2026-12-03), but at any
# level below the default 3, MAML meta-gradients through conv4(conv_impl="xla") came out wrong (max
# difference 0.07-0.38 against im2col, every batching; tests/test_nets.py and test_gradients.py catch it).
_OWN_CACHE = not os.environ.get("JAXMETA_TEST_NO_CACHE") and not os.environ.get("JAX_COMPILATION_CACHE_DIR")
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxmeta-test-xla-cache-")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # op-by-op programs too

# The suite draws its random numbers with JAX's original (non-partitionable) threefry lowering: on XLA:CPU a
# jax.random call compiles in 0.26 instead of 0.8 s per new shape (2026-12-03), and the suite makes hundreds of
# them (test data, inits, samplers). Only the bits drawn differ; a test that checks a number a user's run
# reproduces (a published result) is marked default_prng and draws the default bits. The library itself never
# sets this flag; JAX_THREEFRY_PARTITIONABLE set outside the suite wins.
os.environ.setdefault("JAX_THREEFRY_PARTITIONABLE", "0")

import jax  # noqa: E402  (after the cache settings, which jax reads when imported)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

from jaxmeta import Episode, learners, losses, nets, scenarios
from jaxmeta.train import meta_step as _meta_step


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs(request):
    """Frees every compiled program and cached eval step after each test module.

    Without this the suite keeps thousands of XLA executables (and the data
    arrays their closures hold) alive until the end and outgrows a 24 GB machine.
    """
    yield
    _meta_step._cached_eval_step.cache_clear()
    jax.clear_caches()
    gc.collect()
    log = os.environ.get("JAXMETA_TEST_MEMLOG")
    if log:
        with open(log, "a") as f:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
            rss = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20
            f.write(f"{request.module.__name__}: rss {rss} MB, peak {peak} MB\n")


@pytest.fixture(autouse=True)
def _default_prng_bits(request):
    """Tests marked ``default_prng`` draw JAX's default (partitionable) threefry bits, as users' runs do."""
    if request.node.get_closest_marker("default_prng"):
        with jax.threefry_partitionable(True):
            yield
    else:
        yield


def pytest_sessionfinish(session):
    if _OWN_CACHE:  # the process that made the folder (workers inherit it and do not own it)
        shutil.rmtree(os.environ.pop("JAX_COMPILATION_CACHE_DIR"), ignore_errors=True)


DATA_DIR = os.environ.get("JAXMETA_DATA")


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="set JAXMETA_DATA to the folder of the real data sets to run this test")
    for item in items:
        if "data" in item.keywords and not DATA_DIR:
            item.add_marker(skip)


def regression_episodes(key, num_tasks=4, shots=5, queries=6):
    return scenarios.sinusoid(key, num_tasks=num_tasks, support_shots=shots, query_shots=queries)


def classification_episodes(key, num_tasks=3, ways=3, shots=2, queries=2, dim=8):
    """Gaussian-blob classification episodes: labels in [0, ways), class means per task."""
    k_mean, k_noise = jax.random.split(key)
    means = jax.random.normal(k_mean, (num_tasks, ways, dim)) * 2.0
    y_s = jnp.tile(jnp.repeat(jnp.arange(ways), shots), (num_tasks, 1))
    y_q = jnp.tile(jnp.repeat(jnp.arange(ways), queries), (num_tasks, 1))
    n_s, n_q = jax.random.split(k_noise)
    x_s = jnp.take_along_axis(means, y_s[..., None], 1) + jax.random.normal(n_s, (num_tasks, ways * shots, dim))
    x_q = jnp.take_along_axis(means, y_q[..., None], 1) + jax.random.normal(n_q, (num_tasks, ways * queries, dim))
    return Episode(x_s, y_s.astype(jnp.int32), x_q, y_q.astype(jnp.int32))


def semisup_classification_episodes(key, num_tasks=3, ways=3, shots=2, queries=2, per_class=2, distractors=1, dim=8):
    """Blob episodes plus an unlabelled set in ``aux`` (``(ways + distractors) * per_class`` examples, the last
    ``distractors * per_class`` from blobs of other classes), as :func:`jaxmeta.scenarios.semisup_episodes` lays out."""
    k_lab, k_unl = jax.random.split(key)
    eps = classification_episodes(k_lab, num_tasks, ways, shots, queries, dim)
    total = ways + distractors
    k_mean, k_noise = jax.random.split(k_unl)
    # unlabelled examples of the task classes sit near the support examples of their class
    centres = jnp.concatenate([eps.support_x[:, ::shots], 2.0 * jax.random.normal(k_mean, (num_tasks, distractors, dim))], 1)
    ux = jnp.repeat(centres, per_class, axis=1) + jax.random.normal(k_noise, (num_tasks, total * per_class, dim))
    return eps._replace(aux={"unlabelled_x": ux, "unlabelled_mask": jnp.ones((num_tasks, total * per_class))})


ACC = {"accuracy": losses.accuracy}


def _gradient_learners(kind):
    """name -> learner factory for a task kind ("regression" | "classification")."""
    if kind == "regression":
        net, loss, metrics = nets.mlp((8, 8), 1), losses.squared_error, None
    else:
        net, loss, metrics = nets.mlp((8, 8), 3), losses.softmax_cross_entropy, ACC
    kw = dict(metrics=metrics)
    return {
        "maml": lambda: learners.maml(net, loss, inner_lr=0.05, inner_steps=2, **kw),
        "maml_remat": lambda: learners.maml(net, loss, inner_lr=0.05, inner_steps=2, remat=True, **kw),
        "maml_scan": lambda: learners.maml(net, loss, inner_lr=0.05, inner_steps=2, unroll=1, **kw),
        "maml_adam_inner": lambda: learners.maml(net, loss, inner_steps=2, inner_optimizer=optax.adam(0.01, eps_root=1e-8), **kw),
        "fomaml": lambda: learners.fomaml(net, loss, inner_lr=0.05, inner_steps=2, **kw),
        "meta_sgd": lambda: learners.meta_sgd(net, loss, inner_lr=0.05, inner_steps=1, **kw),
        "anil": lambda: learners.anil(net, loss, inner_lr=0.05, inner_steps=2, **kw),
        "maml_plus_plus": lambda: learners.maml_plus_plus(net, loss, inner_lr=0.05, inner_steps=3, **kw),
        "maml_learned_scalar_lr": lambda: learners.maml(net, loss, inner_lr=0.05, learn_inner_lr="scalar", **kw),
        "reptile": lambda: learners.reptile(net, loss, inner_lr=0.05, inner_steps=3, **kw),
        "imaml": lambda: learners.imaml(net, loss, reg=2.0, inner_lr=0.05, inner_steps=3, cg_steps=3, **kw),
        "ridge_head": lambda: learners.ridge_head(nets.mlp((8,), 4), loss, metrics=metrics,
                                                  num_classes=None if kind == "regression" else 3),
    }


def _metric_learners():
    """Metric-based learners (classification only): embedding MLP without a head."""
    emb = nets.mlp((8, 8), None)
    return {
        "protonet": lambda: learners.protonet(emb, num_ways=3),
        "protonet_cosine": lambda: learners.protonet(emb, num_ways=3, distance="cosine", scale=5.0, learn_scale=True),
        "matching_net": lambda: learners.matching_net(emb, num_ways=3),
        "metric_finetune": lambda: learners.metric_finetune(emb, num_ways=3, inner_steps=2, inner_lr=0.05,
                                                            learn_inner_lr="per_parameter", adapt_filter=("hidden_1",)),
    }


def _model_based_learners(kind):
    """name -> factory of the model-based learners (neural processes, hypernetwork) for a task kind."""
    ways = None if kind == "regression" else 3
    small = dict(encoder_hidden=(8, 8), decoder_hidden=(8,), num_ways=ways)
    if kind == "regression":
        task_net, loss, metrics = nets.mlp((4,), 1), losses.squared_error, None
    else:
        task_net, loss, metrics = nets.mlp((), 3), losses.softmax_cross_entropy, ACC
    hyper = dict(set_hidden=(8, 8), generator_hidden=(8,), metrics=metrics)
    cases = {
        "cnp": lambda: learners.cnp(**small),
        "cnp_embedding": lambda: learners.cnp(embedding=nets.mlp((8,), None), **small),
        "neural_process": lambda: learners.neural_process(latent_hidden=(8, 8), latent_dim=4, predict_samples=3,
                                                          **small),
        "hypernetwork": lambda: learners.hypernetwork(task_net, loss, **hyper),
        "hypernetwork_embedding": lambda: learners.hypernetwork(task_net, loss, embedding=nets.mlp((8,), None),
                                                                **hyper),
    }
    if kind == "regression":  # latent only: one global z cannot tell classes apart (classification raises)
        cases["neural_process_latent_only"] = lambda: learners.neural_process(
            latent_hidden=(8, 8), latent_dim=4, deterministic_path=False, predict_samples=2, **small)
    return cases


def _semisup_learners():
    """Learners that read the unlabelled set in Episode.aux (kind "semisup")."""
    emb = nets.mlp((8, 8), None)
    cases = {f"semisup_protonet_{refine}": (lambda refine=refine: learners.semisup_protonet(emb, num_ways=3, refine=refine))
             for refine in learners.semisup.REFINEMENTS}
    cases["semisup_maml"] = lambda: learners.semisup_maml(nets.mlp((8, 8), 3), losses.softmax_cross_entropy,
                                                          inner_lr=0.05, inner_steps=2, metrics=ACC)
    return cases


def learner_cases():
    """(id, kind, factory) for every learner the contract suite covers."""
    cases = []
    for kind in ("regression", "classification"):
        for family in (_gradient_learners, _model_based_learners):
            for name, factory in family(kind).items():
                cases.append(pytest.param(kind, factory, id=f"{name}-{kind}"))
    for name, factory in _metric_learners().items():
        cases.append(pytest.param("classification", factory, id=f"{name}-classification"))
    for name, factory in _semisup_learners().items():
        cases.append(pytest.param("semisup", factory, id=f"{name}-semisup"))
    return cases


def episodes_for(kind, key, **kw):
    if kind == "semisup":
        return semisup_classification_episodes(key, **kw)
    return regression_episodes(key, **kw) if kind == "regression" else classification_episodes(key, **kw)
