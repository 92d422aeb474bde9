"""MovieLens-100K (GroupLens): find, verify, download and parse the files.

The loader returns plain NumPy arrays (no episodes, no features): ratings,
user demographics, item release dates and genre flags, and the genre and
occupation code lists. Feature encoding for meta-learning lives in
:mod:`jaxmeta.scenarios.coldstart`.

Where the files are looked up (first match wins):

1. the ``path`` argument, else the ``JAXMETA_DATA`` environment variable;
2. that folder itself if it holds ``u.data``, else its ``ml-100k/`` subfolder.

Every file is checked against the sha256 of the official release
(``ML100K_SHA256``) unless ``verify=False`` (for hand-made files, e.g. tests).
Ids are 1-based in the files; the arrays here are 0-based (``user = id - 1``).

The data set is for research use under GroupLens' terms (no redistribution,
no commercial use; cite Harper & Konstan, 2015): see the README in the zip.
"""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile
import zipfile
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from jaxmeta.data.files import ENV_DATA, RemoteFile, checksum, data_root, fetch

__all__ = [
    "MovieLens",
    "load_movielens_100k",
    "find_movielens_100k",
    "download_movielens_100k",
    "extract_movielens_100k",
    "verify_movielens_files",
    "ML100K_URL",
    "ML100K_SHA256",
    "ML100K_FILES",
]

ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
# sha256 of the member files of the official ml-100k.zip (the zip's own digest is not
# published, so the extracted files are what we verify).
ML100K_SHA256: Dict[str, str] = {
    "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
    "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
    "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
    "u.genre": "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb",
    "u.occupation": "cd5fbec9afe345d993a62fc7817df1a4a9079c4feb267b3118763b8fd942137d",
}
ML100K_FILES: Tuple[str, ...] = tuple(ML100K_SHA256)
_SUBDIR = "ml-100k"


class MovieLens(NamedTuple):
    """MovieLens-100K as arrays; users and items are 0-based (``id - 1``).

    Attributes:
      user: ``[R]`` int32, the rating's user (0-based).
      item: ``[R]`` int32, the rating's item (0-based).
      rating: ``[R]`` int32 in 1..5.
      timestamp: ``[R]`` int64 unix seconds.
      age: ``[U]`` int32 years.
      gender: ``[U]`` int32, 0 = M, 1 = F.
      occupation: ``[U]`` int32 index into ``occupations``.
      zip_code: ``[U]`` str (US zip codes, or letters for Canadian ones).
      release_date: ``[I]`` ``datetime64[D]``, ``NaT`` when unknown (one movie).
      genres: ``[I, G]`` float32 flags (a movie may have several genres).
      titles: ``[I]`` str.
      genre_names: the ``G`` genre names of ``u.genre``, in column order.
      occupations: the occupation names of ``u.occupation``.
    """

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    timestamp: np.ndarray
    age: np.ndarray
    gender: np.ndarray
    occupation: np.ndarray
    zip_code: np.ndarray
    release_date: np.ndarray
    genres: np.ndarray
    titles: np.ndarray
    genre_names: Tuple[str, ...]
    occupations: Tuple[str, ...]

    @property
    def num_users(self) -> int:
        return int(self.age.shape[0])

    @property
    def num_items(self) -> int:
        return int(self.genres.shape[0])

    def __repr__(self) -> str:
        return f"MovieLens({self.user.shape[0]} ratings, {self.num_users} users, {self.num_items} items)"


