"""Block readers: the one interface through which the pipeline sees pixels.

The pipeline never holds a scene: it asks a reader for windows. GDAL-backed readers live in
``raster_io``; the in-memory and stacking readers here let the same pipeline run on numpy arrays
(tests, the paper-reproduction harness, a GPU machine without GDAL).
"""
from __future__ import annotations

from typing import Optional, Protocol, Sequence, Tuple

import numpy as np


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


def read_padded(reader: BlockReader, row: int, col: int, size: int) -> np.ndarray:
    """A size×size window at (row, col), edge-padded where it leaves the scene (as tiling pads)."""
    r1, c1 = min(row + size, reader.height), min(col + size, reader.width)
    block = reader.read(row, col, r1 - row, c1 - col)
    pad_r, pad_c = size - (r1 - row), size - (c1 - col)
    if pad_r or pad_c:
        block = np.pad(block, ((0, 0), (0, pad_r), (0, pad_c)), mode="edge")
    return block


def sample_valid_pixels(reader: BlockReader, n: int, seed: int, valid_bands: Optional[Sequence[int]] = None,
                        block_rows: int = 256, progress=None) -> np.ndarray:
    """Up to ``n`` random pixels [bands, n'] with no NaN in ``valid_bands``, streamed over row blocks.

    Each block keeps its share of the sample (its fraction of the rows), so memory is bounded by one
    block plus the sample whatever the scene size.
    """
    rng = np.random.default_rng(seed)
    height = reader.height
    per_row = n / max(height, 1)
    chunks = []
    for row in range(0, height, block_rows):
        rows = min(block_rows, height - row)
        block = reader.read(row, 0, rows, reader.width).reshape(reader.band_count, -1)
        check = block if valid_bands is None else block[list(valid_bands)]
        idx = np.flatnonzero(~np.isnan(check).any(axis=0))
        want = int(np.ceil(per_row * rows * 2))  # oversample, trimmed at the end
        if idx.size > want:
            idx = rng.choice(idx, size=want, replace=False)
        if idx.size:
            chunks.append(block[:, np.sort(idx)])
        if progress is not None:
            progress.step((row + rows) / height)
    if not chunks:
        return np.zeros((reader.band_count, 0), dtype=np.float32)
    out = np.concatenate(chunks, axis=1)
    if out.shape[1] > n:
        out = out[:, np.sort(rng.choice(out.shape[1], size=n, replace=False))]
    return out
