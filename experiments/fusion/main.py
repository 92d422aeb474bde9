"""Heterogeneous data fusion on Omniglot: images + pen strokes in one metric space.

Every Omniglot drawing is an image and a pen trajectory. Stage 1 meta-trains one
encoder for both (Conv-4 for images; for trajectories, 1-D conv blocks followed by
self-attention blocks; per-modality adapters, fused by a masked mean, a shared
linear ``head``) as a Prototypical Network. With the default ``--objective views``
every support and query drawing is embedded as an image, as strokes and fused,
and the prototypical loss is averaged over all nine (support, query) modality
pairs, so a stroke prototype must classify image queries and the reverse
(cross-modal alignment at the cost of one encoder pass); ``--align`` adds a
drawing-level term (each query's image embedding must pick its own strokes'
embedding among the other classes' queries, and the reverse);
``--objective random`` shows each example in one random modality instead.
Training drawings get random affine distortions, the same one for a drawing's
image and its trajectory, and their trajectories a random stroke order and
direction (the ink, so the image, is unchanged). Training alphabets:
images_background_small1's 5 (x4 rotations as extra classes); test alphabets:
Japanese_(katakana), Sanskrit, Tagalog (never seen).

Because every normalisation is per example, the test set is embedded once
(with ``--test-augment N``, each drawing's features are averaged over it and N
random distortions of it: test-time augmentation); all evaluations then run on
the same test episodes (same classes and drawings) in every modality:
image-only, stroke-only, cross-modal (strokes -> images and images -> strokes)
and fused, 5-way 1-shot and 5-shot, 95% CI. Heads compared
on those episodes: prototypes (no fine-tuning), MAML-style fine-tuning of the
projection head on the support set (fixed rate; Meta-SGD's learned
per-parameter rates), and a hypernetwork that writes a linear classifier from
the support set, one class's weights from that class's examples. Before the
heads, each modality's features are shifted by its mean over the training
alphabets (``--centre-modalities``), which removes the gap between the
modalities and changes only cross-modal distances. Downstream: k-means of the
unseen-alphabet characters (NMI, ARI) and anomaly detection (characters of an
unseen alphabet as outliers; AUROC), per modality, fused and late-fused.

Outputs under ``--workdir``: ``results.json``, ``embedding.png`` (2-D PCA,
colour = character, marker = modality), ``encoder/`` (metrics + checkpoints;
re-running resumes).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import common
from jaxmeta import Episode, learners, losses, nets, scenarios, train
from jaxmeta.data import MINIMAL_TEST_ALPHABETS, multimodal_splits, multimodal_rotations

MODES = {  # name -> (support modality, query modality)
    "image": ("image", "image"),
    "stroke": ("stroke", "stroke"),
    "cross_stroke_to_image": ("stroke", "image"),
    "cross_image_to_stroke": ("image", "stroke"),
    "fused": ("both", "both"),
}
MOD_INDEX = {"image": 0, "stroke": 1, "both": 2}


@dataclasses.dataclass(frozen=True)
class Config:
    num_points: int = dataclasses.field(default=48, metadata={"help": "points per resampled trajectory"})
    dim: int = dataclasses.field(default=64, metadata={"help": "embedding width"})
    image_channels: int = dataclasses.field(default=64, metadata={"help": "Conv-4 filters per block"})
    stroke_channels: Tuple[int, ...] = dataclasses.field(default=(128, 128), metadata={
        "help": "1-D conv filters"})
    stroke_attention: int = dataclasses.field(default=2, metadata={
        "help": "self-attention blocks after the stroke encoder's conv blocks (0: conv only)"})
    train_steps: int = dataclasses.field(default=8000, metadata={"help": "stage-1 training episodes"})
    train_ways: int = dataclasses.field(default=30, metadata={"help": "ways per training episode"})
    train_shots: int = dataclasses.field(default=1, metadata={"help": "shots per training episode"})
    train_queries: int = dataclasses.field(default=4, metadata={"help": "queries per class when training"})
    lr: float = dataclasses.field(default=1e-3, metadata={"help": "Adam peak learning rate (cosine decay to 5%)"})
    rotate_train: bool = dataclasses.field(default=True, metadata={"help": "x4 rotations of training characters"})
    objective: str = dataclasses.field(default="views", metadata={
        "help": "stage-1 loss. views: every drawing embedded as image, strokes and fused, prototypical loss "
                "averaged over all 9 (support, query) modality pairs (aligns the modalities; one encoder pass). "
                "random: one random modality per example (image / strokes / both)"})
    align: float = dataclasses.field(default=1.0, metadata={
        "help": "with --objective views: weight of a drawing-level alignment term (each query's image embedding "
                "must pick its own strokes' embedding among the episode's other-class queries, and the reverse; "
                "losses.view_alignment_loss)"})
    augment: bool = dataclasses.field(default=True, metadata={
        "help": "random affine distortions of training drawings (the same one for a drawing's image and strokes)"})
    stroke_order_noise: float = dataclasses.field(default=1.0, metadata={
        "help": "with --augment: training strokes re-laid in the order of index + this x N(0, 1) "
                "(scenarios.random_stroke_order; 0: drawn order)"})
    stroke_reverse: float = dataclasses.field(default=0.2, metadata={
        "help": "with --augment: probability that a training stroke is drawn backwards"})
    finetune_steps: int = dataclasses.field(default=500, metadata={"help": "meta-steps of the fine-tuning learners"})
    finetune_inner_steps: int = dataclasses.field(default=3, metadata={"help": "inner steps of head fine-tuning"})
    finetune_inner_lr: float = dataclasses.field(default=0.05, metadata={"help": "inner step size (initial)"})
    finetune_lr: float = dataclasses.field(default=1e-4, metadata={"help": "outer Adam rate of fine-tuning"})
    hyper_steps: int = dataclasses.field(default=2000, metadata={"help": "meta-steps of the hypernetwork head"})
    meta_batch: int = dataclasses.field(default=16, metadata={"help": "episodes per step (fine-tuning, hypernet)"})
    test_episodes: int = dataclasses.field(default=1000, metadata={"help": "test episodes per configuration"})
    test_queries: int = dataclasses.field(default=15, metadata={"help": "queries per class at test"})
    anomaly_shots: int = dataclasses.field(default=5, metadata={"help": "drawings per known character (anomaly)"})
    centre_modalities: bool = dataclasses.field(default=True, metadata={
        "help": "subtract each modality's mean feature over the training alphabets before any head: removes the "
                "modality gap for cross-modal comparisons; distances within a modality are unchanged"})
    test_augment: int = dataclasses.field(default=0, metadata={
        "help": "test-time augmentation: every drawing's features (test and training alphabets) are the mean over "
                "the drawing and this many random affine distortions of it (the training distortions, the same one "
                "for its image and strokes; N + 1 embedding passes); 0: the drawing alone"})
    steps_per_call: int = dataclasses.field(default=10, metadata={"help": "meta-steps per compiled call"})
    seed: int = dataclasses.field(default=0, metadata={"help": "PRNG seed"})


QUICK = {"train_steps": 20, "train_ways": 10, "finetune_steps": 10, "hyper_steps": 10, "test_episodes": 50,
         "image_channels": 8, "stroke_channels": (16, 16), "stroke_attention": 1, "num_points": 32,
         "test_augment": 1}


OBJECTIVES = ("views", "random")


def encoder(config: Config, features_only: bool = False, views: bool = False) -> nets.Network:
    return nets.multimodal_encoder((28, 28, 1), (config.num_points, 3), dim=config.dim,
                                   image_channels=config.image_channels, stroke_channels=config.stroke_channels,
                                   stroke_attention=config.stroke_attention,
                                   features_only=features_only, views=views)


def train_encoder(config: Config, train_set, workdir, key, *, progress: bool, fresh: bool):
    if config.objective not in OBJECTIVES:
        raise ValueError(f"objective: expected one of {OBJECTIVES}, got {config.objective!r}.")
    views = config.objective == "views"
    images, strokes = jnp.asarray(train_set.images), jnp.asarray(train_set.strokes)
    modality = "both" if views else "random"
    episodes = functools.partial(scenarios.multimodal_episodes, images=images, strokes=strokes, num_tasks=1,
                                 ways=config.train_ways, shots=config.train_shots, queries=config.train_queries,
                                 support_modality=modality, query_modality=modality)

    def sample(key):
        k_episode, k_augment = jax.random.split(key)
        eps = episodes(k_episode)
        if config.augment:
            eps = scenarios.augment_multimodal(k_augment, eps, images.shape[2:], strokes.shape[2:],
                                               order_noise=config.stroke_order_noise, reverse=config.stroke_reverse)
        return eps

    learner = learners.protonet(encoder(config, views=views), num_ways=config.train_ways, views=views,
                                align=config.align)
    folder = os.path.join(workdir, "encoder")
    if fresh:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    opt = optax.adam(optax.cosine_decay_schedule(config.lr, max(config.train_steps, 1), alpha=0.05))
    every = config.steps_per_call * max(1, 50 // config.steps_per_call)
    result = train.fit(learner, opt, sample, key=key, num_steps=config.train_steps, device_sampling=True,
                       steps_per_call=config.steps_per_call, log_every=every, workdir=folder,
                       checkpoint_every=config.steps_per_call * max(1, 500 // config.steps_per_call),
                       progress=progress, desc="encoder")
    seconds = max((r.get("train_seconds", 0.0) for r in result.history), default=0.0)
    return result.state.params["net"], seconds


def embed_all(config: Config, params, data, batch: int = 512, *, augment: int = 0, key=None) -> np.ndarray:
    """Fused pre-head features ``[3 (image, stroke, both), C * D, dim]`` of every drawing.

    With ``augment > 0`` each drawing's features are the mean over the drawing
    itself and ``augment`` random affine distortions of it (distortion ``i``
    drawn from ``fold_in(key, i)``; a drawing's image and strokes get the same
    one, as in training).
    """
    net = encoder(config, features_only=True)
    body = {k: v for k, v in params.items() if k != "head"}
    apply = jax.jit(net.apply)
    images = data.images.reshape((-1,) + data.images.shape[2:])
    strokes = data.strokes.reshape((-1,) + data.strokes.shape[2:])
    out = np.zeros((3, images.shape[0], config.dim), np.float32)
    for version in range(augment + 1):
        if version:
            k = jax.random.fold_in(key, version)
            images_v = np.asarray(scenarios.random_affine(k, jnp.asarray(images)))
            strokes_v = np.asarray(scenarios.random_affine_points(k, jnp.asarray(strokes)))
        else:
            images_v, strokes_v = images, strokes
        for m in range(3):
            for start in range(0, images.shape[0], batch):
                stop = min(start + batch, images.shape[0])
                idx = np.arange(start, stop)
                idx = np.concatenate([idx, np.full(batch - idx.size, idx[-1])])  # fixed shape: one compile
                x = scenarios.pack_examples(jnp.asarray(images_v[idx]), jnp.asarray(strokes_v[idx]),
                                            jnp.full(batch, m))
                out[m, start:stop] += np.asarray(apply(body, x))[: stop - start]
    return out / (augment + 1)


def centre_modalities(features, reference):
    """Subtracts each modality's mean over ``reference`` (``[3, N, dim]``, the training alphabets) from both arrays.

    A constant shift per modality: distances between two examples of the same
    modality (and between fused examples) are unchanged; only comparisons across
    modalities move, with the mean offset between the modalities (the modality
    gap) removed. The means come from the training alphabets only.
    """
    means = np.asarray(reference).mean(axis=1, keepdims=True)
    return np.asarray(features) - means, np.asarray(reference) - means


def feature_sampler(features, num_classes, per_class, *, ways, shots, queries, num_tasks, s_mod, q_mod):
    """``sample(key) -> Episode`` over precomputed features; same key -> same drawings as the packed episodes."""
    feats = jnp.asarray(features)
    dummy = jnp.zeros((num_classes, per_class, 1, 1))
    dummy_s = jnp.zeros((num_classes, per_class, 1, 3))

    def sample(key):
        ep = scenarios.multimodal_episodes(key, dummy, dummy_s, num_tasks=num_tasks, ways=ways, shots=shots,
                                           queries=queries, support_modality=s_mod, query_modality=q_mod)
        a = ep.aux
        return Episode(feats[a["support_modality"], a["support_index"]], ep.support_y,
                       feats[a["query_modality"], a["query_index"]], ep.query_y)

    return sample


def head_params(params):
    return {"head": params["head"]}


def per_view(net: nets.Network, views: int = 2) -> nets.Network:
    """``net`` applied to each of ``views`` equal slices of the input, outputs concatenated (same params)."""
    def split(x):
        return jnp.split(x, views, axis=-1)

    return nets.Network(lambda key, x: net.init(key, split(x)[0]),
                        lambda params, x: jnp.concatenate([net.apply(params, part) for part in split(x)], axis=-1))


def late_features(features) -> np.ndarray:
    """Late fusion of ``[3, N, dim]`` per-modality features: every mode holds ``[image, stroke]`` (``[3, N, 2 dim]``).

    A prototype head on these compares drawings by the *sum* of their image and
    stroke squared distances (a product of the two modalities' softmax experts),
    where the fused embedding compares the means of the two embeddings.
    """
    both = np.concatenate([features[0], features[1]], axis=-1)
    return np.stack([both, both, both])


def fewshot_table(config, learner_for, params_for, test_feats, test_shape, key, late=True):
    """``{mode: {"1-shot": ci, "5-shot": ci}, "paired": ...}`` on the same test episodes for every mode.

    ``learner_for(shots, head)`` builds the learner around a head network; with
    ``late`` the table gains ``fused_late`` (late fusion, :func:`late_features`,
    the head applied to each modality's features). ``"paired"`` holds the
    per-episode differences of each fusion against each single modality
    (``"fused_minus_image"``, ...: mean and 95% CI), the episodes being the same.
    """
    head_net = nets.mlp((), config.dim)
    out, values = {}, {}
    modes = dict(MODES, **({"fused_late": ("both", "both")} if late else {}))
    late_feats = late_features(test_feats) if late else None
    for mode, (s_mod, q_mod) in modes.items():
        out[mode] = {}
        feats, head = (late_feats, per_view(head_net)) if mode == "fused_late" else (test_feats, head_net)
        for shots in (1, 5):
            sample = feature_sampler(feats, *test_shape, ways=5, shots=shots, queries=config.test_queries,
                                     num_tasks=100, s_mod=s_mod, q_mod=q_mod)
            res = train.evaluate(learner_for(shots, head), params_for(shots), sample,
                                 key=jax.random.fold_in(key, shots), num_episodes=config.test_episodes,
                                 return_values=True)
            out[mode][f"{shots}-shot"] = res["accuracy"]
            values[mode, shots] = np.asarray(res["values"]["accuracy"], np.float64)
    out["paired"] = {f"{fusion}_minus_{single}": {f"{shots}-shot": train.summarize(values[fusion, shots]
                                                                                    - values[single, shots])
                                                  for shots in (1, 5)}
                     for fusion in ("fused", "fused_late") if fusion in modes for single in ("image", "stroke")}
    return out


def meta_train_on_features(config, learner, init_params, train_feats, train_shape, shots, steps, lr, key, mesh=None):
    """Meta-trains a learner on train-alphabet features (random modality per example); returns params, seconds.

    The meta-batch is sharded over ``mesh`` when one is given.
    """
    sample = feature_sampler(train_feats, *train_shape, ways=5, shots=shots, queries=5,
                             num_tasks=config.meta_batch, s_mod="random", q_mod="random")
    state = train.init_state(learner, optax.adam(lr), key, sample(key))
    state = state._replace(params=init_params(state.params), opt_state=optax.adam(lr).init(init_params(state.params)))
    start = time.perf_counter()
    result = train.fit(learner, optax.adam(lr), sample, key=key, num_steps=steps, state=state, device_sampling=True,
                       steps_per_call=config.steps_per_call, log_every=config.steps_per_call, progress=False,
                       mesh=common.stage_mesh(mesh, config.meta_batch, "--meta-batch"))
    jax.block_until_ready(result.state.params)
    return result.state.params, time.perf_counter() - start


def clustering_scores(features, labels, num_classes, key):
    assign, _, _ = losses.kmeans(key, jnp.asarray(features), num_classes, iterations=50, restarts=5)
    y = jnp.asarray(labels)
    return {"nmi": float(losses.normalized_mutual_info(y, assign, num_classes, num_classes)),
            "ari": float(losses.adjusted_rand_index(y, assign, num_classes, num_classes))}


def novelty_auroc(known_emb, known_query_emb, novel_emb) -> float:
    """AUROC of 'distance to the nearest known prototype' separating novel from held-out known drawings."""
    protos = known_emb.mean(axis=1)  # [K, dim]
    score = lambda e: np.asarray(jnp.min(losses.pairwise_squared_euclidean(jnp.asarray(e), jnp.asarray(protos)), 1))
    inl, out = score(known_query_emb), score(novel_emb)
    scores = np.concatenate([inl, out])
    positive = np.concatenate([np.zeros(inl.size), np.ones(out.size)])
    return float(losses.roc_auc(jnp.asarray(scores), jnp.asarray(positive)))


def plot_embedding(emb_by_mode, labels, names, path, num_classes=10):
    plt = common.pyplot()
    if plt is None:
        return
    chosen = np.unique(labels)[:num_classes]
    keep = np.isin(labels, chosen)
    stacked = np.concatenate([emb_by_mode[m][keep] for m in ("image", "stroke", "both")])
    centred = stacked - stacked.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    n = keep.sum()
    fig, ax = plt.subplots(figsize=(7, 6))
    cmap = plt.get_cmap("tab10")
    for i, (mode, marker) in enumerate((("image", "o"), ("stroke", "^"), ("both", "s"))):
        part = xy[i * n : (i + 1) * n]
        colours = [cmap(int(np.flatnonzero(chosen == c)[0]) % 10) for c in labels[keep]]
        ax.scatter(part[:, 0], part[:, 1], c=colours, marker=marker, s=22, alpha=0.75, edgecolors="none",
                   label={"both": "fused (image + strokes)", "stroke": "strokes"}.get(mode, mode))
    ax.set_title(f"Unseen-alphabet characters ({len(chosen)} of them, 20 drawings each): PCA of the embedding\n"
                 "colour = character, marker = modality", fontsize=9)
    legend = ax.legend(fontsize=8)
    for handle in legend.legend_handles:
        handle.set_color("grey")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train_and_evaluate(config: Config, workdir: str, *, data_dir=None, progress: bool = True,
                       fresh: bool = False, mesh=None) -> dict:
    """Trains the encoder and the heads, runs every evaluation; writes ``results.json`` and plots to ``workdir``.

    ``mesh``: shard the heads' meta-batches over these devices (``common.device_mesh``; ``None``: one device);
    the encoder trains on one many-way episode per step, on one device.
    """
    common.stage_mesh(mesh, config.meta_batch, "--meta-batch")  # a meta-batch the devices cannot split fails now
    os.makedirs(workdir, exist_ok=True)
    key = jax.random.key(config.seed)
    k_enc, k_ft, k_hyper, k_test, k_cluster = jax.random.split(key, 5)
    train_set, test_set = multimodal_splits(data_dir=data_dir, num_points=config.num_points)
    train_rot = multimodal_rotations(train_set) if config.rotate_train else train_set

    # stage 1: the encoder
    params, enc_seconds = train_encoder(config, train_rot, workdir, k_enc, progress=progress, fresh=fresh)
    print(f"encoder trained in {enc_seconds / 60:.1f} min", flush=True)

    # embed every drawing once, in each modality
    test_feats = embed_all(config, params, test_set, augment=config.test_augment, key=jax.random.fold_in(k_test, 1))
    train_feats = embed_all(config, params, train_set, augment=config.test_augment,
                            key=jax.random.fold_in(k_test, 2))
    if config.centre_modalities:
        test_feats, train_feats = centre_modalities(test_feats, train_feats)
    test_shape, train_shape = test_set.images.shape[:2], train_set.images.shape[:2]
    head_net = nets.mlp((), config.dim)

    # prototype head, no fine-tuning
    results = {"prototype_head": fewshot_table(config, lambda s, head: learners.protonet(head, num_ways=5),
                                               lambda s: {"net": head_params(params)}, test_feats, test_shape,
                                               k_test)}
    timings = {"encoder": enc_seconds}

    # meta fine-tuning of the head: MAML (fixed rate) and Meta-SGD (learned per-parameter rates)
    for name, lr_mode in (("maml_head", None), ("meta_sgd_head", "per_parameter")):
        trained, spent = {}, 0.0
        for shots in (1, 5):
            ft = learners.metric_finetune(head_net, num_ways=5, inner_steps=config.finetune_inner_steps,
                                          inner_lr=config.finetune_inner_lr, learn_inner_lr=lr_mode)
            init = lambda p: {**p, "net": head_params(params)}
            trained[shots], seconds = meta_train_on_features(config, ft, init, train_feats, train_shape, shots,
                                                             config.finetune_steps, config.finetune_lr,
                                                             jax.random.fold_in(k_ft, shots), mesh)
            spent += seconds
        ft_for = lambda s, head: learners.metric_finetune(head, num_ways=5, inner_steps=config.finetune_inner_steps,
                                                    inner_lr=config.finetune_inner_lr, learn_inner_lr=lr_mode)
        results[name] = fewshot_table(config, ft_for, lambda s: trained[s], test_feats, test_shape, k_test)
        if lr_mode == "per_parameter":
            rates = np.concatenate([np.ravel(v) for v in jax.tree_util.tree_leaves(trained[1]["inner_lr"])])
            results[name]["learned_rates_1shot"] = {"mean": float(rates.mean()), "min": float(rates.min()),
                                                    "max": float(rates.max())}
        timings[name] = spent

    # hypernetwork head: support set -> weights of a linear 5-way classifier on the embedding, written one
    # class at a time from that class's support examples (equivariant to relabelling, like prototypes)
    hyper = learners.hypernetwork(nets.mlp((), 5), losses.softmax_cross_entropy, embedding=head_net,
                                  set_hidden=(128, 128), generator_hidden=(128,), per_class=True,
                                  metrics={"accuracy": losses.accuracy})
    trained, spent = {}, 0.0
    for shots in (1, 5):
        init = lambda p: {**p, "embedding": head_params(params)}
        trained[shots], seconds = meta_train_on_features(config, hyper, init, train_feats, train_shape, shots,
                                                         config.hyper_steps, 1e-3, jax.random.fold_in(k_hyper, shots),
                                                         mesh)
        spent += seconds
    # (its generated classifier reads one modality's embedding width: no late-fusion row)
    results["hypernetwork_head"] = fewshot_table(config, lambda s, head: hyper, lambda s: trained[s], test_feats,
                                                 test_shape, k_test, late=False)
    timings["hypernetwork_head"] = spent

    # downstream: clustering and anomaly detection in the (prototype-head) embedding space
    head = jax.jit(lambda x: head_net.apply(head_params(params), x))
    emb_test = {m: np.asarray(head(jnp.asarray(test_feats[i]))) for m, i in MOD_INDEX.items()}
    emb_train = {m: np.asarray(head(jnp.asarray(train_feats[i]))) for m, i in MOD_INDEX.items()}
    for emb in (emb_test, emb_train):  # late fusion: [image, stroke] embeddings side by side
        emb["fused_late"] = np.concatenate([emb["image"], emb["stroke"]], axis=-1)
    num_test, per_class = test_shape
    labels = np.repeat(np.arange(num_test), per_class)
    clustering, anomaly = {}, {}
    alph = np.array(test_set.alphabets)
    for m in emb_test:
        clustering[m] = clustering_scores(emb_test[m], labels, num_test, k_cluster)
        per_alphabet = []
        for a in MINIMAL_TEST_ALPHABETS:
            chars = np.flatnonzero(alph == a)
            sel = np.isin(labels, chars)
            remap = np.searchsorted(chars, labels[sel])
            per_alphabet.append(clustering_scores(emb_test[m][sel], remap, chars.size, k_cluster)["nmi"])
        clustering[m]["nmi_within_alphabet_mean"] = float(np.mean(per_alphabet))
        k = config.anomaly_shots
        e_tr = emb_train[m].reshape(train_shape + (-1,))
        e_te = emb_test[m].reshape(test_shape + (-1,))
        # (a) known = the training alphabets' characters (prototypes from k drawings, inliers = the other drawings);
        #     outliers = every drawing of the unseen alphabets
        width = e_te.shape[-1]
        seen = novelty_auroc(e_tr[:, :k], e_tr[:, k:].reshape(-1, width), e_te.reshape(-1, width))
        # (b) all unseen: known = two unseen alphabets (k drawings each), outliers = the third unseen alphabet
        held = []
        for a in MINIMAL_TEST_ALPHABETS:
            known, novel = alph != a, alph == a
            held.append(novelty_auroc(e_te[known, :k], e_te[known, k:].reshape(-1, width),
                                      e_te[novel].reshape(-1, width)))
        anomaly[m] = {"auroc_known_train_alphabets": seen, "auroc_unseen_alphabet_vs_two_other_unseen": float(np.mean(held)),
                      "auroc_per_held_out_alphabet": dict(zip(MINIMAL_TEST_ALPHABETS, held))}

    plot_embedding(emb_test, labels, test_set.characters, os.path.join(workdir, "embedding.png"))
    for head_name in ("prototype_head", "maml_head", "meta_sgd_head", "hypernetwork_head"):
        for mode in results[head_name]:
            if mode not in MODES and mode != "fused_late":
                continue
            row = "  ".join(f"{s}: {100 * v['mean']:.2f}±{100 * v['ci95']:.2f}%" for s, v in
                            results[head_name][mode].items())
            print(f"{head_name:>18} | {mode:<22} | {row}", flush=True)
    for m in clustering:
        print(f"{m:>10}: NMI {clustering[m]['nmi']:.3f}  ARI {clustering[m]['ari']:.3f}  "
              f"NMI within alphabet {clustering[m]['nmi_within_alphabet_mean']:.3f}  "
              f"AUROC (known = train alphabets) {anomaly[m]['auroc_known_train_alphabets']:.3f}  "
              f"AUROC (known = 2 unseen alphabets) {anomaly[m]['auroc_unseen_alphabet_vs_two_other_unseen']:.3f}",
              flush=True)
    print("training seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()), flush=True)
    output = {
        "experiment": "Omniglot image + stroke fusion with metric meta-learning (issue 7)",
        "config": dataclasses.asdict(config),
        "split": {"train_alphabets": sorted(set(train_set.alphabets)), "train_classes": len(train_set.characters),
                  "train_classes_with_rotations": len(train_rot.characters),
                  "test_alphabets": sorted(set(test_set.alphabets)), "test_classes": len(test_set.characters)},
        "metric": (f"5-way accuracy on {config.test_episodes} test episodes ({config.test_queries} queries/class), "
                   "95% CI; the same episodes (classes and drawings) for every mode and head"),
        "fewshot": results,
        "clustering": clustering,
        "anomaly": anomaly,
        "train_seconds": timings,
        "train_seconds_total": float(sum(timings.values())),
        "train_devices": {"encoder": 1, "heads": common.mesh_size(common.stage_mesh(mesh, config.meta_batch,
                                                                                    "--meta-batch"))},
        "metadata": common.run_metadata(),
    }
    train.write_json(os.path.join(workdir, "results.json"), output)
    return output


def main(argv=None) -> int:
    return common.run_experiment(argv, Config, QUICK, __doc__.split("\n\n")[0], train_and_evaluate, "fusion",
                                 data_dir=True)


if __name__ == "__main__":
    sys.exit(main())
