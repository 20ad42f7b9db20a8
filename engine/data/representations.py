"""HSI + SAR → three 3-channel images in [-1, 1] (pRGB, PCA, SAR) plus the standardised spectrum.

Everything is fitted once on a sample of valid pixels and stored (:meth:`RepresentationModel.to_dict`), so a
model applied to another scene sees exactly the same transform: band choice, PCA mean and basis, stretch
percentiles, SAR dB flag and polarisation mode, spectrum mean/std. numpy only.

Rules (UniDiff's input representations: pseudo-RGB, PCA and SAR Pauli images):
- pRGB: the usable bands nearest ``settings.rgb_wavelengths_nm`` (~640/550/460 nm) when wavelengths are known;
  else Sentinel-2 band names in the descriptions (B4/B3/B2); else by position (see :func:`positional_rgb`);
  ``settings.rgb_bands`` (1-based) overrides all. Bad bands are never chosen.
- PCA: first three principal components of the usable bands, centred, no whitening (eigen-decomposition of
  the covariance); each component's sign is fixed so its largest loading is positive (deterministic).
- SAR: dB → linear power; dual-pol pseudo-Pauli (C11 = co-pol VV/HH, C22 = cross-pol VH/HV):
  R = |C11 − C22|, G = 2·sqrt|C22|, B = |C11 + C22|; quad-pol Pauli R = |HH − VV|, G = 2·|HV|, B = |HH + VV|
  (HV averaged with VH when both are given); single-pol: R = intensity, G = amplitude (sqrt), B = dB — three
  contrasts of one band, each 2–98 % clipped and min-max scaled (no sqrt, no gains). Dual/quad: per channel
  2–98 % clip → sqrt → min-max (stored), gains (1.25, 0.95, 1.15), clip [0, 1]; all modes end with the gamma. That clip + min-max is the SAR channels' stored stretch.
- Every pRGB/PCA channel: stored 2nd–98th percentile stretch to [0, 1] (clipped), then ×2 − 1.
NaN marks nodata everywhere: a pixel with NaN in any usable HSI band is NaN in pRGB, PCA and spectrum; a pixel
with NaN in any SAR band is NaN in SAR and spectrum.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from ..settings import RepresentationSettings

@dataclass(frozen=True)
class BandMeta:
    """What the representations read of a raster's band metadata (``engine.data.raster_io.RasterInfo.meta``).

    A dict given instead is checked key by key: a misspelt or unknown key is an error, never a silent default.
    """

    band_count: int
    wavelengths_nm: Optional[Sequence[Optional[float]]] = None  # per band, None where unknown
    bad_bands: Sequence[int] = ()  # 0-based
    descriptions: Sequence[str] = ()
    units: Union[str, Sequence[str]] = ()
    fwhm_nm: Optional[Sequence[Optional[float]]] = None

    @classmethod
    def of(cls, value: Union["BandMeta", Mapping, None], band_count: Optional[int] = None) -> Optional["BandMeta"]:
        """``value`` as BandMeta; ``band_count`` fills a dict's missing count where the data tells it."""
        if value is None or isinstance(value, BandMeta):
            return value
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown band metadata {unknown}: the representations read only {sorted(known)}")
        if "band_count" not in value and band_count is None:
            raise ValueError("band metadata needs band_count")
        return cls(**{"band_count": band_count, **dict(value)})


SAR_GAINS = (1.25, 0.95, 1.15)
FORMAT = 1
_EPS = 1e-10  # linear power floor before log10 (0 backscatter → -100 dB, never -inf)

# Sentinel-2 band orders by band count: L1C (13), L2A without B10 (12), 10 m + 20 m bands (10)
_S2_ORDERS = {
    13: ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"],
    12: ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"],
    10: ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"],
}


def positional_rgb(band_count: int) -> List[int]:
    """0-based (R, G, B) bands when neither wavelengths nor band names are known.

    - 3 bands: R, G, B in that order (the GeoTIFF RGB convention); 4 bands: R, G, B, NIR (first three).
    - 10 / 12 / 13 bands: Sentinel-2 band order (10 m + 20 m / L2A / L1C) → B4, B3, B2.
    - otherwise an imaging spectrometer whose bands evenly span 400–2500 nm: the bands nearest 640/550/460 nm
      (for 180 bands: 21/13/5; the paper hard-coded 21/11/6 for Augsburg — pass ``rgb_bands`` to match it).
    """
    if band_count < 3:
        raise ValueError(f"the HSI raster has {band_count} band(s): at least 3 are needed")
    if band_count in (3, 4):
        return [0, 1, 2]
    if band_count in _S2_ORDERS:
        order = _S2_ORDERS[band_count]
        return [order.index("B4"), order.index("B3"), order.index("B2")]
    step = 2100.0 / band_count
    return [int(np.clip(round((w - 400.0) / step), 0, band_count - 1)) for w in (640.0, 550.0, 460.0)]


