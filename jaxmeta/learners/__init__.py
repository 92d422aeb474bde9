"""Meta-learners, each a :class:`MetaLearner` of pure functions."""

from jaxmeta.learners.base import MetaLearner
from jaxmeta.learners.hypernetwork import hypernetwork
from jaxmeta.learners.inner import InnerRule, InnerTerm, combine, inner_loop, optax_rule, partition, path_filter, sgd_rule
from jaxmeta.learners.imaml import imaml
from jaxmeta.learners.maml import anil, fomaml, maml, maml_plus_plus, meta_sgd
from jaxmeta.learners.matching_net import matching_net
from jaxmeta.learners.metric_finetune import metric_finetune
from jaxmeta.learners.protonet import protonet
from jaxmeta.learners.neural_process import class_set_mean, cnp, masked_set_mean, neural_process
from jaxmeta.learners.reptile import reptile
from jaxmeta.learners.ridge import ridge_head
from jaxmeta.learners.task_similarity import (
    TaskBank,
    build_task_bank,
    gradient_embedding,
    moment_embedding,
    nearest_tasks,
    task_bank,
    task_similarity,
    warm_start,
)
from jaxmeta.learners.semisup import entropy_term, semisup_maml, semisup_protonet

__all__ = [
    "MetaLearner",
    "maml",
    "fomaml",
    "meta_sgd",
    "anil",
    "maml_plus_plus",
    "reptile",
    "imaml",
    "ridge_head",
    "protonet",
    "metric_finetune",
    "matching_net",
    "cnp",
    "neural_process",
    "hypernetwork",
    "moment_embedding",
    "gradient_embedding",
    "task_similarity",
    "TaskBank",
    "task_bank",
    "build_task_bank",
    "nearest_tasks",
    "warm_start",
    "masked_set_mean",
    "class_set_mean",
    "semisup_protonet",
    "semisup_maml",
    "entropy_term",
    "InnerTerm",
    "inner_loop",
    "InnerRule",
    "sgd_rule",
    "optax_rule",
    "partition",
    "combine",
    "path_filter",
]
