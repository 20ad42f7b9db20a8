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


def _box_mean(x: np.ndarray, m: np.ndarray, r: int) -> np.ndarray:
    """Mean of ``x`` over the valid pixels (mask ``m``) of each (2r+1)² window; the last two axes are space,
    outside the array = no data (so scene edges, block edges and nodata holes are all the same case)."""
    from scipy.ndimage import uniform_filter

    size = (1,) * (x.ndim - 2) + (2 * r + 1, 2 * r + 1)
    num = uniform_filter(np.where(m, x, 0.0), size=size, mode="constant", cval=0.0)
    den = uniform_filter(m.astype(np.float64), size=size, mode="constant", cval=0.0)
    return num / np.maximum(den, 1e-12)


def guided_filter(probs: np.ndarray, guide: np.ndarray, r: int, eps: float) -> np.ndarray:
    """Edge-aware smoothing of class probabilities by the guided filter (He, Sun & Tang, "Guided Image Filtering",
    IEEE TPAMI 35(6), 2013; on classification maps: Kang, Li & Benediktsson, "Spectral–spatial hyperspectral image
    classification with edge-preserving filtering", IEEE TGRS 52(5), 2014) with a colour guide.

    probs [..., K, H, W], guide [..., G, H, W] in [0, 1] (NaN = nodata in either) → [..., K, H, W] float32.
    In each (2r+1)² window the output is an affine function of the guide fitted to the probabilities (ridge ε):
    where the guide has an edge the output keeps it, where the guide is flat it averages. Box means are taken
    over valid pixels only, so the result at a pixel depends on data within 2r and never on nodata; the output
    is clipped to [0, 1] and renormalised to sum 1 (the argmax is unchanged by either).
    """
    p = np.asarray(probs, dtype=np.float64)
    g = np.asarray(guide, dtype=np.float64)
    valid = ~(np.isnan(p).any(axis=-3) | np.isnan(g).any(axis=-3))  # [..., H, W]
    p = np.where(valid[..., None, :, :], p, 0.0)
    g = np.where(valid[..., None, :, :], g, 0.0)
    m = valid[..., None, :, :]
    n_g = g.shape[-3]
    mean_i = _box_mean(g, m, r)  # [..., G, H, W]
    mean_p = _box_mean(p, m, r)  # [..., K, H, W]
    # covariance of the guide [..., H, W, G, G] and guide × probabilities [..., H, W, G, K]
    gg = np.stack([g[..., a, :, :] * g[..., b, :, :] for a in range(n_g) for b in range(n_g)], axis=-3)
    cov_ii = _box_mean(gg, m, r) - np.stack([mean_i[..., a, :, :] * mean_i[..., b, :, :]
                                             for a in range(n_g) for b in range(n_g)], axis=-3)
    cov_ii = np.moveaxis(cov_ii, -3, -1).reshape(cov_ii.shape[:-3] + cov_ii.shape[-2:] + (n_g, n_g))
    gp = g[..., :, None, :, :] * p[..., None, :, :, :]  # [..., G, K, H, W]
    shape = gp.shape
    flat = gp.reshape(shape[:-4] + (shape[-4] * shape[-3],) + shape[-2:])
    cov_ip = _box_mean(flat, m, r).reshape(shape) - mean_i[..., :, None, :, :] * mean_p[..., None, :, :, :]
    cov_ip = np.moveaxis(np.moveaxis(cov_ip, -4, -1), -4, -1)  # [..., H, W, G, K]
    a = np.linalg.solve(cov_ii + eps * np.eye(n_g), cov_ip)  # [..., H, W, G, K]
    b = mean_p - np.einsum("...hwgk,...ghw->...khw", a, mean_i)  # [..., K, H, W]
    a_planes = np.moveaxis(a.reshape(a.shape[:-2] + (n_g * a.shape[-1],)), -1, -3)  # [..., G·K, H, W]
    mean_a = _box_mean(a_planes, m, r).reshape(shape)  # [..., G, K, H, W]
    q = np.einsum("...gkhw,...ghw->...khw", mean_a, g) + _box_mean(b, m, r)
    q = np.clip(q, 0.0, 1.0)
    q = q / np.maximum(q.sum(axis=-3, keepdims=True), 1e-12)
    q = q.astype(np.float32)
    q[np.broadcast_to(~valid[..., None, :, :], q.shape)] = np.nan
    return q


