"""Block readers: the one interface through which the pipeline sees pixels.

The pipeline never holds a scene: it asks a reader for windows. GDAL-backed readers live in
``raster_io``; the in-memory and stacking readers here let the same pipeline run on numpy arrays
(tests, the paper-reproduction harness, a GPU machine without GDAL).
"""
from __future__ import annotations

from typing import Iterator, Optional, Protocol, Sequence, Tuple

import numpy as np


BLOCK_BYTES = 256 * 2**20  # a block of full-width rows stays under this many bytes, however wide the scene
MAX_BLOCK_ROWS = 256  # and holds at most this many rows


def rows_per_block(width: int, bands: int = 1, itemsize: int = 4, cap_bytes: Optional[int] = None,
                   max_rows: int = MAX_BLOCK_ROWS) -> int:
    """Rows of a full-width block of ``bands`` x ``width`` values of ``itemsize`` bytes under ``cap_bytes``
    (default :data:`BLOCK_BYTES`), at most ``max_rows``, at least 1: 256 rows of a 224-band, 10 000-pixel-wide
    scene would be 2.3 GB, capped they are 29 rows (256 MiB)."""
    cap = BLOCK_BYTES if cap_bytes is None else int(cap_bytes)
    row_bytes = max(1, int(itemsize) * max(1, int(bands)) * max(1, int(width)))
    return int(max(1, min(int(max_rows), cap // row_bytes)))


def row_blocks(height: int, width: int, bands: int = 1, itemsize: int = 4, cap_bytes: Optional[int] = None,
               max_rows: int = MAX_BLOCK_ROWS) -> Iterator[Tuple[int, int]]:
    """(first row, rows) of consecutive full-width row blocks covering ``height`` rows top to bottom, each under
    the byte cap (:func:`rows_per_block`): the one loop over a scene's rows that every streamed reader uses."""
    step = rows_per_block(width, bands, itemsize, cap_bytes, max_rows)
    for row in range(0, int(height), step):
        yield row, min(step, int(height) - row)


class BlockReader(Protocol):
    height: int
    width: int
    band_count: int

    def read(self, row: int, col: int, rows: int, cols: int) -> np.ndarray:
        """float32 [bands, rows, cols], NaN where nodata; the window lies inside the scene."""


class ArrayReader:
    """An in-memory [bands, H, W] array behind the reader interface."""

    def __init__(self, array: np.ndarray):
        if array.ndim != 3:
            raise ValueError(f"expected a [bands, rows, cols] array, got shape {array.shape}")
        self.array = array
        self.band_count, self.height, self.width = (int(s) for s in array.shape)

    def read(self, row: int, col: int, rows: int, cols: int) -> np.ndarray:
        return np.asarray(self.array[:, row:row + rows, col:col + cols], dtype=np.float32)


class StackedReader:
    """HSI bands followed by SAR bands (already on the HSI grid), read together for one window."""

    def __init__(self, hsi: BlockReader, sar: Optional[BlockReader] = None):
        if sar is not None and (sar.height, sar.width) != (hsi.height, hsi.width):
            raise ValueError(
                f"SAR grid {sar.width}x{sar.height} differs from the HSI grid {hsi.width}x{hsi.height}: "
                "resample the SAR onto the HSI grid first")
        self.hsi, self.sar = hsi, sar
        self.height, self.width = hsi.height, hsi.width
        self.hsi_bands = hsi.band_count
        self.band_count = hsi.band_count + (sar.band_count if sar is not None else 0)

    def read(self, row: int, col: int, rows: int, cols: int) -> np.ndarray:
        block = self.hsi.read(row, col, rows, cols)
        if self.sar is None:
            return block
        return np.concatenate([block, self.sar.read(row, col, rows, cols)], axis=0)

    def split(self, block: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """[..., bands, h, w] → (HSI part, SAR part or None) along the band axis."""
        hsi = block[..., :self.hsi_bands, :, :]
        sar = block[..., self.hsi_bands:, :, :] if self.sar is not None else None
        return hsi, sar


class MaskedReader:
    """``reader`` with every band NaN where ``inside`` (a one-band reader, 1 = inside, 0 or NaN = outside) is not
    inside: the one place a MASK acts, so sampling, training labels and prediction all see outside as nodata."""

    def __init__(self, reader: BlockReader, inside: BlockReader):
        if (inside.height, inside.width) != (reader.height, reader.width):
            raise ValueError(f"mask grid {inside.width}x{inside.height} differs from {reader.width}x{reader.height}")
        self.reader, self.inside = reader, inside
        self.height, self.width, self.band_count = reader.height, reader.width, reader.band_count

    def __getattr__(self, name):  # info, warped, ... of the wrapped reader
        return getattr(self.__dict__["reader"], name)

    def read(self, row: int, col: int, rows: int, cols: int) -> np.ndarray:
        block = self.reader.read(row, col, rows, cols)
        m = self.inside.read(row, col, rows, cols)[0]
        block[:, ~(np.nan_to_num(m, nan=0.0) != 0)] = np.nan
        return block


def read_padded(reader: BlockReader, row: int, col: int, size: int) -> np.ndarray:
    """A size×size window at (row, col), edge-padded where it leaves the scene (as tiling pads)."""
    r1, c1 = min(row + size, reader.height), min(col + size, reader.width)
    block = reader.read(row, col, r1 - row, c1 - col)
    pad_r, pad_c = size - (r1 - row), size - (c1 - col)
    if pad_r or pad_c:
        block = np.pad(block, ((0, 0), (0, pad_r), (0, pad_c)), mode="edge")
    return block


def sample_valid_pixels(reader, n: int, seed: int, progress=None, block_rows: int = MAX_BLOCK_ROWS,
                        valid_bands: Optional[Sequence[int]] = None):
    """Uniform random sample of up to ``n`` valid pixels → (values [bands, n'], rows, cols), sorted by position.

    Streams row blocks (at most ~256 MB each) and keeps the ``n`` pixels with the smallest random keys (a
    reservoir), so memory is one block plus the sample whatever the scene size. Valid = no NaN in ``valid_bands`` (default: the non-bad
    bands of ``reader.info`` when it has one, else all bands).
    """
    rng = np.random.default_rng(seed)
    if valid_bands is None:
        bad = set(getattr(getattr(reader, "info", None), "bad_bands", []) or [])
        valid_bands = [b for b in range(reader.band_count) if b not in bad]
    valid_bands = list(valid_bands)
    keys = np.zeros(0)
    vals = np.zeros((reader.band_count, 0), dtype=np.float32)
    rr = np.zeros(0, dtype=np.int64)
    cc = np.zeros(0, dtype=np.int64)
    for row, rows in row_blocks(reader.height, reader.width, reader.band_count, max_rows=block_rows):
        block = reader.read(row, 0, rows, reader.width).reshape(reader.band_count, -1)
        idx = np.flatnonzero(~np.isnan(block[valid_bands]).any(axis=0))
        k = rng.random(idx.size)
        if keys.size >= n and idx.size:
            keep = k < keys.max()
            idx, k = idx[keep], k[keep]
        if idx.size:
            keys = np.concatenate([keys, k])
            vals = np.concatenate([vals, block[:, idx]], axis=1)
            rr = np.concatenate([rr, row + idx // reader.width])
            cc = np.concatenate([cc, idx % reader.width])
            if keys.size > n:
                sel = np.argpartition(keys, n - 1)[:n] if n > 0 else np.zeros(0, dtype=np.int64)
                keys, vals, rr, cc = keys[sel], vals[:, sel], rr[sel], cc[sel]
        if progress is not None:
            progress.step((row + rows) / reader.height)
    order = np.lexsort((cc, rr))
    return vals[:, order], rr[order], cc[order]
