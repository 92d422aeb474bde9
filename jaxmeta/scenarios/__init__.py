"""Scenarios: functions that build :class:`~jaxmeta.Episode` arrays from ``(key, data, sizes)``.

Scenarios never import learners; they only produce task arrays.
"""

from jaxmeta.scenarios.augment import augment_episodes, random_affine
from jaxmeta.scenarios.fewshot import check_fewshot, fewshot_episodes, fewshot_episodes_numpy, numpy_rng
from jaxmeta.scenarios.semisup import UNLABELLED_FIELDS, check_semisup, semisup_episodes, split_labelled
from jaxmeta.scenarios.sinusoid import SinusoidTasks, sinusoid, sinusoid_values

__all__ = [
    "sinusoid",
    "SinusoidTasks",
    "sinusoid_values",
    "fewshot_episodes",
    "fewshot_episodes_numpy",
    "check_fewshot",
    "numpy_rng",
    "random_affine",
    "augment_episodes",
    "split_labelled",
    "semisup_episodes",
    "check_semisup",
    "UNLABELLED_FIELDS",
]
