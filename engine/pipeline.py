"""Fit and predict on block readers: the whole method, without files, QGIS or GDAL.

``fit`` turns a scene (behind a :class:`~engine.readers.StackedReader`) and labelled pixels into a
:class:`FittedModel`; ``predict_scene`` streams class indices and confidences window by window.
``jobs.py`` wraps both with file I/O; the reproduction harness and GPU benchmarks call them directly.

Nothing here holds a full-scene array: representation statistics come from a streamed sample, backbone
training from a capped pool of random windows, training features from the windows that contain labels,
and prediction from ``tiling.predict_tiled``.
"""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import ENGINE_VERSION
from .progress import Progress
from .readers import ArrayReader, StackedReader, read_padded, sample_valid_pixels
from .settings import MODALITY_IDS, PipelineSettings


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
    representations: object  # RepresentationModel
    backbone: object  # ADMUNet with any FiLM delta applied
    backbone_info: Dict
    backbone_tensors: Dict  # what the bundle must carry: compact weights or the FiLM delta
    extractor: object  # FeatureExtractor
    head: object  # TrainedHead
    group_sizes: List[int]
    report: Dict = field(default_factory=dict)


def active_modalities(settings: PipelineSettings, has_sar: bool) -> List[str]:
    mods = [m for m in settings.modalities if m != "sar" or has_sar]
    if "prgb" not in mods:
        raise ValueError("the pRGB modality is the adaptation anchor and cannot be switched off")
    return mods


# ---------------------------------------------------------------------------------------------------------
# patch pool for backbone training / adaptation

class PoolSampler:
    """Random patches and modalities from a pre-read pool; pRGB is in every batch (the anchor)."""

    def __init__(self, pool: Dict[str, np.ndarray]):
        self.modalities = list(pool)
        self.pool = {m: np.nan_to_num(p, nan=0.0).astype(np.float32) for m, p in pool.items()}
        self.n = next(iter(self.pool.values())).shape[0]

    def sample(self, batch_size: int, generator=None):
        import torch

        g = generator if isinstance(generator, torch.Generator) else None
        idx = torch.randint(0, self.n, (batch_size,), generator=g)
        mod = torch.randint(0, len(self.modalities), (batch_size,), generator=g)
        mod[0] = self.modalities.index("prgb")
        flips = torch.rand(batch_size, 2, generator=g) < 0.5
        x = torch.empty(batch_size, 3, *self.pool[self.modalities[0]].shape[-2:])
        for i in range(batch_size):
            patch = torch.from_numpy(self.pool[self.modalities[int(mod[i])]][int(idx[i])])
            if flips[i, 0]:
                patch = patch.flip(-1)
            if flips[i, 1]:
                patch = patch.flip(-2)
            x[i] = patch
        y = torch.tensor([MODALITY_IDS[self.modalities[int(m)]] for m in mod], dtype=torch.long)
        return x, y


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
class PreparedBackbone:
    """A backbone ready for features, with what identifies it and what a file must carry to rebuild it."""

    model: object
    info: Dict
    tensors: Dict


