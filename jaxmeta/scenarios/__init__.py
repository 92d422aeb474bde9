"""Scenarios: functions that build :class:`~jaxmeta.Episode` arrays from ``(key, data, sizes)``.

Scenarios never import learners; they only produce task arrays.
"""

from jaxmeta.scenarios.padding import random_support_size
from jaxmeta.scenarios.sinusoid import SinusoidTasks, sinusoid, sinusoid_values
from jaxmeta.scenarios.tabular import tabular_classification, tabular_regression

__all__ = [
    "sinusoid",
    "SinusoidTasks",
    "sinusoid_values",
    "random_support_size",
    "tabular_classification",
    "tabular_regression",
]
