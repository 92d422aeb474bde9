"""Omniglot pen trajectories: parsing, resampling, zip reading, pairing with images."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest

from jaxmeta.data import (
    Omniglot,
    OmniglotStrokes,
    decode_png_gray,
    multimodal_splits,
    pair_modalities,
    parse_strokes,
    read_strokes_zip,
    resample_strokes,
)

DATA = os.environ.get("JAXMETA_DATA")


def test_parse_strokes_reads_points_per_stroke():
    text = "START\n1.5,-2,0\n2.5,-3,16\nBREAK\n7,-7,40\n8,-8,50\n9,-9,60\nBREAK\n"
    strokes = parse_strokes(text, "f.txt")
    assert [s.shape for s in strokes] == [(2, 3), (3, 3)]
    np.testing.assert_allclose(strokes[0], [[1.5, -2, 0], [2.5, -3, 16]])
    np.testing.assert_allclose(strokes[1][:, 2], [40, 50, 60])


@pytest.mark.parametrize("text, line, what", [
    ("0,0,0\nBREAK\n", 1, "START"),
    ("START\n0,0,0\nx,1,2\nBREAK\n", 3, "three numbers"),
    ("START\n0,0,0,4\nBREAK\n", 2, "three numbers"),
    ("START\nBREAK\n", 2, "empty stroke"),
    ("START\n0,0,0\n1,1,1\n", 3, "truncated"),
    ("START\n", 1, "no strokes"),
    ("START\n0,0,0\nBREAK\nSTART\n", 4, "second 'START'"),
    ("START\n0,nan,0\nBREAK\n", 2, "non-finite"),
])
def test_parse_strokes_errors_name_file_and_line(text, line, what):
    with pytest.raises(ValueError, match=rf"bad\.txt, line {line}: .*{what}"):
        parse_strokes(text, "bad.txt")


def test_resample_is_equally_spaced_along_the_ink_and_normalised():
    # an L: 30 px right, then 10 px down (file y up), one stroke -> 40 px of ink
    stroke = np.array([[10.0, -10.0, 0], [40.0, -10.0, 1], [40.0, -20.0, 2]])
    out = resample_strokes([stroke], 8)
    # reference: points at arc length (i + 0.5) * 5, in image orientation, bbox centred, longer side -> [-1, 1]
    s = (np.arange(8) + 0.5) * 5.0
    x = np.where(s <= 30, 10 + s, 40.0)
    y_down = np.where(s <= 30, 10.0, 10 + (s - 30))
    ref_x, ref_y = (x - 25.0) / 15.0, (y_down - 15.0) / 15.0
    np.testing.assert_allclose(out[:, 0], ref_x, atol=1e-6)
    np.testing.assert_allclose(out[:, 1], ref_y, atol=1e-6)
    np.testing.assert_array_equal(out[:, 2], [1, 0, 0, 0, 0, 0, 0, 0])
    assert out.dtype == np.float32


def test_resample_pen_up_marks_stroke_starts_and_keeps_dots():
    a = np.array([[0.0, 0.0], [20.0, 0.0]])
    dot = np.array([[10.0, -5.0]])
    b = np.array([[0.0, -10.0], [20.0, -10.0]])
    out = resample_strokes([a, dot, b], 41, min_stroke_length=1.0)
    assert out[:, 2].sum() == 3  # one start per stroke, the dot included
    starts = np.flatnonzero(out[:, 2])
    np.testing.assert_allclose(out[starts[1], :2], [0.0, 0.0], atol=1e-6)  # the dot, at the centre of the bbox


def test_resample_is_invariant_to_translation_and_scale():
    rng = np.random.default_rng(0)
    strokes = [np.cumsum(rng.normal(size=(20, 2)), axis=0), np.cumsum(rng.normal(size=(7, 2)), axis=0)]
    out = resample_strokes(strokes, 32)
    moved = resample_strokes([3.0 * s + np.array([50.0, -40.0]) for s in strokes], 32, min_stroke_length=3.0)
    np.testing.assert_allclose(out, moved, atol=1e-5)
    assert np.abs(out[:, :2]).max() <= 1.0 + 1e-6


def test_resample_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_points"):
        resample_strokes([np.zeros((2, 2))], 1)
    with pytest.raises(ValueError, match="strokes"):
        resample_strokes([], 8)


def _write_zip(path, files):
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)


def test_read_strokes_zip_groups_by_character_and_drawer(tmp_path):
    files = {}
    for c in ("character01", "character02"):
        for d in (2, 1):
            files[f"s/Alpha/{c}/0001_{d:02d}.txt"] = f"START\n0,0,0\n{d},{-d},5\nBREAK\n"
    files["__MACOSX/s/._junk.txt"] = "binary"
    files["s/.DS_Store"] = "binary"
    path = str(tmp_path / "s.zip")
    _write_zip(path, files)
    out = read_strokes_zip(path, num_points=4, cache_dir=str(tmp_path / "cache"))
    assert out.strokes.shape == (2, 2, 4, 3)
    assert out.characters == ("Alpha/character01", "Alpha/character02")
    np.testing.assert_array_equal(out.drawers, [[1, 2], [1, 2]])
    again = read_strokes_zip(path, num_points=4, cache_dir=str(tmp_path / "cache"))  # from the cache
    np.testing.assert_array_equal(again.strokes, out.strokes)
    assert again.characters == out.characters


def test_read_strokes_zip_malformed_entry_names_entry_and_line(tmp_path):
    path = str(tmp_path / "bad.zip")
    _write_zip(path, {"s/A/character01/0001_01.txt": "START\n0,0,0\n1;1;1\nBREAK\n"})
    with pytest.raises(ValueError, match=r"s/A/character01/0001_01\.txt, line 3"):
        read_strokes_zip(path, num_points=4)


def test_pair_modalities_aligns_by_drawer_and_rejects_missing():
    images = Omniglot(np.zeros((1, 2, 4, 4)), ("A",), ("A/c1",), np.array([[3, 5]], np.int32))
    s = np.zeros((1, 2, 4, 3), np.float32)
    s[0, 0, 0, 0], s[0, 1, 0, 0] = 5.0, 3.0  # stored in drawer order 5, 3
    strokes = OmniglotStrokes(s, ("A",), ("A/c1",), np.array([[5, 3]], np.int32))
    paired = pair_modalities(images, strokes)
    np.testing.assert_array_equal(paired.strokes[0, :, 0, 0], [3.0, 5.0])
    with pytest.raises(ValueError, match="drawer 7"):
        pair_modalities(images._replace(drawers=np.array([[3, 7]], np.int32)), strokes)
    with pytest.raises(ValueError, match="no trajectories"):
        pair_modalities(images._replace(characters=("A/c9",)), strokes)


@pytest.mark.data
def test_real_trajectories_lie_on_the_ink_of_their_image():
    root = os.path.join(DATA, "omniglot")
    name = "Tagalog/character03/0895_07"
    with zipfile.ZipFile(os.path.join(root, "images_background_small2.zip")) as z:
        image = decode_png_gray(z.read(f"images_background_small2/{name}.png"), name) < 0.5
    with zipfile.ZipFile(os.path.join(root, "strokes_background_small2.zip")) as z:
        points = np.concatenate(parse_strokes(z.read(f"strokes_background_small2/{name}.txt").decode(), name))
    rows, cols = np.round(-points[:, 1]).astype(int), np.round(points[:, 0]).astype(int)
    near_ink = np.zeros_like(image)
    for dr in (-2, -1, 0, 1, 2):
        for dc in (-2, -1, 0, 1, 2):
            near_ink |= np.roll(np.roll(image, dr, 0), dc, 1)
    assert near_ink[rows, cols].mean() > 0.95  # rows are -y, columns x
    assert image.mean() < 0.2


@pytest.mark.data
def test_real_multimodal_split():
    train, test = multimodal_splits(data_dir=DATA, num_points=32)
    assert train.images.shape == (136, 20, 28, 28) and train.strokes.shape == (136, 20, 32, 3)
    assert test.images.shape == (106, 20, 28, 28) and test.strokes.shape == (106, 20, 32, 3)
    assert set(test.alphabets) == {"Japanese_(katakana)", "Sanskrit", "Tagalog"}
    assert not set(train.alphabets) & set(test.alphabets)
    assert np.isfinite(train.strokes).all() and np.abs(test.strokes[..., :2]).max() <= 1.0 + 1e-6
    assert (test.strokes[..., 0, 2] == 1).all()  # every drawing starts with the pen going down
    # each image's ink centre and the trajectory's centre agree in orientation: the correlation of
    # per-drawing vertical extents (image rows with ink vs. stroke y-range) is clearly positive
    ink_rows = (test.images.max(axis=3) > 0.3).sum(axis=2).reshape(-1)
    ink_cols = (test.images.max(axis=2) > 0.3).sum(axis=2).reshape(-1)
    aspect_img = ink_rows / np.maximum(ink_cols, 1)
    span = test.strokes[..., :2].max(axis=2) - test.strokes[..., :2].min(axis=2)
    aspect_str = (span[..., 1] / np.maximum(span[..., 0], 1e-3)).reshape(-1)
    assert np.corrcoef(np.log(aspect_img + 1e-3), np.log(aspect_str + 1e-3))[0, 1] > 0.7
