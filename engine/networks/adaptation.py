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
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .backbone import COMPACT_64, ADMUNet, UNetConfig, build_backbone, weights_fingerprint
from .device import autocast, resolve_device, seeded
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


# ---------------------------------------------------------------------------------------------- time budget
MIN_USEFUL_FRACTION = 0.1  # a capped adaptation shorter than this share of the schedule is not worth running
PROBE_BATCH_CPU = 1  # the timed step on a CPU runs at this batch and is scaled (CPU cost grows ~linearly)
WARM_ENOUGH_S = 2.0  # a first pass this long is the measurement: its one-off costs are small beside it


@dataclass(frozen=True)
class AdaptPlan:
    """What Stage A will run, decided from one timed step before any long work (logged with its reason)."""

    action: str  # "adapt" (the schedule as asked), "capped" (fewer steps, to fit the budget), "untrained"
    steps: int
    batch: int
    seconds_per_step: float
    estimate_s: float  # of the adaptation as planned (the schedule's for "untrained")
    why: str


def duration_text(seconds: float) -> str:
    """3.2 → '3 s', 4000 → '1.1 h': estimates in the log."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def plan_adaptation(steps: int, batch: int, seconds_per_step: float, budget_s: Optional[float],
                    may_change: bool) -> AdaptPlan:
    """The schedule when it fits the budget (or when it was asked for explicitly: ``may_change`` False); else as
    many steps as fit, when that is at least :data:`MIN_USEFUL_FRACTION` of it; else the untrained network."""
    full = steps * seconds_per_step
    if not may_change or not budget_s or budget_s <= 0 or full <= budget_s:
        why = ("asked for explicitly" if not may_change else
               "no time budget" if not budget_s or budget_s <= 0 else
               f"fits the time budget of {duration_text(budget_s)}")
        return AdaptPlan("adapt", steps, batch, seconds_per_step, full, why)
    fit = int(budget_s // seconds_per_step) if seconds_per_step > 0 else steps
    useful = max(1, int(np.ceil(MIN_USEFUL_FRACTION * steps)))
    if fit >= useful:
        return AdaptPlan("capped", fit, batch, seconds_per_step, fit * seconds_per_step,
                         f"the {steps} steps would take about {duration_text(full)}, over the time budget of "
                         f"{duration_text(budget_s)}: capped at the {fit} steps that fit")
    return AdaptPlan("untrained", 0, batch, seconds_per_step, full,
                     f"FiLM adaptation of {steps} steps would take about {duration_text(full)} on this device and "
                     f"the time budget of {duration_text(budget_s)} fits only {fit} (under "
                     f"{int(MIN_USEFUL_FRACTION * 100)} % of them)")


def time_adapt_step(model: ADMUNet, settings: AdaptSettings, batch: int, *, device: Union[str, torch.device],
                    seed: int = 0, modality_ids: Sequence[int] = (1,)) -> float:
    """Seconds one FiLM adaptation step at ``batch`` takes on ``device``, measured, not guessed: a forward and
    backward pass of the trainable path on random patches (after a warm-up pass when the first is short). On a
    CPU the pass runs at :data:`PROBE_BATCH_CPU` and is scaled to ``batch``, so the estimate comes in seconds even
    for the ImageNet ADM. Nothing of the model changes (no optimiser step, gradients and flags put back, global RNG restored)."""
    import time

    device = resolve_device(device)
    _check_conditional(model)  # the same refusal adapt() gives, before any pass
    probe = batch if device.type == "cuda" else max(1, min(int(batch), PROBE_BATCH_CPU))
    names = set(trainable_parameter_names(model, settings.scope))
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    grads = {n: p.grad for n, p in model.named_parameters()}
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    x0 = torch.rand(probe, 3, model.config.image_size, model.config.image_size, generator=gen) * 2 - 1
    ids = list(modality_ids) or [1]
    y = torch.tensor([ids[i % len(ids)] for i in range(probe)], dtype=torch.long)
    schedule = CosineSchedule()
    was_training = model.training
    model.to(device)
    seconds = float("inf")
    try:
        for n, p in model.named_parameters():
            p.requires_grad_(n in names)
        model.train()
        with seeded(int(seed), device):
            for _ in range(2):  # a short first pass is mostly one-off costs (allocation, kernel choice): then
                if device.type == "cuda":  # the second counts; a long one (the ImageNet ADM on a CPU) is the answer
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                denoise_loss(model, x0, y, gen, schedule, device).backward()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds = time.perf_counter() - t0
                if seconds > WARM_ENOUGH_S:
                    break
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
            p.grad = grads[n]
        model.train(was_training)
    return seconds * batch / probe


# ---------------------------------------------------------------------------------------------- sampling
class ValidWindows:
    """Share of valid pixels in any ``patch``×``patch`` window of a [H, W] mask in O(1) (summed-area table): how
    the pretraining corpus sampler redraws mostly-nodata crops."""

    def __init__(self, valid: np.ndarray, patch: int):
        self.patch = int(patch)
        self._sat = np.pad(np.asarray(valid).astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))

    def fraction(self, r: int, c: int) -> float:
        p, s = self.patch, self._sat
        return float(s[r + p, c + p] - s[r, c + p] - s[r + p, c] + s[r, c]) / float(p * p)


class PoolSampler:
    """Random windows and modalities from a pool read from the scene (``landcover.read_patch_pool``: mostly-valid
    windows, each in every modality); pRGB, when pooled, is item 0 of every batch (UniDiff's anchor); random flips.

    ``pool``: modality → float32 [N, 3, P, P] in [-1, 1], NaN = nodata (→ 0).
    """

    def __init__(self, pool: Dict[str, np.ndarray]):
        self.modalities = list(pool)
        self.pool = {m: np.nan_to_num(p, nan=0.0).astype(np.float32) for m, p in pool.items()}
        self.n = next(iter(self.pool.values())).shape[0]

    def sample(self, batch_size: int, generator=None):
        g = generator if isinstance(generator, torch.Generator) else None
        idx = torch.randint(0, self.n, (batch_size,), generator=g)
        mod = torch.randint(0, len(self.modalities), (batch_size,), generator=g)
        if "prgb" in self.modalities:
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
    try:
        with seeded(int(seed), device):  # dropout (the ImageNet ADM has 0.1) draws from torch's global generator
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
    finally:
        model.eval()
    return losses, ema


def adapt(model: ADMUNet, sampler, settings: AdaptSettings, *, seed: int,
          device: Union[str, torch.device] = "cpu", progress: Optional[Progress] = None) -> AdaptResult:
    """Train the FiLM path (``settings.scope``) on the sampler's patches; return the delta, model unchanged in
    its frozen parts. The model keeps the trained values (apply the delta elsewhere to reproduce it)."""
    progress = progress or Progress()
    device = resolve_device(device)
    _check_conditional(model)
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


def _check_conditional(model: ADMUNet) -> None:
    if model.config.num_classes is None or model.config.num_classes <= max(MODALITY_IDS.values()):
        raise ValueError(f"backbone {model.config.name!r} has {model.config.num_classes} classes; modality "
                         f"conditioning needs ids up to {max(MODALITY_IDS.values())}")


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
