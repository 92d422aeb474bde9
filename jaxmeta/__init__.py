"""jaxmeta: JAX-native, functional meta-learning.

Layers, bottom to top (each imports only those below it)::

    jaxmeta.episodes      Episode, validate_episode         the shape contract
    jaxmeta.data          read and verify files on disk
    jaxmeta.scenarios     build Episode arrays from (key, data, sizes)
    jaxmeta.nets          Flax networks made pure: init(key, x), apply(params, x)
    jaxmeta.losses        plain jnp losses, distances, metrics (per example)
    jaxmeta.learners      MetaLearner(init, adapt, loss, predict): maml, protonet, ...
    jaxmeta.train         make_meta_step (one jit), evaluate, fit
"""

from jaxmeta import data, episodes, learners, losses, nets, scenarios, train
from jaxmeta.episodes import Episode, validate_episode
from jaxmeta.learners import MetaLearner
from jaxmeta.train import MetaState, evaluate, fit, make_meta_step

__version__ = "0.1.0"

__all__ = [
    "Episode",
    "validate_episode",
    "MetaLearner",
    "MetaState",
    "make_meta_step",
    "evaluate",
    "fit",
    "episodes",
    "data",
    "scenarios",
    "nets",
    "losses",
    "learners",
    "train",
]