def fit_scene_representations(reader: StackedReader, hsi_meta: Dict, sar_meta: Optional[Dict],
                              settings: PipelineSettings, progress: Progress):
    """Representation statistics (band choice, PCA, percentiles) from a streamed sample of valid pixels."""
    from .representations import fit_representations

    hsi_bad = set(hsi_meta.get("bad_bands") or [])
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
    """The ImageNet ADM checkpoint adapted through its FiLM path, or a compact backbone trained on the scene."""
    from .adaptation import adapt, apply_delta, train_compact_backbone
    from .backbone import load_backbone, weights_fingerprint
    from .device import resolve_device

    device = resolve_device(settings.device)
    modalities = active_modalities(settings, reader.sar is not None)
    pool = read_patch_pool(reader, reps, modalities, settings.backbone.patch_pool, settings.tiles.patch,
                           settings.seed, progress.sub(0.0, 0.1))
    sampler = PoolSampler(pool)
    work = progress.sub(0.1, 1.0)
    if settings.backbone.checkpoint:
        progress.log(f"Backbone: ImageNet ADM checkpoint {settings.backbone.checkpoint}")
        model = load_backbone(settings.backbone.checkpoint, device=device)
        info = {"kind": "checkpoint", "config": model.config.to_dict(), "fingerprint": weights_fingerprint(model),
                "checkpoint": str(settings.backbone.checkpoint), "modalities": modalities}
        tensors: Dict = {}
        if settings.adaptation.steps > 0:
            if device.type == "cpu":
                progress.log("Note: FiLM adaptation of the 296 M-parameter ImageNet network on a CPU is slow; "
                             "a CUDA GPU or fewer ADAPT_STEPS shortens it")
            result = adapt(model, sampler, settings.adaptation, seed=settings.seed, device=device, progress=work)
            apply_delta(model, result.delta)
            tensors = {f"film.{k}": v for k, v in result.delta.items()}
            info["adaptation"] = {"steps": settings.adaptation.steps, "final_loss": _tail_mean(result.losses)}
    else:
        progress.log(f"Backbone: compact ADM trained on this scene's own patches "
                     f"({settings.backbone.compact_steps} steps; no ImageNet checkpoint given)")
        model = train_compact_backbone(sampler, settings.backbone, seed=settings.seed, device=device, progress=work)
        tensors = {f"backbone.{k}": v.detach().cpu() for k, v in model.state_dict().items()}
        info = {"kind": "compact", "config": model.config.to_dict(), "fingerprint": weights_fingerprint(model),
                "modalities": modalities,
                "final_loss": _tail_mean(getattr(model, "train_losses", []))}
    model.eval()
    return PreparedBackbone(model, info, tensors)


def restore_backbone(info: Dict, tensors: Dict, device, checkpoint: Optional[str] = None):
    """Rebuild the backbone described by ``info`` from the file's tensors (and the base checkpoint)."""
    from .adaptation import apply_delta
    from .backbone import UNetConfig, build_backbone, load_backbone, weights_fingerprint

    if info["kind"] == "compact":
        model = build_backbone(UNetConfig.from_dict(info["config"]))
        state = {k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")}
        model.load_state_dict(state, strict=True)
        model.to(device)
    else:
        path = checkpoint or info.get("checkpoint")
        if not path:
            raise ValueError("this model was built on the ImageNet ADM checkpoint: give its path (BACKBONE)")
        model = load_backbone(path, device=device)
        if weights_fingerprint(model) != info["fingerprint"]:
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
    from .classifier import fit_head
    from .device import resolve_device, seed_everything
    from .features import FeatureExtractor

    progress = progress or Progress()
    t0 = time.perf_counter()
    seed_everything(settings.seed)
    device = resolve_device(settings.device)
    progress.log(f"Device: {device}")
    modalities = active_modalities(settings, reader.sar is not None)
    reps = fit_scene_representations(reader, hsi_meta, sar_meta, settings, progress.sub(0.0, 0.05))
    if backbone is None:
        backbone = prepare_backbone(reader, reps, settings, progress.sub(0.05, 0.55))
    else:
        progress.log(f"Backbone: given ({backbone.info['kind']}, fingerprint {backbone.info['fingerprint'][:12]})")
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
                    progress=progress.sub(0.85, 1.0), fusion=settings.features.fusion, n_classes=labels.n_classes,
                    spectrum_last=settings.head.include_spectrum)
    report = {"train_pixels": int(x.shape[0]), "feature_dim": int(x.shape[1]),
              "validation": getattr(head, "val_metrics", None),
              "feature_check": head.config.get("feature_check"), "seconds": round(time.perf_counter() - t0, 1),
              "device": str(device)}
    return FittedModel(settings, reps, backbone.model, backbone.info, backbone.tensors, extractor, head,
                       group_sizes, report)


