"""MovieLens-100K loader: tiny files in the official format, errors naming file and line, checksums."""

from __future__ import annotations

import hashlib
import os
import zipfile

import numpy as np
import pytest

from jaxmeta import data as jdata

GENRES = ["unknown", "Action", "Comedy"]
OCCUPATIONS = ["engineer", "student", "other"]


def write_ml100k(root, *, data_lines=None, user_lines=None, item_lines=None):
    """Writes a 3-user, 3-item MovieLens-100K folder (official formats) under root/ml-100k."""
    folder = os.path.join(root, "ml-100k")
    os.makedirs(folder, exist_ok=True)
    files = {
        "u.genre": "".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)) + "\n",
        "u.occupation": "".join(f"{o}\n" for o in OCCUPATIONS),
        "u.user": "".join(l + "\n" for l in (user_lines or ["1|24|M|engineer|85711", "2|53|F|other|94043",
                                                            "3|17|M|student|T8H1N"])),
        "u.item": "".join(l + "\n" for l in (item_lines or [
            "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|1",
            "2|GoldenEye (1995)|01-Jan-1995||http://y|0|1|0",
            "3|unknown||||1|0|0"])),
        "u.data": "".join(l + "\n" for l in (data_lines or ["1\t1\t5\t881250949", "2\t2\t3\t891717742",
                                                            "3\t3\t1\t878887116", "1\t2\t4\t881250950"])),
    }
    for name, text in files.items():
        with open(os.path.join(folder, name), "w", encoding="latin-1") as f:
            f.write(text)
    return folder


def test_loads_tiny_official_format(tmp_path):
    write_ml100k(tmp_path)
    ml = jdata.load_movielens_100k(str(tmp_path), verify=False)
    assert (ml.num_users, ml.num_items) == (3, 3)
    np.testing.assert_array_equal(ml.user, [0, 1, 2, 0])
    np.testing.assert_array_equal(ml.item, [0, 1, 2, 1])
    np.testing.assert_array_equal(ml.rating, [5, 3, 1, 4])
    np.testing.assert_array_equal(ml.age, [24, 53, 17])
    np.testing.assert_array_equal(ml.gender, [0, 1, 0])
    np.testing.assert_array_equal(ml.occupation, [0, 2, 1])
    assert list(ml.zip_code) == ["85711", "94043", "T8H1N"]
    assert ml.release_date[0] == np.datetime64("1995-01-01") and np.isnat(ml.release_date[2])
    np.testing.assert_array_equal(ml.genres, [[0, 0, 1], [0, 1, 0], [1, 0, 0]])
    assert ml.genre_names == tuple(GENRES) and ml.occupations == tuple(OCCUPATIONS)


def test_location_from_environment_and_subfolder(tmp_path, monkeypatch):
    folder = write_ml100k(tmp_path)
    monkeypatch.setenv("JAXMETA_DATA", str(tmp_path))
    assert jdata.find_movielens_100k() == folder
    assert jdata.find_movielens_100k(folder) == folder  # the folder itself also works
    monkeypatch.delenv("JAXMETA_DATA")
    with pytest.raises(FileNotFoundError, match="JAXMETA_DATA"):
        jdata.find_movielens_100k()


def test_missing_folder_and_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="u.data"):
        jdata.load_movielens_100k(str(tmp_path))
    folder = write_ml100k(tmp_path)
    os.unlink(os.path.join(folder, "u.item"))
    with pytest.raises(FileNotFoundError, match="u.item"):
        jdata.load_movielens_100k(str(tmp_path), verify=False)


