"""Spatial regularisation of class probabilities: a Gaussian on each probability plane before the argmax.

Land-cover classes come in regions, and with a handful of labels a per-pixel classifier is noisy; averaging
each class's probability over a small Gaussian neighbourhood (a Markov-random-field-like prior in its simplest
form; e.g. Tarabalka et al. 2010 smooth SVM probabilities with an MRF) removes isolated errors. Nodata never
votes: the filter is a normalised convolution, Σ G·P·m / Σ G·m with m the valid mask, so scene edges and
nodata holes are handled the same way and nodata stays nodata.

The strength σ is chosen on the TRAINING labels only (:func:`choose_sigma`, cross-validation over the
candidates in :data:`SIGMAS`); σ = 0 switches it off. The same kernel is applied three ways that agree
exactly: to a whole array (:func:`smooth_probabilities`, baselines), streamed row block by row block with a
halo (:class:`RowSmoother`, the product's prediction) and at single pixels from their neighbourhood
(:func:`centre_smoothed`, the cross-validation).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ..settings import SpatialSettings

SIGMAS = SpatialSettings().candidates  # px; candidates of the cross-validation
TRUNCATE = 3.0  # kernel radius = int(TRUNCATE * σ + 0.5)


def radius(sigma: float) -> int:
    return int(TRUNCATE * float(sigma) + 0.5) if sigma > 0 else 0


def _kernel(sigma: float) -> np.ndarray:
    r = radius(sigma)
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _filter_axis(a: np.ndarray, k: np.ndarray, axis: int) -> np.ndarray:
    """Zero-padded 1-D correlation along ``axis`` (outside the array = no data)."""
    from scipy.ndimage import correlate1d

    return correlate1d(a, k, axis=axis, mode="constant", cval=0.0)


def smooth_probabilities(probs: np.ndarray, sigma: float) -> np.ndarray:
    """probs [K, H, W] (NaN = nodata, whole pixel) → smoothed [K, H, W] float32, NaN where the input was."""
    probs = np.asarray(probs, dtype=np.float32)
    if sigma <= 0:
        return probs.copy()
    valid = ~np.isnan(probs).any(axis=0)
    k = _kernel(sigma)
    num = np.where(valid, probs, 0.0).astype(np.float64)
    den = valid.astype(np.float64)[None]
    for axis in (1, 2):
        num = _filter_axis(num, k, axis)
        den = _filter_axis(den, k, axis)
    out = (num / np.maximum(den, 1e-12)).astype(np.float32)
    out[:, ~valid] = np.nan
    return out


class RowSmoother:
    """Streams :func:`smooth_probabilities` over row blocks that arrive top to bottom.

    ``push(row, probs [K, rows, W])`` buffers; smoothed rows are passed to ``emit(row, probs)`` as soon as the
    rows below them are known (a halo of ``radius(σ)`` rows), so memory is O(K × (block + 2·radius) × W).
    ``finish()`` emits the rest. With σ = 0 it passes blocks through unchanged.
    """

    def __init__(self, sigma: float, height: int, emit: Callable[[int, np.ndarray], None]):
        """The first block pushed may start below row 0 (a row range of a scene, ``landcover.predict_scene(rows=)``);
        rows within ``radius(σ)`` of it lack their upper halo then: the caller discards them."""
        self.sigma, self.height, self.emit = float(sigma), int(height), emit
        self.r = radius(self.sigma)
        self._buf: Optional[np.ndarray] = None  # [K, n, W] input rows from self._start
        self._start = 0  # scene row of the buffer's first row
        self._next = 0  # first scene row not yet emitted

    def push(self, row: int, probs: np.ndarray) -> None:
        if self.sigma <= 0:
            self.emit(row, probs)
            self._next = row + probs.shape[1]
            return
        if self._buf is None:  # the first block may start below row 0 of the scene (a row range's halo)
            self._buf, self._start = probs.astype(np.float32), row
            self._next = max(self._next, row)
        else:
            if row != self._start + self._buf.shape[1]:
                raise ValueError("RowSmoother: row blocks must arrive in order without gaps")
            self._buf = np.concatenate([self._buf, probs.astype(np.float32)], axis=1)
        end = self._start + self._buf.shape[1]
        ready = end - self.r if end < self.height else end
        self._emit_until(ready)

    def finish(self) -> None:
        if self.sigma > 0 and self._buf is not None:
            self._emit_until(self._start + self._buf.shape[1])

    def _emit_until(self, stop: int) -> None:
        if stop <= self._next:
            return
        smoothed = smooth_probabilities(self._buf, self.sigma)
        a, b = self._next - self._start, stop - self._start
        self.emit(self._next, smoothed[:, a:b])
        self._next = stop
        keep_from = max(self._next - self.r, self._start)  # rows still needed as the next rows' upper halo
        self._buf = self._buf[:, keep_from - self._start:]
        self._start = keep_from


def centre_smoothed(patches: np.ndarray, sigma: float) -> np.ndarray:
    """patches [N, K, S, S] centred on pixels (S = 2·R + 1, NaN = nodata/outside) → [N, K] smoothed centres,
    equal to :func:`smooth_probabilities` at those pixels when R ≥ radius(σ)."""
    patches = np.asarray(patches, dtype=np.float64)
    n, k, s, _ = patches.shape
    c = s // 2
    if sigma <= 0:
        return patches[:, :, c, c]
    r = radius(sigma)
    if r > c:
        raise ValueError(f"neighbourhood of {s} px is too small for sigma {sigma} (needs {2 * r + 1})")
    w1 = _kernel(sigma)
    w = np.outer(w1, w1)
    sub = patches[:, :, c - r:c + r + 1, c - r:c + r + 1]
    valid = ~np.isnan(sub).any(axis=1)  # [N, s, s]
    wv = w[None] * valid
    num = np.einsum("nkij,nij->nk", np.nan_to_num(sub), wv)
    den = wv.sum(axis=(1, 2))[:, None]
    return num / np.maximum(den, 1e-12)


@dataclass
class SigmaChoice:
    sigma: float
    cv_accuracy: Dict[str, float] = field(default_factory=dict)  # str(σ) → CV accuracy on training labels
    folds: int = 0

    def to_dict(self) -> Dict:
        return {"sigma": self.sigma, "cv_accuracy": dict(self.cv_accuracy), "folds": self.folds}


def choose_sigma(patches: np.ndarray, y: np.ndarray, sigmas: Sequence[float] = SIGMAS, folds: int = 0) -> SigmaChoice:
    """σ with the best accuracy at held-out training pixels; ties (frequent with a few labels) go to the higher
    mean probability of the true class, then to the smaller σ.

    ``patches`` [N, K, S, S]: out-of-fold class probabilities around each training pixel; ``y`` [N] classes.
    """
    y = np.asarray(y)
    scores: Dict[str, float] = {}
    best, best_key = 0.0, (-1.0, -1.0)
    for s in sorted(float(v) for v in sigmas):
        p = centre_smoothed(patches, s)
        acc = float((p.argmax(axis=1) == y).mean())
        key = (round(acc, 9), round(float(p[np.arange(y.size), y].mean()), 9))
        scores[f"{s:g}"] = acc
        if key > best_key:
            best, best_key = s, key
    return SigmaChoice(best, scores, folds)


def neighbourhood(probs: np.ndarray, rows: np.ndarray, cols: np.ndarray, r: int) -> np.ndarray:
    """[N, K, 2r+1, 2r+1] windows of a [K, H, W] map around pixels; outside the map = NaN."""
    k, h, w = probs.shape
    padded = np.full((k, h + 2 * r, w + 2 * r), np.nan, dtype=np.float32)
    padded[:, r:r + h, r:r + w] = probs
    out = np.empty((len(rows), k, 2 * r + 1, 2 * r + 1), np.float32)
    for i, (a, b) in enumerate(zip(rows, cols)):
        out[i] = padded[:, a:a + 2 * r + 1, b:b + 2 * r + 1]
    return out


def cv_folds(y: np.ndarray, n_folds: int, seed: int) -> List[np.ndarray]:
    """Stratified fold index per training pixel (each class spread over the folds), deterministic per seed."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    fold = np.empty(y.size, np.int64)
    offset = 0
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        fold[idx] = (np.arange(idx.size) + offset) % n_folds
        offset += idx.size
    return [np.flatnonzero(fold == f) for f in range(n_folds)]
