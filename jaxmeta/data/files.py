"""Finding, verifying and (where allowed) downloading data files; shared by the readers."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from typing import Optional

__all__ = ["DATA_ENV", "data_path", "sha256_file", "verify_file", "download"]

DATA_ENV = "JAXMETA_DATA"


def data_path(relative: str, data_dir: Optional[str] = None) -> str:
    """``<data_dir>/<relative>``, with ``data_dir`` from the argument or ``$JAXMETA_DATA``.

    Raises:
      ValueError: neither the argument nor the environment variable is set.

    Example:
      >>> data_path("uci/letter.csv", "/data")
      '/data/uci/letter.csv'
    """
    base = data_dir if data_dir is not None else os.environ.get(DATA_ENV)
    if not base:
        raise ValueError(f"data_dir: pass the folder that holds the data sets, or set the {DATA_ENV} "
                         "environment variable to it.")
    return os.path.join(os.path.expanduser(base), relative)


def sha256_file(path: str) -> str:
    """Hex sha256 of a file, read in chunks.

    Example:
      >>> import os, tempfile
      >>> p = os.path.join(tempfile.mkdtemp(), "f"); _ = open(p, "w").write("abc")
      >>> sha256_file(p)[:16]
      'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: str, sha256: str) -> str:
    """Checks that ``path`` exists and has checksum ``sha256``; returns ``path``.

    Raises:
      FileNotFoundError: the file is missing (the message says where it was looked for).
      ValueError: the checksum differs (a corrupt or different file).

    Example:
      >>> import os, tempfile
      >>> p = os.path.join(tempfile.mkdtemp(), "f"); _ = open(p, "w").write("abc")
      >>> verify_file(p, sha256_file(p)) == p
      True
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: not found. Point data_dir (or ${DATA_ENV}) at the folder holding the "
                                "data sets, or pass download=True where the reader offers it.")
    actual = sha256_file(path)
    if actual != sha256:
        raise ValueError(f"{path}: sha256 {actual} differs from the expected {sha256}; the file is corrupt or a "
                         "different version. Delete it and download it again.")
    return path


def download(url: str, path: str, sha256: str) -> str:  # pragma: no cover - needs the network
    """Downloads ``url`` to ``path`` atomically (temporary file, checksum, rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-download-")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
        verify_file(tmp, sha256)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
