"""Scenarios: functions that build :class:`~jaxmeta.Episode` arrays from ``(key, data, sizes)``.

Scenarios never import learners; they only produce task arrays.
"""

from jaxmeta.scenarios.sinusoid import SinusoidTasks, sinusoid, sinusoid_values

__all__ = ["sinusoid", "SinusoidTasks", "sinusoid_values"]
