"""Omniglot loader, PNG decoder and data-file helpers, on archives the tests build themselves."""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib

import numpy as np
import pytest

from jaxmeta import data as jdata
from jaxmeta.data import omniglot as om
from jaxmeta.data.files import RemoteFile


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def encode_png(image: np.ndarray, depth: int = 8, filters=(0,)) -> bytes:
    """A test-side PNG encoder: greyscale, bit depth 1 or 8, cycling through filter types."""
    h, w = image.shape
    if depth == 1:
        rows = np.packbits(image.astype(np.uint8), axis=1)
    else:
        rows = image.astype(np.uint8)
    stride = rows.shape[1]
    raw, prev = bytearray(), np.zeros(stride, np.int64)
    for y in range(h):
        f = filters[y % len(filters)]
        line = rows[y].astype(np.int64)
        out = np.zeros(stride, np.int64)
        for x in range(stride):
            left = line[x - 1] if x >= 1 else 0
            up, ul = prev[x], (prev[x - 1] if x >= 1 else 0)
            pred = [0, left, up, (left + up) >> 1, _paeth(left, up, ul)][f]
            out[x] = (line[x] - pred) & 0xFF
        raw += bytes([f]) + bytes(out.astype(np.uint8))
        prev = line
    ihdr = struct.pack(">IIBBBBB", w, h, depth, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(bytes(raw))) + _chunk(b"IEND", b"")


def make_zip(path, set_name, alphabets, drawers=3, seed=0, size=105):
    """An archive in the official layout, with __MACOSX and .DS_Store noise."""
    rng = np.random.default_rng(seed)
    images = {}
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{set_name}/.DS_Store", b"junk")
        z.writestr(f"__MACOSX/{set_name}/._x", b"junk")
        for alphabet, n_chars in alphabets:
            for c in range(1, n_chars + 1):
                for d in range(1, drawers + 1):
                    ink = rng.random((size, size)) < 0.1
                    name = f"{set_name}/{alphabet}/character{c:02d}/{1000 + c:04d}_{d:02d}.png"
                    z.writestr(name, encode_png(~ink, depth=1))  # black ink (0) on white (1)
                    images[(alphabet, c, d)] = ink
    return images


@pytest.mark.parametrize("filters", [(0,), (1,), (2,), (3,), (4,), (0, 1, 2, 3, 4)])
def test_png_decoder_roundtrip_8bit_all_filters(filters):
    img = np.random.default_rng(1).integers(0, 256, size=(7, 9)).astype(np.uint8)
    got = jdata.decode_png_gray(encode_png(img, 8, filters))
    np.testing.assert_allclose(got, img / 255.0, atol=1e-7)


