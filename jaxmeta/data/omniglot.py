"""Omniglot (Lake, Salakhutdinov & Tenenbaum, 2015): read, verify, decode, cache, split.

Files are the official zips of the authors' repository (``python/`` folder).
Inside a zip: ``<set>/<Alphabet>/<characterNN>/<imageid>_<drawer>.png``, 105x105
1-bit images, 20 drawers per character.

Arrays are character-major: ``images [C, D, H, W]`` (``C`` characters, ``D``
drawings each), ``float32`` with **ink = 1, background = 0** (the files are
black-on-white; we invert them). Resizing to 28x28 averages the area each
output pixel covers (exact box filter for the 105 -> 28 ratio of 3.75).
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
import zlib
from typing import Callable, Iterable, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from jaxmeta.data.files import RemoteFile, atomic_write_bytes, cache_root, checksum, data_root, fetch, verify
from jaxmeta.data.png import decode_png_gray

__all__ = [
    "Omniglot",
    "OMNIGLOT_FILES",
    "MINIMAL_TRAIN_ALPHABETS",
    "MINIMAL_TEST_ALPHABETS",
    "load_omniglot",
    "read_omniglot_zip",
    "select_alphabets",
    "with_rotations",
    "omniglot_splits",
    "resize_area",
]

_URL = "https://github.com/brendenlake/omniglot/raw/master/python"

OMNIGLOT_FILES = {
    # The full sets: only md5 is published for them.
    "images_background": RemoteFile("images_background.zip", f"{_URL}/images_background.zip",
                                    md5="68d2efa1b9178cc56df9314c21c6e718"),
    "images_evaluation": RemoteFile("images_evaluation.zip", f"{_URL}/images_evaluation.zip",
                                    md5="6b91aef0f799c5bb55b94e3f2daec811"),
    "images_background_small1": RemoteFile(
        "images_background_small1.zip", f"{_URL}/images_background_small1.zip",
        sha256="f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4"),
    "images_background_small2": RemoteFile(
        "images_background_small2.zip", f"{_URL}/images_background_small2.zip",
        sha256="3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f"),
    "strokes_background_small1": RemoteFile(
        "strokes_background_small1.zip", f"{_URL}/strokes_background_small1.zip",
        sha256="8cb3960fb6cf4ccf5f064ad83169f828c36c36782a0f6e7faacb7ecfae4468a2"),
    "strokes_background_small2": RemoteFile(
        "strokes_background_small2.zip", f"{_URL}/strokes_background_small2.zip",
        sha256="345bf2141efbea062833dbb2828abbc23d9e07825e46f2afdd4daecddfed6e78"),
}

#: The minimal split: meta-train on images_background_small1's alphabets ...
MINIMAL_TRAIN_ALPHABETS = ("Balinese", "Early_Aramaic", "Greek", "Korean", "Latin")
#: ... meta-test on the alphabets only images_background_small2 has (106 characters).
MINIMAL_TEST_ALPHABETS = ("Japanese_(katakana)", "Sanskrit", "Tagalog")

_CACHE_VERSION = 1
_NATIVE = 105


class Omniglot(NamedTuple):
    """Omniglot characters as arrays.

    Attributes:
      images: ``float32 [C, D, H, W]``, ink = 1.
      alphabets: alphabet name of each character (length ``C``).
      characters: ``"Alphabet/characterNN"`` of each character (rotated copies
        get a ``"/rot90"``-style suffix).
      drawers: ``int32 [C, D]`` drawer id of each drawing.
    """

    images: np.ndarray
    alphabets: Tuple[str, ...]
    characters: Tuple[str, ...]
    drawers: np.ndarray

    @property
    def alphabet_ids(self) -> np.ndarray:
        """``int32 [C]`` index of each character's alphabet in ``sorted(set(alphabets))``."""
        names = sorted(set(self.alphabets))
        return np.array([names.index(a) for a in self.alphabets], np.int32)

    def __repr__(self) -> str:
        return f"Omniglot({len(self.characters)} characters, {len(set(self.alphabets))} alphabets, images {self.images.shape})"