def verify_movielens_files(folder: str, checksums: Optional[Dict[str, str]] = None) -> None:
    """Checks that each file of ``checksums`` exists in ``folder`` with that sha256.

    Args:
      folder: the folder holding the files.
      checksums: ``{file name: sha256 hex}`` (default: the official ml-100k files).

    Raises:
      FileNotFoundError: a file is missing (the message says how to get it).
      ValueError: a file's sha256 differs (a corrupt or modified copy).

    Example:
      >>> import tempfile
      >>> verify_movielens_files(tempfile.mkdtemp(), {})   # nothing to check
    """
    checksums = ML100K_SHA256 if checksums is None else checksums
    for name, expected in checksums.items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path}: missing. Download MovieLens-100K with jaxmeta.data.download_movielens_100k(root) "
                f"(from {ML100K_URL}) or point {ENV_DATA} at a folder holding ml-100k/."
            )
        actual = checksum(path, "sha256")
        if actual != expected:
            raise ValueError(
                f"{path}: sha256 {actual} does not match the official release's {expected}; the file is "
                "corrupt or modified. Download it again, or pass verify=False for files you made yourself."
            )


def find_movielens_100k(path: Optional[str] = None) -> str:
    """The folder that holds ``u.data``: ``path`` or ``$JAXMETA_DATA``, itself or its ``ml-100k/``.

    Args:
      path: a data folder; ``None`` reads the ``JAXMETA_DATA`` environment variable.

    Returns:
      The folder path.

    Raises:
      FileNotFoundError: neither ``path`` nor ``JAXMETA_DATA`` is set, or no
        ``u.data`` in the folder or its ``ml-100k/``.

    Example:
      >>> import os, tempfile
      >>> root = tempfile.mkdtemp(); os.makedirs(os.path.join(root, "ml-100k"))
      >>> _ = open(os.path.join(root, "ml-100k", "u.data"), "w")
      >>> find_movielens_100k(root).endswith("ml-100k")
      True
    """
    path = data_root(path)
    for candidate in (path, os.path.join(path, _SUBDIR)):
        if os.path.isfile(os.path.join(candidate, "u.data")):
            return candidate
    raise FileNotFoundError(
        f"{os.path.join(path, _SUBDIR, 'u.data')}: missing (looked in {path!r} and its {_SUBDIR}/ subfolder). "
        f"Download MovieLens-100K with jaxmeta.data.download_movielens_100k({path!r})."
    )