@dataclass
class RepresentationModel:
    """Fitted, JSON-able transform from raw blocks to the network's images and the head's spectrum."""

    hsi_band_count: int
    usable_bands: List[int]  # 0-based HSI bands used by PCA and the spectrum (bad bands excluded)
    rgb_bands: List[int]  # 0-based
    rgb_rule: str  # user | wavelength | band names | position
    rgb_stretch: List[List[float]]  # [[p_lo, p_hi]] × 3
    pca_mean: List[float]  # over usable_bands
    pca_components: List[List[float]]  # 3 × len(usable_bands)
    pca_explained_variance: List[float]
    pca_stretch: List[List[float]]
    spectrum_mean: List[float]  # usable HSI bands, then SAR bands (dB)
    spectrum_std: List[float]
    sar: Optional[Dict] = None  # band_count, db, mode, bands, clip, sqrt_range, gains, gamma
    stretch_percentiles: List[float] = field(default_factory=lambda: [2.0, 98.0])
    format: int = FORMAT

    # ---------------------------------------------------------------------------------------------------
    def to_dict(self) -> Dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict) -> "RepresentationModel":
        if int(data.get("format", FORMAT)) > FORMAT:
            raise ValueError("these representation statistics come from a newer plugin version: update the plugin")
        return cls(**data)

    @property
    def modalities(self) -> List[str]:
        return ["prgb", "pca"] + (["sar"] if self.sar is not None else [])

    @property
    def spectrum_dim(self) -> int:
        return len(self.spectrum_mean)

    # ---------------------------------------------------------------------------------------------------
    def _check(self, hsi: np.ndarray, sar: Optional[np.ndarray]) -> None:
        if hsi.ndim != 3 or hsi.shape[0] != self.hsi_band_count:
            raise ValueError(f"expected an HSI block of {self.hsi_band_count} bands [bands, rows, cols], "
                             f"got shape {hsi.shape}: use a raster with the same bands as at training time")
        if self.sar is not None:
            if sar is None:
                raise ValueError("this model was fitted with a SAR raster: give the SAR layer too")
            if sar.ndim != 3 or sar.shape[0] != self.sar["band_count"] or sar.shape[1:] != hsi.shape[1:]:
                raise ValueError(f"expected a SAR block of {self.sar['band_count']} bands on the HSI grid "
                                 f"{hsi.shape[1:]}, got shape {sar.shape}")

    def _hsi_valid(self, hsi: np.ndarray) -> np.ndarray:
        return ~np.isnan(hsi[self.usable_bands]).any(axis=0)

    def apply(self, hsi: np.ndarray, sar: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
        """{"prgb", "pca"[, "sar"]} → float32 [3, h, w] in [-1, 1], NaN where nodata."""
        hsi = np.asarray(hsi, dtype=np.float32)
        self._check(hsi, sar)
        valid = self._hsi_valid(hsi)
        out = {"prgb": _to_unit(_stretch(hsi[self.rgb_bands], self.rgb_stretch), valid),
               "pca": _to_unit(_stretch(self._project(hsi), self.pca_stretch), valid)}
        if self.sar is not None and sar is not None:
            out["sar"] = sar_image(sar, self.sar)
        return out

    def spectrum(self, hsi: np.ndarray, sar: Optional[np.ndarray] = None) -> np.ndarray:
        """[D, h, w] float32: usable HSI bands (+ SAR in dB) standardised with the stored mean/std."""
        hsi = np.asarray(hsi, dtype=np.float32)
        self._check(hsi, sar)
        parts = [hsi[self.usable_bands]]
        if self.sar is not None and sar is not None:
            parts.append(_sar_db(np.asarray(sar, dtype=np.float32), self.sar["db"]))
        x = np.concatenate(parts, axis=0)
        mean = np.asarray(self.spectrum_mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.spectrum_std, dtype=np.float32)[:, None, None]
        out = ((x - mean) / std).astype(np.float32)
        out[:, np.isnan(out).any(axis=0)] = np.nan  # a pixel is nodata as a whole
        return out

    def _project(self, hsi: np.ndarray) -> np.ndarray:
        # in place: one float64 copy of the block's bands (not three), the same values
        centred = hsi[self.usable_bands].reshape(len(self.usable_bands), -1).astype(np.float64)
        centred -= np.asarray(self.pca_mean)[:, None]
        np.nan_to_num(centred, copy=False)
        comps = np.asarray(self.pca_components) @ centred
        return comps.reshape(3, *hsi.shape[1:]).astype(np.float32)


# -------------------------------------------------------------------------------------------------------
# fitting

def _one_based(bands) -> str:
    """Band numbers as users see them (1-based), whatever the 0-based list inside."""
    return ", ".join(str(int(b) + 1) for b in sorted(bands)) or "none"


def fit_representations(hsi_sample: np.ndarray, sar_sample: Optional[np.ndarray],
                        hsi_meta: Union[BandMeta, Mapping], sar_meta: Union[BandMeta, Mapping, None],
                        settings: RepresentationSettings,
                        seed: int = 0) -> RepresentationModel:
    """Fit every statistic on a sample of valid pixels ([bands, N]; the caller caps N).

    Pixels with NaN in a usable HSI band or any SAR band are dropped (bad bands may be NaN throughout).
    ``seed`` is accepted for interface stability: the fit itself is deterministic.
    """
    del seed
    hsi_meta = BandMeta.of(hsi_meta, int(np.shape(hsi_sample)[0]))
    sar_meta = BandMeta.of(sar_meta, None if sar_sample is None else int(np.shape(sar_sample)[0]))
    hsi_sample = np.asarray(hsi_sample, dtype=np.float64)
    hsi_sample = np.where(np.isinf(hsi_sample), np.nan, hsi_sample)  # ±Inf is nodata, as in the readers
    n_bands = int(hsi_sample.shape[0])
    declared = int(hsi_meta.band_count or n_bands)
    if declared != n_bands:
        raise ValueError(f"HSI metadata says {declared} bands but the sample has {n_bands}")
    bad = {int(b) for b in hsi_meta.bad_bands}
    if any(b < 0 or b >= n_bands for b in bad):
        raise ValueError(f"bad bands {_one_based(bad)} lie outside bands 1..{n_bands}")
    # a band that is NaN in every sampled pixel is bad whatever the metadata says
    if hsi_sample.shape[1]:
        bad |= {int(b) for b in np.flatnonzero(np.isnan(hsi_sample).all(axis=1))}
    usable = [b for b in range(n_bands) if b not in bad]
    if len(usable) < 3:
        raise ValueError(f"only {len(usable)} usable HSI band(s) after leaving out bad bands {_one_based(bad)}: "
                         "at least 3 are needed")

    ok = ~np.isnan(hsi_sample[usable]).any(axis=0)
    if sar_sample is not None:
        sar_sample = np.asarray(sar_sample, dtype=np.float64)
        sar_sample = np.where(np.isinf(sar_sample), np.nan, sar_sample)
        if sar_sample.shape[1] != hsi_sample.shape[1]:
            raise ValueError("the HSI and SAR samples must hold the same pixels")
        ok &= ~np.isnan(sar_sample).any(axis=0)
        sar_sample = sar_sample[:, ok]
    hsi_sample = hsi_sample[:, ok]
    if hsi_sample.shape[1] < 10:
        raise ValueError(f"only {hsi_sample.shape[1]} valid pixels to fit the representations on: "
                         "check the rasters' nodata values and that the HSI and SAR layers overlap")

    pct = tuple(float(p) for p in settings.stretch_percentiles)
    rgb, rule = choose_rgb_bands(hsi_meta, n_bands, bad, settings)
    rgb_stretch = _percentiles(hsi_sample[rgb], pct)

    x = hsi_sample[usable]
    mean = x.mean(axis=1)
    centred = x - mean[:, None]
    cov = centred @ centred.T / max(x.shape[1] - 1, 1)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1][:3]
    comps = evecs[:, order].T  # [3, bands]
    for i in range(3):  # sign convention: the largest-magnitude loading is positive
        if comps[i, np.argmax(np.abs(comps[i]))] < 0:
            comps[i] = -comps[i]
    projected = comps @ centred
    pca_stretch = _percentiles(projected, pct)

    spec = [x]
    sar_model = None
    if sar_sample is not None:
        sar_model = fit_sar(sar_sample, sar_meta or BandMeta(int(sar_sample.shape[0])), settings)
        spec.append(_sar_db(sar_sample, sar_model["db"]))
    spec_all = np.concatenate(spec, axis=0)
    s_mean = spec_all.mean(axis=1)
    s_std = spec_all.std(axis=1)
    s_std = np.where(s_std > 1e-12, s_std, 1.0)

    return RepresentationModel(
        hsi_band_count=n_bands, usable_bands=usable, rgb_bands=rgb, rgb_rule=rule, rgb_stretch=rgb_stretch,
        pca_mean=mean.tolist(), pca_components=comps.tolist(),
        pca_explained_variance=[float(v) for v in evals[order]], pca_stretch=pca_stretch,
        spectrum_mean=s_mean.tolist(), spectrum_std=s_std.tolist(), sar=sar_model,
        stretch_percentiles=list(pct))


