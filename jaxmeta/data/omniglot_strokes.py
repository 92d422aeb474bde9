"""Omniglot pen trajectories (strokes), resampled to fixed-size sequences and paired with the images.

Every Omniglot drawing exists twice: as a 105x105 image and as the pen
trajectory that drew it (``strokes_background_small1.zip`` / ``_small2.zip`` of
the authors' repository). A stroke file is text::

    START
    x,y,t        (one line per pen sample; t in ms; y grows upwards, so rows = -y)
    ...
    BREAK        (after every stroke, including the last)

Arrays are character-major like :class:`~jaxmeta.data.Omniglot`:
``strokes [C, D, P, 3]`` holds ``P`` points per drawing, channels
``(x, y, pen_up)``: the trajectory is resampled to ``P`` points equally spaced
along the inked arc length (all strokes together, in drawing order), and
``pen_up = 1`` marks a point that starts a new stroke (the pen was lifted
before it; the very first point has ``pen_up = 1`` too). Positions are in image
orientation (``x`` right, ``y`` down), centred on the bounding box and scaled
so the longer side spans ``[-1, 1]`` (aspect ratio kept), so position and size
of the drawing on the page are removed.

:func:`load_omniglot_multimodal` pairs every trajectory with its image (same
alphabet, character and drawer) and returns both as aligned arrays.
"""

from __future__ import annotations

import io
import os
from typing import Iterable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from jaxmeta.data.files import RemoteFile, atomic_write_bytes, cache_root, checksum, data_root, fetch, verify
from jaxmeta.data.omniglot import (MINIMAL_TEST_ALPHABETS, MINIMAL_TRAIN_ALPHABETS, OMNIGLOT_FILES, decode_drawings_zip,
                                   load_omniglot, load_sets)

__all__ = [
    "OmniglotStrokes",
    "OmniglotMultimodal",
    "parse_strokes",
    "resample_strokes",
    "read_strokes_zip",
    "load_omniglot_strokes",
    "load_omniglot_multimodal",
    "pair_modalities",
    "select_multimodal_alphabets",
    "multimodal_splits",
    "multimodal_rotations",
]

_CACHE_VERSION = 1
#: image set -> stroke set with the same drawings
_STROKES_OF = {"images_background_small1": "strokes_background_small1",
               "images_background_small2": "strokes_background_small2"}


class OmniglotStrokes(NamedTuple):
    """Omniglot pen trajectories as fixed-size arrays.

    Attributes:
      strokes: ``float32 [C, D, P, 3]``: ``(x, y, pen_up)`` per point.
      alphabets: alphabet name of each character (length ``C``).
      characters: ``"Alphabet/characterNN"`` of each character.
      drawers: ``int32 [C, D]`` drawer id of each drawing.
    """

    strokes: np.ndarray
    alphabets: Tuple[str, ...]
    characters: Tuple[str, ...]
    drawers: np.ndarray

    def __repr__(self) -> str:
        return f"OmniglotStrokes({len(self.characters)} characters, strokes {self.strokes.shape})"


class OmniglotMultimodal(NamedTuple):
    """Images and pen trajectories of the same drawings, aligned index by index.

    ``images[c, d]`` and ``strokes[c, d]`` are the same drawing (same alphabet,
    character and drawer ``drawers[c, d]``).

    Attributes:
      images: ``float32 [C, D, H, W]``, ink = 1.
      strokes: ``float32 [C, D, P, 3]``, see :class:`OmniglotStrokes`.
      alphabets, characters, drawers: as :class:`~jaxmeta.data.Omniglot`.
    """

    images: np.ndarray
    strokes: np.ndarray
    alphabets: Tuple[str, ...]
    characters: Tuple[str, ...]
    drawers: np.ndarray

    @property
    def alphabet_ids(self) -> np.ndarray:
        """``int32 [C]`` index of each character's alphabet in ``sorted(set(alphabets))``."""
        names = sorted(set(self.alphabets))
        return np.array([names.index(a) for a in self.alphabets], np.int32)

    def __repr__(self) -> str:
        return (f"OmniglotMultimodal({len(self.characters)} characters, images {self.images.shape}, "
                f"strokes {self.strokes.shape})")


