"""Map clean-up: a majority (modal) filter streamed by row blocks, then a minimum mapping unit (GDAL's sieve).

Why: per-pixel classifiers leave salt-and-pepper noise and patches smaller than anything a user would map; the
usual remedy is a modal filter and/or a minimum mapping unit. One implementation serves ``difflc:cleanmap`` and
the optional clean-up step of ``classify``/``trainandclassify`` (it runs on the complete temporary map before it
is moved into place). numpy only; the band it edits is any object with the :class:`ClassBand` interface (GDAL's
sieve itself is called through ``raster_io.ClassBandEditor``). Nodata (-1 here) never changes and never votes.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Protocol

import numpy as np

from ..data.readers import row_blocks
from ..progress import Progress
from ..settings import CleanupSettings


class ClassBand(Protocol):
    height: int
    width: int

    def read(self, row: int, rows: int) -> np.ndarray: ...  # int64 [rows, width], -1 = nodata

    def write(self, row: int, values: np.ndarray) -> None: ...

    def sieve(self, threshold: int, connectivity: int, progress: Progress) -> None: ...


def majority_window(window: np.ndarray, radius: int) -> np.ndarray:
    """Modal class over a (2r+1)² square for the centre rows of ``window`` [R + 2r, C] (-1 = nodata / outside).

    Nodata neither changes nor votes. Ties keep the centre pixel's class, else the smallest tied class value, so
    the filter is deterministic and never moves a boundary on a tie. Memory O(window), one class at a time
    (box sums from an integral image).
    """
    r = int(radius)
    rows, cols = window.shape[0] - 2 * r, window.shape[1]
    centre = window[r:r + rows]
    if r <= 0 or rows <= 0:
        return centre.copy()
    best = np.zeros((rows, cols), np.int64)
    best_class = centre.copy()
    centre_count = np.zeros((rows, cols), np.int64)
    k = 2 * r + 1
    for value in np.unique(window[window >= 0]).tolist():  # ascending: strict '>' keeps the smallest on ties
        hits = np.pad((window == value).astype(np.int64), ((0, 0), (r, r)))
        s = np.zeros((hits.shape[0] + 1, hits.shape[1] + 1), np.int64)
        s[1:, 1:] = hits.cumsum(axis=0).cumsum(axis=1)
        count = s[k:k + rows, k:k + cols] - s[:rows, k:k + cols] - s[k:k + rows, :cols] + s[:rows, :cols]
        better = count > best
        best[better] = count[better]
        best_class[better] = value
        mine = centre == value
        centre_count[mine] = count[mine]
    out = np.where(centre_count == best, centre, best_class)
    return np.where(centre < 0, centre, out)


def majority_in_place(band: ClassBand, radius: int, progress: Optional[Progress] = None,
                      block_rows: int = 256) -> int:
    """Stream the majority filter over ``band`` in row blocks with a halo of ``radius`` rows, writing back in place.

    The halo above a block holds the rows' original values (kept from the previous read), so the result equals a
    whole-band filter while memory stays O(block_rows x width). Returns the number of pixels changed.
    """
    progress = progress or Progress()
    r, h, w = int(radius), band.height, band.width
    carry = np.zeros((0, w), np.int64)  # original rows just above the current block
    changed = 0
    for row, rows in row_blocks(h, w, itemsize=8, max_rows=block_rows):  # int64 rows
        below = min(r, h - row - rows)
        current = band.read(row, rows + below)
        pad = lambda n: np.full((n, w), -1, np.int64)  # noqa: E731  outside the raster: no vote
        window = np.vstack([pad(r - carry.shape[0]), carry, current, pad(r - below)])
        out = majority_window(window, r)
        changed += int((out != current[:rows]).sum())
        carry = np.vstack([carry, current[:rows]])[-r:] if r else carry
        band.write(row, out)
        progress.step((row + rows) / h)
    return changed


def sieve_threshold(settings: CleanupSettings, pixel_area_m2: Optional[float]) -> int:
    """The minimum mapping unit in pixels: the larger of SIEVE_PIXELS and the area converted with the pixel area."""
    pixels = int(settings.sieve_pixels)
    if settings.sieve_area_ha > 0:
        if not pixel_area_m2:
            raise ValueError("a minimum mapping unit given as an area needs a map with a CRS (its pixel area): give "
                             "it in pixels instead")
        pixels = max(pixels, int(math.ceil(settings.sieve_area_ha * 1e4 / pixel_area_m2 - 1e-9)))
    return pixels


def clean_band(band: ClassBand, settings: CleanupSettings, pixel_area_m2: Optional[float] = None,
               progress: Optional[Progress] = None) -> Dict:
    """Majority filter first (it can leave small patches), then the sieve, so the output honours the MMU."""
    progress = progress or Progress()
    if settings.connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {settings.connectivity}")
    if settings.majority_radius < 0 or settings.sieve_pixels < 0 or settings.sieve_area_ha < 0:
        raise ValueError("clean-up sizes must be 0 (off) or positive")
    threshold = sieve_threshold(settings, pixel_area_m2)
    summary = {"majority_radius": int(settings.majority_radius), "sieve_pixels": threshold,
               "connectivity": int(settings.connectivity), "majority_changed": 0}
    sieve = threshold > 1
    if settings.majority_radius > 0:
        part = progress.sub(0.0, 0.5 if sieve else 1.0)
        progress.log(f"Majority filter, {2 * settings.majority_radius + 1}x{2 * settings.majority_radius + 1} window")
        summary["majority_changed"] = majority_in_place(band, settings.majority_radius, part)
    if sieve:
        progress.log(f"Minimum mapping unit {threshold} pixels ({settings.connectivity}-connected), GDAL sieve")
        band.sieve(threshold, settings.connectivity, progress.sub(0.5 if settings.majority_radius > 0 else 0.0, 1.0))
    progress.report(1.0)
    return summary
