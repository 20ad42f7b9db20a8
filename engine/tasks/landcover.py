"""Fit and predict on block readers: the whole method, without files, QGIS or GDAL.

``fit`` turns a scene (behind a :class:`~engine.data.readers.StackedReader`) and labelled pixels into a
:class:`FittedModel`; ``predict_scene`` streams class indices and confidences window by window.
``jobs.py`` wraps both with file I/O; the reproduction harness and GPU benchmarks call them directly.

Nothing here holds a full-scene array: representation statistics come from a streamed sample, backbone
training from a capped pool of random windows, training features from the windows that contain labels,
and prediction from ``tiling.predict_tiled``.
"""
from __future__ import annotations

import dataclasses
import platform
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import ENGINE_VERSION
from ..progress import Progress
from ..data.readers import ArrayReader, StackedReader, read_padded, sample_valid_pixels
from ..settings import MODALITY_IDS, PipelineSettings

from .spatial import Regulariser  # numpy only

if TYPE_CHECKING:  # torch-heavy modules, imported where they run
    from ..data.representations import RepresentationModel
    from ..heads.classifier import ForestHead, TrainedHead
    from ..networks.backbone import ADMUNet
    from ..networks.features import FeatureExtractor


@dataclass
class TrainingPixels:
    """Labelled pixels in the HSI grid; ``class_index`` runs 0..K-1."""

    rows: np.ndarray
    cols: np.ndarray
    class_index: np.ndarray
    n_classes: int


@dataclass
class FittedModel:
    settings: PipelineSettings
    representations: "RepresentationModel"
    backbone: "ADMUNet"  # any FiLM delta applied
    backbone_info: BackboneInfo
    backbone_tensors: Dict  # what the bundle must carry: compact weights or the FiLM delta
    extractor: "FeatureExtractor"
    head: Union["ForestHead", "TrainedHead"]
    group_sizes: List[int]
    report: Dict = field(default_factory=dict)
    # the spatial regularisation of the class probabilities before the argmax
    regulariser: Regulariser = field(default_factory=Regulariser)

    @property
    def sigma(self) -> float:
        """Gaussian σ in px (0 when the regulariser is not a Gaussian): what files and logs before 0.3 called it."""
        return float(self.regulariser.sigma) if self.regulariser.method == "gaussian" else 0.0


def active_modalities(settings: PipelineSettings, has_sar: bool) -> List[str]:
    mods = [m for m in settings.modalities if m != "sar" or has_sar]
    if "prgb" not in mods:
        raise ValueError("the pRGB modality is the adaptation anchor and cannot be switched off")
    return mods


# ---------------------------------------------------------------------------------------------------------
# patch pool for backbone training / adaptation

def read_patch_pool(reader: StackedReader, reps, modalities: Sequence[str], n: int, patch: int, seed: int,
                    progress: Progress) -> Dict[str, np.ndarray]:
    """``n`` random windows, each turned into every modality; mostly-nodata windows are redrawn."""
    rng = np.random.default_rng(seed)
    pool: Dict[str, List[np.ndarray]] = {m: [] for m in modalities}
    tries, got = 0, 0
    while got < n and tries < 4 * n:
        tries += 1
        row = int(rng.integers(0, max(reader.height - patch, 0) + 1))
        col = int(rng.integers(0, max(reader.width - patch, 0) + 1))
        hsi, sar = reader.split(read_padded(reader, row, col, patch))
        images = reps.apply(hsi, sar)
        if np.isnan(images["prgb"]).any(axis=0).mean() > 0.5 and tries < 3 * n:
            continue
        for m in modalities:
            pool[m].append(images[m])
        got += 1
        progress.step(got / n)
    if got == 0:
        raise ValueError("the scene has no valid 64x64 window to learn from (all nodata?)")
    return {m: np.stack(v) for m, v in pool.items()}


# ---------------------------------------------------------------------------------------------------------
# fit

@dataclass
class AdaptationInfo:
    """The FiLM adaptation a pretrained backbone went through (denoising losses of its first/last steps)."""

    steps: int
    first_loss: Optional[float] = None
    final_loss: Optional[float] = None


BACKBONE_KINDS = ("compact", "prior", "checkpoint")