def parse_strokes(text: str, name: str = "<strokes>") -> List[np.ndarray]:
    """Parses one stroke file into its strokes, each ``float64 [points, 3]`` of ``(x, y, t)``.

    Args:
      text: the file's content (``START``, ``x,y,t`` lines, ``BREAK`` after
        each stroke).
      name: the file name used in error messages.

    Returns:
      A list of strokes in drawing order (``y`` as in the file: up is positive).

    Raises:
      ValueError: a malformed file; the message names the file and the line
        (missing ``START``, a line that is not three numbers, a ``BREAK`` that
        closes an empty stroke, points after the last ``BREAK``, no strokes).

    Example:
      >>> strokes = parse_strokes("START\\n0,0,0\\n1,-1,10\\nBREAK\\n5,5,30\\nBREAK\\n")
      >>> [s.shape for s in strokes]
      [(2, 3), (1, 3)]
      >>> parse_strokes("START\\n0,0\\nBREAK\\n", "a.txt")
      Traceback (most recent call last):
      ...
      ValueError: a.txt, line 2: expected 'x,y,t' (three numbers), got '0,0'.
    """
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None or lines[first].strip() != "START":
        where = 1 if first is None else first + 1
        raise ValueError(f"{name}, line {where}: expected 'START' as the first line of a stroke file.")
    strokes: List[np.ndarray] = []
    current: List[Tuple[float, float, float]] = []
    last_line = first + 1
    for i in range(first + 1, len(lines)):
        line = lines[i].strip()
        if not line:
            continue
        last_line = i + 1
        if line == "BREAK":
            if not current:
                raise ValueError(f"{name}, line {i + 1}: 'BREAK' closes an empty stroke (no x,y,t points before it).")
            strokes.append(np.asarray(current, np.float64))
            current = []
            continue
        if line == "START":
            raise ValueError(f"{name}, line {i + 1}: a second 'START'; one file holds one drawing.")
        parts = line.split(",")
        try:
            if len(parts) != 3:
                raise ValueError
            point = tuple(float(p) for p in parts)
        except ValueError:
            raise ValueError(f"{name}, line {i + 1}: expected 'x,y,t' (three numbers), got {line[:60]!r}.") from None
        if not all(np.isfinite(point)):
            raise ValueError(f"{name}, line {i + 1}: non-finite value in {line[:60]!r}.")
        current.append(point)
    if current:
        raise ValueError(f"{name}, line {last_line}: the file ends inside a stroke (no final 'BREAK'); "
                         "it is truncated.")
    if not strokes:
        raise ValueError(f"{name}, line {last_line}: no strokes (a drawing needs at least one x,y,t point).")
    return strokes


def resample_strokes(strokes: Sequence[np.ndarray], num_points: int, *, min_stroke_length: float = 1.0) -> np.ndarray:
    """Resamples a drawing to ``num_points`` points along its inked arc length, normalised.

    The strokes are laid end to end (pen-up jumps between strokes do not count
    as length; a stroke shorter than ``min_stroke_length``, e.g. a dot, counts
    as that long so it is not lost) and ``num_points`` points are placed at
    equal arc-length spacing, at the middle of each of ``num_points`` equal
    intervals. Positions are linearly interpolated. Then ``y`` is flipped to
    image orientation (down is positive), the bounding box of the original
    points is centred at 0 and its longer side scaled to span ``[-1, 1]``.

    Args:
      strokes: ``[points, >= 2]`` arrays of ``(x, y[, t])`` per stroke.
      num_points: ``P``, the output length (>= 2).
      min_stroke_length: length credited to very short strokes (in the file's
        units, pixels of the 105x105 canvas).

    Returns:
      ``float32 [P, 3]``: ``(x, y, pen_up)``; ``pen_up`` is 1 on the first
      point of the drawing and on every point that starts a new stroke.

    Example:
      >>> import numpy as np
      >>> line = [np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 5.0]])]
      >>> resample_strokes(line, 5)[:, 0].round(2).tolist()
      [-0.8, -0.4, 0.0, 0.4, 0.8]
      >>> two = [np.array([[0.0, 0.0], [4.0, 0.0]]), np.array([[0.0, -4.0], [4.0, -4.0]])]
      >>> resample_strokes(two, 4)[:, 2].tolist()
      [1.0, 0.0, 1.0, 0.0]
    """
    num_points = int(num_points)
    if num_points < 2:
        raise ValueError(f"num_points: expected an integer >= 2, got {num_points}.")
    if not strokes:
        raise ValueError("strokes: expected at least one stroke.")
    strokes = [np.asarray(s, np.float64)[:, :2] for s in strokes]
    if any(s.ndim != 2 or s.shape[0] < 1 for s in strokes):
        raise ValueError("strokes: every stroke must be a non-empty [points, >= 2] array.")
    seg_lengths = [np.sqrt((np.diff(s, axis=0) ** 2).sum(axis=1)) for s in strokes]
    credited = np.array([max(float(l.sum()), float(min_stroke_length)) for l in seg_lengths])
    starts = np.concatenate([[0.0], np.cumsum(credited)])
    total = starts[-1]
    positions = (np.arange(num_points) + 0.5) * (total / num_points)
    which = np.clip(np.searchsorted(starts, positions, side="right") - 1, 0, len(strokes) - 1)
    out = np.zeros((num_points, 3), np.float64)
    for k, stroke in enumerate(strokes):
        sel = np.flatnonzero(which == k)
        if sel.size == 0:
            continue
        cum = np.concatenate([[0.0], np.cumsum(seg_lengths[k])])
        # position along this stroke, rescaled from the credited length to the real one
        local = (positions[sel] - starts[k]) / credited[k] * cum[-1]
        if stroke.shape[0] == 1 or cum[-1] == 0.0:
            out[sel, :2] = stroke[0]
        else:
            out[sel, 0] = np.interp(local, cum, stroke[:, 0])
            out[sel, 1] = np.interp(local, cum, stroke[:, 1])
    out[0, 2] = 1.0
    out[1:, 2] = (which[1:] != which[:-1]).astype(np.float64)
    every = np.concatenate(strokes)
    lo, hi = every.min(axis=0), every.max(axis=0)
    centre, half = (lo + hi) / 2.0, max(float((hi - lo).max()) / 2.0, 1e-6)
    out[:, :2] = (out[:, :2] - centre) / half
    out[:, 1] = -out[:, 1]  # files have y up; images have rows down
    return out.astype(np.float32)


