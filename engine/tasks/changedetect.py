"""Change detection between two co-registered dates from per-pixel features (issue 13), on block readers.

Both dates go through exactly the land-cover transform: one :class:`~engine.data.representations.RepresentationModel`
fitted on a sample pooled over BOTH dates (so neither date defines "normal"), the same backbone
(``landcover.prepare_backbone``: by default the seeded untrained compact ADM), the same fixed noise, timestep and
decoder blocks (``features.FeatureExtractor``) and ``landcover.head_inputs``, which builds what a head sees:
[diffusion features ‖ standardised bands].

- Unsupervised: deep change vector analysis (Saha, Bovolo & Bruzzone 2019, "Unsupervised deep change vector
  analysis for multiple-change detection in VHR images", IEEE TGRS 57(6): 3677-3693): every head-input channel is
  standardised with mean and standard deviation pooled over both dates, and the score is the Euclidean distance of
  the two dates' vectors. The diffusion channels (hundreds) and the bands (a few) are weighted as two equal groups
  (the mean squared difference of each group, averaged), decided a priori so neither swamps the other. FEATURES
  picks the channels: ``bands`` is classic CVA on z-scored bands (Malila 1980); ``diffusion`` the network only.
  An automatic threshold turns the score into a map: Otsu 1979 or Kittler & Illingworth 1986 (``engine.assessment.change``),
  fitted on a random sample of the scene's scores.
- Supervised: the land-cover forest (``engine.heads.forest``) on [features t1, features t2, their difference,
  bands t1, bands t2] at labelled change / no-change pixels; score = P(change), map = P ≥ 0.5. Validated
  out-of-bag on the training labels only.
- SAR: with ``sar`` the amplitudes are compared as ln(x + 1), where speckle is additive and the bands-only score
  is a monotone function of the classic |log-ratio| (Bazi, Bruzzone & Melgani 2005).

Rasters with fewer than 3 bands (a single SAR or panchromatic band) are presented to the representations with
their bands repeated up to 3 (pseudo-RGB and PCA need 3); the repeated copies carry the same standardised value,
so the bands group's mean squared difference is unchanged for one band.

Nothing here holds a full scene: statistics come from sampled windows, scores are streamed through
``tiling.predict_tiled`` (the land-cover tiling), labels are read window by window.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

import numpy as np

if TYPE_CHECKING:
    from .landcover import BackboneInfo

from ..errors import UserInputError
from ..progress import Progress
from ..data.readers import BlockReader, StackedReader, read_padded, sample_valid_pixels
from ..settings import PipelineSettings

FEATURE_SOURCES = ("bands", "diffusion+bands", "diffusion")
DEFAULT_FEATURES = "diffusion+bands"  # higher AUC than "bands" (= CVA) on all 7 real pairs (BENCHMARKS.md, issue 13)
THRESHOLD_METHODS = ("otsu", "kittler-illingworth")
MODEL_FORMAT = "difflc-change-model"
NO_CHANGE, CHANGE, NODATA = 0, 1, 255


@dataclass
class ChangeSettings:
    """What a change run uses; ``pipeline`` carries backbone, features, tiles, seed and device of land cover."""

    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    features: str = DEFAULT_FEATURES  # bands | diffusion+bands | diffusion
    threshold: str = "otsu"  # otsu | kittler-illingworth (unsupervised only)
    sar: bool = False  # compare ln(x + 1) of SAR amplitudes
    stats_windows: int = 48  # random windows (each date) whose channels give the pooled mean / std
    threshold_sample: int = 1_000_000  # scores sampled for the automatic threshold
    trees: int = 500  # supervised forest
    batch_size: int = 4  # windows per feature batch in streaming

    def __post_init__(self):
        if self.features not in FEATURE_SOURCES:
            raise ValueError(f"features must be one of {FEATURE_SOURCES}, got {self.features!r}")
        if self.threshold not in THRESHOLD_METHODS:
            raise ValueError(f"threshold must be one of {THRESHOLD_METHODS}, got {self.threshold!r}")

    @property
    def uses_network(self) -> bool:
        return self.features != "bands"

    def to_dict(self) -> Dict:
        d = dataclasses.asdict(self)
        d["pipeline"] = self.pipeline.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: Dict) -> "ChangeSettings":
        """The inverse of :meth:`to_dict`; an unknown key is an error, not a silent default."""
        d = dict(data)
        pipeline = PipelineSettings.from_dict(d.pop("pipeline", {}) or {})
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown change settings {unknown}: the model file is damaged or from a newer version")
        return cls(pipeline=pipeline, **d)


# ---------------------------------------------------------------------------------------------------------
# readers: one date as the pipeline sees it, both dates side by side, both dates pooled


class DateReader:
    """One date's bands as the representations see them: ln(x + 1) for SAR, repeated up to 3 bands."""

    def __init__(self, reader: BlockReader, sar: bool = False):
        self.reader, self.sar = reader, bool(sar)
        self.height, self.width = reader.height, reader.width
        self.source_bands = int(reader.band_count)
        self.index = [b % self.source_bands for b in range(max(3, self.source_bands))]
        self.band_count = len(self.index)

    def read(self, row: int, col: int, rows: int, cols: int) -> np.ndarray:
        block = self.reader.read(row, col, rows, cols)
        if self.sar:
            with np.errstate(invalid="ignore", divide="ignore"):
                block = np.log(np.maximum(block, 0.0) + 1.0).astype(np.float32)
        return block[self.index] if self.band_count != self.source_bands else block


