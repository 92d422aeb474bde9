"""Experiment scripts that reproduce published results. Run them from the repo root
as modules, e.g. ``python -m experiments.sinusoid --help``."""