def _decode_strokes_zip(path: str, num_points: int):
    def decode(data: bytes, where: str) -> np.ndarray:
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError as err:
            raise ValueError(f"{where}: not an ASCII stroke file ({err}).") from err
        return resample_strokes(parse_strokes(text, where), num_points)

    strokes, alphabets, characters, drawers = decode_drawings_zip(path, ".txt", decode, "stroke files")
    return strokes.astype(np.float32), alphabets, characters, drawers


def read_strokes_zip(path: str, *, num_points: int = 48, remote: Optional[RemoteFile] = None,
                     cache_dir: Optional[str] = None) -> OmniglotStrokes:
    """Reads one Omniglot stroke zip into fixed-size trajectories (verified against ``remote`` when given).

    Args:
      path: the zip file.
      num_points: ``P``, points per resampled drawing.
      remote: the official file it should be (checksum verified); ``None``
        skips verification.
      cache_dir: where the resampled arrays are cached (``None``: no cache);
        the cache key holds the zip's sha256 and ``num_points``.

    Returns:
      An :class:`OmniglotStrokes`, characters sorted by alphabet and name,
      drawings by drawer.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: checksum mismatch, corrupt archive, unexpected layout, or a
        malformed stroke file (the message names the entry and the line).

    Example:
      >>> import os, jaxmeta.data as d
      >>> root = os.environ.get("JAXMETA_DATA")
      >>> if root:
      ...     s = read_strokes_zip(os.path.join(d.data_root(root, "omniglot"), "strokes_background_small1.zip"), num_points=16)
      ...     assert s.strokes.shape == (136, 20, 16, 3)
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist.")
    if remote is not None:
        verify(path, remote)
    num_points = int(num_points)
    if num_points < 2:
        raise ValueError(f"num_points: expected an integer >= 2, got {num_points}.")
    cached = None
    if cache_dir is not None:
        digest = checksum(path)
        cached = os.path.join(cache_dir, f"strokes-{os.path.basename(path)}-{digest[:16]}-p{num_points}-v{_CACHE_VERSION}.npz")
    if cached and os.path.exists(cached):
        try:
            with np.load(cached, allow_pickle=False) as f:
                result = (f["strokes"], list(f["alphabets"]), list(f["characters"]), f["drawers"])
        except (OSError, ValueError, KeyError):
            os.unlink(cached)  # a damaged cache is rebuilt, never trusted
            return read_strokes_zip(path, num_points=num_points, cache_dir=cache_dir)
    else:
        result = _decode_strokes_zip(path, num_points)
        if cached:
            buffer = io.BytesIO()
            np.savez_compressed(buffer, strokes=result[0], alphabets=np.array(result[1]),
                                characters=np.array(result[2]), drawers=result[3])
            atomic_write_bytes(cached, buffer.getvalue())
    strokes, alphabets, characters, drawers = result
    return OmniglotStrokes(np.asarray(strokes, np.float32), tuple(str(a) for a in alphabets),
                           tuple(str(c) for c in characters), np.asarray(drawers, np.int32))


def load_omniglot_strokes(
    sets: Iterable[str] = ("strokes_background_small1", "strokes_background_small2"),
    *,
    data_dir: Optional[str] = None,
    num_points: int = 48,
    download: bool = False,
    cache: bool = True,
) -> OmniglotStrokes:
    """Loads and merges official stroke sets, de-duplicating shared alphabets (Greek, Latin).

    Args:
      sets: names from :data:`~jaxmeta.data.OMNIGLOT_FILES` (``strokes_*`` only).
      data_dir: folder with the zips (or its parent with an ``omniglot/``
        subfolder); default ``$JAXMETA_DATA``.
      num_points: points per resampled drawing.
      download: fetch missing zips from the official repository (verified).
      cache: cache resampled arrays under ``$JAXMETA_CACHE``.

    Returns:
      An :class:`OmniglotStrokes` (8 alphabets, 242 characters for the two
      minimal sets).

    Example:
      >>> import os
      >>> if os.environ.get("JAXMETA_DATA"):
      ...     s = load_omniglot_strokes(num_points=16)
      ...     assert len(s.characters) == 242
    """
    read = lambda path, remote, cache_dir: read_strokes_zip(path, num_points=num_points, remote=remote,  # noqa: E731
                                                            cache_dir=cache_dir)
    return load_sets(sets, "strokes_", read, data_dir=data_dir, download=download, cache=cache, atol=1e-5)


def pair_modalities(images, strokes: OmniglotStrokes) -> OmniglotMultimodal:
    """Aligns an :class:`~jaxmeta.data.Omniglot` with an :class:`OmniglotStrokes` drawing by drawing.

    Matches characters by ``"Alphabet/characterNN"`` and drawings by drawer id.

    Raises:
      ValueError: a character or a drawer of one modality is missing from the other.

    Example:
      >>> import numpy as np
      >>> from jaxmeta.data import Omniglot
      >>> im = Omniglot(np.zeros((1, 2, 4, 4)), ("A",), ("A/c1",), np.array([[1, 2]], np.int32))
      >>> st = OmniglotStrokes(np.zeros((1, 2, 8, 3)), ("A",), ("A/c1",), np.array([[2, 1]], np.int32))
      >>> pair_modalities(im, st).strokes.shape
      (1, 2, 8, 3)
    """
    index = {c: i for i, c in enumerate(strokes.characters)}
    missing = [c for c in images.characters if c not in index]
    if missing:
        raise ValueError(f"strokes: no trajectories for characters {missing[:5]} (of {len(missing)}); "
                         "load the stroke sets that match the image sets.")
    out = np.zeros(images.images.shape[:2] + strokes.strokes.shape[2:], np.float32)
    for c, char in enumerate(images.characters):
        s = index[char]
        by_drawer = {int(d): j for j, d in enumerate(strokes.drawers[s])}
        for d, drawer in enumerate(images.drawers[c]):
            if int(drawer) not in by_drawer:
                raise ValueError(f"strokes: character {char!r} has no trajectory for drawer {int(drawer)}; "
                                 "the image and stroke archives do not match.")
            out[c, d] = strokes.strokes[s, by_drawer[int(drawer)]]
    return OmniglotMultimodal(np.asarray(images.images, np.float32), out, images.alphabets, images.characters,
                              np.asarray(images.drawers, np.int32))



def load_omniglot_multimodal(
    sets: Iterable[str] = ("images_background_small1", "images_background_small2"),
    *,
    data_dir: Optional[str] = None,
    image_size: Optional[int] = 28,
    num_points: int = 48,
    download: bool = False,
    cache: bool = True,
) -> OmniglotMultimodal:
    """Images and pen trajectories of the same Omniglot drawings, aligned.

    Args:
      sets: image set names (``images_background_small1`` / ``_small2``); the
        matching stroke sets are loaded with them.
      data_dir, image_size, download, cache: as :func:`~jaxmeta.data.load_omniglot`.
      num_points: points per resampled trajectory.

    Returns:
      An :class:`OmniglotMultimodal` (242 characters x 20 drawings for the two
      minimal sets).

    Example:
      >>> import os
      >>> if os.environ.get("JAXMETA_DATA"):
      ...     mm = load_omniglot_multimodal(num_points=16)
      ...     assert mm.images.shape == (242, 20, 28, 28) and mm.strokes.shape == (242, 20, 16, 3)
    """
    sets = tuple(sets)
    for name in sets:
        if name not in _STROKES_OF:
            raise ValueError(f"sets: no stroke set is known for {name!r}; use {sorted(_STROKES_OF)}.")
    images = load_omniglot(sets, data_dir=data_dir, image_size=image_size, download=download, cache=cache)
    strokes = load_omniglot_strokes(tuple(_STROKES_OF[s] for s in sets), data_dir=data_dir, num_points=num_points,
                                    download=download, cache=cache)
    return pair_modalities(images, strokes)


def select_multimodal_alphabets(data: OmniglotMultimodal, alphabets: Iterable[str]) -> OmniglotMultimodal:
    """The characters of the given alphabets (splits are by alphabet, never by drawing).

    Example:
      >>> import numpy as np
      >>> d = OmniglotMultimodal(np.zeros((2, 1, 4, 4)), np.zeros((2, 1, 8, 3)), ("A", "B"), ("A/c1", "B/c1"),
      ...                        np.zeros((2, 1), np.int32))
      >>> select_multimodal_alphabets(d, ["B"]).characters
      ('B/c1',)
    """
    wanted = tuple(alphabets)
    missing = sorted(set(wanted) - set(data.alphabets))
    if missing:
        raise ValueError(f"alphabets: {missing} are not in this data set; it has {sorted(set(data.alphabets))}.")
    index = np.array([i for i, a in enumerate(data.alphabets) if a in wanted], np.int64)
    return OmniglotMultimodal(data.images[index], data.strokes[index], tuple(data.alphabets[i] for i in index),
                              tuple(data.characters[i] for i in index), data.drawers[index])


def multimodal_splits(*, data_dir: Optional[str] = None, image_size: Optional[int] = 28, num_points: int = 48,
                      download: bool = False) -> Tuple[OmniglotMultimodal, OmniglotMultimodal]:
    """The minimal split with both modalities: train on small1's alphabets, test on those only small2 has.

    Returns:
      ``(train, test)``: 136 characters of Balinese, Early_Aramaic, Greek,
      Korean, Latin; 106 characters of Japanese_(katakana), Sanskrit, Tagalog.

    Example:
      >>> import os
      >>> if os.environ.get("JAXMETA_DATA"):
      ...     train, test = multimodal_splits(num_points=16)
      ...     assert len(train.characters) == 136 and len(test.characters) == 106
    """
    data = load_omniglot_multimodal(data_dir=data_dir, image_size=image_size, num_points=num_points,
                                    download=download)
    return (select_multimodal_alphabets(data, MINIMAL_TRAIN_ALPHABETS),
            select_multimodal_alphabets(data, MINIMAL_TEST_ALPHABETS))


def multimodal_rotations(data: OmniglotMultimodal, rotations: Sequence[int] = (0, 90, 180, 270)) -> OmniglotMultimodal:
    """Adds rotated copies of every character as new classes, rotating images and trajectories together.

    Images turn as :func:`~jaxmeta.data.with_rotations` (``np.rot90``, counter-clockwise);
    a trajectory point ``(x, y)`` (image orientation, ``y`` down) turns by 90
    degrees to ``(y, -x)``, which keeps it on the ink of the rotated image.

    Example:
      >>> import numpy as np
      >>> d = OmniglotMultimodal(np.zeros((1, 1, 4, 4)), np.array([[[[0.5, -1.0, 1.0]]]], np.float32), ("A",),
      ...                        ("A/c1",), np.zeros((1, 1), np.int32))
      >>> r = multimodal_rotations(d)
      >>> r.characters[1], r.strokes[1, 0, 0].tolist()
      ('A/c1/rot90', [-1.0, -0.5, 1.0])
    """
    parts = []
    for angle in rotations:
        if angle % 90:
            raise ValueError(f"rotations: expected multiples of 90 degrees, got {angle}.")
        k = (angle // 90) % 4
        strokes = data.strokes.copy()
        for _ in range(k):
            x, y = strokes[..., 0].copy(), strokes[..., 1].copy()
            strokes[..., 0], strokes[..., 1] = y, -x
        suffix = "" if k == 0 else f"/rot{angle}"
        parts.append(OmniglotMultimodal(np.rot90(data.images, k=k, axes=(2, 3)).copy(), strokes, data.alphabets,
                                        tuple(c + suffix for c in data.characters), data.drawers))
    return OmniglotMultimodal(np.concatenate([p.images for p in parts]), np.concatenate([p.strokes for p in parts]),
                              sum((p.alphabets for p in parts), ()), sum((p.characters for p in parts), ()),
                              np.concatenate([p.drawers for p in parts]))
