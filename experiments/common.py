"""Small helpers shared by the experiment scripts (CLI flags, run metadata, plots)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from typing import Any, Callable, Optional, Union

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
    parser.add_argument("--devices", type=int, default=1, help=DEVICES_HELP)
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


def run_experiment(
    argv,
    config_cls,
    quick_overrides: Optional[dict],
    description: str,
    train_and_evaluate: Callable,
    name: Union[str, Callable[[Any], str]],
    *,
    data_dir: bool = False,
) -> int:
    """The ``main(argv)`` of every experiment script: flags, config, workdir, devices, run, summary line.

    Args:
      argv: command-line arguments (``None``: ``sys.argv[1:]``).
      config_cls: the script's config dataclass (one ``--flag`` per field).
      quick_overrides: field values for ``--quick``.
      description: the ``--help`` text.
      train_and_evaluate: ``(config, workdir, *, progress, fresh, mesh[, data_dir]) -> results``;
        ``mesh`` is :func:`device_mesh`'s for ``--devices`` (``None``: one device).
      name: the default workdir under ``runs/`` (or a function of the config giving it);
        ``-quick`` is appended for ``--quick`` runs.
      data_dir: add a ``--data-dir`` flag and pass it on (default ``$JAXMETA_DATA``).

    Returns:
      The exit status, 0.
    """
    parser = parser_for(config_cls, description)
    if data_dir:
        parser.add_argument("--data-dir", default=None, help="folder with the data sets (default: $JAXMETA_DATA)")
    args = parser.parse_args(argv)
    mesh = device_mesh(args.devices)  # before anything runs: on CPU it may split the host into devices
    config = config_from_args(config_cls, args, quick_overrides)
    folder = name(config) if callable(name) else name
    workdir = args.workdir or os.path.join("runs", folder + ("-quick" if args.quick else ""))
    extra = {"data_dir": args.data_dir} if data_dir else {}
    start = time.perf_counter()
    train_and_evaluate(config, workdir, progress=not args.no_progress, fresh=args.fresh, mesh=mesh, **extra)
    minutes = (time.perf_counter() - start) / 60
    print(f"total {minutes:.1f} min; results in {os.path.join(workdir, 'results.json')}")
    return 0


DEVICES_HELP = ("devices to shard each meta-batch's episodes over (default 1; 0: every device). Stages that train "
                "on several episodes per step run as one compiled step across the devices (same numbers as one "
                "device, to float rounding); stages that train on one episode per step (the metric learners' many-"
                "way episodes) run on one; the Omniglot and semi-supervised scripts also split their evaluation "
                "batches. On CPU, N > 1 splits the host into N XLA devices: one per core made the "
                "Omniglot MAML step 15-25%% faster than one device using every core (benchmarks/README.md)")


def device_mesh(devices: int):
    """The episode mesh for ``--devices`` (``None`` for one device), made before JAX starts its backend.

    ``0`` takes every device. On CPU, asking for more devices than the host
    shows splits it into that many XLA host devices (``jax_num_cpu_devices``),
    which only works before JAX has run anything; ``XLA_FLAGS=
    --xla_force_host_platform_device_count=N`` set by the user wins.

    Example:
      >>> device_mesh(1) is None
      True
      >>> device_mesh(-1)
      Traceback (most recent call last):
      ValueError: --devices: expected 0 (every device) or a positive count, got -1.
    """
    from jaxmeta import train

    devices = int(devices)
    if devices < 0:
        raise ValueError(f"--devices: expected 0 (every device) or a positive count, got {devices}.")
    if devices == 1:
        return None
    if devices > 1 and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        try:  # harmless on GPU/TPU: only the CPU client reads it
            jax.config.update("jax_num_cpu_devices", devices)
        except RuntimeError:  # JAX has already started: the devices it has are the ones there are
            pass
    available = jax.devices()
    if devices > len(available):
        raise ValueError(f"--devices {devices}: this process has {len(available)} {jax.default_backend()} device(s) "
                         f"({available}); ask for at most {len(available)}, or 0 for all of them.")
    return train.episode_mesh(available[: devices or len(available)])


def stage_mesh(mesh, meta_batch: int, flag: str):
    """The mesh for a training stage of ``meta_batch`` episodes per step: ``None`` for one episode per step.

    Raises a ``ValueError`` naming ``flag`` when the meta-batch does not split
    evenly over the mesh's devices (call it before training starts).

    Example:
      >>> from jaxmeta import train
      >>> mesh = train.episode_mesh()
      >>> stage_mesh(mesh, 1, "--meta-batch") is None, stage_mesh(None, 32, "--meta-batch") is None
      (True, True)
    """
    if mesh is None or int(meta_batch) == 1:
        return None
    n = mesh.devices.size
    if int(meta_batch) % n:
        raise ValueError(f"{flag} {meta_batch}: the meta-batch must be a multiple of the {n} devices of --devices "
                         f"(e.g. {flag} {max(n, int(meta_batch) // n * n)}), or run with --devices 1.")
    return mesh


def eval_mesh(mesh, batch: int):
    """``mesh`` for evaluation calls of ``batch`` episodes when its devices split them evenly, else ``None``.

    Evaluation batches are the scripts' own choice (not a flag), so one that
    does not split evenly runs on one device instead of failing.

    Example:
      >>> from jaxmeta import train
      >>> eval_mesh(train.episode_mesh(), 50) is not None, eval_mesh(None, 50)
      (True, None)
    """
    if mesh is None or int(batch) % mesh.devices.size:
        return None
    return mesh


def mesh_size(mesh) -> int:
    """Devices in ``mesh`` (1 for ``None``), for the results' metadata.

    Example:
      >>> mesh_size(None)
      1
    """
    return 1 if mesh is None else int(mesh.devices.size)


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


MAML_BATCHING_HELP = ("how the gradient-based meta-step maps its episodes: auto (accumulate on CPU, where it is "
                      "about 2x faster than vmap for these convolutional networks, see benchmarks/README.md; vmap "
                      "elsewhere) | vmap | map | unroll | accumulate")


def maml_batching(choice: str) -> str:
    """The meta-step batching of a gradient-based learner on a convolutional network.

    ``"auto"`` resolves per backend: ``"accumulate"`` on CPU (one episode's
    meta-gradient at a time, which keeps its activations in cache), ``"vmap"``
    elsewhere; any name in ``jaxmeta.train.BATCHING`` is returned as is.

    Example:
      >>> maml_batching("vmap")
      'vmap'
      >>> maml_batching("auto") in ("accumulate", "vmap")
      True
    """
    from jaxmeta import train

    if choice == "auto":
        return "accumulate" if jax.default_backend() == "cpu" else "vmap"
    if choice not in train.BATCHING:
        raise ValueError(f"maml_batching: expected auto or one of {train.BATCHING}, got {choice!r}.")
    return choice
