"""UCI tables on disk: the Letter Recognition features (as used by the GAIN imputation benchmark)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from jaxmeta.data.files import RemoteFile, data_root, fetch

__all__ = ["load_letter", "LETTER"]

LETTER = RemoteFile(
    "letter.csv",
    "https://raw.githubusercontent.com/jsyoon0823/GAIN/master/data/letter.csv",
    sha256="42835dcd77d1ca6f9cd57b32062683ea836d2fac741be629a76f926396280465",
)


def load_letter(data_dir: Optional[str] = None, *, download_if_missing: bool = False) -> np.ndarray:
    """UCI Letter Recognition's 16 integer features: ``[20000, 16]`` float32 in ``[0, 15]``.

    Reads ``<data_dir>/uci/letter.csv`` (header ``Cat 1 .. Cat 16``, no label
    column, the version of the GAIN benchmark; CC BY 4.0) after checking its
    sha256.

    Args:
      data_dir: the data folder (default: ``$JAXMETA_DATA``).
      download_if_missing: fetch the file from ``LETTER.url`` when it is not
        on disk (needs the network; the checksum is verified before use).

    Returns:
      The feature matrix, one row per example.

    Raises:
      FileNotFoundError / ValueError: the file is missing or its checksum differs.

    Example:
      >>> import os
      >>> X = load_letter() if os.environ.get("JAXMETA_DATA") else None   # doctest: +SKIP
      >>> X.shape                                                          # doctest: +SKIP
      (20000, 16)
    """
    path = fetch(LETTER, data_root(data_dir, "uci"), download=download_if_missing)
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32)
    if table.shape != (20000, 16):
        raise ValueError(f"{path}: expected 20000 rows x 16 columns, got {table.shape}.")
    return table