COLUMN_CHUNK = 512  # columns filtered at once: the filter's float64 temporaries stay O(K·G·rows·512)


def _guided_in_columns(probs: np.ndarray, guide: np.ndarray, r: int, eps: float) -> np.ndarray:
    """:func:`guided_filter` over column chunks with a halo of 2r: identical results (the output at a pixel depends
    on data within 2r), memory independent of the block's width."""
    w = probs.shape[-1]
    if w <= COLUMN_CHUNK + 4 * r:
        return guided_filter(probs, guide, r, eps)
    out = np.empty(probs.shape, np.float32)
    h = 2 * r
    for c0 in range(0, w, COLUMN_CHUNK):
        c1 = min(c0 + COLUMN_CHUNK, w)
        a, b = max(c0 - h, 0), min(c1 + h, w)
        out[..., c0:c1] = guided_filter(probs[..., a:b], guide[..., a:b], r, eps)[..., c0 - a:c1 - a]
    return out


REGULARISERS = ("none", "gaussian", "guided")


@dataclass(frozen=True)
class Regulariser:
    """One spatial regularisation of the probability planes, as stored in a model file.

    ``gaussian``: isotropic Gaussian of ``sigma`` px (normalised convolution); ``guided``: the guided filter
    of radius ``r`` px and ridge ``eps`` guided by the scene's first three principal components (in [0, 1]);
    ``none``: off. ``halo``: rows beyond a block the result depends on.
    """

    method: str = "none"
    sigma: float = 0.0
    r: int = 0
    eps: float = 0.0

    def __post_init__(self):
        if self.method not in REGULARISERS:
            raise ValueError(f"unknown spatial regulariser {self.method!r}: use one of {REGULARISERS}")
        if self.method == "gaussian" and not 0.0 < self.sigma <= 50.0:
            raise ValueError(f"Gaussian smoothing needs 0 < sigma <= 50 px, got {self.sigma}")
        if self.method == "guided" and (not 0 < self.r <= 25 or not 0.0 < self.eps <= 1.0):
            raise ValueError(f"guided filter needs 0 < r <= 25 px and 0 < eps <= 1, got r={self.r}, eps={self.eps}")

    @property
    def active(self) -> bool:
        return self.method != "none"

    @property
    def needs_guide(self) -> bool:
        return self.method == "guided"

    @property
    def halo(self) -> int:
        return radius(self.sigma) if self.method == "gaussian" else 2 * self.r if self.method == "guided" else 0

    @property
    def label(self) -> str:
        if self.method == "gaussian":
            return f"gaussian σ {self.sigma:g}"
        if self.method == "guided":
            return f"guided r {self.r} ε {self.eps:g}"
        return "none"

    def apply(self, probs: np.ndarray, guide: Optional[np.ndarray] = None) -> np.ndarray:
        """probs [..., K, H, W] (NaN = nodata) → regularised [..., K, H, W] float32."""
        if self.method == "gaussian":
            if probs.ndim != 3:
                return np.stack([smooth_probabilities(p, self.sigma) for p in probs])
            return smooth_probabilities(probs, self.sigma)
        if self.method == "guided":
            if guide is None:
                raise ValueError("the guided filter needs the guide image")
            return _guided_in_columns(probs, guide, self.r, self.eps)
        return np.asarray(probs, dtype=np.float32).copy()

    def to_dict(self) -> Dict:
        return {"method": self.method, "sigma": float(self.sigma), "r": int(self.r), "eps": float(self.eps)}

    @classmethod
    def from_dict(cls, d: Optional[Dict]) -> "Regulariser":
        """A model file's ``spatial`` entry; files before 0.3 stored only a Gaussian ``sigma`` (0 = off)."""
        d = dict(d or {})
        if "method" not in d:
            sigma = float(d.get("sigma", 0.0))
            return cls("gaussian", sigma) if sigma > 0 else cls()
        unknown = sorted(set(d) - {"method", "sigma", "r", "eps"})
        if unknown:
            raise ValueError(f"the model file's spatial regulariser has unknown keys {unknown}: the file is damaged")
        return cls(str(d["method"]), float(d.get("sigma", 0.0)), int(d.get("r", 0)), float(d.get("eps", 0.0)))

    @classmethod
    def gaussian(cls, sigma: float) -> "Regulariser":
        return cls("gaussian", float(sigma)) if sigma > 0 else cls()


