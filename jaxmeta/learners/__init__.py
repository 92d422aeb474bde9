"""Meta-learners, each a :class:`MetaLearner` of pure functions."""

from jaxmeta.learners.base import MetaLearner
from jaxmeta.learners.inner import InnerRule, InnerTerm, combine, inner_loop, optax_rule, partition, path_filter, sgd_rule
from jaxmeta.learners.maml import anil, fomaml, maml, maml_plus_plus, meta_sgd
from jaxmeta.learners.matching_net import matching_net
from jaxmeta.learners.protonet import protonet
from jaxmeta.learners.reptile import reptile
from jaxmeta.learners.semisup import entropy_term, semisup_maml, semisup_protonet

__all__ = [
    "MetaLearner",
    "maml",
    "fomaml",
    "meta_sgd",
    "anil",
    "maml_plus_plus",
    "reptile",
    "protonet",
    "matching_net",
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
