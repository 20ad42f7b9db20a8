"""Stage A: teach the denoiser the scene's modalities — FiLM adaptation of a frozen ADM, or a compact backbone.

UniDiff's idea: the modality enters as the class label (rows 1–4 of ``label_emb``), so the network's own
FiLM path (``emb_layers`` → scale/shift of every residual block) is what adapts. Only ``label_emb`` and the
decoder's ``emb_layers`` train (≈5 % of ADM ImageNet-64); everything else is frozen and never reaches the
optimiser, so weight decay cannot touch it. The result is a *delta* (trained tensors only) tied to the base
weights by their fingerprint. Users without the 1.2 GB checkpoint get ``train_compact_backbone``: a small
ADM trained from scratch on the scene's own patches with the same objective.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from .backbone import COMPACT_64, ADMUNet, UNetConfig, build_backbone, weights_fingerprint
from .device import autocast, resolve_device
from .diffusion import CosineSchedule, q_sample
from ..progress import Progress
from ..settings import MODALITY_IDS, PRESET_LR, AdaptSettings, BackboneSettings
# FiLM adaptation length when AdaptSettings leaves it to the backbone: the paper's 2000 steps at batch 32 for
# the ImageNet ADM; for the shipped compact prior the steps were chosen from a loss/accuracy-vs-steps curve
# measured on the evaluation scenes' training labels only (BENCHMARKS.md, "Adaptation length")
IMAGENET_ADAPT = (2000, 32)
PRIOR_ADAPT = (100, 8)


def adapt_schedule(model: ADMUNet, settings: AdaptSettings) -> tuple:
    """(steps, batch) for this backbone: the settings' values, or the backbone's defaults where None."""
    big = model.config.num_classes is not None and model.config.num_classes >= 1000
    steps, batch = IMAGENET_ADAPT if big else PRIOR_ADAPT
    return (int(settings.steps) if settings.steps is not None else steps,
            int(settings.batch_size) if settings.batch_size is not None else batch)


# ---------------------------------------------------------------------------------------------- sampling
def _randint(gen, high: int, size: int) -> np.ndarray:
    if isinstance(gen, np.random.Generator):
        return gen.integers(0, high, size)
    return torch.randint(0, high, (size,), generator=gen).numpy()


class ValidWindows:
    """Share of valid pixels in any ``patch``×``patch`` window of a [H, W] mask in O(1) (summed-area table): how
    the patch samplers redraw mostly-nodata crops."""

    def __init__(self, valid: np.ndarray, patch: int):
        self.patch = int(patch)
        self._sat = np.pad(np.asarray(valid).astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))

    def fraction(self, r: int, c: int) -> float:
        p, s = self.patch, self._sat
        return float(s[r + p, c + p] - s[r, c + p] - s[r + p, c] + s[r, c]) / float(p * p)


class PatchSampler:
    """Random mostly-valid crops with flips from in-memory scene images, pRGB in every batch.

    ``images``: modality → float32 [3, H, W] in [-1, 1], NaN = nodata. ``valid`` (optional [H, W] bool)
    defaults to "finite in every modality". Scenes smaller than ``patch`` are edge-padded.
    """

    def __init__(self, images: Mapping[str, np.ndarray], valid: Optional[np.ndarray] = None, patch: int = 64,
                 max_nodata: float = 0.5, tries: int = 10):
        if "prgb" not in images:
            raise ValueError("PatchSampler needs the 'prgb' image: it is the adaptation anchor in every batch")
        unknown = [m for m in images if m not in MODALITY_IDS]
        if unknown:
            raise ValueError(f"unknown modalities {unknown}; known: {sorted(MODALITY_IDS)}")
        shapes = {m: tuple(a.shape) for m, a in images.items()}
        first = shapes["prgb"]
        if len(first) != 3 or first[0] != 3 or any(s != first for s in shapes.values()):
            raise ValueError(f"every image must be [3, H, W] on one grid, got {shapes}")
        self.patch = int(patch)
        self.modalities = list(images)
        self.max_nodata = float(max_nodata)
        self.tries = int(tries)
        h, w = first[1:]
        ph, pw = max(self.patch - h, 0), max(self.patch - w, 0)
        pad = ((0, 0), (0, ph), (0, pw))
        self.images = {m: np.pad(np.asarray(a, np.float32), pad, mode="edge") for m, a in images.items()}
        if valid is None:
            valid = np.all([np.isfinite(a).all(axis=0) for a in images.values()], axis=0)
        valid = np.pad(np.asarray(valid, bool), pad[1:], mode="edge")
        self.height, self.width = valid.shape
        self._valid = ValidWindows(valid, self.patch)

    def sample(self, batch_size: int, generator=None):
        """(x [B, 3, P, P] float32 with NaN → 0, y [B] long modality ids); item 0 is always pRGB."""
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        p = self.patch
        mods = _randint(gen, len(self.modalities), batch_size)
        mods[0] = self.modalities.index("prgb")
        flips = _randint(gen, 4, batch_size)
        x = np.empty((batch_size, 3, p, p), np.float32)
        for i in range(batch_size):
            rows = _randint(gen, self.height - p + 1, self.tries)
            cols = _randint(gen, self.width - p + 1, self.tries)
            best, best_frac = 0, -1.0
            for j in range(self.tries):
                frac = self._valid.fraction(int(rows[j]), int(cols[j]))
                if frac > best_frac:
                    best, best_frac = j, frac
                if frac >= 1.0 - self.max_nodata:
                    best = j
                    break
            r, c = int(rows[best]), int(cols[best])
            crop = self.images[self.modalities[int(mods[i])]][:, r:r + p, c:c + p]
            if flips[i] & 1:
                crop = crop[:, :, ::-1]
            if flips[i] & 2:
                crop = crop[:, ::-1, :]
            x[i] = crop
        np.nan_to_num(x, copy=False, nan=0.0)
        y = torch.tensor([MODALITY_IDS[self.modalities[int(m)]] for m in mods], dtype=torch.long)
        return torch.from_numpy(x), y


# ---------------------------------------------------------------------------------------------- FiLM scope
def trainable_parameter_names(model: torch.nn.Module, scope: str = "decoder") -> List[str]:
    """"decoder": label_emb + output_blocks.*.emb_layers (UniDiff); "all": label_emb + every emb_layers."""
    if scope not in ("decoder", "all"):
        raise ValueError(f"unknown adaptation scope {scope!r}: use 'decoder' or 'all'")
    names = []
    for name, _ in model.named_parameters():
        if name.startswith("label_emb."):
            names.append(name)
        elif ".emb_layers." in name and (scope == "all" or name.startswith("output_blocks.")):
            names.append(name)
    if not any(n.startswith("label_emb.") for n in names):
        raise ValueError("the backbone has no label_emb: a class-conditional model is needed for modality "
                         "conditioning")
    return names


@dataclass
class AdaptResult:
    delta: Dict[str, torch.Tensor]  # trained tensors only, CPU clones
    base_fingerprint: str  # weights_fingerprint of the base model the delta applies to
    losses: List[float] = field(default_factory=list)
    lr: float = 0.0


def resolve_lr(settings: AdaptSettings) -> float:
    """An lr changed from the dataclass default wins; otherwise the preset's (paper 3e-3, public 1e-4)."""
    if settings.preset not in PRESET_LR:
        raise ValueError(f"unknown adaptation preset {settings.preset!r}: use {sorted(PRESET_LR)}")
    if float(settings.lr) != AdaptSettings.lr:
        return float(settings.lr)
    return PRESET_LR[settings.preset]


