"""The evaluation protocol: the three real scenes, sparse stratified splits, paired confidence intervals.

Every method in ``benchmarks/accuracy.py`` is scored on the same splits, so differences between methods
are paired per seed; with 3-10 seeds and a seed spread of 1-3 OA points (METHOD.md section 4) only a
paired interval says whether a difference is real.

Benchmarks are not the engine: GDAL is used directly here (the engine's raster I/O is a separate job).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from engine.data.representations import BandMeta

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = REPO.parent / "shared" / "data"

CHIP_DIR = "sen1floods11_spain_7370579"
ENMAP_DIR = "enmap_potsdam_west"


@dataclass
class SceneData:
    """One scene in memory. ``labels`` holds class indices 0..K-1 and -1 where unlabelled or unusable.

    ``hsi`` is float32 [B, H, W] in physical units (scale applied) with NaN for nodata; ``sar`` the same for
    the SAR bands (dB for the flood chip) or None. Pixels whose usable bands contain NaN are removed from
    the labels at load time, so every method is scored on exactly the same pixels.
    """

    name: str
    hsi: np.ndarray
    sar: Optional[np.ndarray]
    labels: np.ndarray
    class_names: List[str]
    hsi_meta: BandMeta
    sar_meta: Optional[BandMeta]
    fraction: float  # protocol: share of each class's labelled pixels used for training
    seeds: Tuple[int, ...]  # protocol seeds
    geotransform: Optional[Tuple[float, ...]] = None
    crs_wkt: Optional[str] = None
    notes: Dict = field(default_factory=dict)
    per_class: Optional[int] = None  # protocol: this many training pixels per class instead of ``fraction``

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def shape(self) -> Tuple[int, int]:
        return self.labels.shape

    @property
    def good_bands(self) -> List[int]:
        """0-based HSI bands that are not flagged bad."""
        bad = set(self.hsi_meta.bad_bands)
        return [b for b in range(self.hsi.shape[0]) if b not in bad]

    def pixel_matrix(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """[N, D] raw values at pixels: good HSI bands, then SAR bands (dB) where present."""
        x = self.hsi[self.good_bands][:, rows, cols]
        if self.sar is not None:
            x = np.concatenate([x, self.sar[:, rows, cols]], axis=0)
        return np.ascontiguousarray(x.T, dtype=np.float32)


@dataclass
class Split:
    """Sparse training pixels and the evaluation pixels (every other labelled pixel) of one seed."""

    seed: int
    fraction: float
    train_rows: np.ndarray
    train_cols: np.ndarray
    train_y: np.ndarray
    eval_rows: np.ndarray
    eval_cols: np.ndarray
    eval_y: np.ndarray
    n_classes: int

    @property
    def n_train(self) -> int:
        return int(self.train_y.size)

    @property
    def n_eval(self) -> int:
        return int(self.eval_y.size)

    def train_label_map(self, shape: Tuple[int, int]) -> np.ndarray:
        """[H, W] int32: 0 unlabelled, 1..K training classes — the form ``engine.tasks.landcover`` takes."""
        out = np.zeros(shape, dtype=np.int32)
        out[self.train_rows, self.train_cols] = self.train_y + 1
        return out

    def predictions_from_map(self, class_map: np.ndarray) -> np.ndarray:
        """Evaluation-pixel predictions (0..K-1) from a predicted map of 1..K (0 = no prediction → error).

        A pixel the pipeline left without a class is an error, never silently skipped.
        """
        values = np.asarray(class_map)[self.eval_rows, self.eval_cols].astype(np.int64)
        missing = int((values <= 0).sum())
        if missing:
            raise ValueError(f"the predicted map has no class (0/nodata) at {missing} evaluation pixels")
        return values - 1


# ---------------------------------------------------------------------------------------------------------
# loaders

def _read(path: Path):
    from osgeo import gdal

    gdal.UseExceptions()
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the real data lives in <repo>/../shared/data (see its README)")
    return gdal.Open(str(path))


def load_chip(data_dir: Optional[Path] = None) -> SceneData:
    """Sen1Floods11 Spain_7370579: S2 13 bands (×1e-4, nodata 0) as HSI, S1 VV/VH dB as SAR; 0.5 %, seeds 0-2."""
    folder = Path(data_dir or DATA_DIR) / CHIP_DIR
    s2 = _read(folder / "Spain_7370579_S2Hand.tif")
    s1 = _read(folder / "Spain_7370579_S1Hand.tif")
    lab = _read(folder / "Spain_7370579_LabelHand.tif")
    raw = s2.ReadAsArray().astype(np.float32)
    hsi = np.where(raw == 0, np.nan, raw * np.float32(1e-4)).astype(np.float32)
    sar = s1.ReadAsArray().astype(np.float32)
    nd = s1.GetRasterBand(1).GetNoDataValue()
    if nd is not None and not math.isnan(nd):
        sar[sar == nd] = np.nan
    ref = lab.ReadAsArray().astype(np.int64)  # -1 no data, 0 not water, 1 water
    # only the band count: the names, dB flag and polarisation passed here before never reached the engine
    # (issue 11), so the published numbers were made without them
    hsi_meta, sar_meta = BandMeta(hsi.shape[0]), BandMeta(2)
    return _finish("chip", hsi, sar, ref, ["not water", "water"], hsi_meta, sar_meta, 0.005, (0, 1, 2), s2)


def load_enmap(data_dir: Optional[Path] = None) -> SceneData:
    """EnMAP Potsdam west: 224 bands (×1e-4, nodata -32768, bad bands from ``bbl``); 2 %, seeds 0-9."""
    folder = Path(data_dir or DATA_DIR) / ENMAP_DIR
    ds = _read(folder / "enmap_potsdam_west.tif")
    lab = _read(folder / "enmap_potsdam_west_landcover.tif")
    raw = ds.ReadAsArray().astype(np.float32)
    wavelengths, bad = [], []
    for i in range(ds.RasterCount):
        band = ds.GetRasterBand(i + 1)
        md = band.GetMetadata()
        wavelengths.append(float(md["wavelength"]) if "wavelength" in md else None)
        if md.get("bbl", "1").strip() in ("0", "0.0"):
            bad.append(i)
    band = ds.GetRasterBand(1)
    nodata, scale = band.GetNoDataValue(), band.GetScale() or 1.0
    offset = band.GetOffset() or 0.0
    hsi = np.where(raw == nodata, np.nan, raw * np.float32(scale) + np.float32(offset)).astype(np.float32)
    # a band that is nodata everywhere is unusable whatever its flag says (the README: bands 130-135)
    bad = sorted(set(bad) | {i for i in range(hsi.shape[0]) if np.isnan(hsi[i]).all()})
    ref = lab.ReadAsArray().astype(np.int64) - 1  # 0 unlabelled → -1; classes 1..6 → 0..5
    hsi_meta = BandMeta(hsi.shape[0], wavelengths_nm=wavelengths, bad_bands=tuple(bad))
    names = [f"class {i}" for i in range(1, 7)]
    return _finish("enmap", hsi, None, ref, names, hsi_meta, None, 0.02, tuple(range(10)), ds)


SALINAS_DIR = "salinas_a"
SALINAS_CLASSES = {1: "Brocoli_green_weeds_1", 10: "Corn_senesced_green_weeds", 11: "Lettuce_romaine_4wk",
                   12: "Lettuce_romaine_5wk", 13: "Lettuce_romaine_6wk", 14: "Lettuce_romaine_7wk"}


def load_salinas(data_dir: Optional[Path] = None) -> SceneData:
    """Salinas-A (AVIRIS, 224 bands of radiance DN, no georeference, no wavelengths): 5 px per class, seeds 0-9."""
    from scipy.io import loadmat

    folder = Path(data_dir or DATA_DIR) / SALINAS_DIR
    for f in ("SalinasA.mat", "SalinasA_gt.mat"):
        if not (folder / f).exists():
            raise FileNotFoundError(f"{folder / f} not found: the real data lives in <repo>/../shared/data")
    cube = np.ascontiguousarray(loadmat(str(folder / "SalinasA.mat"))["salinasA"])  # [H, W, B], Fortran-ordered
    gt = np.ascontiguousarray(loadmat(str(folder / "SalinasA_gt.mat"))["salinasA_gt"]).astype(np.int64)
    hsi = np.ascontiguousarray(cube.transpose(2, 0, 1)).astype(np.float32)
    values = sorted(SALINAS_CLASSES)
    ref = np.full(gt.shape, -1, np.int64)
    for i, v in enumerate(values):
        ref[gt == v] = i
    hsi_meta = BandMeta(hsi.shape[0])
    names = [SALINAS_CLASSES[v] for v in values]
    return _finish("salinas", hsi, None, ref, names, hsi_meta, None, 0.0, tuple(range(10)), None, per_class=5)


def _finish(name, hsi, sar, ref, class_names, hsi_meta, sar_meta, fraction, seeds, ds,
            per_class: Optional[int] = None) -> SceneData:
    bad = set(hsi_meta.bad_bands)
    good = [b for b in range(hsi.shape[0]) if b not in bad]
    invalid = np.isnan(hsi[good]).any(axis=0)
    if sar is not None:
        invalid |= np.isnan(sar).any(axis=0)
    labels = np.where((ref >= 0) & (ref < len(class_names)), ref, -1)
    dropped = int(((labels >= 0) & invalid).sum())
    labels[invalid] = -1
    return SceneData(name, hsi, sar, labels, class_names, hsi_meta, sar_meta, fraction, seeds,
                     geotransform=tuple(ds.GetGeoTransform()) if ds is not None else None,
                     crs_wkt=ds.GetProjection() if ds is not None else None,
                     notes={"labelled_pixels_with_nodata_dropped": dropped}, per_class=per_class)


SCENES = {"chip": load_chip, "enmap": load_enmap, "salinas": load_salinas}


def load_scene(name: str, data_dir: Optional[Path] = None) -> SceneData:
    if name not in SCENES:
        raise ValueError(f"unknown scene {name!r}; choose from {', '.join(SCENES)}")
    return SCENES[name](data_dir)


# ---------------------------------------------------------------------------------------------------------
# splits

def n_train_per_class(counts: Sequence[int], fraction: float) -> List[int]:
    """round(fraction·n_c) (halves round up), at least 2, and at least one pixel left for evaluation."""
    out = []
    for n in counts:
        n = int(n)
        if n == 0:
            out.append(0)
            continue
        if n < 3:
            raise ValueError(f"a class has only {n} labelled pixels: the protocol needs ≥ 3 (2 train + 1 eval)")
        out.append(min(max(2, int(math.floor(fraction * n + 0.5))), n - 1))
    return out


def make_split(labels: np.ndarray, fraction: float, seed: int, n_classes: Optional[int] = None,
               per_class: Optional[int] = None) -> Split:
    """Stratified sparse training pixels; evaluation = every other labelled pixel.

    ``labels`` [H, W]: class indices 0..K-1, negative = unlabelled. Deterministic per seed (numpy PCG64).
    ``per_class`` draws that many pixels of every class instead of a fraction (Salinas-A's protocol).
    """
    if per_class is None and not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    labels = np.asarray(labels)
    k = int(n_classes if n_classes is not None else labels.max() + 1)
    flat = labels.ravel()
    counts = np.bincount(flat[flat >= 0].astype(np.int64), minlength=k)[:k]
    if per_class is not None:
        if any(0 < c <= per_class for c in counts):
            raise ValueError(f"a class has only {min(c for c in counts if c)} labelled pixels: {per_class} per class "
                             "for training needs more")
        n_train = [min(int(per_class), int(c)) for c in counts]
    else:
        n_train = n_train_per_class(counts, fraction)
    rng = np.random.default_rng(seed)
    train_idx = []
    for c in range(k):
        idx = np.flatnonzero(flat == c)
        if n_train[c]:
            train_idx.append(rng.choice(idx, size=n_train[c], replace=False))
    train = np.sort(np.concatenate(train_idx)) if train_idx else np.zeros(0, dtype=np.int64)
    is_train = np.zeros(flat.size, dtype=bool)
    is_train[train] = True
    evaluation = np.flatnonzero((flat >= 0) & ~is_train)
    w = labels.shape[1]
    return Split(seed, fraction, train // w, train % w, flat[train].astype(np.int64),
                 evaluation // w, evaluation % w, flat[evaluation].astype(np.int64), k)


def scene_split(scene: SceneData, seed: int) -> Split:
    return make_split(scene.labels, scene.fraction, seed, scene.n_classes, scene.per_class)


# ---------------------------------------------------------------------------------------------------------
# statistics

@dataclass
class PairedCI:
    mean: float  # mean of a - b over seeds
    low: float
    high: float
    std: float  # sample std of the differences
    n: int
    confidence: float = 0.95

    @property
    def significant(self) -> bool:
        """The interval excludes zero."""
        return bool(self.n > 1 and (self.low > 0 or self.high < 0))

    def to_dict(self) -> Dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "std": self.std, "n": self.n,
                "confidence": self.confidence, "significant": self.significant}


def paired_ci(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedCI:
    """Mean paired difference a − b and its t-interval over seeds (needs ≥ 2 pairs for an interval)."""
    from scipy import stats

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples must be 1-D and of equal length, got {a.shape} and {b.shape}")
    d = a - b
    n = d.size
    if n == 0:
        raise ValueError("no pairs")
    mean = float(d.mean())
    if n < 2:
        return PairedCI(mean, float("nan"), float("nan"), float("nan"), n, confidence)
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n))
    return PairedCI(mean, mean - half, mean + half, sd, n, confidence)
