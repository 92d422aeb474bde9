"""Readers that find, verify and decode data sets on disk (no learners, no episodes)."""

from jaxmeta.data.movielens import (
    DATA_ENV,
    ML100K_FILES,
    ML100K_SHA256,
    ML100K_URL,
    MovieLens,
    download_movielens_100k,
    extract_movielens_100k,
    find_movielens_100k,
    load_movielens_100k,
    sha256_file,
    verify_files,
)

__all__ = [
    "MovieLens",
    "load_movielens_100k",
    "find_movielens_100k",
    "download_movielens_100k",
    "extract_movielens_100k",
    "verify_files",
    "sha256_file",
    "ML100K_URL",
    "ML100K_SHA256",
    "ML100K_FILES",
    "DATA_ENV",
]
