"""Finding, verifying and downloading data files.

Where data lives is a setting, never a path inside the library: an explicit
``data_dir`` argument, else the ``JAXMETA_DATA`` environment variable. Every
known file has an official URL and a checksum; a missing file gets an error
that says where it was looked for and how to get it, and a file whose checksum
does not match is reported as corrupt, never silently used.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from typing import NamedTuple, Optional

__all__ = ["RemoteFile", "data_root", "cache_root", "checksum", "verify", "fetch", "atomic_write_bytes"]

ENV_DATA = "JAXMETA_DATA"
ENV_CACHE = "JAXMETA_CACHE"


class RemoteFile(NamedTuple):
    """An official file: its name on disk, where to download it, and its checksum.

    ``sha256`` is preferred; ``md5`` is used where only the md5 is published.

    Example:
      >>> remote = RemoteFile("images_background.zip", "https://example.org/images_background.zip", sha256="ab12")
      >>> remote.name, remote.md5
      ('images_background.zip', None)
    """

    name: str
    url: str
    sha256: Optional[str] = None
    md5: Optional[str] = None


def data_root(data_dir: Optional[str] = None, subdir: Optional[str] = None) -> str:
    """The folder that holds a data set.

    ``data_dir`` if given, else ``$JAXMETA_DATA``. When ``subdir`` (e.g.
    ``"omniglot"``) exists inside it, that subfolder is returned, so both the
    data-set folder itself and its parent are accepted.

    Raises:
      FileNotFoundError: no location is set, or it does not exist.

    Example:
      >>> import tempfile
      >>> d = tempfile.mkdtemp()
      >>> data_root(d) == d
      True
    """
    root = data_dir if data_dir is not None else os.environ.get(ENV_DATA)
    if not root:
        raise FileNotFoundError(
            f"no data location: pass data_dir=... or set the {ENV_DATA} environment variable to the folder "
            f"that holds the data sets{f' (with a {subdir}/ subfolder)' if subdir else ''}."
        )
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"data location {root!r} (from {'data_dir' if data_dir else ENV_DATA}) is not a folder.")
    if subdir and os.path.isdir(os.path.join(root, subdir)):
        return os.path.join(root, subdir)
    return root


def cache_root() -> str:
    """Folder for decoded caches: ``$JAXMETA_CACHE`` or ``~/.cache/jaxmeta``.

    Example:
      >>> isinstance(cache_root(), str)
      True
    """
    root = os.environ.get(ENV_CACHE) or os.path.join(os.path.expanduser("~"), ".cache", "jaxmeta")
    return os.path.abspath(root)


def checksum(path: str, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks.

    Example:
      >>> import tempfile, os
      >>> p = os.path.join(tempfile.mkdtemp(), "f"); open(p, "wb").write(b"abc")
      3
      >>> checksum(p)[:12]
      'ba7816bf8f01'
    """
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: str, remote: RemoteFile) -> None:
    """Raises ``ValueError`` when ``path`` does not match ``remote``'s checksum.

    Example:
      >>> import hashlib, os, tempfile
      >>> p = os.path.join(tempfile.mkdtemp(), "f"); _ = open(p, "wb").write(b"abc")
      >>> verify(p, RemoteFile("f", "https://example.org/f", sha256=hashlib.sha256(b"abc").hexdigest()))
      >>> verify(p, RemoteFile("f", "https://example.org/f", md5="0" * 32))
      Traceback (most recent call last):
      ValueError: ...: md5 ... does not match the official 000...; the file is corrupt or truncated. ...
    """
    for algorithm in ("sha256", "md5"):
        expected = getattr(remote, algorithm)
        if expected:
            got = checksum(path, algorithm)
            if got != expected:
                raise ValueError(
                    f"{path}: {algorithm} {got} does not match the official {expected}; the file is corrupt "
                    f"or truncated. Delete it and download it again from {remote.url}."
                )
            return


def _default_mode() -> int:
    """0o666 minus the process umask: the mode ``open(path, "w")`` would have given."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a synced temporary file and a rename (never a half-written file).

    Missing parent folders are created; readers see the old file or the new
    one, never a mix, even if the process dies mid-write.

    Example:
      >>> import os, tempfile
      >>> p = os.path.join(tempfile.mkdtemp(), "out", "results.json")
      >>> atomic_write_bytes(p, b'{"acc": 0.98}')
      >>> open(p, "rb").read()
      b'{"acc": 0.98}'
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), _default_mode())  # mkstemp makes 0600; give the file the usual permissions
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _download(remote: RemoteFile, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".download-")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(remote.url, timeout=60) as response:
            shutil.copyfileobj(response, out)
        verify(tmp, remote)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def fetch(remote: RemoteFile, folder: str, *, download: bool = False, check: bool = True) -> str:
    """Path of ``remote`` inside ``folder``, verified; downloaded first if asked.

    Args:
      remote: the official file.
      folder: where it is (or should be) stored.
      download: download it from ``remote.url`` when missing (verified before
        it is moved into place, so a broken download never looks complete).
      check: verify the checksum of an existing file.

    Raises:
      FileNotFoundError: missing and ``download`` is false (the message gives
        the URL).
      ValueError: checksum mismatch.

    Example:
      >>> import tempfile
      >>> fetch(RemoteFile("x.zip", "https://example.org/x.zip"), tempfile.mkdtemp())
      Traceback (most recent call last):
      ...
      FileNotFoundError: ...
    """
    path = os.path.join(folder, remote.name)
    if not os.path.exists(path):
        if not download:
            raise FileNotFoundError(
                f"{path} is missing. Download it from {remote.url} into {folder} (or pass download=True on a "
                f"machine with internet), or point {ENV_DATA} / data_dir at the folder that holds it."
            )
        _download(remote, path)
    elif check:
        verify(path, remote)
    return path
