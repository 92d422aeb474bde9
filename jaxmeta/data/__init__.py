"""Readers that find, verify and decode data sets on disk (no learners, no episodes).

The data location is ``data_dir=`` or the ``JAXMETA_DATA`` environment variable.
"""

from jaxmeta.data.files import RemoteFile, cache_root, checksum, data_root, fetch, verify
from jaxmeta.data.omniglot import (
    MINIMAL_TEST_ALPHABETS,
    MINIMAL_TRAIN_ALPHABETS,
    OMNIGLOT_FILES,
    Omniglot,
    load_omniglot,
    omniglot_splits,
    read_omniglot_zip,
    resize_area,
    select_alphabets,
    with_rotations,
)
from jaxmeta.data.omniglot_strokes import (
    OmniglotMultimodal,
    OmniglotStrokes,
    load_omniglot_multimodal,
    load_omniglot_strokes,
    multimodal_rotations,
    multimodal_splits,
    pair_modalities,
    parse_strokes,
    read_strokes_zip,
    resample_strokes,
    select_multimodal_alphabets,
)
from jaxmeta.data.movielens import (
    ML100K_FILES,
    ML100K_SHA256,
    ML100K_URL,
    MovieLens,
    download_movielens_100k,
    extract_movielens_100k,
    find_movielens_100k,
    load_movielens_100k,
    verify_movielens_files,
)
from jaxmeta.data.png import decode_png_gray
from jaxmeta.data.uci import LETTER, load_letter

__all__ = [
    "RemoteFile",
    "data_root",
    "cache_root",
    "checksum",
    "verify",
    "fetch",
    "decode_png_gray",
    "Omniglot",
    "OMNIGLOT_FILES",
    "MINIMAL_TRAIN_ALPHABETS",
    "MINIMAL_TEST_ALPHABETS",
    "load_omniglot",
    "omniglot_splits",
    "read_omniglot_zip",
    "select_alphabets",
    "with_rotations",
    "resize_area",
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
    "MovieLens",
    "load_movielens_100k",
    "find_movielens_100k",
    "download_movielens_100k",
    "extract_movielens_100k",
    "verify_movielens_files",
    "ML100K_URL",
    "ML100K_SHA256",
    "ML100K_FILES",
    "LETTER",
    "load_letter",
]