def candidates(method: str, settings) -> List[Regulariser]:
    """Off first, then ``method``'s candidates from ``SpatialSettings``, mildest first (the selection rule's order)."""
    out = [Regulariser()]
    if method == "gaussian":
        out += [Regulariser("gaussian", float(s)) for s in sorted(settings.candidates) if s > 0]
    elif method == "guided":
        out += [Regulariser("guided", sigma=0.0, r=int(r), eps=float(e))
                for r in sorted(settings.guided_radii) for e in sorted(settings.guided_eps)]
    elif method != "none":
        raise ValueError(f"unknown spatial regulariser {method!r}: use one of {REGULARISERS}")
    return out


def guide_planes(pca: np.ndarray) -> np.ndarray:
    """The product's PCA image [3, h, w] in [-1, 1] (NaN = nodata) → the guided filter's guide in [0, 1]."""
    return ((np.asarray(pca, dtype=np.float32) + 1.0) * 0.5).astype(np.float32)


class RowSmoother:
    """Streams a :class:`Regulariser` over row blocks that arrive top to bottom.

    ``push(row, planes [K + G, rows, W])`` buffers (the last ``n_guide`` planes are the guide, G = 0 without one);
    regularised class rows [K, rows, W] go to ``emit(row, probs)`` as soon as the rows below them are known (a
    halo of ``regulariser.halo`` rows), so memory is O((K + G) × (block + 2·halo) × W). ``finish()`` emits the
    rest. Switched off, it passes the class planes through unchanged.
    """

    def __init__(self, regulariser, height: int, emit: Callable[[int, np.ndarray], None], n_guide: int = 0):
        """The first block pushed may start below row 0 (a row range of a scene, ``landcover.predict_scene(rows=)``);
        rows within ``halo`` of it lack their upper halo then: the caller discards them.
        ``regulariser``: a :class:`Regulariser` (a number is read as a Gaussian σ)."""
        if not isinstance(regulariser, Regulariser):
            regulariser = Regulariser.gaussian(float(regulariser))
        self.reg, self.height, self.emit, self.n_guide = regulariser, int(height), emit, int(n_guide)
        self.r = regulariser.halo
        self._buf: Optional[np.ndarray] = None  # [K + G, n, W] input rows from self._start
        self._start = 0  # scene row of the buffer's first row
        self._next = 0  # first scene row not yet emitted

    def _classes(self, planes: np.ndarray) -> np.ndarray:
        return planes[:planes.shape[0] - self.n_guide] if self.n_guide else planes

    def push(self, row: int, probs: np.ndarray) -> None:
        if not self.reg.active:
            self.emit(row, self._classes(probs))
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
        if self.reg.active and self._buf is not None:
            self._emit_until(self._start + self._buf.shape[1])

    def _emit_until(self, stop: int) -> None:
        if stop <= self._next:
            return
        a, b = self._next - self._start, stop - self._start
        lo, hi = max(a - self.r, 0), min(b + self.r, self._buf.shape[1])  # only the rows the result depends on
        part = self._buf[:, lo:hi]
        k = part.shape[0] - self.n_guide
        smoothed = self.reg.apply(part[:k], part[k:] if self.n_guide else None)
        self.emit(self._next, smoothed[:, a - lo:b - lo])
        self._next = stop
        keep_from = max(self._next - self.r, self._start)  # rows still needed as the next rows' upper halo
        self._buf = self._buf[:, keep_from - self._start:]
        self._start = keep_from


def centre_regularised(patches: np.ndarray, reg: Regulariser, n_guide: int = 0) -> np.ndarray:
    """patches [N, K + G, S, S] centred on pixels (NaN = nodata/outside) → [N, K] regularised centres, equal to
    the whole-array result at those pixels when S ≥ 2·halo + 1."""
    patches = np.asarray(patches, dtype=np.float32)
    n, kg, s, _ = patches.shape
    c = s // 2
    k = kg - n_guide
    if not reg.active:
        return patches[:, :k, c, c].astype(np.float64)
    if reg.method == "gaussian":
        return centre_smoothed(patches[:, :k], reg.sigma)
    h = reg.halo
    if h > c:
        raise ValueError(f"neighbourhood of {s} px is too small for {reg.label} (needs {2 * h + 1})")
    sub = patches[:, :, c - h:c + h + 1, c - h:c + h + 1]
    out = reg.apply(sub[:, :k], sub[:, k:])
    return out[:, :, h, h].astype(np.float64)


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