def _tail_mean(values: Sequence[float], n: int = 20) -> Optional[float]:
    return float(np.mean(values[-n:])) if len(values) else None


def _home_origins(positions: np.ndarray, origins: np.ndarray, patch: int) -> np.ndarray:
    """Index of the window whose centre is nearest each position among the windows that contain it."""
    centre = origins + patch / 2.0
    dist = np.abs(positions[:, None] - centre[None, :])
    inside = (positions[:, None] >= origins[None, :]) & (positions[:, None] < origins[None, :] + patch)
    dist[~inside] = np.inf
    return dist.argmin(axis=1)


def window_inputs(reader: StackedReader, reps, modalities: Sequence[str], raw: np.ndarray,
                  spectrum: bool = True) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """One window's network input [M, 3, P, P] (NaN → 0) and, if asked, its spectrum [D, P, P] (NaN = nodata)."""
    hsi, sar = reader.split(raw)
    images = reps.apply(hsi, sar)
    stack = np.stack([np.nan_to_num(images[m], nan=0.0) for m in modalities])
    return stack, (reps.spectrum(hsi, sar) if spectrum else None)


def labelled_features(reader: StackedReader, reps, extractor, labels: TrainingPixels,
                      settings: PipelineSettings, progress: Progress) -> np.ndarray:
    """[N, D] head inputs for the labelled pixels, computing features only for windows that hold labels."""
    import torch

    from .tiling import tile_origins

    patch, stride = settings.tiles.patch, settings.tiles.stride
    orow = np.asarray(tile_origins(reader.height, patch, stride))
    ocol = np.asarray(tile_origins(reader.width, patch, stride))
    home_r = _home_origins(labels.rows, orow, patch)
    home_c = _home_origins(labels.cols, ocol, patch)
    windows = sorted(set(zip(home_r.tolist(), home_c.tolist())))
    out: Optional[np.ndarray] = None
    batch = max(1, settings.features.batch_size)
    for start in range(0, len(windows), batch):
        chunk = windows[start:start + batch]
        stacks, spectra = [], []
        for ir, ic in chunk:
            raw = read_padded(reader, int(orow[ir]), int(ocol[ic]), patch)
            stack, spec = window_inputs(reader, reps, extractor.modalities, raw, settings.head.include_spectrum)
            stacks.append(stack)
            if spec is not None:
                spectra.append(np.nan_to_num(spec, nan=0.0))
        feats = extractor(torch.from_numpy(np.stack(stacks).astype(np.float32))).numpy()
        for k, (ir, ic) in enumerate(chunk):
            sel = np.flatnonzero((home_r == ir) & (home_c == ic))
            lr, lc = labels.rows[sel] - orow[ir], labels.cols[sel] - ocol[ic]
            vec = feats[k][:, lr, lc].T
            if settings.head.include_spectrum:
                vec = np.concatenate([vec, spectra[k][:, lr, lc].T], axis=1)
            if out is None:
                out = np.zeros((labels.rows.size, vec.shape[1]), dtype=np.float32)
            out[sel] = vec
        progress.step(min(start + batch, len(windows)) / len(windows))
    assert out is not None
    return out


# ---------------------------------------------------------------------------------------------------------
# predict

