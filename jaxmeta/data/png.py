"""A small PNG decoder (stdlib zlib only), enough for the data sets jaxmeta reads.

Supports non-interlaced greyscale, greyscale+alpha, RGB, RGBA (8 bit) and
greyscale / palette images at 1, 2, 4 and 8 bits; returns greyscale in
``[0, 1]``. Anything else raises a clear ``ValueError`` rather than decoding
wrongly.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

__all__ = ["decode_png_gray"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _unfilter(raw: bytes, height: int, stride: int, bpp: int) -> np.ndarray:
    """Undoes PNG's per-scanline filters (None, Sub, Up, Average, Paeth)."""
    out = np.zeros((height, stride), np.uint8)
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride + 1)
    prev = np.zeros(stride, np.int32)
    for y in range(height):
        ftype, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        if ftype == 0:
            cur = line
        elif ftype == 2:
            cur = (line + prev) & 0xFF
        else:
            cur = np.zeros(stride, np.int32)
            for x in range(stride):  # Sub/Average/Paeth depend on the left neighbour
                left = cur[x - bpp] if x >= bpp else 0
                up = prev[x]
                if ftype == 1:
                    pred = left
                elif ftype == 3:
                    pred = (left + up) >> 1
                elif ftype == 4:
                    ul = prev[x - bpp] if x >= bpp else 0
                    p = left + up - ul
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - ul)
                    pred = left if pa <= pb and pa <= pc else (up if pb <= pc else ul)
                else:
                    raise ValueError(f"unknown PNG filter type {ftype} on row {y}.")
                cur[x] = (line[x] + pred) & 0xFF
        out[y] = cur
        prev = cur
    return out


def decode_png_gray(data: bytes, name: str = "<png>") -> np.ndarray:
    """Decodes PNG bytes to a ``float32 [H, W]`` greyscale image in ``[0, 1]``.

    Args:
      data: the file's bytes.
      name: used in error messages.

    Raises:
      ValueError: not a PNG, truncated/corrupt data, or an unsupported variant.

    Example:
      >>> import struct, zlib
      >>> def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
      >>> png = (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 1, 8, 0, 0, 0, 0))
      ...        + chunk(b"IDAT", zlib.compress(bytes([0, 0, 255]))) + chunk(b"IEND", b""))
      >>> decode_png_gray(png)
      array([[0., 1.]], dtype=float32)
    """
    if not data.startswith(_SIGNATURE):
        raise ValueError(f"{name}: not a PNG file (bad signature).")
    pos, idat, header, palette = len(_SIGNATURE), [], None, None
    while pos < len(data):
        if pos + 8 > len(data):
            raise ValueError(f"{name}: truncated PNG (chunk header cut off).")
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length or pos + 12 + length > len(data):
            raise ValueError(f"{name}: truncated PNG ({ctype!r} chunk cut off).")
        crc = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0]
        if zlib.crc32(ctype + body) & 0xFFFFFFFF != crc:
            raise ValueError(f"{name}: corrupt PNG (CRC mismatch in {ctype!r} chunk).")
        if ctype == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif ctype == b"PLTE":
            palette = np.frombuffer(body, np.uint8).reshape(-1, 3)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            break
        pos += 12 + length
    if header is None or not idat:
        raise ValueError(f"{name}: corrupt PNG (no IHDR or IDAT chunk).")
    width, height, depth, color, _, _, interlace = header
    if interlace:
        raise ValueError(f"{name}: interlaced PNGs are not supported.")
    if color not in _CHANNELS or (color in (2, 4, 6) and depth != 8) or depth not in (1, 2, 4, 8):
        raise ValueError(f"{name}: unsupported PNG (colour type {color}, bit depth {depth}).")
    channels = _CHANNELS[color]
    stride = (width * channels * depth + 7) // 8
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as err:
        raise ValueError(f"{name}: corrupt PNG image data ({err}).") from err
    if len(raw) != height * (stride + 1):
        raise ValueError(f"{name}: corrupt PNG (image data has {len(raw)} bytes, expected {height * (stride + 1)}).")
    rows = _unfilter(raw, height, stride, max(1, channels * depth // 8))
    if depth < 8:
        bits = np.unpackbits(rows, axis=1)[:, : width * depth].reshape(height, width, depth)
        values = (bits * (1 << np.arange(depth - 1, -1, -1))).sum(-1)
        if color == 3:
            if palette is None:
                raise ValueError(f"{name}: palette image without a PLTE chunk.")
            return palette[values].mean(-1).astype(np.float32) / 255.0
        return values.astype(np.float32) / float((1 << depth) - 1)
    pixels = rows.reshape(height, width, channels).astype(np.float32)
    if color == 3:
        if palette is None:
            raise ValueError(f"{name}: palette image without a PLTE chunk.")
        return palette[rows].mean(-1).astype(np.float32) / 255.0
    if color in (2, 6):
        return pixels[..., :3].mean(-1) / 255.0
    return pixels[..., 0] / 255.0
