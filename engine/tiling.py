"""Streaming tiled prediction: patch windows with overlap, class probabilities averaged, rows written out.

Why streaming: a full-scene probability cube (classes × H × W float32) is gigabytes for a real scene and
the reference code ran out of memory on it. Here a band of rows is read one batch of windows at a time
([C, patch, ≤ (batch − 1) × stride + patch], so the input block does not grow with the scene width either),
and the probability sums live in a ring of ``patch`` rows: memory is O(K × patch × W) whatever the scene
height (K = classes, small), and each finished row leaves through ``write_rows`` in order.

Edges: the last window of a row/column is flush with the scene edge (never past it), so overlaps there are
larger than elsewhere; a scene smaller than one patch is edge-padded to a single window whose padded part
is discarded.

Nodata: tiling passes data through untouched — NaN in a block goes to ``predict_patches`` as NaN (edge padding
copies it). If ``predict_patches`` returns NaN probabilities for a pixel, the averaged probabilities of that
pixel are NaN too (NaN propagates through the sum), which is how the caller marks nodata in the output.
numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np

from .progress import Progress
from .settings import TileSettings


def tile_origins(length: int, patch: int, stride: int) -> List[int]:
    """Window starts covering [0, length): every ``stride``, the last one flush with the end.

    A length not larger than ``patch`` gives the single origin 0 (the caller edge-pads).
    """
    if patch <= 0 or stride <= 0:
        raise ValueError(f"patch ({patch}) and stride ({stride}) must be positive")
    if stride > patch:
        raise ValueError(f"stride {stride} is larger than the patch {patch}: pixels between windows would "
                         "never be predicted; use a stride ≤ patch")
    if length <= 0:
        raise ValueError(f"cannot tile an empty axis (length {length})")
    if length <= patch:
        return [0]
    origins = list(range(0, length - patch + 1, stride))
    if origins[-1] != length - patch:
        origins.append(length - patch)
    return origins


@dataclass
class TilingStats:
    """What one ``predict_tiled`` run did (used by tests and benchmarks to check the memory promise)."""

    windows: int
    row_bands: int
    buffer_shape: Tuple[int, ...]  # the probability-sum ring: (K, patch, width)
    max_block_shape: Tuple[int, ...]  # the largest block requested from read_block


def _pad_to(block: np.ndarray, rows: int, cols: int) -> np.ndarray:
    pr, pc = rows - block.shape[1], cols - block.shape[2]
    if pr <= 0 and pc <= 0:
        return block
    return np.pad(block, ((0, 0), (0, max(pr, 0)), (0, max(pc, 0))), mode="edge")


def predict_tiled(height: int, width: int,
                  read_block: Callable[[int, int, int, int], np.ndarray],
                  predict_patches: Callable[[np.ndarray], np.ndarray],
                  n_classes: int,
                  write_rows: Callable[[int, np.ndarray], None],
                  tiles: TileSettings,
                  progress: Optional[Progress] = None,
                  batch_size: int = 16) -> TilingStats:
    """Predict a height × width scene window by window and stream averaged probabilities to ``write_rows``.

    ``read_block(row, col, rows, cols) -> [C, rows, cols]`` (always inside the scene);
    ``predict_patches([B, C, P, P]) -> [B, K, P, P]``; ``write_rows(row, probs [K, rows, width])`` is called
    top to bottom, each scene row exactly once. Cancel (through ``progress``) raises ``Cancelled``.
    """
    progress = progress or Progress()
    patch, stride = int(tiles.patch), int(tiles.stride)
    k = int(n_classes)
    row_origins = tile_origins(height, patch, stride)
    col_origins = tile_origins(width, patch, stride)
    batch_size = max(1, int(batch_size))

    # ring of `patch` rows starting at scene row `base`; rows below `base` have been written
    sums = np.zeros((k, patch, width), dtype=np.float64)
    counts = np.zeros((patch, width), dtype=np.float64)
    base = 0
    written = 0
    max_block: Tuple[int, ...] = (0, 0, 0)
    windows = 0

    def flush(until: int) -> None:
        nonlocal written
        if until <= written:
            return
        lo, hi = written - base, until - base
        with np.errstate(invalid="ignore", divide="ignore"):
            probs = (sums[:, lo:hi] / counts[lo:hi][None]).astype(np.float32)
        write_rows(written, probs)
        written = until

    for i, r in enumerate(row_origins):
        progress.check()
        # shift the ring so that it starts at r (rows above r are already written)
        shift = r - base
        if shift > 0:
            sums = np.roll(sums, -shift, axis=1)
            counts = np.roll(counts, -shift, axis=0)
            sums[:, patch - shift:] = 0.0
            counts[patch - shift:] = 0.0
            base = r
        rows = min(patch, height - r)
        for start in range(0, len(col_origins), batch_size):
            cols = col_origins[start:start + batch_size]
            c0, span = cols[0], min(cols[-1] + patch, width) - cols[0]
            block = np.asarray(read_block(r, c0, rows, span))
            if block.ndim != 3 or block.shape[1:] != (rows, span):
                raise ValueError(f"read_block({r}, {c0}, {rows}, {span}) returned shape {block.shape}; "
                                 f"expected [bands, {rows}, {span}]")
            if block.size > int(np.prod(max_block)):
                max_block = tuple(block.shape)
            block = _pad_to(block, patch, patch)  # only pads when the scene is smaller than one patch
            batch = np.stack([block[:, :, c - c0:c - c0 + patch] for c in cols])
            probs = np.asarray(predict_patches(batch))
            if probs.shape != (len(cols), k, patch, patch):
                raise ValueError(f"predict_patches returned shape {probs.shape}; expected "
                                 f"{(len(cols), k, patch, patch)}")
            for j, c in enumerate(cols):
                w = min(patch, width - c)
                sums[:, :rows, c:c + w] += probs[j, :, :rows, :w]
                counts[:rows, c:c + w] += 1.0
            windows += len(cols)
            progress.check()
        nxt = row_origins[i + 1] if i + 1 < len(row_origins) else height
        flush(nxt)
        progress.step((i + 1) / len(row_origins))
    return TilingStats(windows=windows, row_bands=len(row_origins), buffer_shape=tuple(sums.shape),
                       max_block_shape=max_block)