def resize_area(images: np.ndarray, size: int) -> np.ndarray:
    """Area-average resize of ``[..., H, W]`` square images to ``[..., size, size]``.

    Each output pixel is the mean of the input area it covers (fractional
    overlaps weighted), computed as ``R @ image @ R.T``.

    Example:
      >>> import numpy as np
      >>> resize_area(np.ones((2, 105, 105)), 28).shape
      (2, 28, 28)
      >>> float(resize_area(np.ones((105, 105)), 28).min())
      1.0
    """
    n = images.shape[-1]
    if images.shape[-2] != n:
        raise ValueError(f"images: expected square images, got {images.shape[-2:]}.")
    if size == n:
        return images.astype(np.float32)
    edges = np.arange(size + 1) * (n / size)
    lo, hi = edges[:-1, None], edges[1:, None]
    pix = np.arange(n)[None, :]
    overlap = np.clip(np.minimum(hi, pix + 1) - np.maximum(lo, pix), 0.0, None)
    weights = (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)
    return (weights @ images.astype(np.float32)) @ weights.T


def decode_drawings_zip(path: str, suffix: str, decode: Callable[[bytes, str], np.ndarray], what: str):
    """Decodes every drawing file of an Omniglot-layout zip with ``decode``.

    Shared by the image and the pen-stroke readers: entries are
    ``<set>/<Alphabet>/<characterNN>/<id>_<drawer><suffix>``; each file's bytes
    go through ``decode(data, where) -> array`` (``where`` names the file for
    error messages); every character must have the same number of drawings.

    Args:
      path: the zip file.
      suffix: file ending of the drawings (``".png"`` or ``".txt"``).
      decode: turns one file's bytes into an array of a fixed shape.
      what: what the files are, for the error when the archive holds none.

    Returns:
      ``(drawings [C, D, ...], alphabets, characters, drawers [C, D])``,
      characters sorted by alphabet and name, drawings by drawer.

    Raises:
      ValueError: an unreadable or truncated zip, an unexpected entry, a
        corrupt entry, no drawings, or characters with unequal drawing counts.

    Example:
      >>> import io, zipfile, tempfile, os, numpy as np
      >>> path = os.path.join(tempfile.mkdtemp(), "tiny.zip")
      >>> with zipfile.ZipFile(path, "w") as z:
      ...     for d in (1, 2):
      ...         z.writestr(f"set/Alpha/character01/0101_{d:02d}.txt", str(d))
      >>> arr, alphabets, characters, drawers = decode_drawings_zip(
      ...     path, ".txt", lambda data, where: np.array([float(data)]), "numbers")
      >>> arr[:, :, 0].tolist(), characters, drawers.tolist()
      ([[1.0, 2.0]], ['Alpha/character01'], [[1, 2]])
    """
    pattern = re.compile(r"^[^/]+/(?P<alphabet>[^/]+)/(?P<character>[^/]+)/(?P<image>\d+)_(?P<drawer>\d+)"
                         + re.escape(suffix) + "$")
    layout = f"<set>/<Alphabet>/<characterNN>/<id>_<drawer>{suffix}"
    try:
        archive = zipfile.ZipFile(path)
        names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise ValueError(f"{path}: not a readable zip archive ({err}); the file is truncated or corrupt. "
                         "Delete it and download it again.") from err
    groups: dict = {}
    with archive:
        for name in names:
            if name.startswith("__MACOSX/") or name.endswith("/") or os.path.basename(name).startswith("."):
                continue
            if not name.endswith(suffix):
                continue
            match = pattern.match(name)
            if match is None:
                raise ValueError(f"{path}: unexpected entry {name!r}; expected {layout}.")
            try:
                data = archive.read(name)
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as err:
                raise ValueError(f"{path}: entry {name!r} cannot be read ({err}); the archive is corrupt.") from err
            key = (match["alphabet"], match["character"])
            groups.setdefault(key, []).append((int(match["drawer"]), decode(data, f"{path}:{name}")))
    if not groups:
        raise ValueError(f"{path}: holds no Omniglot {what} ({layout}).")
    keys = sorted(groups)
    counts = {len(groups[k]) for k in keys}
    if len(counts) != 1:
        bad = [f"{a}/{c}: {len(groups[(a, c)])}" for a, c in keys if len(groups[(a, c)]) != max(counts)]
        raise ValueError(f"{path}: characters have different numbers of drawings ({', '.join(bad[:5])}); "
                         "the archive is incomplete.")
    ordered = [sorted(groups[k], key=lambda t: t[0]) for k in keys]
    drawings = np.stack([np.stack([arr for _, arr in row]) for row in ordered])
    drawers = np.array([[drawer for drawer, _ in row] for row in ordered], np.int32)
    return drawings, [k[0] for k in keys], [f"{k[0]}/{k[1]}" for k in keys], drawers


