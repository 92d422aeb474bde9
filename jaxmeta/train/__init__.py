"""Compiled meta-steps, evaluation and the training loop."""

from jaxmeta.train.checkpoint import Checkpointer
from jaxmeta.train.evaluate import evaluate, summarize
from jaxmeta.train.io import append_jsonl, progress_bar, read_jsonl, write_json
from jaxmeta.train.loop import FitResult, fit
from jaxmeta.train.sharding import episode_mesh, replicate, shard_episodes
from jaxmeta.train.meta_step import (
    BATCHING,
    MetaState,
    compiler_options,
    episode_metrics,
    init_state,
    make_eval_step,
    make_meta_step,
    make_train_loop,
    map_episodes,
    step_keys,
)

__all__ = [
    "MetaState",
    "BATCHING",
    "init_state",
    "make_meta_step",
    "make_eval_step",
    "make_train_loop",
    "map_episodes",
    "episode_metrics",
    "step_keys",
    "compiler_options",
    "evaluate",
    "summarize",
    "fit",
    "FitResult",
    "Checkpointer",
    "episode_mesh",
    "shard_episodes",
    "replicate",
    "write_json",
    "append_jsonl",
    "read_jsonl",
    "progress_bar",
]
