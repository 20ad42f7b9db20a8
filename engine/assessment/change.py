"""Change between two dates: the from–to matrix of two classified maps, and unsupervised change scores with their
metrics. numpy only (the raster side lives in :mod:`engine.jobs`).

- From–to (cross-tabulation) matrix: pixels and areas of every (class at date 1, class at date 2) pair, the
  classic post-classification comparison (Singh 1989, "Digital change detection techniques using remotely-sensed
  data", Int. J. Remote Sensing 10(6): 989-1003). Accumulated block by block: memory grows with the number of
  class pairs, never with the map.
- Scores: change vector analysis magnitude on z-scored bands (Malila 1980, "Change vector analysis: an approach for
  detecting forest changes with Landsat", LARS Symposia) and the absolute log-ratio for SAR amplitudes (Dekker
  1998; Bazi, Bruzzone & Melgani 2005, IEEE TGRS 43(4): 874-887).
- Metrics, as defined in ``shared/data/change/README.md``: rank ROC-AUC (Mann–Whitney U with average ranks for
  ties), the best F1 over every threshold (an oracle upper bound), and F1 at an automatic threshold: Otsu 1979
  ("A threshold selection method from gray-level histograms", IEEE Trans. SMC 9(1): 62-66) or Kittler &
  Illingworth 1986 ("Minimum error thresholding", Pattern Recognition 19(1): 41-47).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

# ------------------------------------------------------------------------------------------ from–to matrix


@dataclass
class ChangeMatrix:
    """Cross-tabulation of two classified maps; rows = date-1 classes, columns = date-2 classes."""

    from_values: List[int]
    to_values: List[int]
    from_names: List[str]
    to_names: List[str]
    pixels: np.ndarray  # [K1, K2] int64
    area: np.ndarray  # [K1, K2] float64, in ``unit``
    unit: str  # "ha" or "pixels"
    area_note: str = ""
    nodata_first: int = 0  # pixels where only the date-1 map is nodata (excluded)
    nodata_second: int = 0  # only the date-2 map is nodata (or outside it)
    nodata_both: int = 0
    notes: List[str] = field(default_factory=list)

    @property
    def valid_pixels(self) -> int:
        return int(self.pixels.sum())

    @property
    def excluded_pixels(self) -> int:
        return self.nodata_first + self.nodata_second + self.nodata_both

    def _unchanged_mask(self) -> np.ndarray:
        """Unchanged = the same class value at both dates (classes are matched by value)."""
        return np.array([[a == b for b in self.to_values] for a in self.from_values], dtype=bool).reshape(
            len(self.from_values), len(self.to_values))

    @property
    def changed_pixels(self) -> int:
        return int(self.pixels[~self._unchanged_mask()].sum())

    @property
    def changed_area(self) -> float:
        return float(self.area[~self._unchanged_mask()].sum())

    @property
    def total_area(self) -> float:
        return float(self.area.sum())

    def class_summary(self) -> List[Dict]:
        """Per class value: area at date 1 and date 2, loss (left it), gain (came to it), net change."""
        values = sorted(set(self.from_values) | set(self.to_values))
        f_index = {v: i for i, v in enumerate(self.from_values)}
        t_index = {v: j for j, v in enumerate(self.to_values)}
        out = []
        for v in values:
            i, j = f_index.get(v), t_index.get(v)
            a1 = float(self.area[i].sum()) if i is not None else 0.0
            a2 = float(self.area[:, j].sum()) if j is not None else 0.0
            stay = float(self.area[i, j]) if i is not None and j is not None else 0.0
            name = self.from_names[i] if i is not None else self.to_names[j]
            out.append({"value": int(v), "name": name, "area_date1": a1, "area_date2": a2, "loss": a1 - stay,
                        "gain": a2 - stay, "net": a2 - a1,
                        "pixels_date1": int(self.pixels[i].sum()) if i is not None else 0,
                        "pixels_date2": int(self.pixels[:, j].sum()) if j is not None else 0})
        return out

    def rows(self) -> List[Dict]:
        """Long table: one row per (from, to) pair with pixels > 0, in class-value order."""
        out = []
        unchanged = self._unchanged_mask()
        for i, a in enumerate(self.from_values):
            for j, b in enumerate(self.to_values):
                if self.pixels[i, j]:
                    out.append({"from_value": int(a), "from_name": self.from_names[i], "to_value": int(b),
                                "to_name": self.to_names[j], "pixels": int(self.pixels[i, j]),
                                "area": float(self.area[i, j]), "changed": not bool(unchanged[i, j])})
        return out

    def to_dict(self) -> Dict:
        valid = self.valid_pixels
        return {
            "method": "from-to (cross-tabulation) matrix of two classified maps, classes matched by value",
            "unit": self.unit, "area_note": self.area_note,
            "from_values": [int(v) for v in self.from_values], "to_values": [int(v) for v in self.to_values],
            "from_names": list(self.from_names), "to_names": list(self.to_names),
            "pixels": self.pixels.astype(np.int64).tolist(), "area": self.area.astype(np.float64).tolist(),
            "valid_pixels": valid, "total_area": self.total_area,
            "changed_pixels": self.changed_pixels, "changed_area": self.changed_area,
            "changed_fraction": self.changed_pixels / valid if valid else None,
            "excluded_pixels": {"nodata_date1_only": self.nodata_first, "nodata_date2_only": self.nodata_second,
                                "nodata_both": self.nodata_both, "total": self.excluded_pixels},
            "classes": self.class_summary(), "transitions": self.rows(), "notes": list(self.notes),
        }


class FromToCounter:
    """Pixels and areas of every (date-1 value, date-2 value) pair, accumulated block by block.

    ``row_area`` gives one pixel's area in each raster row (None: pixels only). Blocks hold class values with NaN
    for nodata; a pixel that is nodata in either map is left out and counted.
    """

    def __init__(self, row_area: Optional[np.ndarray] = None):
        self.row_area = None if row_area is None else np.asarray(row_area, dtype=np.float64)
        self.pixels: Dict[Tuple[int, int], int] = {}
        self.area: Dict[Tuple[int, int], float] = {}
        self.nodata_first = self.nodata_second = self.nodata_both = 0

    def add(self, row: int, first: np.ndarray, second: np.ndarray) -> None:
        first, second = np.asarray(first), np.asarray(second)
        if first.shape != second.shape:
            raise ValueError(f"blocks of different shapes: {first.shape} and {second.shape}")
        na, nb = np.isnan(first), np.isnan(second)
        self.nodata_first += int((na & ~nb).sum())
        self.nodata_second += int((nb & ~na).sum())
        self.nodata_both += int((na & nb).sum())
        ok = ~(na | nb)
        if not ok.any():
            return
        a, b = first[ok].astype(np.int64), second[ok].astype(np.int64)
        keys = np.stack([a, b], axis=1)
        pairs, inverse = np.unique(keys, axis=0, return_inverse=True)
        inverse = inverse.ravel()
        counts = np.bincount(inverse, minlength=len(pairs))
        if self.row_area is not None:
            rows = np.broadcast_to(np.arange(row, row + first.shape[0])[:, None], first.shape)[ok]
            areas = np.bincount(inverse, weights=self.row_area[rows], minlength=len(pairs))
        else:
            areas = counts.astype(np.float64)
        for (u, v), c, ar in zip(pairs.tolist(), counts.tolist(), areas.tolist()):
            self.pixels[(u, v)] = self.pixels.get((u, v), 0) + int(c)
            self.area[(u, v)] = self.area.get((u, v), 0.0) + float(ar)

    def matrix(self, names_first: Mapping[int, str], names_second: Mapping[int, str], unit: str = "pixels",
               area_scale: float = 1.0, area_note: str = "") -> ChangeMatrix:
        """The matrix over every value seen or named in each legend (named classes absent from a map get zeros)."""
        from_values = sorted({a for a, _ in self.pixels} | set(names_first))
        to_values = sorted({b for _, b in self.pixels} | set(names_second))
        fi = {v: i for i, v in enumerate(from_values)}
        ti = {v: j for j, v in enumerate(to_values)}
        pixels = np.zeros((len(from_values), len(to_values)), dtype=np.int64)
        area = np.zeros(pixels.shape, dtype=np.float64)
        for (a, b), n in self.pixels.items():
            pixels[fi[a], ti[b]] += n
            area[fi[a], ti[b]] += self.area[(a, b)] * area_scale
        return ChangeMatrix(from_values, to_values, [names_first.get(v, f"class {v}") for v in from_values],
                            [names_second.get(v, f"class {v}") for v in to_values], pixels, area, unit, area_note,
                            self.nodata_first, self.nodata_second, self.nodata_both)


def legend_conflicts(names_first: Mapping[int, str], names_second: Mapping[int, str]) -> List[str]:
    """Values named differently in the two legends (the matrix still matches classes by value)."""
    return [f"{v}: '{names_first[v]}' → '{names_second[v]}'" for v in sorted(set(names_first) & set(names_second))
            if names_first[v].strip().lower() != names_second[v].strip().lower()]


# ------------------------------------------------------------------------------------------ change scores


def cva_magnitude(x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """CVA magnitude (Malila 1980) on bands z-scored with the pooled mean/std of both dates: x [bands, H, W]."""
    x1 = np.asarray(x1, dtype=np.float64)
    x2 = np.asarray(x2, dtype=np.float64)
    if x1.shape != x2.shape:
        raise ValueError(f"the two dates differ in shape: {x1.shape} and {x2.shape}")
    both = np.concatenate([x1.reshape(len(x1), -1), x2.reshape(len(x2), -1)], axis=1)
    mu = both.mean(1)[:, None, None]
    sd = both.std(1)[:, None, None]
    sd = np.where(sd > 0, sd, 1.0)
    return np.sqrt((((x2 - mu) / sd - (x1 - mu) / sd) ** 2).sum(0))


def abs_log_ratio(x1: np.ndarray, x2: np.ndarray, offset: float = 1.0) -> np.ndarray:
    """|ln((x2 + offset) / (x1 + offset))| for SAR amplitudes (offset 1 avoids log 0 on 8-bit data)."""
    x1 = np.asarray(x1, dtype=np.float64)
    x2 = np.asarray(x2, dtype=np.float64)
    return np.abs(np.log((x2 + offset) / (x1 + offset)))


# ------------------------------------------------------------------------------------------ metrics


def roc_auc(score: np.ndarray, label: np.ndarray) -> float:
    """Rank ROC-AUC: Mann–Whitney U / (n_change · n_nochange), ties get average ranks."""
    score = np.asarray(score, dtype=np.float64).ravel()
    y = np.asarray(label).ravel().astype(bool)
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        raise ValueError("ROC-AUC needs both changed and unchanged pixels in the label")
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    _, first, inv, cnt = np.unique(s, return_index=True, return_inverse=True, return_counts=True)
    r_sorted = (first + (cnt + 1) / 2.0)[inv]
    ranks = np.empty_like(r_sorted)
    ranks[order] = r_sorted
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


@dataclass(frozen=True)
class F1Result:
    f1: float
    threshold: float  # changed = score >= threshold
    precision: float
    recall: float


def best_f1(score: np.ndarray, label: np.ndarray) -> F1Result:
    """Maximum F1 of (score ≥ t) over every threshold t: an oracle threshold, an upper bound."""
    score = np.asarray(score, dtype=np.float64).ravel()
    y = np.asarray(label).ravel().astype(np.int64)
    order = np.argsort(-score, kind="mergesort")
    s = score[order]
    tp = np.cumsum(y[order])
    k = np.arange(1, s.size + 1)
    last = np.r_[s[1:] != s[:-1], True]
    tp, k, thr = tp[last], k[last], s[last]
    positives = int(y.sum())
    f1 = 2 * tp / (k + positives)
    i = int(f1.argmax())
    return F1Result(float(f1[i]), float(thr[i]), float(tp[i] / k[i]), float(tp[i] / positives) if positives else 0.0)


def f1_at(score: np.ndarray, label: np.ndarray, threshold: float) -> F1Result:
    """F1, precision and recall of (score ≥ threshold) against the 0/1 label."""
    pred = np.asarray(score).ravel() >= threshold
    y = np.asarray(label).ravel().astype(bool)
    tp = int((pred & y).sum())
    n_pred, n_pos = int(pred.sum()), int(y.sum())
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_pos if n_pos else 0.0
    f1 = 2 * tp / (n_pred + n_pos) if n_pred + n_pos else 0.0
    return F1Result(f1, float(threshold), precision, recall)


def _histogram(score: np.ndarray, bins: int) -> Tuple[np.ndarray, np.ndarray]:
    score = np.asarray(score, dtype=np.float64).ravel()
    score = score[np.isfinite(score)]
    if score.size == 0 or score.min() == score.max():
        raise ValueError("an automatic threshold needs a score with at least two distinct values")
    hist, edges = np.histogram(score, bins=bins)
    return hist.astype(np.float64), edges


def otsu_threshold(score: np.ndarray, bins: int = 1024) -> float:
    """Otsu 1979: the histogram cut maximising the between-class variance; changed = score ≥ returned value."""
    hist, edges = _histogram(score, bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)  # below or at bin k
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mt = m0[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mt * w0 / w0[-1] - m0) ** 2 / (w0 * w1 / w0[-1])
    between[~np.isfinite(between)] = -1.0
    k = int(between[:-1].argmax())
    return float(edges[k + 1])


def kittler_illingworth_threshold(score: np.ndarray, bins: int = 1024) -> float:
    """Kittler & Illingworth 1986 minimum-error threshold (two Gaussians fitted to the histogram): the cut
    minimising J(t) = 1 + 2[P0 ln σ0 + P1 ln σ1] − 2[P0 ln P0 + P1 ln P1]; changed = score ≥ returned value."""
    hist, edges = _histogram(score, bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    p = hist / hist.sum()
    p0 = np.cumsum(p)
    p1 = 1.0 - p0
    s0 = np.cumsum(p * centres)
    s0sq = np.cumsum(p * centres ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        m0 = s0 / p0
        m1 = (s0[-1] - s0) / p1
        v0 = s0sq / p0 - m0 ** 2
        v1 = (s0sq[-1] - s0sq) / p1 - m1 ** 2
        j = 1 + (p0 * np.log(v0) + p1 * np.log(v1)) - 2 * (p0 * np.log(p0) + p1 * np.log(p1))
    j[~np.isfinite(j)] = np.inf
    j[(v0 <= 0) | (v1 <= 0)] = np.inf
    j = j[:-1]
    if not np.isfinite(j).any():
        return otsu_threshold(score, bins)
    k = int(j.argmin())
    return float(edges[k + 1])


THRESHOLDS = {"otsu": otsu_threshold, "kittler-illingworth": kittler_illingworth_threshold}


@dataclass(frozen=True)
class ScoreEvaluation:
    auc: float
    best: F1Result
    automatic: Dict[str, F1Result]


def evaluate_score(score: np.ndarray, label: np.ndarray, methods=("otsu", "kittler-illingworth")) -> ScoreEvaluation:
    """AUC, oracle best F1 and the F1 at each automatic threshold of one change score against a 0/1 label."""
    auto = {m: f1_at(score, label, THRESHOLDS[m](score)) for m in methods}
    return ScoreEvaluation(roc_auc(score, label), best_f1(score, label), auto)