def _decode_image(data: bytes, where: str) -> np.ndarray:
    image = decode_png_gray(data, where)
    if image.shape != (_NATIVE, _NATIVE):
        raise ValueError(f"{where}: expected a {_NATIVE}x{_NATIVE} image, got {image.shape}.")
    return image < 0.5  # ink = dark pixels


def _decode_zip(path: str) -> Tuple[np.ndarray, list, list, np.ndarray]:
    """Decodes every drawing of a zip: ``(bool [C, D, 105, 105], alphabets, characters, drawers)``."""
    return decode_drawings_zip(path, ".png", _decode_image, "drawings")


def read_omniglot_zip(path: str, *, remote: Optional[RemoteFile] = None, cache_dir: Optional[str] = None,
                      image_size: Optional[int] = 28) -> Omniglot:
    """Reads one Omniglot zip (verified against ``remote`` when given), with a decode cache.

    Args:
      path: the zip file.
      remote: the official file it should be (checksum verified); ``None``
        skips verification (for archives you built yourself).
      cache_dir: where decoded arrays are cached (``None``: no cache). The
        cache key includes the zip's sha256, so a changed file is re-decoded.
      image_size: output size (``None``: native 105x105).

    Returns:
      An :class:`Omniglot`.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: checksum mismatch, truncated/corrupt archive or image, or a
        layout that is not Omniglot's.

    Example:
      >>> import os, jaxmeta.data as d
      >>> root = os.environ.get("JAXMETA_DATA")
      >>> if root:
      ...     data = read_omniglot_zip(os.path.join(d.data_root(root, "omniglot"), "images_background_small1.zip"))
      ...     assert data.images.shape == (136, 20, 28, 28)
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist.")
    if remote is not None:
        verify(path, remote)
    digest = checksum(path)
    cached = None
    if cache_dir is not None:
        cached = os.path.join(cache_dir, f"omniglot-{os.path.basename(path)}-{digest[:16]}-v{_CACHE_VERSION}.npz")
    if cached and os.path.exists(cached):
        try:
            with np.load(cached, allow_pickle=False) as f:
                bits, shape = f["bits"], tuple(f["shape"])
                native = np.unpackbits(bits)[: int(np.prod(shape))].reshape(shape).astype(bool)
                alphabets, characters, drawers = list(f["alphabets"]), list(f["characters"]), f["drawers"]
        except (OSError, ValueError, KeyError):
            cached_ok = False
        else:
            cached_ok = True
        if not cached_ok:
            os.unlink(cached)  # a damaged cache is rebuilt, never trusted
            return read_omniglot_zip(path, remote=None, cache_dir=cache_dir, image_size=image_size)
    else:
        native, alphabets, characters, drawers = _decode_zip(path)
        if cached:
            import io

            buffer = io.BytesIO()
            np.savez_compressed(buffer, bits=np.packbits(native), shape=np.array(native.shape),
                                alphabets=np.array(alphabets), characters=np.array(characters), drawers=drawers)
            atomic_write_bytes(cached, buffer.getvalue())
    images = native.astype(np.float32)
    if image_size is not None and image_size != _NATIVE:
        images = resize_area(images, int(image_size))
    return Omniglot(images, tuple(str(a) for a in alphabets), tuple(str(c) for c in characters),
                    np.asarray(drawers, np.int32))


def _concat(parts: Sequence[Omniglot]) -> Omniglot:
    return Omniglot(np.concatenate([p.images for p in parts]), sum((p.alphabets for p in parts), ()),
                    sum((p.characters for p in parts), ()), np.concatenate([p.drawers for p in parts]))


def _take(data: Omniglot, index: np.ndarray) -> Omniglot:
    index = np.asarray(index)
    return Omniglot(data.images[index], tuple(data.alphabets[i] for i in index),
                    tuple(data.characters[i] for i in index), data.drawers[index])


def load_omniglot(
    sets: Iterable[str] = ("images_background_small1", "images_background_small2"),
    *,
    data_dir: Optional[str] = None,
    image_size: Optional[int] = 28,
    download: bool = False,
    cache: bool = True,
) -> Omniglot:
    """Loads and merges official Omniglot sets, de-duplicating shared alphabets.

    ``images_background_small1`` and ``_small2`` both hold Greek and Latin (same
    characters, same drawers); each character is kept once (8 alphabets, 242
    characters for the two minimal sets). A character present in two sets with
    different images is an error.

    Args:
      sets: names from :data:`OMNIGLOT_FILES` (``images_*`` only).
      data_dir: folder with the zips (or its parent with an ``omniglot/``
        subfolder); default ``$JAXMETA_DATA``.
      image_size: output size; ``None`` keeps the native 105x105.
      download: fetch missing zips from the official repository (verified).
      cache: cache decoded arrays under ``$JAXMETA_CACHE`` (default
        ``~/.cache/jaxmeta``).

    Returns:
      An :class:`Omniglot`, characters sorted by set order, then alphabet and
      character name.

    Example:
      >>> import os
      >>> if os.environ.get("JAXMETA_DATA"):
      ...     data = load_omniglot()
      ...     assert len(data.characters) == 242 and len(set(data.alphabets)) == 8
    """
    read = lambda path, remote, cache_dir: read_omniglot_zip(path, remote=remote, cache_dir=cache_dir,  # noqa: E731
                                                             image_size=image_size)
    return load_sets(sets, "images_", read, data_dir=data_dir, download=download, cache=cache)


def load_sets(sets: Sequence[str], prefix: str, read: Callable, *, data_dir: Optional[str] = None,
              download: bool = False, cache: bool = True, atol: float = 0.0):
    """Reads the named Omniglot zips and joins them, each character once (images and strokes alike).

    ``read(path, remote, cache_dir)`` turns one verified zip into a record
    whose fields are ``(drawings, alphabets, characters, drawers)``
    (:class:`Omniglot` or ``OmniglotStrokes``). A character held by two sets
    (small1 and small2 share two alphabets) is kept once, after checking that
    both copies agree (to ``atol``).

    Raises:
      ValueError: no sets, a set name without ``prefix``, or a character whose
        copies differ.

    Example:
      >>> load_sets([], "images_", None)
      Traceback (most recent call last):
      ...
      ValueError: sets: expected at least one Omniglot set name.
    """
    sets = tuple(sets)
    if not sets:
        raise ValueError("sets: expected at least one Omniglot set name.")
    for name in sets:
        if name not in OMNIGLOT_FILES or not name.startswith(prefix):
            known = sorted(k for k in OMNIGLOT_FILES if k.startswith(prefix))
            raise ValueError(f"sets: unknown Omniglot {prefix.rstrip('_s')} set {name!r}; known sets are {known}.")
    folder = data_root(data_dir, "omniglot")
    cache_dir = os.path.join(cache_root(), "omniglot") if cache else None
    same = np.array_equal if atol == 0 else (lambda x, y: np.allclose(x, y, atol=atol))
    seen: dict = {}
    parts = []
    for name in sets:
        remote = OMNIGLOT_FILES[name]
        part = read(fetch(remote, folder, download=download, check=False), remote, cache_dir)
        keep = []
        for i, char in enumerate(part.characters):
            if char in seen:
                other, j = seen[char]
                if not same(other[0][j], part[0][i]):
                    raise ValueError(f"character {char!r} appears in two sets with different drawings; "
                                     "the archives are inconsistent.")
                continue
            seen[char] = (part, i)
            keep.append(i)
        keep = np.array(keep, np.int64)
        parts.append(type(part)(part[0][keep], tuple(part.alphabets[i] for i in keep),
                                tuple(part.characters[i] for i in keep), part.drawers[keep]))
    first = parts[0]
    return type(first)(np.concatenate([p[0] for p in parts]), sum((p.alphabets for p in parts), ()),
                       sum((p.characters for p in parts), ()), np.concatenate([p.drawers for p in parts]))


def select_alphabets(data: Omniglot, alphabets: Iterable[str]) -> Omniglot:
    """The characters of the given alphabets (splits are by alphabet, never by drawing).

    Example:
      >>> import numpy as np
      >>> d = Omniglot(np.zeros((3, 2, 4, 4)), ("A", "B", "A"), ("A/c1", "B/c1", "A/c2"), np.zeros((3, 2), np.int32))
      >>> select_alphabets(d, ["A"]).characters
      ('A/c1', 'A/c2')
    """
    wanted = tuple(alphabets)
    missing = sorted(set(wanted) - set(data.alphabets))
    if missing:
        raise ValueError(f"alphabets: {missing} are not in this data set; it has {sorted(set(data.alphabets))}.")
    index = np.array([i for i, a in enumerate(data.alphabets) if a in wanted], np.int64)
    return _take(data, index)


def with_rotations(data: Omniglot, rotations: Sequence[int] = (0, 90, 180, 270)) -> Omniglot:
    """Adds rotated copies of every character as new classes (the papers' x4 augmentation).

    The result has ``len(rotations) * C`` characters: all characters at the
    first rotation, then all at the second, and so on. Rotated copies keep
    their alphabet.

    Example:
      >>> import numpy as np
      >>> d = Omniglot(np.zeros((3, 2, 4, 4)), ("A", "B", "A"), ("A/c1", "B/c1", "A/c2"), np.zeros((3, 2), np.int32))
      >>> with_rotations(d).images.shape
      (12, 2, 4, 4)
    """
    parts = []
    for angle in rotations:
        if angle % 90:
            raise ValueError(f"rotations: expected multiples of 90 degrees, got {angle}.")
        k = (angle // 90) % 4
        suffix = "" if k == 0 else f"/rot{angle}"
        parts.append(Omniglot(np.rot90(data.images, k=k, axes=(-2, -1)).copy(), data.alphabets,
                              tuple(c + suffix for c in data.characters), data.drawers))
    return _concat(parts)


def omniglot_splits(protocol: str = "minimal", *, data_dir: Optional[str] = None, image_size: Optional[int] = 28,
                    download: bool = False, rotate_train: bool = True) -> Tuple[Omniglot, Omniglot]:
    """Meta-train and meta-test characters for a published protocol (split by alphabet).

    * ``"minimal"``: train on the 5 alphabets of ``images_background_small1``,
      test on the 3 alphabets only ``images_background_small2`` has
      (Japanese_(katakana), Sanskrit, Tagalog: 106 characters).
    * ``"standard"``: train on ``images_background`` (30 alphabets), test on
      ``images_evaluation`` (20 alphabets) -- Lake et al.'s split; needs the full zips.

    Args:
      protocol: ``"minimal"`` or ``"standard"``.
      data_dir, image_size, download: as :func:`load_omniglot`.
      rotate_train: add x4 rotations of the training characters as classes.

    Returns:
      ``(train, test)``.

    Example:
      >>> import os
      >>> if os.environ.get("JAXMETA_DATA"):
      ...     train, test = omniglot_splits("minimal")
      ...     assert len(test.characters) == 106 and len(train.characters) == 4 * 136
    """
    if protocol == "minimal":
        data = load_omniglot(("images_background_small1", "images_background_small2"), data_dir=data_dir,
                             image_size=image_size, download=download)
        train, test = select_alphabets(data, MINIMAL_TRAIN_ALPHABETS), select_alphabets(data, MINIMAL_TEST_ALPHABETS)
    elif protocol == "standard":
        train = load_omniglot(("images_background",), data_dir=data_dir, image_size=image_size, download=download)
        test = load_omniglot(("images_evaluation",), data_dir=data_dir, image_size=image_size, download=download)
    else:
        raise ValueError(f"protocol: expected 'minimal' or 'standard', got {protocol!r}.")
    if set(train.alphabets) & set(test.alphabets):
        raise ValueError(f"train and test share alphabets {sorted(set(train.alphabets) & set(test.alphabets))}.")
    return (with_rotations(train) if rotate_train else train), test