def test_png_decoder_1bit_and_errors():
    img = np.random.default_rng(2).random((6, 11)) < 0.5
    np.testing.assert_array_equal(jdata.decode_png_gray(encode_png(img, 1)), img.astype(np.float32))
    good = encode_png(img, 1)
    with pytest.raises(ValueError, match="not a PNG"):
        jdata.decode_png_gray(b"GIF89a" + good[6:])
    with pytest.raises(ValueError, match="truncated|corrupt"):
        jdata.decode_png_gray(good[: len(good) // 2])
    bad = bytearray(good)
    bad[40] ^= 0xFF  # flip a byte inside a chunk: CRC mismatch
    with pytest.raises(ValueError, match="corrupt"):
        jdata.decode_png_gray(bytes(bad))


def test_read_zip_layout_values_and_cache(tmp_path):
    path = tmp_path / "images_background_small1.zip"
    truth = make_zip(path, "images_background_small1", [("Alpha", 2), ("Beta", 1)])
    cache = tmp_path / "cache"
    data = om.read_omniglot_zip(str(path), cache_dir=str(cache), image_size=None)
    assert data.images.shape == (3, 3, 105, 105)
    assert data.characters == ("Alpha/character01", "Alpha/character02", "Beta/character01")
    assert data.alphabets == ("Alpha", "Alpha", "Beta")
    np.testing.assert_array_equal(data.drawers[0], [1, 2, 3])
    np.testing.assert_array_equal(data.images[1, 2], truth[("Alpha", 2, 3)].astype(np.float32))  # ink = 1
    assert len(os.listdir(cache)) == 1
    again = om.read_omniglot_zip(str(path), cache_dir=str(cache), image_size=28)  # from the cache, resized
    assert again.images.shape == (3, 3, 28, 28)
    np.testing.assert_allclose(again.images, om.resize_area(data.images, 28), rtol=1e-6)


def test_resize_area_is_the_area_average():
    img = np.random.default_rng(3).random((105, 105)).astype(np.float32)
    small = om.resize_area(img, 28)
    # output pixel (0, 0) covers input [0, 3.75) x [0, 3.75)
    w = np.array([1, 1, 1, 0.75])
    want = (w[:, None] * w[None, :] * img[:4, :4]).sum() / (w.sum() ** 2)
    np.testing.assert_allclose(small[0, 0], want, rtol=1e-5)
    np.testing.assert_allclose(small.mean(), img.mean(), rtol=1e-3)


def test_truncated_zip_and_checksum_mismatch_are_clear_errors(tmp_path):
    path = tmp_path / "a.zip"
    make_zip(path, "images_background_small1", [("Alpha", 1)])
    with pytest.raises(ValueError, match="sha256 .* does not match"):
        om.read_omniglot_zip(str(path), remote=RemoteFile("a.zip", "https://example.org/a.zip", sha256="0" * 64))
    blob = path.read_bytes()
    truncated = tmp_path / "b.zip"
    truncated.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt|corrupt"):
        om.read_omniglot_zip(str(truncated))
    with pytest.raises(FileNotFoundError):
        om.read_omniglot_zip(str(tmp_path / "missing.zip"))


def test_incomplete_archive_is_reported(tmp_path):
    path = tmp_path / "c.zip"
    make_zip(path, "s", [("Alpha", 2)])
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    drop = sorted(n for n in entries if n.endswith(".png"))[0]
    with zipfile.ZipFile(path, "w") as z:
        for n, b in entries.items():
            if n != drop:
                z.writestr(n, b)
    with pytest.raises(ValueError, match="different numbers of drawings"):
        om.read_omniglot_zip(str(path))


def test_load_deduplicates_shared_alphabets_and_splits_by_alphabet(tmp_path, monkeypatch):
    make_zip(tmp_path / "images_background_small1.zip", "images_background_small1", [("Greek", 2), ("Korean", 1)])
    make_zip(tmp_path / "images_background_small2.zip", "images_background_small2", [("Greek", 2), ("Tagalog", 2)])
    files = {name: RemoteFile(f"{name}.zip", f"https://example.org/{name}.zip",
                              sha256=jdata.checksum(str(tmp_path / f"{name}.zip")))
             for name in ("images_background_small1", "images_background_small2")}
    monkeypatch.setattr(om, "OMNIGLOT_FILES", files)
    monkeypatch.setenv("JAXMETA_CACHE", str(tmp_path / "cache"))
    data = om.load_omniglot(data_dir=str(tmp_path))
    assert data.characters == ("Greek/character01", "Greek/character02", "Korean/character01",
                               "Tagalog/character01", "Tagalog/character02")
    test = om.select_alphabets(data, ["Tagalog"])
    assert set(test.alphabets) == {"Tagalog"} and len(test.characters) == 2
    rotated = om.with_rotations(om.select_alphabets(data, ["Greek", "Korean"]))
    assert rotated.images.shape[0] == 12
    np.testing.assert_array_equal(rotated.images[3], np.rot90(rotated.images[0], 1, axes=(-2, -1)))
    with pytest.raises(ValueError, match="not in this data set"):
        om.select_alphabets(data, ["Klingon"])
    with pytest.raises(ValueError, match="unknown Omniglot image set"):
        om.load_omniglot(("images_nope",), data_dir=str(tmp_path))


def test_missing_data_location_and_file_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXMETA_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="JAXMETA_DATA"):
        jdata.data_root()
    with pytest.raises(FileNotFoundError, match="github.com/brendenlake/omniglot"):
        om.load_omniglot(data_dir=str(tmp_path))


@pytest.mark.data
def test_real_minimal_split():
    train, test = om.omniglot_splits("minimal")
    assert sorted(set(test.alphabets)) == list(om.MINIMAL_TEST_ALPHABETS)
    assert len(test.characters) == 106 and test.images.shape == (106, 20, 28, 28)
    assert len(train.characters) == 4 * 136 and sorted(set(train.alphabets)) == list(om.MINIMAL_TRAIN_ALPHABETS)
    everything = om.load_omniglot()
    assert len(everything.characters) == 242 and len(set(everything.alphabets)) == 8
    assert 0.0 <= test.images.min() and test.images.max() <= 1.0 + 1e-6
    assert 0.02 < test.images.mean() < 0.2  # strokes are a small fraction of the page
