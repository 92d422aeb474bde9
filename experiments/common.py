"""Small helpers shared by the experiment scripts (CLI flags, run metadata, plots)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from typing import Any, Optional

import jax


def run_metadata() -> dict:
    """What produced a result: versions, backend, devices, host, time."""
    import flax
    import numpy as np
    import optax

    return {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "argv": sys.argv,
    }


def parser_for(config_cls, description: str) -> argparse.ArgumentParser:
    """An argparse parser with one ``--flag`` per field of a config dataclass."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workdir", default=None, help="output folder (results, plots, checkpoints, logs)")
    parser.add_argument("--quick", action="store_true", help="tiny run for smoke tests (minutes, not paper numbers)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--fresh", action="store_true", help="ignore checkpoints in workdir and start over")
    for field in dataclasses.fields(config_cls):
        default = field.default
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata.get("help", "").replace("%", "%%")
        if isinstance(default, bool):
            parser.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=None,
                                help=f"{help_text} (true/false; default {default})")
        elif isinstance(default, tuple):
            kind = type(default[0]) if default else str
            parser.add_argument(flag, type=kind, nargs="+", default=None, help=f"{help_text} (default {default})")
        else:
            parser.add_argument(flag, type=type(default), default=None, help=f"{help_text} (default {default})")
    return parser


def config_from_args(config_cls, args, quick_overrides: Optional[dict] = None):
    """Builds the config: defaults, then ``--quick`` overrides, then explicit flags."""
    values: dict[str, Any] = {}
    if args.quick and quick_overrides:
        values.update(quick_overrides)
    for field in dataclasses.fields(config_cls):
        v = getattr(args, field.name, None)
        if v is not None:
            values[field.name] = tuple(v) if isinstance(field.default, tuple) else v
    return config_cls(**values)


def pyplot():
    """matplotlib.pyplot with a file backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'jaxmeta[plots]'): skipping plots.", file=sys.stderr)
        return None
    return plt


def compute_dtype(name: str):
    """``"float32"`` -> None (the default), ``"bfloat16"`` -> jnp.bfloat16 for the networks' compute."""
    import jax.numpy as jnp

    if name == "float32":
        return None
    if name == "bfloat16":
        return jnp.bfloat16
    raise ValueError(f"compute_dtype: expected 'float32' or 'bfloat16', got {name!r}.")
