"""Streaming tiled prediction: overlapping patch windows, each pixel predicted once, rows written out.

Why windows overlap: the network sees a pixel best in the middle of its window (no zero padding nearby), so
windows overlap and each pixel takes its values from its *home* window, the one that holds it most centrally
(:func:`home_windows`). Training reads the labelled pixels' features from the same home windows, so a pixel is
described the same way when the head learns and when it predicts, and the head runs once per pixel (averaging
the overlapping windows' predictions instead cost ``(patch / stride)²`` head evaluations per pixel).

Why streaming: a full-scene probability cube (classes × H × W float32) is gigabytes for a real scene and
the reference code ran out of memory on it. Here a band of rows is read one batch of windows at a time
([C, patch, ≤ (batch − 1) × stride + patch], so the input block does not grow with the scene width either),
and each band of windows writes its core rows (``[K, ≤ stride, W]``) through ``write_rows`` in order: memory
is O(K × patch × W) whatever the scene height.

Edges: the last window of a row/column is flush with the scene edge (never past it); a scene smaller than one
patch is edge-padded to a single window whose padded part is discarded.

Nodata: tiling passes data through untouched — NaN in a block goes to ``predict_patches`` as NaN (edge padding
copies it); NaN probabilities it returns reach ``write_rows`` unchanged, which is how the caller marks nodata.
numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from ..progress import Progress
from ..settings import TileSettings


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


def home_windows(positions: np.ndarray, origins: Sequence[int], patch: int) -> np.ndarray:
    """Index of the window that holds each position most centrally (nearest centre among the windows that
    contain it; ties to the earlier window).

    The one rule that decides which window's features a pixel gets, in training and in prediction alike.
    ``origins`` sorted (as :func:`tile_origins` gives them); O(N log n) for N positions and n windows.
    """
    positions = np.asarray(positions, np.int64)
    origins = np.asarray(origins, np.int64)
    centres = origins + patch / 2.0
    # the nearest centres are at most two apart on either side of the insertion point
    at = np.searchsorted(centres, positions)
    best = np.full(positions.shape, -1, np.int64)
    best_d = np.full(positions.shape, np.inf)
    for shift in (-2, -1, 0, 1):
        i = at + shift
        ok = (i >= 0) & (i < origins.size)
        j = np.clip(i, 0, origins.size - 1)
        inside = ok & (positions >= origins[j]) & (positions < origins[j] + patch)
        d = np.where(inside, np.abs(positions - centres[j]), np.inf)
        better = d < best_d  # strict: a tie keeps the earlier window (shifts run in increasing order)
        best = np.where(better, j, best)
        best_d = np.where(better, d, best_d)
    if (best < 0).any():
        raise ValueError("a position lies in no window: origins do not cover it")
    return best


def core_spans(length: int, patch: int, stride: int) -> List[Tuple[int, int, int]]:
    """(origin, start, end) per window: the positions [start, end) it is the home window of (possibly empty).

    The cores partition [0, length), so every pixel is predicted exactly once, from the window it was trained
    from (:func:`home_windows`).
    """
    origins = tile_origins(length, patch, stride)
    home = home_windows(np.arange(length), origins, patch)
    if np.any(np.diff(home) < 0):
        raise AssertionError("home windows are not monotone along the axis")  # the rule guarantees it
    starts = np.searchsorted(home, np.arange(len(origins)), side="left")
    ends = np.searchsorted(home, np.arange(len(origins)), side="right")
    return [(int(o), int(s), int(e)) for o, s, e in zip(origins, starts, ends)]


@dataclass
class TilingStats:
    """What one ``predict_tiled`` run did (used by tests and benchmarks to check the memory promise)."""

    windows: int  # windows run (a window whose core is empty is skipped)
    row_bands: int
    buffer_shape: Tuple[int, ...]  # the largest row band of outputs held: (K, core rows, width)
    max_block_shape: Tuple[int, ...]  # the largest block requested from read_block
    pixels: int = 0  # pixels asked of predict_patches (each scene pixel once)


def _pad_to(block: np.ndarray, rows: int, cols: int) -> np.ndarray:
    pr, pc = rows - block.shape[1], cols - block.shape[2]
    if pr <= 0 and pc <= 0:
        return block
    return np.pad(block, ((0, 0), (0, max(pr, 0)), (0, max(pc, 0))), mode="edge")


def predict_tiled(height: int, width: int,
                  read_block: Callable[[int, int, int, int], np.ndarray],
                  predict_patches: Callable[[np.ndarray, np.ndarray], np.ndarray],
                  n_classes: int,
                  write_rows: Callable[[int, np.ndarray], None],
                  tiles: TileSettings,
                  progress: Optional[Progress] = None,
                  batch_size: int = 16,
                  rows: Optional[Tuple[int, int]] = None) -> TilingStats:
    """Predict a height × width scene window by window, each pixel from its home window, rows streamed out.

    ``read_block(row, col, rows, cols) -> [C, rows, cols]`` (always inside the scene);
    ``predict_patches(batch [B, C, P, P], need [B, P, P] bool) -> [B, K, P, P]``, where only the ``need`` pixels
    (the windows' cores) are used — the rest may hold anything; ``write_rows(row, values [K, rows, width])`` is
    called top to bottom, each scene row exactly once. ``rows=(first, stop)`` predicts only those scene rows, with
    values identical to the whole scene's (the windows are the whole scene's). Cancel (through ``progress``)
    raises ``Cancelled``.
    """
    progress = progress or Progress()
    patch, stride = int(tiles.patch), int(tiles.stride)
    k = int(n_classes)
    first, stop = (0, height) if rows is None else (int(rows[0]), int(rows[1]))
    if not 0 <= first < stop <= height:
        raise ValueError(f"rows {rows} are not a non-empty range inside the scene's {height} rows")
    row_spans = [(o, max(a, first), min(b, stop)) for o, a, b in core_spans(height, patch, stride)]
    row_spans = [s for s in row_spans if s[1] < s[2]]
    col_spans = [s for s in core_spans(width, patch, stride) if s[1] < s[2]]
    batch_size = max(1, int(batch_size))
    max_block: Tuple[int, ...] = (0, 0, 0)
    max_band: Tuple[int, ...] = (k, 0, width)
    windows = pixels = 0

    for i, (r, a, b) in enumerate(row_spans):
        progress.check()
        band_rows = min(patch, height - r)
        band = np.empty((k, b - a, width), dtype=np.float32)
        for start in range(0, len(col_spans), batch_size):
            spans = col_spans[start:start + batch_size]
            c0, span = spans[0][0], min(spans[-1][0] + patch, width) - spans[0][0]
            block = np.asarray(read_block(r, c0, band_rows, span))
            if block.ndim != 3 or block.shape[1:] != (band_rows, span):
                raise ValueError(f"read_block({r}, {c0}, {band_rows}, {span}) returned shape {block.shape}; "
                                 f"expected [bands, {band_rows}, {span}]")
            if block.size > int(np.prod(max_block)):
                max_block = tuple(block.shape)
            block = _pad_to(block, patch, patch)  # only pads when the scene is smaller than one patch
            batch = np.stack([block[:, :, c - c0:c - c0 + patch] for c, _, _ in spans])
            need = np.zeros((len(spans), patch, patch), dtype=bool)
            for j, (c, ca, cb) in enumerate(spans):
                need[j, a - r:b - r, ca - c:cb - c] = True
            values = np.asarray(predict_patches(batch, need))
            if values.shape != (len(spans), k, patch, patch):
                raise ValueError(f"predict_patches returned shape {values.shape}; expected "
                                 f"{(len(spans), k, patch, patch)}")
            for j, (c, ca, cb) in enumerate(spans):
                band[:, :, ca:cb] = values[j, :, a - r:b - r, ca - c:cb - c]
            windows += len(spans)
            pixels += int(need.sum())
            progress.check()
        if band.size > int(np.prod(max_band)):
            max_band = tuple(band.shape)
        write_rows(a, band)
        progress.step((i + 1) / len(row_spans))
    return TilingStats(windows=windows, row_bands=len(row_spans), buffer_shape=max_band,
                       max_block_shape=max_block, pixels=pixels)