def choose_rgb_bands(hsi_meta: Union[BandMeta, Mapping], n_bands: int, bad: set, settings: RepresentationSettings):
    """(0-based [R, G, B], rule) — see the module docstring for the order of the rules."""
    hsi_meta = BandMeta.of(hsi_meta, n_bands)
    if settings.rgb_bands is not None:
        bands = [int(b) for b in settings.rgb_bands]
        if len(bands) != 3:
            raise ValueError(f"RGB bands must be three 1-based band numbers, got {list(settings.rgb_bands)}")
        for b in bands:
            if not 1 <= b <= n_bands:
                raise ValueError(f"RGB band {b} does not exist: the HSI raster has bands 1..{n_bands}")
            if b - 1 in bad:
                raise ValueError(f"RGB band {b} is a bad band (no valid data / bbl=0): choose another band")
        return [b - 1 for b in bands], "user"
    usable = np.array([b for b in range(n_bands) if b not in bad])
    waves = hsi_meta.wavelengths_nm
    if waves is not None and len(waves) == n_bands:
        w = np.array([np.nan if v is None else float(v) for v in waves])
        cand = usable[~np.isnan(w[usable])]
        if cand.size:
            return [int(cand[np.argmin(np.abs(w[cand] - t))]) for t in settings.rgb_wavelengths_nm], "wavelength"
    names = [str(d or "").strip().upper() for d in hsi_meta.descriptions]
    if len(names) == n_bands and all(n in names for n in ("B4", "B3", "B2")):
        picked = [names.index(n) for n in ("B4", "B3", "B2")]
        if not any(p in bad for p in picked):
            return picked, "band names"
    picked = positional_rgb(n_bands)
    # a positional pick that is a bad band moves to the nearest usable band
    return [int(usable[np.argmin(np.abs(usable - p))]) for p in picked], "position"