def predict_scene(model: FittedModel, reader: StackedReader,
                  write: Callable[[int, np.ndarray, np.ndarray], None],
                  progress: Optional[Progress] = None, batch_size: Optional[int] = None) -> None:
    """Stream the scene: ``write(row, class_index [rows, W] (-1 = nodata), confidence [rows, W])``."""
    import torch

    from .tiling import predict_tiled

    progress = progress or Progress()
    reps, extractor, head = model.representations, model.extractor, model.head
    include_spectrum = model.settings.head.include_spectrum
    n_classes = int(head.n_classes)
    # a forest whose feature check kept the bands alone never reads the diffusion columns: skip the network
    check = head.config.get("feature_check") or {}
    run_network = check.get("diffusion_features_used", True) or not include_spectrum

    def predict_patches(block: np.ndarray) -> np.ndarray:
        b, _, p, q = block.shape
        stacks, spectra, valid = [], [], []
        for i in range(b):
            stack, spec = window_inputs(reader, reps, extractor.modalities, block[i])
            valid.append(~np.isnan(spec).any(axis=0))
            stacks.append(stack)
            spectra.append(np.nan_to_num(spec, nan=0.0))
        if run_network:
            feats = extractor(torch.from_numpy(np.stack(stacks).astype(np.float32))).numpy()
        else:
            feats = np.zeros((b, extractor.dim, p, q), np.float32)
        x = feats.transpose(0, 2, 3, 1).reshape(b * p * q, -1)
        if include_spectrum:
            x = np.concatenate([x, np.stack(spectra).transpose(0, 2, 3, 1).reshape(b * p * q, -1)], axis=1)
        probs = head.predict_proba(x.astype(np.float32)).reshape(b, p, q, n_classes).transpose(0, 3, 1, 2)
        probs = probs.astype(np.float32)
        probs[~np.stack(valid)[:, None, :, :].repeat(n_classes, axis=1)] = np.nan
        return probs

    def write_rows(row: int, probs: np.ndarray) -> None:
        nodata = np.isnan(probs).any(axis=0)
        filled = np.nan_to_num(probs, nan=-1.0)
        index = filled.argmax(axis=0).astype(np.int32)
        conf = filled.max(axis=0).astype(np.float32)
        index[nodata] = -1
        conf[nodata] = np.nan
        write(row, index, conf)

    predict_tiled(reader.height, reader.width, reader.read, predict_patches, n_classes, write_rows,
                  model.settings.tiles, progress=progress,
                  batch_size=batch_size or model.settings.features.batch_size)


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
        "backbone": model.backbone_info,
        "feature_groups": [list(g) for g in model.extractor.groups],
        "modalities": list(model.extractor.modalities),
        "group_sizes": model.group_sizes,
        "head": model.head.config,
        "training": model.report,
        "versions": {"engine": ENGINE_VERSION, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
    }
    return metadata, tensors


def from_bundle(metadata: Dict, tensors: Dict, device: str = "auto",
                checkpoint: Optional[str] = None) -> FittedModel:
    """Rebuild a :class:`FittedModel`; an ImageNet-based model needs its base checkpoint (verified by hash)."""
    from .classifier import load_head
    from .device import resolve_device
    from .features import FeatureExtractor
    from .representations import RepresentationModel

    settings = PipelineSettings.from_dict(metadata["settings"])
    settings.device = device
    dev = resolve_device(device)
    info = metadata["backbone"]
    model = restore_backbone(info, tensors, dev, checkpoint)
    extractor = FeatureExtractor(model, settings.features, list(metadata["modalities"]), dev)
    head_state = {k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")}
    head = load_head(metadata["head"], head_state)
    reps = RepresentationModel.from_dict(metadata["representations"])
    return FittedModel(settings, reps, model, info, {}, extractor, head, list(metadata["group_sizes"]),
                       metadata.get("training", {}))


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
    hsi_meta = hsi_meta or {"band_count": hsi.shape[0], "wavelengths_nm": None, "bad_bands": []}
    model = fit(reader, hsi_meta, sar_meta, labels, settings, progress.sub(0.0, 0.5), backbone=backbone)
    out = np.zeros(train_labels.shape, dtype=np.int32)

    def write(row, index_rows, _conf):
        values = np.where(index_rows >= 0, classes[np.clip(index_rows, 0, None)], 0)
        out[row:row + index_rows.shape[0]] = values

    predict_scene(model, reader, write, progress.sub(0.5, 1.0))
    return out
