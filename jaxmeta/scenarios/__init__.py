"""Scenarios: functions that build :class:`~jaxmeta.Episode` arrays from ``(key, data, sizes)``.

Scenarios never import learners; they only produce task arrays.
"""

from jaxmeta.scenarios.augment import augment_episodes, random_affine, random_affine_points, random_stroke_order
from jaxmeta.scenarios.fewshot import check_fewshot, fewshot_episodes, fewshot_episodes_numpy, numpy_rng
from jaxmeta.scenarios.coldstart import (
    SCENARIOS as COLDSTART_SCENARIOS,
    ColdStartData,
    ColdStartEpisodes,
    ColdStartSplit,
    coldstart_data,
    coldstart_episodes,
    coldstart_sampler,
    coldstart_split,
    synthetic_ratings,
)
from jaxmeta.scenarios.multimodal import (
    MODALITIES,
    MODALITY_IDS,
    augment_multimodal,
    multimodal_episodes,
    pack_examples,
    unpack_examples,
)
from jaxmeta.scenarios.padding import random_support_size
from jaxmeta.scenarios.semisup import UNLABELLED_FIELDS, check_semisup, semisup_episodes, split_labelled
from jaxmeta.scenarios.sinusoid import SinusoidTasks, sinusoid, sinusoid_values
from jaxmeta.scenarios.tabular import tabular_classification, tabular_regression

__all__ = [
    "sinusoid",
    "SinusoidTasks",
    "sinusoid_values",
    "fewshot_episodes",
    "fewshot_episodes_numpy",
    "check_fewshot",
    "numpy_rng",
    "random_affine",
    "random_affine_points",
    "random_stroke_order",
    "augment_episodes",
    "coldstart_data",
    "coldstart_split",
    "coldstart_episodes",
    "coldstart_sampler",
    "ColdStartData",
    "ColdStartSplit",
    "ColdStartEpisodes",
    "COLDSTART_SCENARIOS",
    "synthetic_ratings",
    "random_support_size",
    "tabular_classification",
    "tabular_regression",
    "split_labelled",
    "semisup_episodes",
    "check_semisup",
    "UNLABELLED_FIELDS",
    "multimodal_episodes",
    "augment_multimodal",
    "pack_examples",
    "unpack_examples",
    "MODALITIES",
    "MODALITY_IDS",
]
from jaxmeta.scenarios.imputation import (
    FEATURES as IMPUTATION_FEATURES,
    Neighbours,
    column_stats,
    imputation_episodes,
    mar_mask,
    masked_cell_tasks,
    mcar_mask,
    mnar_mask,
    nearest_rows,
    synthetic_table,
)

__all__ += [
    "IMPUTATION_FEATURES", "Neighbours", "column_stats", "imputation_episodes", "mar_mask", "masked_cell_tasks",
    "mcar_mask", "mnar_mask", "nearest_rows", "synthetic_table",
]