def _percentiles(x: np.ndarray, pct) -> List[List[float]]:
    out = []
    for row in x:
        lo, hi = np.percentile(row, pct)
        if not hi > lo:
            hi = lo + 1.0  # a constant channel maps to 0 instead of dividing by zero
        out.append([float(lo), float(hi)])
    return out


def _stretch(x: np.ndarray, stats) -> np.ndarray:
    s = np.asarray(stats, dtype=np.float32)
    lo, hi = s[:, 0, None, None], s[:, 1, None, None]
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def _to_unit(x01: np.ndarray, valid: np.ndarray) -> np.ndarray:
    out = (x01 * 2.0 - 1.0).astype(np.float32)
    out[:, ~valid] = np.nan
    return out


# -------------------------------------------------------------------------------------------------------
# SAR

_POL = re.compile(r"(?<![A-Z])(HH|HV|VH|VV)(?![A-Z])")


def detect_db(sample: np.ndarray, meta: Union[BandMeta, Mapping], override: Optional[bool]) -> bool:
    """dB or linear power: the user's choice, else metadata units/descriptions, else the value range."""
    if override is not None:
        return bool(override)
    meta = BandMeta.of(meta, int(np.shape(sample)[0]))
    texts = [meta.units] if isinstance(meta.units, str) else list(meta.units)
    texts += list(meta.descriptions)
    if any(t and re.search(r"(?i)\bdb\b|_db\b|decibel", str(t)) for t in texts):
        return True
    finite = sample[np.isfinite(sample)]
    return bool(finite.size and (np.median(finite) < 0 or np.mean(finite < 0) > 0.01))