def denoise_loss(model: ADMUNet, x0: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
                 schedule: CosineSchedule, device: torch.device) -> torch.Tensor:
    """ε-prediction MSE at t ~ U[0, T): t and ε drawn from the CPU ``gen`` so any device gives the same draws."""
    t = torch.randint(0, schedule.num_steps, (x0.shape[0],), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    x0, y, t, noise = x0.to(device), y.to(device), t.to(device), noise.to(device)
    xt = q_sample(x0, t, noise, schedule)
    with autocast(device):
        out = model(xt, t, y)
    eps = out[:, : x0.shape[1]].float()  # learned-sigma models: first 3 channels are ε
    return F.mse_loss(eps, noise)


def _denoise_loop(model: ADMUNet, params: Dict[str, torch.nn.Parameter], sampler, *, steps: int,
                  batch_size: int, lr: float, weight_decay: float, ema_decay: Optional[float], seed: int,
                  device: torch.device, progress: Progress) -> tuple:
    """ε-MSE training of ``params`` only; all randomness from one CPU generator (device-independent)."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    schedule = CosineSchedule()
    opt = torch.optim.AdamW(list(params.values()), lr=lr, weight_decay=weight_decay)
    ema = {n: p.detach().clone() for n, p in params.items()} if ema_decay else None
    losses: List[float] = []
    model.train()
    for step in range(int(steps)):
        x0, y = sampler.sample(batch_size, gen)
        loss = denoise_loss(model, x0, y, gen, schedule, device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            with torch.no_grad():
                for n, p in params.items():
                    ema[n].mul_(ema_decay).add_(p.detach(), alpha=1.0 - ema_decay)
        losses.append(float(loss.detach()))
        progress.step((step + 1) / steps)
    model.eval()
    return losses, ema


def adapt(model: ADMUNet, sampler, settings: AdaptSettings, *, seed: int,
          device: Union[str, torch.device] = "cpu", progress: Optional[Progress] = None) -> AdaptResult:
    """Train the FiLM path (``settings.scope``) on the sampler's patches; return the delta, model unchanged in
    its frozen parts. The model keeps the trained values (apply the delta elsewhere to reproduce it)."""
    progress = progress or Progress()
    device = resolve_device(device)
    if model.config.num_classes is None or model.config.num_classes <= max(MODALITY_IDS.values()):
        raise ValueError(f"backbone {model.config.name!r} has {model.config.num_classes} classes; modality "
                         f"conditioning needs ids up to {max(MODALITY_IDS.values())}")
    names = set(trainable_parameter_names(model, settings.scope))
    model.to(device)
    base = weights_fingerprint(model)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    params = {}
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
        if n in names:
            params[n] = p
    lr = resolve_lr(settings)
    steps, batch = adapt_schedule(model, settings)
    n_train = sum(p.numel() for p in params.values())
    n_all = sum(p.numel() for p in model.parameters())
    progress.log(f"FiLM adaptation: {n_train:,} of {n_all:,} parameters ({100.0 * n_train / n_all:.2f} %), "
                 f"scope {settings.scope}, lr {lr:g} (preset {settings.preset}), {steps} steps, "
                 f"batch {batch}, device {device}")
    try:
        losses, ema = _denoise_loop(model, params, sampler, steps=steps, batch_size=batch,
                                    lr=lr, weight_decay=settings.weight_decay, ema_decay=settings.ema_decay,
                                    seed=seed, device=device, progress=progress)
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
    source = ema if ema is not None else {n: p.detach() for n, p in params.items()}
    delta = {n: v.detach().to("cpu").clone() for n, v in source.items()}
    if ema is not None:
        apply_delta(model, delta)
    return AdaptResult(delta=delta, base_fingerprint=base, losses=losses, lr=lr)


def apply_delta(model: torch.nn.Module, delta: Mapping[str, torch.Tensor]) -> None:
    """Copy adapted tensors into ``model``; names and shapes must match exactly."""
    params = dict(model.named_parameters())
    missing = [n for n in delta if n not in params]
    if missing:
        raise ValueError(f"the adaptation delta has {len(missing)} tensors this backbone lacks (e.g. "
                         f"{missing[:3]}): it was made for a different backbone configuration")
    wrong = [(n, tuple(v.shape), tuple(params[n].shape)) for n, v in delta.items()
             if tuple(v.shape) != tuple(params[n].shape)]
    if wrong:
        n, a, b = wrong[0]
        raise ValueError(f"adaptation delta tensor {n!r} has shape {a} but the backbone's is {b} "
                         f"({len(wrong)} mismatches): it was made for a different backbone configuration")
    with torch.no_grad():
        for n, v in delta.items():
            params[n].copy_(v.to(device=params[n].device, dtype=params[n].dtype))


# ---------------------------------------------------------------------------------------------- compact
def train_compact_backbone(sampler, settings: BackboneSettings, *, seed: int,
                           device: Union[str, torch.device] = "cpu", progress: Optional[Progress] = None,
                           config: UNetConfig = COMPACT_64) -> ADMUNet:
    """A fresh small ADM trained (all parameters) to denoise the scene's own patches, modality-conditioned
    (``sampler`` is never drawn from, and may be None, with 0 steps)."""
    progress = progress or Progress()
    device = resolve_device(device)
    if config.num_classes is None or config.num_classes <= max(MODALITY_IDS.values()):
        raise ValueError(f"config {config.name!r} needs num_classes > {max(MODALITY_IDS.values())} "
                         "for modality conditioning")
    model = build_backbone(config, seed=seed).to(device)
    params = dict(model.named_parameters())
    n = sum(p.numel() for p in params.values())
    if settings.compact_steps > 0:
        progress.log(f"Backbone: compact {config.name} ({n:,} parameters) trained from scratch on the scene's "
                     f"patches: {settings.compact_steps} steps, batch {settings.compact_batch_size}, "
                     f"lr {settings.compact_lr:g}, device {device}")
    losses, _ = _denoise_loop(model, params, sampler, steps=settings.compact_steps,
                              batch_size=settings.compact_batch_size, lr=settings.compact_lr, weight_decay=0.0,
                              ema_decay=None, seed=seed + 1, device=device, progress=progress)
    if losses:
        tail = losses[-20:]
        progress.log(f"Compact backbone: denoising loss {np.mean(losses[:20]):.4f} → {np.mean(tail):.4f}")
    model.train_losses = losses  # type: ignore[attr-defined]
    return model
