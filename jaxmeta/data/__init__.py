"""Readers that find, verify and decode data sets on disk (no learners, no episodes)."""

from jaxmeta.data.files import DATA_ENV, data_path, sha256_file, verify_file
from jaxmeta.data.uci import load_letter

__all__ = ["DATA_ENV", "data_path", "sha256_file", "verify_file", "load_letter"]
