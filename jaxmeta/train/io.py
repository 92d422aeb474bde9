"""Results on disk: atomic JSON, JSON lines, and a progress bar with a fallback."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Iterable, List, Optional

import numpy as np

from jaxmeta.data.files import atomic_write_bytes

__all__ = ["write_json", "read_jsonl", "append_jsonl", "truncate_jsonl", "to_jsonable", "progress_bar"]


def to_jsonable(obj: Any) -> Any:
    """Converts arrays, numpy scalars and tuples inside ``obj`` to JSON types.

    Example:
      >>> import numpy as np
      >>> to_jsonable({"a": np.float32(1.5), "b": np.arange(2)})
      {'a': 1.5, 'b': [0, 1]}
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):
        arr = np.asarray(obj)
        return arr.item() if arr.ndim == 0 else arr.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def write_json(path: str, obj: Any) -> None:
    """Writes ``obj`` as JSON atomically (a temporary file renamed over ``path``).

    Example:
      >>> import os, tempfile
      >>> p = os.path.join(tempfile.mkdtemp(), "r.json")
      >>> write_json(p, {"mse": 0.3})
      >>> open(p).read().strip()[:12]
      '{\\n  "mse": 0'
    """
    atomic_write_bytes(path, (json.dumps(to_jsonable(obj), indent=2) + "\n").encode())


def append_jsonl(path: str, record: dict) -> None:
    """Appends one JSON record as a line (flushed, so a crash loses at most that line).

    Example:
      >>> import os, tempfile
      >>> p = os.path.join(tempfile.mkdtemp(), "m.jsonl")
      >>> append_jsonl(p, {"step": 1}); read_jsonl(p)
      [{'step': 1}]
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(to_jsonable(record)) + "\n")
        f.flush()


def read_jsonl(path: str) -> List[dict]:
    """Reads a JSON-lines file; a torn last line (crash mid-write) is dropped.

    Example:
      >>> read_jsonl("/nonexistent/file.jsonl")
      []
    """
    if not os.path.exists(path):
        return []
    records = []
    with open(path) as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # torn final line from an interrupted write
            raise ValueError(f"{path}: line {i + 1} is not valid JSON.")
    return records


def truncate_jsonl(path: str, max_step: int) -> None:
    """Keeps only records with ``step <= max_step`` (used when resuming a run).

    Example:
      >>> import os, tempfile
      >>> p = os.path.join(tempfile.mkdtemp(), "m.jsonl")
      >>> for s in (1, 2, 3): append_jsonl(p, {"step": s})
      >>> truncate_jsonl(p, 2); [r["step"] for r in read_jsonl(p)]
      [1, 2]
    """
    records = [r for r in read_jsonl(path) if int(r.get("step", 0)) <= max_step]
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in records).encode())


class _PlainBar:
    """A minimal progress printer used when tqdm is not installed."""

    def __init__(self, total: int, initial: int, desc: str, file):
        self.total, self.n, self.desc, self.file = total, initial, desc, file
        self._start, self._last, self._postfix = time.time(), 0.0, ""

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.time()
        if now - self._last > 5 or self.n >= self.total:
            self._last = now
            print(f"{self.desc} {self.n}/{self.total} [{now - self._start:.0f}s] {self._postfix}",
                  file=self.file, flush=True)

    def set_postfix_str(self, s: str) -> None:
        self._postfix = s

    def close(self) -> None:
        pass


def progress_bar(total: int, *, initial: int = 0, desc: str = "", enabled: bool = True):
    """A tqdm bar when tqdm is installed (``jaxmeta[progress]``), else periodic plain lines.

    Example:
      >>> bar = progress_bar(10, enabled=False); bar.update(10); bar.close()
    """
    if not enabled:
        return _PlainBar(total, initial, desc, open(os.devnull, "w"))
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _PlainBar(total, initial, desc, sys.stderr)
    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, smoothing=0.05)