class PairReader:
    """[date-1 bands | date-2 bands] of one window: what ``predict_tiled`` streams."""

    def __init__(self, first: BlockReader, second: BlockReader):
        self.first, self.second = first, second
        self.height, self.width = first.height, first.width
        self.band_count = first.band_count + second.band_count

    def read(self, row: int, col: int, rows: int, cols: int) -> np.ndarray:
        return np.concatenate([self.first.read(row, col, rows, cols), self.second.read(row, col, rows, cols)])


class PooledReader:
    """Date 1 above date 2 (height 2H): sampling it samples both dates, for statistics pooled over both."""

    def __init__(self, first: BlockReader, second: BlockReader):
        self.first, self.second = first, second
        self.height, self.width, self.band_count = 2 * first.height, first.width, first.band_count

    def read(self, row: int, col: int, rows: int, cols: int) -> np.ndarray:
        h = self.first.height
        parts = []
        if row < h:
            parts.append(self.first.read(row, col, min(rows, h - row), cols))
        if row + rows > h:
            start = max(row - h, 0)
            parts.append(self.second.read(start, col, row + rows - h - start, cols))
        return np.concatenate(parts, axis=1)


# ---------------------------------------------------------------------------------------------------------
# the fitted transform shared by both modes


@dataclass
class ChangeModel:
    """Everything needed to score another pass over the same pair (or, saved, another pair of the sensor)."""

    settings: ChangeSettings
    representations: object  # RepresentationModel (fitted on both dates pooled)
    backbone_info: Optional["BackboneInfo"]  # None: bands only, no network
    backbone_tensors: Dict
    extractor: Optional[object]  # FeatureExtractor, None for bands only
    n_diffusion: int  # leading channels of a date's inputs that are diffusion features
    mean: np.ndarray  # [D] pooled over both dates
    std: np.ndarray  # [D]
    head: Optional[object] = None  # engine.heads.forest.Forest (supervised)
    threshold: Optional[float] = None
    report: Dict = field(default_factory=dict)

    @property
    def supervised(self) -> bool:
        return self.head is not None


@dataclass
class ChangeResult:
    """What a scored scene produced; ``threshold`` is the cut applied (score ≥ threshold = change)."""

    mode: str  # unsupervised | supervised
    method: str
    threshold: float
    changed_pixels: int
    unchanged_pixels: int
    nodata_pixels: int
    seconds: float
    report: Dict = field(default_factory=dict)


def _meta(reader: DateReader):
    from ..data.representations import BandMeta

    return BandMeta(reader.band_count)


def check_pair(first: BlockReader, second: BlockReader, names: Tuple[str, str] = ("BEFORE", "AFTER")) -> None:
    """Same grid and band count, or a message naming both layers."""
    if first.band_count != second.band_count:
        raise UserInputError(f"the {names[0]} raster has {first.band_count} band(s) and the {names[1]} raster "
                             f"{second.band_count}: change detection compares the same bands at both dates; give "
                             "two rasters of the same sensor and band set")
    if (first.height, first.width) != (second.height, second.width):
        raise UserInputError(f"the {names[1]} raster ({second.width}x{second.height}) is not on the {names[0]} grid "
                             f"({first.width}x{first.height}): resample it first")


