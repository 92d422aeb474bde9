"""Shared benchmark plumbing: worker subprocesses, machine facts, matmul peak, tables, JSON."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    import jax

    info = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_at_start": os.getloadavg(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    try:
        from importlib.metadata import version

        info["learn2learn"] = version("learn2learn")
    except Exception:  # noqa: BLE001 - optional peer
        info["learn2learn"] = None
    return info


def matmul_peak(sizes: Sequence[int] = (512, 1024, 2048), rounds: int = 4, repeats: int = 5,
                cores: Optional[Sequence[int]] = None) -> dict:
    """Measured float32 matmul throughput of XLA on this machine (GFLOP/s): the fastest product, best over sizes.

    The sizes are interleaved over ``rounds`` so that a slow phase of a shared VM does not take one size
    whole, and each size's figure is its fastest of ``rounds * repeats`` timed products: the least
    disturbed run estimates what the hardware can do (the median is recorded beside it). With ``cores``
    the measurement runs in a fresh process pinned to those CPUs, as :func:`run_worker` pins the rows
    it is compared with (XLA sizes its thread pool from the CPUs a process may use).

    Example:
      >>> peak = matmul_peak(sizes=(64,), rounds=1, repeats=2)
      >>> peak["peak_gflops"] > 0 and set(peak["median_by_size"]) == {64}
      True
    """
    if cores is not None:
        code = ("import json, sys; from benchmarks import harness; "
                "print('RESULT ' + json.dumps(harness.matmul_peak(*json.loads(sys.argv[1]))))")
        peak = run_for_result(["-c", code, json.dumps([list(sizes), rounds, repeats])], cores=cores)
        if "error" in peak:
            raise RuntimeError(f"matmul peak on cores {list(cores)} failed: {peak['error']}")
        for key in ("by_size", "median_by_size"):  # JSON made the sizes strings
            peak[key] = {int(n): v for n, v in peak[key].items()}
        return dict(peak, cores=list(cores))
    import jax
    import jax.numpy as jnp

    f = jax.jit(lambda x, y: x @ y)
    operands, times = {}, {n: [] for n in sizes}
    for n in sizes:
        operands[n] = (jax.random.normal(jax.random.key(0), (n, n), jnp.float32),
                       jax.random.normal(jax.random.key(1), (n, n), jnp.float32))
        f(*operands[n]).block_until_ready()
    for _ in range(rounds):
        for n in sizes:
            for _ in range(repeats):
                t = time.perf_counter()
                f(*operands[n]).block_until_ready()
                times[n].append(time.perf_counter() - t)
    best = {n: 2 * n**3 / min(ts) / 1e9 for n, ts in times.items()}
    median = {n: 2 * n**3 / float(np.median(ts)) / 1e9 for n, ts in times.items()}
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"peak_gflops": max(best.values()), "by_size": best, "median_by_size": median, "cpus": cpus,
            "method": f"fastest of {rounds} x {repeats} products per size, sizes interleaved"}


def run_for_result(args: Sequence[str], *, cores: Optional[Sequence[int]] = None, timeout: int = 1800,
                   env: Optional[dict] = None) -> dict:
    """Runs ``python *args`` in a fresh process from the repo root (pinned to ``cores`` with ``taskset``
    when given) and returns the JSON its ``RESULT `` line printed, or ``{"error": ...}``.

    Example:
      >>> run_for_result(["-c", "print('RESULT [1, 2]')"])
      [1, 2]
    """
    cmd = [sys.executable, *map(str, args)]
    if cores is not None:
        cmd = ["taskset", "-c", ",".join(str(c) for c in cores)] + cmd
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, **(env or {})))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout}s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr or proc.stdout)[-1500:]
    return {"error": f"exit {proc.returncode}: {tail}"}


def run_worker(impl: str, config: dict, *, cores: Optional[Sequence[int]] = None, timeout: int = 1800,
               check_gradient: bool = False, env: Optional[dict] = None) -> dict:
    """Runs benchmarks.worker in a fresh process (optionally pinned to ``cores``); returns its result."""
    args = ["-m", "benchmarks.worker", "--impl", impl, "--config", json.dumps(config)]
    if check_gradient:
        args.append("--check-gradient")
    return run_for_result(args, cores=cores, timeout=timeout, env=env)


def relative_max_diff(got: Sequence, ref: Sequence) -> float:
    """How far two gradients (lists of arrays, leaf by leaf) differ: the largest absolute difference
    over the largest absolute entry of ``ref``.

    Example:
      >>> relative_max_diff([np.array([1.0, 2.1])], [np.array([1.0, 2.0])])  # doctest: +ELLIPSIS
      0.05...
    """
    scale = max(float(np.max(np.abs(r))) for r in ref)
    return max(float(np.max(np.abs(np.asarray(g) - np.asarray(r)))) for g, r in zip(got, ref)) / scale


def fmt(value, spec: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and not np.isfinite(value):
        return "-"
    return format(value, spec)


def print_table(rows: List[Dict], columns: Sequence[tuple], title: str = "") -> str:
    """Prints rows as a Markdown table; ``columns`` = (header, key, format)."""
    lines = []
    if title:
        lines.append(f"\n### {title}\n")
    lines.append("| " + " | ".join(c[0] for c in columns) + " |")
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(c[1]), c[2] if len(c) > 2 else ".3g") for c in columns) + " |")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def write_results(name: str, payload: dict) -> str:
    from jaxmeta.train import write_json

    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}.json")
    write_json(path, payload)
    print(f"\nwrote {os.path.relpath(path, ROOT)}")
    return path