def detect_polarisation(band_count: int, meta: Union[BandMeta, Mapping], setting: str) -> Dict:
    """{"mode": single|dual|quad, "bands": {name: index}} from band descriptions or band order."""
    meta = BandMeta.of(meta, band_count)
    names = []
    for d in (meta.descriptions or [None] * band_count):
        m = _POL.search(str(d or "").upper())
        names.append(m.group(1) if m else None)
    found = {n: i for i, n in reversed(list(enumerate(names))) if n}
    mode = setting.lower() if setting else "auto"
    if mode not in ("auto", "single", "dual", "quad"):
        raise ValueError(f"SAR polarisation must be auto, single, dual or quad, not {setting!r}")
    if mode == "auto":
        if {"HH", "HV", "VV"} <= set(found) or (band_count in (3, 4) and not found):
            mode = "quad"
        elif band_count >= 2:
            mode = "dual"
        else:
            mode = "single"
    need = {"single": 1, "dual": 2, "quad": 3}[mode]
    if band_count < need:
        raise ValueError(f"SAR polarisation '{mode}' needs at least {need} band(s); the SAR raster has {band_count}")
    if mode == "quad":
        if {"HH", "HV", "VV"} <= set(found):
            bands = {k: found[k] for k in ("HH", "HV", "VV", "VH") if k in found}
        else:  # documented band order HH, HV, VV[, VH]
            bands = {"HH": 0, "HV": 1, "VV": 2}
            if band_count >= 4:
                bands["VH"] = 3
    elif mode == "dual":
        co = found.get("VV", found.get("HH"))
        cross = found.get("VH", found.get("HV"))
        if co is None or cross is None or co == cross:
            co, cross = 0, 1  # documented band order: co-pol first, cross-pol second
        bands = {"C11": co, "C22": cross}
    else:
        bands = {"C11": found.get("VV", found.get("HH", 0))}
    return {"mode": mode, "bands": bands}


def fit_sar(sample: np.ndarray, meta: BandMeta, settings: RepresentationSettings) -> Dict:
    db = detect_db(sample, meta, settings.sar_db)
    pol = detect_polarisation(int(sample.shape[0]), meta, settings.sar_polarisation)
    model = {"band_count": int(sample.shape[0]), "db": db, "mode": pol["mode"], "bands": pol["bands"],
             "gains": list(SAR_GAINS) if pol["mode"] != "single" else [1.0, 1.0, 1.0],
             "gamma": float(settings.sar_gamma)}
    raw = _sar_channels(_sar_linear(sample, db), model)  # [3, N]
    clip = _percentiles(raw, tuple(float(p) for p in settings.stretch_percentiles))
    model["clip"] = clip
    model["sqrt_range"] = [[float(np.sqrt(max(lo, 0.0))), float(np.sqrt(max(hi, 0.0)))] for lo, hi in clip]
    return model


def sar_image(sar: np.ndarray, model: Dict) -> np.ndarray:
    """SAR bands [S, h, w] (units as fitted) → the SAR modality's image [3, h, w] in [-1, 1], NaN = nodata."""
    sar = np.asarray(sar, dtype=np.float32)
    valid = ~np.isnan(sar).any(axis=0)
    return _to_unit(_sar_composite(_sar_linear(sar, model["db"]), model), valid)


def _sar_linear(x: np.ndarray, db: bool) -> np.ndarray:
    return np.power(10.0, x / 10.0) if db else x


def _sar_db(x: np.ndarray, db: bool) -> np.ndarray:
    return x if db else 10.0 * np.log10(np.maximum(x, _EPS))


def _sar_channels(lin: np.ndarray, model: Dict) -> np.ndarray:
    """Three raw (unstretched) channels from linear power, any trailing shape."""
    b, mode = model["bands"], model["mode"]
    if mode == "dual":
        c11, c22 = lin[b["C11"]], lin[b["C22"]]
        return np.stack([np.abs(c11 - c22), 2.0 * np.sqrt(np.abs(c22)), np.abs(c11 + c22)])
    if mode == "quad":
        hh, vv = lin[b["HH"]], lin[b["VV"]]
        hv = lin[b["HV"]] if "VH" not in b else 0.5 * (lin[b["HV"]] + lin[b["VH"]])
        return np.stack([np.abs(hh - vv), 2.0 * np.abs(hv), np.abs(hh + vv)])
    c = np.maximum(lin[b["C11"]], 0.0)
    return np.stack([c, np.sqrt(c), 10.0 * np.log10(np.maximum(c, _EPS))])


def _sar_composite(lin: np.ndarray, model: Dict) -> np.ndarray:
    """Raw channels → clip to stored 2–98 % → sqrt → stored min-max → gains → [0, 1] → gamma."""
    raw = _sar_channels(lin, model)
    out = np.empty(raw.shape, dtype=np.float32)
    single = model["mode"] == "single"  # its channels are already three contrasts (the dB one is negative)
    for i in range(3):
        lo, hi = model["clip"][i]
        if single:
            c = (np.clip(raw[i], lo, hi) - lo) / (hi - lo)
        else:
            slo, shi = model["sqrt_range"][i]
            c = np.sqrt(np.clip(raw[i], max(lo, 0.0), max(hi, 0.0)))
            span = shi - slo if shi > slo else 1.0
            c = (c - slo) / span
        c = c * model["gains"][i]
        out[i] = np.clip(c, 0.0, 1.0) ** model["gamma"]
    return out