def extract_movielens_100k(zip_path: str, root: str, *, checksums: Optional[Dict[str, str]] = None) -> str:
    """Extracts the ml-100k member files of ``zip_path`` into ``root/ml-100k`` and verifies them.

    The files are extracted into a temporary folder, verified against
    ``checksums``, and only then moved into place (atomic per file), so a bad
    archive never leaves a half-written data folder.

    Args:
      zip_path: the official ``ml-100k.zip`` (members ``ml-100k/u.data``, ...).
      root: the data folder; files go to ``root/ml-100k/``.
      checksums: ``{file name: sha256}`` (default: ``ML100K_SHA256``).

    Returns:
      The ``root/ml-100k`` folder.

    Raises:
      FileNotFoundError: a needed member is not in the archive.
      ValueError: a member's sha256 differs from the official one.

    Example:
      >>> import hashlib, os, tempfile, zipfile
      >>> tmp = tempfile.mkdtemp(); z = os.path.join(tmp, "m.zip")
      >>> with zipfile.ZipFile(z, "w") as f: f.writestr("ml-100k/u.genre", "unknown|0")
      >>> sums = {"u.genre": hashlib.sha256(b"unknown|0").hexdigest()}
      >>> os.listdir(extract_movielens_100k(z, tmp, checksums=sums))
      ['u.genre']
    """
    checksums = ML100K_SHA256 if checksums is None else checksums
    target = os.path.join(root, _SUBDIR)
    os.makedirs(target, exist_ok=True)
    staging = tempfile.mkdtemp(dir=target, prefix=".extract-")
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = {os.path.basename(m): m for m in archive.namelist() if not m.endswith("/")}
            for name in checksums:
                if name not in members:
                    raise FileNotFoundError(f"{zip_path}: the archive has no member {_SUBDIR}/{name}.")
                with archive.open(members[name]) as src, open(os.path.join(staging, name), "wb") as dst:
                    shutil.copyfileobj(src, dst)
        verify_movielens_files(staging, checksums)
        for name in checksums:
            os.replace(os.path.join(staging, name), os.path.join(target, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def download_movielens_100k(root: Optional[str] = None, *, url: str = ML100K_URL) -> str:  # pragma: no cover
    """Downloads the official ``ml-100k.zip`` and extracts the verified files into ``root/ml-100k``.

    Needs internet access (not exercised by the test suite, which reads the
    files on disk; :func:`extract_movielens_100k` is tested).

    Args:
      root: the data folder (default: ``$JAXMETA_DATA``).
      url: the archive's address (default: GroupLens' official one).

    Returns:
      The ``root/ml-100k`` folder.

    Example:
      >>> folder = download_movielens_100k("/tmp/data")  # doctest: +SKIP
    """
    root = data_root(root) if root is None else root
    os.makedirs(root, exist_ok=True)
    staging = tempfile.mkdtemp(dir=root, prefix=".ml-100k-")
    try:
        archive = fetch(RemoteFile("ml-100k.zip", url), staging, download=True)
        return extract_movielens_100k(archive, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ----------------------------------------------------------------------------- parsing


def _lines(path: str):
    """(line number, text) of the non-empty lines of a latin-1 file (u.item has accented titles)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: missing (MovieLens-100K needs {', '.join(ML100K_FILES)}).")
    with open(path, encoding="latin-1") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield number, line


def _fail(path: str, number: int, why: str, line: str):
    shown = line if len(line) <= 120 else line[:117] + "..."
    raise ValueError(f"{path}, line {number}: {why}: {shown!r}")


def _int(path, number, line, text, what):
    try:
        return int(text)
    except ValueError:
        _fail(path, number, f"{what} {text!r} is not an integer", line)


def _parse_codes(path: str, with_index: bool) -> Tuple[str, ...]:
    names = []
    for number, line in _lines(path):
        if with_index:
            fields = line.split("|")
            if len(fields) != 2:
                _fail(path, number, f"expected 'name|index' (2 fields), got {len(fields)}", line)
            if _int(path, number, line, fields[1], "index") != len(names):
                _fail(path, number, f"expected index {len(names)} (codes are listed in order)", line)
            names.append(fields[0])
        else:
            names.append(line.strip())
    if not names:
        raise ValueError(f"{path}: empty; expected one code per line.")
    return tuple(names)


def _consecutive_ids(path: str, ids: Sequence[Tuple[int, int, str]]) -> None:
    for expected, (got, number, line) in enumerate(ids, start=1):
        if got != expected:
            _fail(path, number, f"expected id {expected} (ids must be 1..n in order)", line)


def _parse_date(path, number, line, text) -> np.datetime64:
    if not text:
        return np.datetime64("NaT", "D")
    try:
        day = datetime.datetime.strptime(text, "%d-%b-%Y").date()
    except ValueError:
        _fail(path, number, f"release date {text!r} is not like 01-Jan-1995", line)
    return np.datetime64(day, "D")


def load_movielens_100k(path: Optional[str] = None, *, verify: bool = True) -> MovieLens:
    """Reads and checks MovieLens-100K.

    Args:
      path: data folder (it or its ``ml-100k/`` must hold the files);
        ``None`` uses ``$JAXMETA_DATA``.
      verify: check every file's sha256 against the official release first.

    Returns:
      A :class:`MovieLens` of NumPy arrays.

    Raises:
      FileNotFoundError: a file is missing.
      ValueError: a checksum differs, or a line is malformed (wrong field
        count, non-integer id, unknown user/item/occupation/gender, rating
        outside 1..5); the message names the file and the line number.

    Example:
      >>> ml = load_movielens_100k()  # doctest: +SKIP
      >>> ml.num_users, ml.num_items, ml.rating.shape  # doctest: +SKIP
      (943, 1682, (100000,))
    """
    folder = find_movielens_100k(path)
    if verify:
        verify_movielens_files(folder)
    p = {name: os.path.join(folder, name) for name in ML100K_FILES}

    genre_names = _parse_codes(p["u.genre"], with_index=True)
    occupations = _parse_codes(p["u.occupation"], with_index=False)
    occupation_index = {name: i for i, name in enumerate(occupations)}

    ages, genders, occs, zips, user_ids = [], [], [], [], []
    for number, line in _lines(p["u.user"]):
        f = line.split("|")
        if len(f) != 5:
            _fail(p["u.user"], number, f"expected 5 fields 'user|age|gender|occupation|zip', got {len(f)}", line)
        user_ids.append((_int(p["u.user"], number, line, f[0], "user id"), number, line))
        age = _int(p["u.user"], number, line, f[1], "age")
        if not 0 < age < 130:
            _fail(p["u.user"], number, f"age {age} is outside 1..129", line)
        if f[2] not in ("M", "F"):
            _fail(p["u.user"], number, f"gender {f[2]!r} is not M or F", line)
        if f[3] not in occupation_index:
            _fail(p["u.user"], number, f"occupation {f[3]!r} is not listed in u.occupation", line)
        ages.append(age)
        genders.append(0 if f[2] == "M" else 1)
        occs.append(occupation_index[f[3]])
        zips.append(f[4].strip())
    _consecutive_ids(p["u.user"], user_ids)

    num_genres = len(genre_names)
    dates, flags, titles, item_ids = [], [], [], []
    for number, line in _lines(p["u.item"]):
        f = line.split("|")
        if len(f) != 5 + num_genres:
            _fail(p["u.item"], number, f"expected {5 + num_genres} fields (5 + {num_genres} genre flags), got {len(f)}",
                  line)
        item_ids.append((_int(p["u.item"], number, line, f[0], "item id"), number, line))
        titles.append(f[1])
        dates.append(_parse_date(p["u.item"], number, line, f[2].strip()))
        row = [_int(p["u.item"], number, line, v, "genre flag") for v in f[5:]]
        if any(v not in (0, 1) for v in row):
            _fail(p["u.item"], number, "genre flags must be 0 or 1", line)
        flags.append(row)
    _consecutive_ids(p["u.item"], item_ids)
    num_users, num_items = len(ages), len(titles)
    if not num_users or not num_items:
        raise ValueError(f"{folder}: u.user or u.item holds no rows.")

    columns = ([], [], [], [])
    for number, line in _lines(p["u.data"]):
        f = line.split("\t")
        if len(f) != 4:
            _fail(p["u.data"], number, f"expected 4 tab-separated fields 'user item rating time', got {len(f)}", line)
        user, item, rating, stamp = (_int(p["u.data"], number, line, v, what)
                                     for v, what in zip(f, ("user id", "item id", "rating", "timestamp")))
        if not 1 <= user <= num_users:
            _fail(p["u.data"], number, f"unknown user id {user} (u.user has 1..{num_users})", line)
        if not 1 <= item <= num_items:
            _fail(p["u.data"], number, f"unknown item id {item} (u.item has 1..{num_items})", line)
        if not 1 <= rating <= 5:
            _fail(p["u.data"], number, f"rating {rating} is outside 1..5", line)
        for column, value in zip(columns, (user - 1, item - 1, rating, stamp)):
            column.append(value)
    if not columns[0]:
        raise ValueError(f"{p['u.data']}: holds no ratings.")

    return MovieLens(
        user=np.asarray(columns[0], np.int32),
        item=np.asarray(columns[1], np.int32),
        rating=np.asarray(columns[2], np.int32),
        timestamp=np.asarray(columns[3], np.int64),
        age=np.asarray(ages, np.int32),
        gender=np.asarray(genders, np.int32),
        occupation=np.asarray(occs, np.int32),
        zip_code=np.asarray(zips, dtype=str),
        release_date=np.asarray(dates, dtype="datetime64[D]"),
        genres=np.asarray(flags, np.float32).reshape(num_items, num_genres),
        titles=np.asarray(titles, dtype=object),
        genre_names=genre_names,
        occupations=occupations,
    )
