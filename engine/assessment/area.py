"""Area-adjusted accuracy and area estimation from a reference sample stratified by the map.

Why: pixel counting on a map is biased by its errors (omission and commission rarely cancel), and
accuracies computed from the raw sample counts describe the sample, not the map, whenever the sample is not
proportional to the map's class areas. The good-practice estimators of Olofsson et al. 2014 ("Good practices
for estimating area and assessing accuracy of land change", Remote Sensing of Environment 148: 42-57;
variances after Card 1982) weight each map class (stratum) by its share of the mapped area:

    p_ij = W_i n_ij / n_i.                       error matrix in estimated area proportions (eq. 4)
    A_j  = A_tot sum_i p_ij                       estimated area of reference class j (eq. 9)
    S(p_.j) = sqrt(sum_i W_i^2 (n_ij/n_i.)(1 - n_ij/n_i.)/(n_i. - 1))          (eq. 10)
    O = sum_j p_jj,  U_i = p_ii / p_i.,  P_j = p_jj / p_.j, variances eqs. 5-7.

They assume a stratified random (or simple random) reference sample, independent of the training data.
numpy only: counts in, estimates out; the raster side (class areas streamed from the map) lives in the jobs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

Z95 = 1.96  # two-sided 95 % normal quantile, as in Olofsson et al. 2014

ASSUMPTIONS = ("These estimators assume the reference sample is a stratified random sample with the map classes as "
               "strata (or a simple random sample), drawn independently of the training data; the map's class areas "
               "are the strata weights. 95 % confidence intervals are ±1.96 standard errors (Olofsson et al. 2014, "
               "Remote Sensing of Environment 148: 42-57).")


@dataclass(frozen=True)
class AreaEstimates:
    """Stratified estimates; index i = map class (stratum), j = reference class, both in ``class_values`` order."""

    class_values: List[int]
    names: List[str]
    sample_counts: np.ndarray  # [K, K] n_ij, rows = map, columns = reference
    map_area: np.ndarray  # [K] mapped area of each class, in ``unit``
    weights: np.ndarray  # [K] W_i
    proportions: np.ndarray  # [K, K] p_ij
    area_proportion: np.ndarray  # [K] p_.j
    area_proportion_se: np.ndarray  # [K]
    area: np.ndarray  # [K] estimated area, in ``unit``
    area_ci: np.ndarray  # [K] half-width of the 95 % CI, in ``unit``
    users: np.ndarray  # [K] U_i (NaN: not defined)
    users_ci: np.ndarray
    producers: np.ndarray  # [K] P_j (NaN: class absent from the reference)
    producers_ci: np.ndarray
    overall: float
    overall_ci: float
    unit: str = "pixels"
    z: float = Z95

    @property
    def total_area(self) -> float:
        return float(self.map_area.sum())

    def to_dict(self) -> Dict:
        def num(v):
            v = float(v)
            return None if math.isnan(v) else v

        def vec(a):
            return [num(v) for v in np.asarray(a, dtype=np.float64)]

        return {
            "method": "Olofsson et al. 2014 stratified estimators (map classes as strata)",
            "assumptions": ASSUMPTIONS, "unit": self.unit, "z": self.z, "total_area": self.total_area,
            "overall_accuracy": num(self.overall), "overall_accuracy_ci95": num(self.overall_ci),
            "error_matrix_area_proportions": [vec(row) for row in self.proportions],
            "sample_counts": np.asarray(self.sample_counts, dtype=np.int64).tolist(),
            "classes": [
                {"value": int(v), "name": n, "map_area": num(self.map_area[k]), "weight": num(self.weights[k]),
                 "samples": int(self.sample_counts[k].sum()),
                 "estimated_area_proportion": num(self.area_proportion[k]),
                 "estimated_area_proportion_se": num(self.area_proportion_se[k]),
                 "estimated_area": num(self.area[k]), "estimated_area_ci95": num(self.area_ci[k]),
                 "users_accuracy": num(self.users[k]), "users_accuracy_ci95": num(self.users_ci[k]),
                 "producers_accuracy": num(self.producers[k]), "producers_accuracy_ci95": num(self.producers_ci[k])}
                for k, (v, n) in enumerate(zip(self.class_values, self.names))],
        }


def _label(values: Sequence[int], names: Sequence[str], k: int) -> str:
    return f"'{names[k]}' (value {values[k]})" if names[k] != str(values[k]) else f"value {values[k]}"


def stratified_estimates(sample_counts, map_area, class_values: Optional[Sequence[int]] = None,
                         names: Optional[Sequence[str]] = None, unit: str = "pixels", z: float = Z95) -> AreaEstimates:
    """Olofsson et al. 2014 estimates from sample counts (rows = map class, columns = reference class) and the
    mapped area of each class (any unit; the estimated areas come out in the same unit).

    Raises ValueError, naming the class, for a reference class that is not a map class, a mapped class with fewer
    than 2 reference samples (no estimate or no variance), or samples in a class with no mapped area.
    """
    n = np.asarray(sample_counts, dtype=np.float64)
    area = np.asarray(map_area, dtype=np.float64).ravel()
    k = area.size
    if n.shape != (k, k):
        raise ValueError(f"sample counts must be a {k}x{k} matrix (map x reference), got shape {n.shape}")
    if (n < 0).any() or (area < 0).any() or not np.isfinite(area).all():
        raise ValueError("sample counts and map areas must be finite and non-negative")
    values = list(class_values) if class_values is not None else list(range(k))
    labels = [str(x) for x in names] if names is not None else [str(v) for v in values]
    if area.sum() <= 0:
        raise ValueError("the map has no classified pixel: nothing to estimate")
    n_i = n.sum(axis=1)
    missing = [j for j in range(k) if area[j] == 0 and n[:, j].sum() > 0]
    if missing:
        raise ValueError("reference class(es) " + ", ".join(f"{_label(values, labels, j)} ({int(n[:, j].sum())} "
                                                              "samples)" for j in missing) +
                         " do not occur in the map: the area estimators use the map's classes as strata, so the "
                         "reference must use the map's class values (give 'no reference' values in IGNORE)")
    stray = [i for i in range(k) if area[i] == 0 and n_i[i] > 0]
    if stray:
        raise ValueError("samples fall in map class(es) without mapped area: "
                         + ", ".join(_label(values, labels, i) for i in stray))
    thin = [i for i in range(k) if area[i] > 0 and n_i[i] < 2]
    if thin:
        raise ValueError("empty stratum: map class(es) " + ", ".join(
            f"{_label(values, labels, i)} ({int(n_i[i])} reference sample{'s' if n_i[i] != 1 else ''})"
            for i in thin) + " need at least 2 reference samples each for an area estimate and its confidence "
                             "interval: add reference samples there (a stratified random sample by map class), or "
                             "turn the area estimates off")
    used = area > 0
    w = area / area.sum()
    safe_n = np.where(used, n_i, 1.0)
    frac = np.where(used[:, None], n / safe_n[:, None], 0.0)  # n_ij / n_i.
    p = w[:, None] * frac
    dof = np.where(used, n_i - 1.0, 1.0)
    p_col = p.sum(axis=0)
    se_col = np.sqrt(((w ** 2)[:, None] * frac * (1.0 - frac) / dof[:, None]).sum(axis=0))
    diag = np.diag(frac)
    users = np.where(used, diag, np.nan)
    v_users = np.where(used, diag * (1.0 - diag) / dof, np.nan)
    overall = float(np.trace(p))
    v_overall = float((np.where(used, w ** 2 * v_users, 0.0)).sum())
    producers = np.full(k, np.nan)
    v_producers = np.full(k, np.nan)
    for j in range(k):
        if p_col[j] <= 0:
            continue
        producers[j] = p[j, j] / p_col[j]
        others = sum(w[i] ** 2 * frac[i, j] * (1.0 - frac[i, j]) / dof[i] for i in range(k) if i != j and used[i])
        own = w[j] ** 2 * (1.0 - producers[j]) ** 2 * v_users[j] if used[j] else 0.0
        # eq. 7 with the N's as weights: numerator and denominator scale alike, so W_i = N_i / N works as well
        v_producers[j] = (own + producers[j] ** 2 * others) / p_col[j] ** 2
    total = float(area.sum())
    return AreaEstimates(values, labels, n.astype(np.int64), area, w, p, p_col, se_col, total * p_col,
                         z * total * se_col, users, z * np.sqrt(v_users), producers, z * np.sqrt(v_producers),
                         overall, z * math.sqrt(v_overall), unit, z)


def check_class_names(map_names: Mapping[int, str], reference_names: Mapping[int, str]) -> None:
    """Classes are matched by value; a value named differently on both sides means a different coding.

    Names equal to the value itself (no real name) are not compared; case and surrounding spaces are ignored.
    """
    clashes = []
    for value, ref_name in reference_names.items():
        mine = map_names.get(value)
        if not mine or not ref_name or str(ref_name).strip() == str(value):
            continue
        if str(mine).strip().casefold() != str(ref_name).strip().casefold():
            clashes.append(f"value {value} is '{mine}' in the map but '{ref_name}' in the reference")
    if clashes:
        raise ValueError("the class names of the map and the reference do not match (" + "; ".join(clashes) +
                         "): classes are matched by value, so recode the reference to the map's values")


class MapAreaCounter:
    """Mapped pixels and area per class value, accumulated block by block: the map is never held whole.

    ``row_area`` gives the area of one pixel in each raster row (constant for a projected CRS, varying with
    latitude for a geographic one); None counts pixels only.
    """

    def __init__(self, row_area: Optional[np.ndarray] = None):
        self.row_area = None if row_area is None else np.asarray(row_area, dtype=np.float64)
        self.pixels: Dict[int, int] = {}
        self.area: Dict[int, float] = {}

    def add(self, row: int, block: np.ndarray) -> None:
        """``block`` [rows, cols] of class values with NaN where the map is nodata."""
        block = np.asarray(block)
        ok = ~np.isnan(block)
        if not ok.any():
            return
        values, inverse = np.unique(block[ok].astype(np.int64), return_inverse=True)
        counts = np.bincount(inverse, minlength=values.size)
        if self.row_area is not None:
            rows = np.broadcast_to(np.arange(row, row + block.shape[0])[:, None], block.shape)[ok]
            areas = np.bincount(inverse, weights=self.row_area[rows], minlength=values.size)
        else:
            areas = counts.astype(np.float64)
        for v, c, a in zip(values.tolist(), counts.tolist(), areas.tolist()):
            self.pixels[v] = self.pixels.get(v, 0) + int(c)
            self.area[v] = self.area.get(v, 0.0) + float(a)