@pytest.mark.parametrize("kwargs, match", [
    ({"data_lines": ["1\t1\t5\t881250949", "2\t2\t3"]}, r"u\.data, line 2: expected 4 tab-separated fields"),
    ({"data_lines": ["1\t1\t5\t881250949", "2\tx\t3\t1"]}, r"u\.data, line 2: item id 'x' is not an integer"),
    ({"data_lines": ["1\t1\t5\t1", "1\t1\t5\t1", "9\t1\t5\t1"]}, r"u\.data, line 3: unknown user id 9"),
    ({"data_lines": ["1\t4\t5\t1"]}, r"u\.data, line 1: unknown item id 4"),
    ({"data_lines": ["1\t1\t6\t1"]}, r"u\.data, line 1: rating 6 is outside 1\.\.5"),
    ({"data_lines": ["1\t1\t0\t1"]}, r"rating 0 is outside"),
    ({"user_lines": ["1|24|M|engineer|85711", "2|53|X|other|94043"]}, r"u\.user, line 2: gender 'X'"),
    ({"user_lines": ["1|24|M|pilot|85711"]}, r"u\.user, line 1: occupation 'pilot' is not listed"),
    ({"user_lines": ["1|24|M|engineer"]}, r"u\.user, line 1: expected 5 fields"),
    ({"user_lines": ["2|24|M|engineer|1"]}, r"u\.user, line 1: expected id 1"),
    ({"item_lines": ["1|A|01-Jan-1995||u|0|1"]}, r"u\.item, line 1: expected 8 fields"),
    ({"item_lines": ["1|A|1995-01-01||u|0|1|0"]}, r"u\.item, line 1: release date '1995-01-01'"),
    ({"item_lines": ["1|A|01-Jan-1995||u|0|2|0"]}, r"u\.item, line 1: genre flags must be 0 or 1"),
])
def test_malformed_lines_name_file_and_line(tmp_path, kwargs, match):
    write_ml100k(tmp_path, **kwargs)
    with pytest.raises(ValueError, match=match):
        jdata.load_movielens_100k(str(tmp_path), verify=False)


def test_checksum_mismatch_is_an_error(tmp_path):
    write_ml100k(tmp_path)
    with pytest.raises(ValueError, match=r"u\.data: sha256 .* does not match"):
        jdata.load_movielens_100k(str(tmp_path))  # verify=True: the official checksums


def test_extract_verifies_before_moving_files_into_place(tmp_path):
    good, bad = b"unknown|0\n", b"tampered\n"
    sums = {"u.genre": hashlib.sha256(good).hexdigest()}
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ml-100k/u.genre", bad)
    with pytest.raises(ValueError, match="sha256"):
        jdata.extract_movielens_100k(str(archive), str(tmp_path / "out"), checksums=sums)
    assert os.listdir(tmp_path / "out" / "ml-100k") == []  # nothing half-written
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ml-100k/u.genre", good)
    folder = jdata.extract_movielens_100k(str(archive), str(tmp_path / "out"), checksums=sums)
    assert open(os.path.join(folder, "u.genre"), "rb").read() == good
    with pytest.raises(FileNotFoundError, match="u.user"):
        jdata.extract_movielens_100k(str(archive), str(tmp_path / "o2"), checksums={**sums, "u.user": "0"})


@pytest.mark.data
def test_real_files_match_the_official_checksums_and_counts():
    ml = jdata.load_movielens_100k()  # JAXMETA_DATA, verified
    assert (ml.num_users, ml.num_items, ml.rating.shape[0]) == (943, 1682, 100000)
    assert ml.rating.min() == 1 and ml.rating.max() == 5
    assert np.bincount(ml.user).min() >= 20  # every user has at least 20 ratings
    assert len(ml.genre_names) == 19 and len(ml.occupations) == 21
    assert int(np.isnat(ml.release_date).sum()) == 1


@pytest.mark.data
def test_extract_from_an_official_layout_zip(tmp_path):
    source = jdata.find_movielens_100k()
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in jdata.ML100K_FILES:
            z.write(os.path.join(source, name), f"ml-100k/{name}")
    folder = jdata.extract_movielens_100k(str(archive), str(tmp_path))
    jdata.verify_movielens_files(folder)
    assert sorted(os.listdir(folder)) == sorted(jdata.ML100K_FILES)