def _date_inputs(model: ChangeModel, reader: StackedReader, blocks: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Windows [B, C, P, P] of one date → (inputs [B, D, P, P] float32, valid [B, P, P]) via landcover.head_inputs."""
    from .landcover import head_inputs

    if model.extractor is None:  # bands only: the standardised spectrum, no network
        spectra, valid = [], []
        for raw in blocks:
            hsi, sar = reader.split(raw)
            s = model.representations.spectrum(hsi, sar)
            valid.append(~np.isnan(s).any(axis=0))
            spectra.append(np.nan_to_num(s, nan=0.0))
        return np.stack(spectra).astype(np.float32), np.stack(valid)
    x, valid = head_inputs(reader, model.representations, model.extractor, blocks, include_spectrum=True)
    if model.settings.features == "diffusion":
        x = x[:, :model.n_diffusion]
    return x, valid


def _random_origins(height: int, width: int, patch: int, n: int, seed: int) -> List[Tuple[int, int]]:
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(0, max(height - patch, 0) + 1)), int(rng.integers(0, max(width - patch, 0) + 1)))
            for _ in range(n)]


def prepare(first: BlockReader, second: BlockReader, settings: ChangeSettings,
            progress: Optional[Progress] = None) -> ChangeModel:
    """Representations on both dates pooled, the backbone, and per-channel statistics pooled over both dates."""
    from .landcover import fit_scene_representations, prepare_backbone

    progress = progress or Progress()
    check_pair(first, second)
    d1, d2 = DateReader(first, settings.sar), DateReader(second, settings.sar)
    ps = settings.pipeline
    if d1.band_count != d1.source_bands:
        progress.log(f"{d1.source_bands} band(s): repeated to 3 for the pseudo-RGB and PCA images")
    pooled = StackedReader(PooledReader(d1, d2))
    reps = fit_scene_representations(pooled, _meta(d1), None, ps, progress.sub(0.0, 0.1))
    extractor, info, tensors, n_diff = None, None, {}, 0
    if settings.uses_network:
        from ..networks.device import resolve_device
        from ..networks.features import FeatureExtractor
        from .landcover import active_modalities

        prepared = prepare_backbone(pooled, reps, ps, progress.sub(0.1, 0.4))
        extractor = FeatureExtractor(prepared.model, ps.features, active_modalities(ps, False),
                                     resolve_device(ps.device))
        info, tensors, n_diff = prepared.info, prepared.tensors, int(extractor.dim)
    else:
        progress.log("Features: the standardised bands only (no network)")
    model = ChangeModel(settings, reps, info, tensors, extractor, n_diff, np.zeros(0), np.ones(0))
    # pooled statistics of every channel, from the same random windows at both dates
    patch = ps.tiles.patch
    origins = _random_origins(first.height, first.width, patch, settings.stats_windows, ps.seed)
    s1 = s2 = None
    n = 0
    sub = progress.sub(0.4, 0.5)
    readers = (StackedReader(d1), StackedReader(d2))
    for i in range(0, len(origins), settings.batch_size):
        chunk = origins[i:i + settings.batch_size]
        for r in readers:
            blocks = np.stack([read_padded(r, a, b, patch) for a, b in chunk])
            x, valid = _date_inputs(model, r, blocks)
            v = x.transpose(1, 0, 2, 3)[:, valid].astype(np.float64)  # [D, n]
            s1 = v.sum(1) if s1 is None else s1 + v.sum(1)
            s2 = (v ** 2).sum(1) if s2 is None else s2 + (v ** 2).sum(1)
            n += v.shape[1]
        sub.step((i + len(chunk)) / len(origins))
    if not n:
        raise UserInputError("no window with valid pixels at both dates: check the rasters' nodata values")
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean ** 2, 0.0))
    model.mean = mean.astype(np.float32)
    model.std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
    progress.log(f"Change features: {model.mean.size} channels per date ({n_diff} diffusion, "
                 f"{model.mean.size - n_diff if settings.features != 'diffusion' else 0} bands), statistics pooled "
                 f"over both dates from {n:,} pixels")
    return model


def _group_slices(model: ChangeModel) -> List[slice]:
    d = model.mean.size
    if model.settings.features == "diffusion+bands":
        return [slice(0, model.n_diffusion), slice(model.n_diffusion, d)]
    return [slice(0, d)]


def _pair_inputs(model: ChangeModel, block: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[B, C1 + C2, P, P] → (z1, z2 standardised [B, D, P, P], valid at both dates [B, P, P])."""
    d1 = StackedReader(_Bands(block.shape[1] // 2))
    x1, v1 = _date_inputs(model, d1, block[:, :block.shape[1] // 2])
    x2, v2 = _date_inputs(model, d1, block[:, block.shape[1] // 2:])
    m, s = model.mean[None, :, None, None], model.std[None, :, None, None]
    return (x1 - m) / s, (x2 - m) / s, v1 & v2


class _Bands:
    """A band-count-only stand-in: head_inputs needs ``reader.split``, which needs the band count."""

    def __init__(self, bands: int):
        self.band_count, self.height, self.width = bands, 0, 0


def dcva_score(z1: np.ndarray, z2: np.ndarray, groups: List[slice]) -> np.ndarray:
    """sqrt of the mean over groups of each group's mean squared difference; [B, D, P, P] → [B, P, P]."""
    parts = [((z2[:, g] - z1[:, g]) ** 2).mean(axis=1) for g in groups]
    return np.sqrt(np.mean(parts, axis=0))


def supervised_inputs(z1: np.ndarray, z2: np.ndarray, n_diffusion: int) -> np.ndarray:
    """Per-pixel forest inputs [N, 3F + 2S] from the dates' [N, F + S]: f1, f2, f2 − f1, bands t1, bands t2."""
    f1, f2 = z1[:, :n_diffusion], z2[:, :n_diffusion]
    return np.concatenate([f1, f2, f2 - f1, z1[:, n_diffusion:], z2[:, n_diffusion:]], axis=1)


# ---------------------------------------------------------------------------------------------------------
# supervised fit


@dataclass
class ChangeLabels:
    """Labelled pixels on the date-1 grid: 1 = change, 0 = no change."""

    rows: np.ndarray
    cols: np.ndarray
    change: np.ndarray


def labelled_pair_inputs(model: ChangeModel, first: BlockReader, second: BlockReader, labels: ChangeLabels,
                         progress: Optional[Progress] = None) -> np.ndarray:
    """Forest inputs at the labelled pixels, each from the window that holds it most centrally (as land cover)."""
    from .landcover import TrainingPixels, _label_windows

    progress = progress or Progress()
    ps = model.settings.pipeline
    pair = PairReader(DateReader(first, model.settings.sar), DateReader(second, model.settings.sar))
    pixels = TrainingPixels(labels.rows, labels.cols, labels.change.astype(np.int64), 2)
    origins, home = _label_windows(pair, pixels, ps)
    patch, batch = ps.tiles.patch, max(1, model.settings.batch_size)
    out: Optional[np.ndarray] = None
    for start in range(0, len(origins), batch):
        chunk = list(range(start, min(start + batch, len(origins))))
        raw = np.stack([read_padded(pair, origins[w][0], origins[w][1], patch) for w in chunk])
        z1, z2, _ = _pair_inputs(model, raw)
        for k, w in enumerate(chunk):
            sel = np.flatnonzero(home == w)
            r, c = labels.rows[sel] - origins[w][0], labels.cols[sel] - origins[w][1]
            x = supervised_inputs(z1[k][:, r, c].T, z2[k][:, r, c].T, model.n_diffusion)
            if out is None:
                out = np.zeros((labels.rows.size, x.shape[1]), np.float32)
            out[sel] = x
        progress.step(chunk[-1] / max(len(origins) - 1, 1))
    assert out is not None
    return out


def fit_supervised(model: ChangeModel, first: BlockReader, second: BlockReader, labels: ChangeLabels,
                   progress: Optional[Progress] = None) -> ChangeModel:
    """The forest head on the labelled pixels; out-of-bag F1/OA on the training labels only."""
    from ..heads.forest import train_forest

    progress = progress or Progress()
    y = np.asarray(labels.change, np.int64)
    counts = np.bincount(y, minlength=2)
    if counts.min() < 2:
        raise UserInputError(f"the labels hold {counts[1]} change and {counts[0]} no-change pixel(s) on valid data at "
                             "both dates: supervised change detection needs at least 2 of each (or give no labels "
                             "for the unsupervised mode)")
    x = labelled_pair_inputs(model, first, second, labels, progress.sub(0.0, 0.6))
    forest = train_forest(x, y, 2, n_trees=model.settings.trees, seed=model.settings.pipeline.seed,
                          progress=progress.sub(0.6, 1.0))
    oob = forest.oob_proba
    ok = ~np.isnan(oob).any(axis=1)
    pred = oob[ok].argmax(1)
    tp = int(((pred == 1) & (y[ok] == 1)).sum())
    f1 = 2 * tp / max(int((pred == 1).sum()) + int((y[ok] == 1).sum()), 1)
    oa = float((pred == y[ok]).mean()) if ok.any() else None
    model.head = forest
    model.threshold = 0.5
    model.report["validation"] = {"kind": "out-of-bag on the training labels (not an independent reference)",
                                  "pixels": int(ok.sum()), "overall_accuracy": oa, "f1_change": f1,
                                  "labels_change": int(counts[1]), "labels_no_change": int(counts[0])}
    progress.log(f"Forest on {x.shape[0]} labelled pixels ({counts[1]} change, {counts[0]} no change) x "
                 f"{x.shape[1]} inputs; out-of-bag on the training labels: F1(change) {f1:.3f}, OA "
                 f"{100 * (oa or 0):.2f} %")
    return model


# ---------------------------------------------------------------------------------------------------------
# streaming the score


def require_supervised(metadata: Dict) -> None:
    """Only a model trained on labels transfers: an unsupervised one is a threshold on its own pair's scores."""
    if not metadata.get("head"):
        raise UserInputError("the change model holds no forest: it was saved by an unsupervised run (no LABELS), "
                             "whose threshold and statistics belong to its own pair; run Detect changes on the new "
                             "pair instead, or save a model from a run with labels")


def saved_settings(metadata: Dict, device: str = "auto") -> ChangeSettings:
    """A saved supervised change model's settings, run on ``device``; an unsupervised model is refused."""
    require_supervised(metadata)
    settings = ChangeSettings.from_dict(metadata["settings"])
    settings.pipeline.device = device
    return settings


def model_from_bundle(metadata: Dict, tensors: Dict, settings: ChangeSettings) -> ChangeModel:
    """Rebuild a saved supervised change model (``jobs.detect_changes`` writes it) to score another pair;
    ``settings`` = :func:`saved_settings` of the same file.

    Everything that defines the forest's inputs comes from the file: the representations, the network, the channel
    statistics of the training pair and the forest itself, so a pixel gets the same inputs as in training.
    """
    from ..data.representations import RepresentationModel
    from ..heads.forest import Forest
    from .landcover import BackboneInfo, active_modalities, restore_backbone

    reps = RepresentationModel.from_dict(metadata["representations"])
    info, extractor, n_diff = None, None, int(metadata.get("n_diffusion", 0))
    if metadata.get("backbone"):
        from ..networks.device import resolve_device
        from ..networks.features import FeatureExtractor

        dev = resolve_device(settings.pipeline.device)
        info = BackboneInfo.from_dict(metadata["backbone"])
        extractor = FeatureExtractor(restore_backbone(info, tensors, dev), settings.pipeline.features,
                                     active_modalities(settings.pipeline, False), dev)
        stored = [list(g) for g in metadata.get("feature_groups") or []]
        if stored != [list(g) for g in extractor.groups] or n_diff != extractor.dim:
            raise ValueError(f"the change model's feature groups {stored} are not what its network and settings "
                             "produce: the file is damaged or was edited; save the model again")
    mean = np.asarray(tensors["stats.mean"].numpy(), np.float32)
    std = np.asarray(tensors["stats.std"].numpy(), np.float32)
    arrays = {k[len("head."):]: v.numpy() for k, v in tensors.items() if k.startswith("head.")}
    head = Forest(arrays, int(metadata["head"]["n_features"]), 2)
    expected = 3 * n_diff + 2 * (mean.size - n_diff)  # supervised_inputs: f1, f2, f2 - f1, bands t1, bands t2
    if mean.shape != std.shape or head.n_features != expected:
        raise ValueError(f"the change model's forest expects {head.n_features} inputs but its statistics describe "
                         f"{expected}: the file is damaged; save the model again")
    network = {k: v for k, v in tensors.items() if not k.startswith(("head.", "stats."))}
    return ChangeModel(settings, reps, info, network, extractor, n_diff, mean, std, head, None,
                       dict(metadata.get("training") or {}))


def stream_scores(model: ChangeModel, first: BlockReader, second: BlockReader,
                  write: Callable[[int, np.ndarray], None], progress: Optional[Progress] = None) -> None:
    """``write(row, score [rows, W])`` top to bottom (NaN = nodata at either date), via ``tiling.predict_tiled``."""
    from .tiling import predict_tiled

    progress = progress or Progress()
    pair = PairReader(DateReader(first, model.settings.sar), DateReader(second, model.settings.sar))
    groups = _group_slices(model)

    def predict_patches(block: np.ndarray, need: np.ndarray) -> np.ndarray:
        z1, z2, valid = _pair_inputs(model, block)
        if model.head is None:
            score = dcva_score(z1, z2, groups).astype(np.float32)
        else:  # the forest runs once per pixel: on the windows' cores only
            use = need & valid
            score = np.full(valid.shape, np.nan, np.float32)
            if use.any():
                x = supervised_inputs(z1.transpose(0, 2, 3, 1)[use], z2.transpose(0, 2, 3, 1)[use], model.n_diffusion)
                score[use] = model.head.predict_proba(x)[:, 1]
        score[~valid] = np.nan
        return score[:, None]

    predict_tiled(pair.height, pair.width, pair.read, predict_patches, 1, lambda row, s: write(row, s[0]),
                  model.settings.pipeline.tiles, progress=progress, batch_size=model.settings.batch_size)


class ScoreSample:
    """A uniform random sample of the streamed scores (smallest random keys), for the automatic threshold."""

    def __init__(self, n: int, seed: int):
        self.n, self.rng = int(n), np.random.default_rng(seed)
        self.keys = np.zeros(0)
        self.values = np.zeros(0, np.float32)

    def add(self, score: np.ndarray) -> None:
        v = score[np.isfinite(score)].ravel()
        k = self.rng.random(v.size)
        self.keys, self.values = np.concatenate([self.keys, k]), np.concatenate([self.values, v])
        if self.keys.size > self.n:
            keep = np.argpartition(self.keys, self.n - 1)[:self.n]
            self.keys, self.values = self.keys[keep], self.values[keep]


def automatic_threshold(values: np.ndarray, method: str) -> float:
    """Otsu 1979 or Kittler & Illingworth 1986 on the score sample (``engine.assessment.change``)."""
    from ..assessment.change import THRESHOLDS

    try:
        return float(THRESHOLDS[method](values))
    except ValueError:
        raise UserInputError("the change score is constant over the scene (identical dates?): no automatic "
                             "threshold exists") from None


def detect_arrays(t1: np.ndarray, t2: np.ndarray, settings: ChangeSettings,
                  labels: Optional[ChangeLabels] = None,
                  progress: Optional[Progress] = None) -> Tuple[np.ndarray, np.ndarray, ChangeModel]:
    """Arrays [bands, H, W] in (NaN = nodata) → (score [H, W], change map [H, W] uint8 0/1/255, model)."""
    from ..data.readers import ArrayReader

    progress = progress or Progress()
    t0 = time.perf_counter()
    r1, r2 = ArrayReader(np.asarray(t1, np.float32)), ArrayReader(np.asarray(t2, np.float32))
    model = prepare(r1, r2, settings, progress.sub(0.0, 0.3))
    if labels is not None:
        fit_supervised(model, r1, r2, labels, progress.sub(0.3, 0.5))
    score = np.full((r1.height, r1.width), np.nan, np.float32)

    def write(row: int, s: np.ndarray) -> None:
        score[row:row + s.shape[0]] = s

    stream_scores(model, r1, r2, write, progress.sub(0.5, 1.0))
    if model.threshold is None:
        sample = ScoreSample(settings.threshold_sample, settings.pipeline.seed)
        sample.add(score)
        model.threshold = automatic_threshold(sample.values, settings.threshold)
    change = np.full(score.shape, NODATA, np.uint8)
    ok = np.isfinite(score)
    change[ok] = (score[ok] >= model.threshold).astype(np.uint8)
    model.report["seconds"] = round(time.perf_counter() - t0, 2)
    return score, change, model