@dataclass
class BackboneInfo:
    """Which network the features come from and what rebuilds it; stored as the bundle's ``backbone``.

    ``from_dict`` refuses unknown keys and kinds: a damaged or hand-edited file stops with a message instead of
    building another network.
    """

    kind: str  # compact (seeded / trained here) | prior (shipped) | checkpoint (ImageNet ADM file)
    config: Dict  # engine.networks.backbone.UNetConfig.to_dict()
    fingerprint: str  # sha256 of the base weights (engine.networks.backbone.weights_fingerprint)
    modalities: List[str]
    final_loss: Optional[float] = None  # compact: mean loss of the last training steps (None: untrained)
    checkpoint: Optional[str] = None  # checkpoint: the file used at training time
    prior: Optional[str] = None  # prior: its name
    adaptation: Optional[AdaptationInfo] = None

    def to_dict(self) -> Dict:
        d = dataclasses.asdict(self)
        return {k: v for k, v in d.items() if v is not None or k == "final_loss"}

    @classmethod
    def from_dict(cls, d: Dict) -> "BackboneInfo":
        if not isinstance(d, dict):
            raise ValueError(f"backbone description must be a mapping, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        missing = sorted({"kind", "config", "fingerprint", "modalities"} - set(d))
        if unknown or missing or d.get("kind") not in BACKBONE_KINDS:
            raise ValueError(f"backbone description is damaged (unknown keys {unknown}, missing {missing}, kind "
                             f"{d.get('kind')!r} of {list(BACKBONE_KINDS)})")
        ad = d.get("adaptation")
        return cls(**{**d, "modalities": list(d["modalities"]),
                      "adaptation": AdaptationInfo(**ad) if isinstance(ad, dict) else None})


@dataclass
class PreparedBackbone:
    """A backbone ready for features, with what identifies it and what a file must carry to rebuild it."""

    model: object  # engine.networks.backbone.ADMUNet, any FiLM delta applied
    info: BackboneInfo
    tensors: Dict[str, object]  # name → torch tensor: the compact weights ("backbone.*") or the FiLM delta ("film.*")


def fit_scene_representations(reader: StackedReader, hsi_meta, sar_meta, settings: PipelineSettings,
                              progress: Progress):
    """Representation statistics (band choice, PCA, percentiles) from a streamed sample of valid pixels.
    ``hsi_meta``/``sar_meta``: ``representations.BandMeta`` (or a dict of its fields)."""
    from ..data.representations import BandMeta, fit_representations

    hsi_meta, sar_meta = BandMeta.of(hsi_meta), BandMeta.of(sar_meta)
    hsi_bad = set(hsi_meta.bad_bands)
    good = [b for b in range(reader.hsi_bands) if b not in hsi_bad]
    sample, _, _ = sample_valid_pixels(reader, settings.representation.sample_size, settings.seed,
                                       valid_bands=good, progress=progress)
    if sample.shape[1] < 10:
        raise ValueError("fewer than 10 valid pixels in the HSI raster: check its nodata value and bands")
    hsi_sample = sample[:reader.hsi_bands]
    sar_sample = sample[reader.hsi_bands:] if reader.sar is not None else None
    if sar_sample is not None:
        ok = ~np.isnan(sar_sample).any(axis=0)
        if ok.sum() < 10:
            raise ValueError("the SAR raster has fewer than 10 valid pixels where the HSI is valid: check that "
                             "both layers cover the same area and the SAR nodata value")
        hsi_sample, sar_sample = hsi_sample[:, ok], sar_sample[:, ok]
    reps = fit_representations(hsi_sample, sar_sample, hsi_meta, sar_meta, settings.representation,
                               seed=settings.seed)
    progress.log(f"Representations fitted on {hsi_sample.shape[1]} sampled pixels")
    return reps


def prepare_backbone(reader: StackedReader, reps, settings: PipelineSettings, progress: Progress) -> PreparedBackbone:
    """Stage A, the network ``engine.paths.resolve_backbone`` picks: a pretrained one (the ImageNet ADM, or the
    shipped remote-sensing prior) stays frozen and only its FiLM path adapts to the scene's modalities (UniDiff);
    "untrained" is a seeded random compact network (auto's choice without the ImageNet ADM, the most accurate
    measured); "scene" trains a compact network from scratch on the scene. Before adapting, one step is timed and
    the whole run estimated; ``auto`` then keeps to ``adaptation.time_budget_s`` (:func:`_stage_a_plan`)."""
    from ..networks.adaptation import PoolSampler, adapt, adapt_schedule, apply_delta, train_compact_backbone
    from ..networks.backbone import load_backbone, weights_fingerprint
    from ..networks.device import resolve_device
    from ..paths import resolve_backbone

    device = resolve_device(settings.device)
    modalities = active_modalities(settings, reader.sar is not None)
    kind, path, why = resolve_backbone(settings.backbone.source, settings.backbone.checkpoint)
    adapt_on = settings.adaptation.modalities
    if adapt_on is not None and (not adapt_on or any(m not in modalities for m in adapt_on)):
        raise ValueError(f"adaptation modalities {list(adapt_on)} must be a non-empty subset of this scene's "
                         f"{modalities}")
    work = progress.sub(0.1, 1.0)

    def sampler() -> PoolSampler:
        """The scene's patches, read only when a network is trained on them (never for 0 steps)."""
        pool = read_patch_pool(reader, reps, modalities, settings.backbone.patch_pool, settings.tiles.patch,
                               settings.seed, progress.sub(0.0, 0.1))
        if adapt_on is not None and kind not in ("scene", "untrained"):
            pool = {m: pool[m] for m in adapt_on}
            progress.log(f"FiLM adaptation on {', '.join(adapt_on)} only"
                         + ("" if "prgb" in adapt_on else " (no pRGB anchor)"))
        return PoolSampler(pool)

    def compact(kind: str, why: str) -> PreparedBackbone:
        backbone_settings = settings.backbone
        if kind == "untrained":
            backbone_settings = dataclasses.replace(settings.backbone, compact_steps=0)
            progress.log(f"Backbone: compact ADM, randomly initialised with seed {settings.seed}, not trained — {why}")
        else:
            progress.log(f"Backbone: compact ADM trained from scratch on this scene's patches "
                         f"({settings.backbone.compact_steps} steps) — {why}")
        patches = sampler() if backbone_settings.compact_steps > 0 else None
        model = train_compact_backbone(patches, backbone_settings, seed=settings.seed, device=device, progress=work)
        tensors = {f"backbone.{k}": v.detach().cpu() for k, v in model.state_dict().items()}
        info = BackboneInfo("compact", model.config.to_dict(), weights_fingerprint(model), modalities,
                            final_loss=_tail_mean(getattr(model, "train_losses", [])))
        model.eval()
        return PreparedBackbone(model, info, tensors)

    if kind in ("scene", "untrained"):
        return compact(kind, why)
    name = "ImageNet ADM checkpoint" if kind == "imagenet" else "shipped remote-sensing prior"
    progress.log(f"Backbone: {name} {path} — {why}")
    model = load_backbone(path, device=device)
    info = BackboneInfo("checkpoint" if kind == "imagenet" else "prior", model.config.to_dict(),
                        weights_fingerprint(model), modalities, checkpoint=str(path) if kind == "imagenet" else None,
                        prior=None if kind == "imagenet" else path.stem)
    tensors: Dict = {}
    steps, batch = adapt_schedule(model, settings.adaptation)
    adaptation = settings.adaptation
    if steps > 0:
        plan = _stage_a_plan(model, settings, steps, batch, device, modalities, progress)
        if plan.action == "untrained":
            del model
            return compact("untrained", f"chosen by auto instead of adapting the {name}: {plan.why}")
        if plan.action == "capped":
            steps = plan.steps
            adaptation = dataclasses.replace(settings.adaptation, steps=steps)
        result = adapt(model, sampler(), adaptation, seed=settings.seed, device=device, progress=work)
        apply_delta(model, result.delta)
        tensors = {f"film.{k}": v for k, v in result.delta.items()}
        info.adaptation = AdaptationInfo(steps, _head_mean(result.losses), _tail_mean(result.losses))
        progress.log(f"FiLM adaptation: denoising loss {info.adaptation.first_loss:.4f} → "
                     f"{info.adaptation.final_loss:.4f}")
    else:
        progress.log("FiLM adaptation: off (0 steps) — the pretrained network is used as it is")
    model.eval()
    return PreparedBackbone(model, info, tensors)


def _stage_a_plan(model, settings: PipelineSettings, steps: int, batch: int, device, modalities, progress: Progress):
    """Time one adaptation step here and log the estimate for the whole run (seconds, before any long work); auto
    (no checkpoint file, no ADAPT_STEPS given) may then cap the steps or take the untrained network instead
    (``adaptation.plan_adaptation``); an explicit choice runs as asked."""
    from ..networks.adaptation import duration_text, plan_adaptation, time_adapt_step

    seconds = time_adapt_step(model, settings.adaptation, batch, device=device, seed=settings.seed,
                              modality_ids=[MODALITY_IDS[m] for m in modalities])
    progress.log(f"Time check: one FiLM adaptation step at batch {batch} takes about {seconds:.2g} s on {device}, "
                 f"so {steps} steps about {duration_text(steps * seconds)}")
    may_change = (settings.backbone.source == "auto" and not settings.backbone.checkpoint
                  and settings.adaptation.steps is None)
    plan = plan_adaptation(steps, batch, seconds, settings.adaptation.time_budget_s, may_change)
    if plan.action == "adapt" and may_change:
        progress.log(f"FiLM adaptation: all {steps} steps — {plan.why}")
    elif plan.action == "capped":
        progress.log(f"FiLM adaptation capped at {plan.steps} steps (about {duration_text(plan.estimate_s)}) — "
                     f"{plan.why}")
    elif plan.action == "adapt" and not may_change and plan.estimate_s > (settings.adaptation.time_budget_s or 1e18):
        progress.log(f"Note: running all {steps} steps as asked (about {duration_text(plan.estimate_s)}); "
                     "BACKBONE_SOURCE=auto without a BACKBONE file or ADAPT_STEPS keeps to ADAPT_TIME_BUDGET")
    return plan


def restore_backbone(info: BackboneInfo, tensors: Dict, device, checkpoint: Optional[str] = None):
    """Rebuild the backbone described by ``info`` from the file's tensors (and the base network it adapted)."""
    from ..networks.adaptation import apply_delta
    from ..networks.backbone import UNetConfig, build_backbone, load_backbone, weights_fingerprint
    from ..paths import find_backbone, shipped_prior

    if info.kind == "compact":
        import torch

        with torch.device("meta"):  # every weight comes from the file: nothing to draw at random
            model = build_backbone(UNetConfig.from_dict(info.config))
        state = {k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")}
        model.load_state_dict(state, strict=True, assign=True)
        model.to(device)
        model.eval()
        return model
    if info.kind == "prior":
        path = shipped_prior()
        if not path.is_file():
            raise ValueError(f"this model was adapted from the shipped prior, which is missing ({path}): "
                             "reinstall the plugin")
        model = load_backbone(path, device=device)
        if weights_fingerprint(model) != info.fingerprint:
            raise ValueError(f"this model was adapted from another version of the shipped prior (weights "
                             f"fingerprint {info.fingerprint[:12]}, installed {weights_fingerprint(model)[:12]}): "
                             "train it again with this plugin version")
    else:
        path = checkpoint or info.checkpoint or find_backbone()
        if not path:
            raise ValueError("this model was built on the ImageNet ADM checkpoint: give its path (BACKBONE)")
        model = load_backbone(path, device=device)
        if weights_fingerprint(model) != info.fingerprint:
            raise ValueError(
                f"the backbone file {path} is not the one this model was adapted from (weights fingerprint "
                f"differs): use the same 64x64_diffusion.pt as at training time")
    delta = {k[len("film."):]: v for k, v in tensors.items() if k.startswith("film.")}
    if delta:
        apply_delta(model, delta)
    model.eval()
    return model


def fit(reader: StackedReader, hsi_meta: Dict, sar_meta: Optional[Dict], labels: TrainingPixels,
        settings: PipelineSettings, progress: Optional[Progress] = None,
        backbone: Optional[PreparedBackbone] = None) -> FittedModel:
    """The whole method on one scene; ``backbone`` skips Stage A when an adapted one is given."""
    from ..heads.classifier import fit_head
    from ..networks.device import resolve_device
    from ..networks.features import FeatureExtractor

    progress = progress or Progress()
    t0 = time.perf_counter()
    device = resolve_device(settings.device)
    progress.log(f"Device: {device}")
    modalities = active_modalities(settings, reader.sar is not None)
    reps = fit_scene_representations(reader, hsi_meta, sar_meta, settings, progress.sub(0.0, 0.05))
    if backbone is None:
        backbone = prepare_backbone(reader, reps, settings, progress.sub(0.05, 0.55))
    else:
        progress.log(f"Backbone: given ({backbone.info.kind}, fingerprint {backbone.info.fingerprint[:12]})")
        backbone.model.to(device)

    # features at the labelled pixels, each from the window that holds it most centrally
    extractor = FeatureExtractor(backbone.model, settings.features, modalities, device)
    x = labelled_features(reader, reps, extractor, labels, settings, progress.sub(0.55, 0.85))
    group_sizes = [g[3] for g in extractor.groups]
    if settings.head.include_spectrum:
        group_sizes.append(x.shape[1] - sum(group_sizes))
    progress.log(f"Training features: {x.shape[0]} pixels x {x.shape[1]} values "
                 f"({len(extractor.groups)} diffusion groups{' + spectrum' if settings.head.include_spectrum else ''})")

    # the pixel head, validated on the training labels only (MLP: a held-out split; forest: out-of-bag)
    head = fit_head(x, labels.class_index, group_sizes, settings.head, seed=settings.seed, device="cpu",
                    progress=progress.sub(0.85, 0.91), fusion=settings.features.fusion, n_classes=labels.n_classes,
                    spectrum_last=settings.head.include_spectrum)
    worth = input_value(x, labels, extractor, reps, head, settings, progress.sub(0.91, 0.92))
    first = first_read_column(head, settings.head.include_spectrum)
    folds = repeated_folds(labels.class_index, settings)
    cv = FoldForests(x[:, first:], labels.class_index, labels.n_classes, folds, settings)
    selftrain = None
    if settings.head.kind == "forest" and settings.selftrain.mode != "off" and folds:
        from .selftrain import self_train

        head, selftrain = self_train(reader, reps, extractor, labels, x, head, first, cv, settings,
                                     progress.sub(0.92, 0.96))
    choice = choose_regulariser(reader, reps, extractor, labels, head, cv, settings, progress.sub(0.96, 1.0))
    report = {"train_pixels": int(x.shape[0]), "feature_dim": int(x.shape[1]),
              "labels_per_class": np.bincount(labels.class_index, minlength=labels.n_classes).tolist(),
              "validation": getattr(head, "val_metrics", None), "input_value": worth,
              "feature_check": head.config.get("feature_check"), "spatial": choice.to_dict(),
              "self_training": selftrain, "seconds": round(time.perf_counter() - t0, 1), "device": str(device)}
    return FittedModel(settings, reps, backbone.model, backbone.info, backbone.tensors, extractor, head,
                       group_sizes, report, regulariser=choice.regulariser)


def input_value(x: np.ndarray, labels: TrainingPixels, extractor, reps, head, settings: PipelineSettings,
                progress: Progress) -> Optional[Dict]:
    """Out-of-bag OA of the final forest, spatially blocked CV OA and per-group permutation importance
    (``engine.heads.importance``) on the columns the final forest reads; None for the MLP head."""
    from ..heads.importance import assess_inputs, describe, input_groups

    if settings.head.kind != "forest":
        progress.log("What each input is worth: computed for the forest head only")
        return None
    hsi_bands = len(reps.usable_bands)
    groups = input_groups(extractor.groups, settings.head.include_spectrum, hsi_bands,
                          int(reps.spectrum_dim) - hsi_bands if settings.head.include_spectrum else 0)
    used_from = first_read_column(head, settings.head.include_spectrum)
    value = assess_inputs(x, labels.class_index, labels.rows, labels.cols, labels.n_classes, groups,
                          used_from=used_from, trees=min(settings.head.trees, settings.spatial.cv_trees),
                          seed=settings.seed, balanced=settings.head.class_weighting, progress=progress)
    val = getattr(head, "val_metrics", None) or {}
    out = {"out_of_bag_oa": val.get("overall_accuracy"), **value.to_dict()}
    progress.log(describe(value, out["out_of_bag_oa"]))
    return out


def first_read_column(head, include_spectrum: bool) -> int:
    """First head-input column the fitted head reads: past the diffusion features when the forest's out-of-bag
    feature check kept the bands alone (then the network need not run at all), else 0."""
    check = head.config.get("feature_check") or {}
    if include_spectrum and not check.get("diffusion_features_used", True):
        return int(sum(head.config["group_sizes"][:-1]))
    return 0


def _tail_mean(values: Sequence[float], n: int = 20) -> Optional[float]:
    return float(np.mean(values[-n:])) if len(values) else None


def _head_mean(values: Sequence[float], n: int = 20) -> Optional[float]:
    return float(np.mean(values[:n])) if len(values) else None


def window_inputs(reader: StackedReader, reps, modalities: Sequence[str], raw: np.ndarray,
                  spectrum: bool = True) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """One window's network input [M, 3, P, P] (NaN → 0) and, if asked, its spectrum [D, P, P] (NaN = nodata)."""
    hsi, sar = reader.split(raw)
    images = reps.apply(hsi, sar)
    stack = np.stack([np.nan_to_num(images[m], nan=0.0) for m in modalities])
    return stack, (reps.spectrum(hsi, sar) if spectrum else None)


def _label_windows(reader: StackedReader, labels: TrainingPixels, settings: PipelineSettings):
    """(window origins [(row, col)], home window index per labelled pixel): each labelled pixel is served by
    the window that holds it most centrally, so its features see the most context."""
    from .tiling import home_windows, tile_origins

    patch, stride = settings.tiles.patch, settings.tiles.stride
    orow = np.asarray(tile_origins(reader.height, patch, stride))
    ocol = np.asarray(tile_origins(reader.width, patch, stride))
    home_r = home_windows(labels.rows, orow, patch)
    home_c = home_windows(labels.cols, ocol, patch)
    keys = sorted(set(zip(home_r.tolist(), home_c.tolist())))
    index = {k: i for i, k in enumerate(keys)}
    home = np.array([index[k] for k in zip(home_r.tolist(), home_c.tolist())], dtype=np.int64)
    return [(int(orow[r]), int(ocol[c])) for r, c in keys], home


def head_inputs(reader: StackedReader, reps, extractor, blocks: np.ndarray, include_spectrum: bool,
                run_network: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Windows [B, C, P, P] of raw bands → (head inputs [B, D, P, P] float32, valid [B, P, P]).

    D = diffusion features (zeros when ``run_network`` is off: a bands-only forest never reads them) followed by
    the standardised bands when ``include_spectrum``; the one place where fit, cross-validation and prediction
    build what the head sees.
    """
    import torch

    b, _, p, q = blocks.shape
    stacks, spectra, valid = [], [], []
    for i in range(b):
        stack, spec = window_inputs(reader, reps, extractor.modalities, blocks[i])
        valid.append(~np.isnan(spec).any(axis=0))
        stacks.append(stack)
        spectra.append(np.nan_to_num(spec, nan=0.0))
    if run_network:
        feats = extractor(torch.from_numpy(np.stack(stacks).astype(np.float32))).numpy()
    else:
        feats = np.zeros((b, extractor.dim, p, q), np.float32)
    if include_spectrum:
        feats = np.concatenate([feats, np.stack(spectra).astype(np.float32)], axis=1)
    return feats, np.stack(valid)


def _iter_label_windows(reader: StackedReader, reps, extractor, labels: TrainingPixels, settings: PipelineSettings,
                        progress: Progress, run_network: bool = True, guide: bool = False):
    """Yield (origin, labelled pixel indices, head inputs [D, P, P], valid [P, P]) window by window; with
    ``guide`` also the window's guide planes [3, P, P] (``spatial.guide_planes``)."""
    origins, home = _label_windows(reader, labels, settings)
    patch = settings.tiles.patch
    batch = max(1, settings.features.batch_size)
    for start in range(0, len(origins), batch):
        chunk = list(range(start, min(start + batch, len(origins))))
        raw = np.stack([read_padded(reader, origins[w][0], origins[w][1], patch) for w in chunk])
        x, valid = head_inputs(reader, reps, extractor, raw, settings.head.include_spectrum, run_network)
        for k, w in enumerate(chunk):
            if guide:
                yield origins[w], np.flatnonzero(home == w), x[k], valid[k], window_guide(reader, reps, raw[k])
            else:
                yield origins[w], np.flatnonzero(home == w), x[k], valid[k]
        progress.step(chunk[-1] / max(len(origins) - 1, 1))


def labelled_features(reader: StackedReader, reps, extractor, labels: TrainingPixels,
                      settings: PipelineSettings, progress: Progress) -> np.ndarray:
    """[N, D] head inputs for the labelled pixels, computing features only for windows that hold labels."""
    out: Optional[np.ndarray] = None
    for (r0, c0), sel, x, _ in _iter_label_windows(reader, reps, extractor, labels, settings, progress):
        if out is None:
            out = np.zeros((labels.rows.size, x.shape[0]), dtype=np.float32)
        out[sel] = x[:, labels.rows[sel] - r0, labels.cols[sel] - c0].T
    assert out is not None
    return out


def window_guide(reader: StackedReader, reps, raw: np.ndarray) -> np.ndarray:
    """A window's guide for the edge-aware regulariser: its first three principal components in [0, 1]."""
    from .spatial import guide_planes

    hsi, sar = reader.split(raw)
    return guide_planes(reps.apply(hsi, sar)["pca"])


class FoldForests:
    """The cross-validation forests of the training labels (``spatial.cv_trees`` trees on the columns the head
    reads), grown once per (assignment, fold) and shared by every choice scored on the same folds."""

    def __init__(self, x: np.ndarray, y: np.ndarray, n_classes: int, folds: List[List[np.ndarray]],
                 settings: PipelineSettings):
        self.x, self.y, self.n_classes, self.folds, self.settings = x, y, n_classes, folds, settings
        self._grown: Dict[Tuple[int, int], object] = {}

    def seed(self, rep: int, f: int) -> int:
        return self.settings.seed + f + 100 * rep

    def kept(self, rep: int, f: int) -> np.ndarray:
        return np.setdiff1d(np.arange(self.y.size), self.folds[rep][f])

    def get(self, rep: int, f: int):
        from ..heads.forest import train_forest

        if (rep, f) not in self._grown:
            keep = self.kept(rep, f)
            self._grown[(rep, f)] = train_forest(self.x[keep], self.y[keep], self.n_classes,
                                                 n_trees=self.settings.spatial.cv_trees, seed=self.seed(rep, f),
                                                 balanced=self.settings.head.class_weighting, oob=False)
        return self._grown[(rep, f)]


def repeated_folds(y: np.ndarray, settings: PipelineSettings) -> List[List[np.ndarray]]:
    """Stratified fold assignments of the training labels, ``spatial.repeats`` of them where labels are few:
    what every choice made on the training labels is scored on. [] when a choice cannot be made (fewer than 2
    labels in every class)."""
    from .spatial import cv_folds

    sp = settings.spatial
    counts = np.bincount(y)
    n_folds = int(min(sp.folds, counts[counts > 0].max()))
    if n_folds < 2:
        return []
    repeats = max(1, int(sp.repeats)) if y.size < sp.repeat_below else 1
    return [cv_folds(y, n_folds, settings.seed + 7919 * rep) for rep in range(repeats)]


@dataclass
class RegulariserChoice:
    regulariser: Regulariser
    selection: Optional[Dict] = None  # engine.heads.selection.Selection.to_dict(), None when fixed
    folds: int = 0

    def to_dict(self) -> Dict:
        return {**self.regulariser.to_dict(), "folds": self.folds, "selection": self.selection}


def choose_regulariser(reader: StackedReader, reps, extractor, labels: TrainingPixels, head, cv: FoldForests,
                       settings: PipelineSettings, progress: Progress) -> RegulariserChoice:
    """The spatial regulariser, chosen on the TRAINING labels only (``engine.heads.selection``: mean per-class
    recall, one-standard-error rule toward no regularisation).

    For each fold assignment, each fold's forest (``spatial.cv_trees`` trees, on the columns the final head
    reads) predicts the neighbourhoods of its held-out pixels from their windows' real features; each candidate
    regularises those out-of-fold patches (with the windows' guide planes) and is scored at the held-out pixels.
    """
    from ..heads.selection import select_simplest
    from .spatial import candidates, centre_regularised, choose_sigma

    sp = settings.spatial
    if sp.sigma is not None:
        return RegulariserChoice(Regulariser.gaussian(float(sp.sigma)))
    if sp.method == "none":
        return RegulariserChoice(Regulariser())
    folds = cv.folds
    if not folds or settings.head.kind != "forest":
        progress.log("Spatial regularisation: off (needs the forest head and at least 2 labels of a class)")
        return RegulariserChoice(Regulariser())
    cands = candidates(sp.method, sp)
    y = labels.class_index
    k_classes = labels.n_classes
    first = first_read_column(head, settings.head.include_spectrum)
    n_guide = 3 if any(c.needs_guide for c in cands) else 0
    n_folds, repeats = len(folds[0]), len(folds)
    fold_of = np.empty((repeats, y.size), np.int64)
    forests = []
    for rep, assignment in enumerate(folds):
        forests.append([])
        for f, held in enumerate(assignment):
            fold_of[rep, held] = f
            forests[rep].append(cv.get(rep, f))
            progress.step(0.3 * (rep * n_folds + f + 1) / (repeats * n_folds))
    r = max(c.halo for c in cands)
    s = 2 * r + 1
    patches = np.full((repeats, y.size, k_classes + n_guide, s, s), np.nan, np.float32)
    patch = settings.tiles.patch
    for item in _iter_label_windows(reader, reps, extractor, labels, settings, progress.sub(0.3, 0.9),
                                    run_network=first == 0, guide=n_guide > 0):
        (r0, c0), sel, xw, valid = item[:4]
        lr, lc = labels.rows[sel] - r0, labels.cols[sel] - c0
        guide = np.pad(item[4], ((0, 0), (r, r), (r, r)), constant_values=np.nan) if n_guide else None
        for rep in range(repeats):
            for f in np.unique(fold_of[rep, sel]):
                mine = fold_of[rep, sel] == f
                need = np.zeros((patch, patch), bool)  # the neighbourhoods of this fold's held-out pixels
                for a, b in zip(lr[mine], lc[mine]):
                    need[max(a - r, 0):a + r + 1, max(b - r, 0):b + r + 1] = True
                need &= valid
                probs = np.full((k_classes, patch, patch), np.nan, np.float32)
                pr, pc = np.nonzero(need)
                if pr.size:
                    probs[:, pr, pc] = forests[rep][f].predict_proba(xw[first:, pr, pc].T).T
                padded = np.pad(probs, ((0, 0), (r, r), (r, r)), constant_values=np.nan)
                for i, a, b in zip(sel[mine], lr[mine], lc[mine]):
                    patches[rep, i, :k_classes] = padded[:, a:a + s, b:b + s]
                    if n_guide:
                        patches[rep, i, k_classes:] = guide[:, a:a + s, b:b + s]
    if sp.selection == "accuracy":  # 0.2's rule (a benchmark control): Gaussian σ by OA over one assignment
        old = choose_sigma(patches[0, :, :k_classes], y, sp.candidates, n_folds)
        progress.log(f"Spatial regularisation (0.2 rule, OA): σ = {old.sigma:g} px")
        return RegulariserChoice(Regulariser.gaussian(old.sigma), {"rule": "accuracy", **old.to_dict()}, n_folds)
    if sp.selection not in ("one-se", "best"):
        raise ValueError(f"unknown selection rule {sp.selection!r}: use one-se, best or accuracy")
    correct = np.zeros((len(cands), y.size))
    for ci, cand in enumerate(cands):
        for rep in range(repeats):
            correct[ci] += centre_regularised(patches[rep], cand, n_guide).argmax(axis=1) == y
        progress.step(0.9 + 0.1 * (ci + 1) / len(cands))
    choice = select_simplest(correct / repeats, y, [c.label for c in cands], repeats, rule=sp.selection)
    progress.log(f"Spatial regularisation ({n_folds} folds x {repeats}): {choice.describe()}")
    return RegulariserChoice(cands[choice.chosen], choice.to_dict(), n_folds)


# ---------------------------------------------------------------------------------------------------------
# predict

def predict_scene(model: FittedModel, reader: StackedReader,
                  write: Callable[..., None],
                  progress: Optional[Progress] = None, batch_size: Optional[int] = None,
                  probabilities: bool = False, rows: Optional[Tuple[int, int]] = None,
                  class_names: Optional[Sequence[str]] = None) -> None:
    """Stream the scene: ``write(row, class_index [rows, W] (-1 = nodata), confidence [rows, W])``; with
    ``probabilities`` also the smoothed class probabilities the argmax used: ``write(row, index, conf,
    probs [K, rows, W])`` (NaN = nodata). ``rows=(first, stop)`` writes only those scene rows, identical to the
    same rows of the whole scene's prediction (a work unit of a large scene: ``engine.jobs.batch``).

    Each pixel's class probabilities come from its home window (``engine.tasks.tiling``), as its features did in
    training; they are regularised with the model's regulariser (``engine.tasks.spatial.RowSmoother``: a halo of
    rows, memory independent of the scene height; the edge-aware one is guided by the pixels' principal
    components, which travel with the probabilities as extra planes), then argmax. A class with training labels
    that no pixel receives is named in the log (``progress.log``).
    """
    from .spatial import RowSmoother
    from .tiling import predict_tiled

    progress = progress or Progress()
    first, stop = (0, reader.height) if rows is None else (int(rows[0]), int(rows[1]))
    reg = model.regulariser
    halo = reg.halo  # the regulariser reads this many rows beyond the range on either side
    n_guide = 3 if reg.needs_guide else 0
    span = (max(0, first - halo), min(reader.height, stop + halo))
    reps, extractor, head = model.representations, model.extractor, model.head
    include_spectrum = model.settings.head.include_spectrum
    n_classes = int(head.n_classes)
    run_network = first_read_column(head, include_spectrum) == 0  # a bands-only forest: skip the network

    def predict_patches(block: np.ndarray, need: np.ndarray) -> np.ndarray:
        x, valid = head_inputs(reader, reps, extractor, block, include_spectrum, run_network)
        use = need & valid  # the head runs once per valid pixel of the windows' cores
        probs = np.full((block.shape[0], block.shape[2], block.shape[3], n_classes), np.nan, np.float32)
        if use.any():
            probs[use] = head.predict_proba(x.transpose(0, 2, 3, 1)[use])
        probs = probs.transpose(0, 3, 1, 2)
        if n_guide:
            guides = np.stack([window_guide(reader, reps, b) for b in block])
            probs = np.concatenate([probs, guides], axis=1)
        return probs

    def write_rows(row: int, probs: np.ndarray) -> None:
        a, b = max(row, first), min(row + probs.shape[1], stop)  # drop the halo rows outside the range
        if a >= b:
            return
        row, probs = a, probs[:, a - row:b - row]
        nodata = np.isnan(probs).any(axis=0)
        filled = np.nan_to_num(probs, nan=-1.0)
        index = filled.argmax(axis=0).astype(np.int32)
        conf = filled.max(axis=0).astype(np.float32)
        index[nodata] = -1
        conf[nodata] = np.nan
        mapped[:] += np.bincount(index[~nodata], minlength=n_classes)[:n_classes]
        if probabilities:
            probs = probs.astype(np.float32, copy=True)
            probs[:, nodata] = np.nan
            write(row, index, conf, probs)
        else:
            write(row, index, conf)

    mapped = np.zeros(n_classes, np.int64)
    smoother = RowSmoother(reg, span[1], write_rows, n_guide=n_guide)
    predict_tiled(reader.height, reader.width, reader.read, predict_patches, n_classes + n_guide, smoother.push,
                  model.settings.tiles, progress=progress,
                  batch_size=batch_size or model.settings.features.batch_size, rows=span)
    smoother.finish()
    if rows is None:  # a row range of a scene may lack a class: only a whole map says one vanished
        report_vanished(model, mapped, progress, class_names)


def report_vanished(model: FittedModel, mapped: np.ndarray, progress: Progress,
                    class_names: Optional[Sequence[str]] = None) -> List[int]:
    """Classes that had training labels but received no pixel of the map: one log line naming them (a rare class
    must never disappear silently). Returns their indices."""
    names = list(class_names or [])
    counts = model.report.get("labels_per_class") or []
    gone = [k for k in range(len(mapped)) if mapped[k] == 0 and (k >= len(counts) or counts[k] > 0)]
    if gone and mapped.sum() > 0:
        what = ", ".join(f"{names[k] if k < len(names) else f'class {k + 1}'}"
                         + (f" ({counts[k]} training labels)" if k < len(counts) else "") for k in gone)
        progress.log(f"Warning: {len(gone)} class(es) with training labels received no pixel of this map: {what}. "
                     "They may be too rare or too similar to another class here; add labels, or check "
                     "the training report's per-class recall.")
    return gone


# ---------------------------------------------------------------------------------------------------------
# bundle payload

def bundle_payload(model: FittedModel) -> Tuple[Dict, Dict]:
    """(metadata, tensors) describing everything needed to predict again, nothing pickled."""
    import torch

    tensors = dict(model.backbone_tensors)
    tensors.update({f"head.{k}": v.detach().cpu() for k, v in model.head.state_dict().items()})
    metadata = {
        "settings": model.settings.to_dict(),
        "representations": model.representations.to_dict(),
        "backbone": model.backbone_info.to_dict(),
        "feature_groups": [list(g) for g in model.extractor.groups],
        "modalities": list(model.extractor.modalities),
        "group_sizes": model.group_sizes,
        "head": model.head.config,
        "spatial": model.regulariser.to_dict(),
        "training": model.report,
        "versions": {"engine": ENGINE_VERSION, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
    }
    return metadata, tensors


def from_bundle(metadata: Dict, tensors: Dict, device: str = "auto",
                checkpoint: Optional[str] = None) -> FittedModel:
    """Rebuild a :class:`FittedModel`; an ImageNet-based model needs its base checkpoint (verified by hash)."""
    from ..heads.classifier import load_head
    from ..networks.device import resolve_device
    from ..networks.features import FeatureExtractor
    from ..data.representations import RepresentationModel

    settings = PipelineSettings.from_dict(metadata["settings"])
    settings.device = device
    dev = resolve_device(device)
    info = BackboneInfo.from_dict(metadata["backbone"])
    model = restore_backbone(info, tensors, dev, checkpoint)
    extractor = FeatureExtractor(model, settings.features, list(metadata["modalities"]), dev)
    stored = [list(g) for g in metadata["feature_groups"]]
    if stored != [list(g) for g in extractor.groups]:
        raise ValueError(f"the model file's feature groups {stored} are not what its network and settings produce "
                         f"({[list(g) for g in extractor.groups]}): the file is damaged or was edited; train again")
    head_state = {k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")}
    head = load_head(metadata["head"], head_state)
    reps = RepresentationModel.from_dict(metadata["representations"])
    try:  # files before 0.2 had no smoothing, before 0.3 only a Gaussian σ
        regulariser = Regulariser.from_dict(metadata.get("spatial"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the model file's spatial regularisation is damaged ({exc}): train again") from exc
    return FittedModel(settings, reps, model, info, {}, extractor, head, list(metadata["group_sizes"]),
                       metadata.get("training", {}), regulariser=regulariser)


# ---------------------------------------------------------------------------------------------------------
# arrays in, predictions out (paper harness, benchmarks)

def fit_predict_arrays(hsi: np.ndarray, sar: Optional[np.ndarray], train_labels: np.ndarray,
                       settings: PipelineSettings, hsi_meta: Optional[Dict] = None,
                       sar_meta: Optional[Dict] = None, progress: Optional[Progress] = None,
                       backbone: Optional[PreparedBackbone] = None) -> np.ndarray:
    """hsi [B, H, W], sar [S, H, W] | None, train_labels [H, W] (0 = unlabelled, 1..K) → map [H, W] of 1..K.

    Nodata pixels come back as 0. ``backbone`` skips backbone training/adaptation (see ``fit``).
    """
    classes = np.unique(train_labels[train_labels > 0])
    rows, cols = np.nonzero(train_labels > 0)
    index = np.searchsorted(classes, train_labels[rows, cols])
    reader = StackedReader(ArrayReader(hsi), ArrayReader(sar) if sar is not None else None)
    labels = TrainingPixels(rows, cols, index, len(classes))
    progress = progress or Progress()
    hsi_meta = hsi_meta or {"band_count": hsi.shape[0]}
    model = fit(reader, hsi_meta, sar_meta, labels, settings, progress.sub(0.0, 0.5), backbone=backbone)
    out = np.zeros(train_labels.shape, dtype=np.int32)

    def write(row, index_rows, _conf):
        values = np.where(index_rows >= 0, classes[np.clip(index_rows, 0, None)], 0)
        out[row:row + index_rows.shape[0]] = values

    predict_scene(model, reader, write, progress.sub(0.5, 1.0))
    return out
