"""Offline pretraining of the shipped remote-sensing prior: an ADM denoiser on many real scenes.

UniDiff adapts a *pretrained* frozen diffusion U-Net through its FiLM path; it never trains the U-Net on the
target scene. The ImageNet ADM (296 M parameters, 1.2 GB) is out of reach offline on a CPU, so the plugin ships
a compact ADM pretrained here with the same ε-prediction objective (Ho et al. 2020; Dhariwal & Nichol 2021) on
the product's own representations (pRGB, PCA, SAR Pauli) of unlabelled Sentinel-2, Landsat-8, LEVIR-CD RGB and
SAR scenes, the modality entering as the class label — so the path UniDiff adapts is the one pretrained here.

Torch and numpy only (no GDAL): the corpus arrives as in-memory images; ``scripts/pretrain_prior.py`` reads
the files. Training is resumable: the full state (weights, EMA, optimiser, step, random generator) is saved
every ``checkpoint_every`` steps, and a resumed run continues the same random stream, so an interrupted and
a straight run give the same weights.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from .adaptation import ValidWindows, denoise_loss
from ..files import atomic_path
from .backbone import COMPACT_64, ADMUNet, UNetConfig, build_backbone
from .diffusion import CosineSchedule
from ..progress import Progress
from ..settings import MODALITY_IDS


@dataclass
class CorpusScene:
    """One scene of the corpus: modality → float32 [3, H, W] in [-1, 1] on one grid, NaN = nodata."""

    name: str
    images: Dict[str, np.ndarray]
    weight: float = 1.0  # relative sampling probability of the scene


class CorpusSampler:
    """Random 64×64 crops (with flips) of random scenes and modalities; mostly-nodata crops are redrawn.

    All randomness comes from the torch generator passed to :meth:`sample`, so a saved generator state
    reproduces the stream exactly.
    """

    def __init__(self, scenes: Sequence[CorpusScene], patch: int = 64, max_nodata: float = 0.25, tries: int = 8):
        if not scenes:
            raise ValueError("the pretraining corpus is empty")
        self.patch, self.max_nodata, self.tries = int(patch), float(max_nodata), int(tries)
        self.scenes = []
        for s in scenes:
            unknown = [m for m in s.images if m not in MODALITY_IDS]
            if unknown:
                raise ValueError(f"scene {s.name}: unknown modalities {unknown}")
            shapes = {tuple(a.shape) for a in s.images.values()}
            if len(shapes) != 1:
                raise ValueError(f"scene {s.name}: modalities on different grids {shapes}")
            _, h, w = shapes.pop()
            if h < self.patch or w < self.patch:
                raise ValueError(f"scene {s.name} ({h}x{w}) is smaller than one {self.patch}-pixel patch")
            valid = np.all([np.isfinite(a).all(axis=0) for a in s.images.values()], axis=0)
            windows = ValidWindows(valid, self.patch)
            images = {m: np.nan_to_num(a.astype(np.float32), nan=0.0) for m, a in s.images.items()}
            self.scenes.append((s.name, images, windows, h, w))
        weights = np.array([s.weight for s in scenes], dtype=np.float64)
        self.probs = torch.tensor(weights / weights.sum(), dtype=torch.float64)

    def sample(self, batch_size: int, generator: torch.Generator):
        """(x [B, 3, P, P] float32, y [B] long modality ids)."""
        p = self.patch
        x = np.empty((batch_size, 3, p, p), np.float32)
        y = np.empty(batch_size, np.int64)
        scene_idx = torch.multinomial(self.probs, batch_size, replacement=True, generator=generator).tolist()
        draws = torch.rand(batch_size, 3 + 2 * self.tries, generator=generator).numpy()
        for i, k in enumerate(scene_idx):
            _, images, windows, h, w = self.scenes[k]
            mods = list(images)
            m = mods[min(int(draws[i, 0] * len(mods)), len(mods) - 1)]
            best, best_frac = (0, 0), -1.0
            for j in range(self.tries):
                r = min(int(draws[i, 3 + 2 * j] * (h - p + 1)), h - p)
                c = min(int(draws[i, 4 + 2 * j] * (w - p + 1)), w - p)
                frac = windows.fraction(r, c)
                if frac > best_frac:
                    best, best_frac = (r, c), frac
                if frac >= 1.0 - self.max_nodata:
                    break
            r, c = best
            crop = images[m][:, r:r + p, c:c + p]
            if draws[i, 1] < 0.5:
                crop = crop[:, :, ::-1]
            if draws[i, 2] < 0.5:
                crop = crop[:, ::-1, :]
            x[i] = crop
            y[i] = MODALITY_IDS[m]
        return torch.from_numpy(x), torch.from_numpy(y)


@dataclass
class PretrainSettings:
    steps: int = 20_000
    batch_size: int = 8
    lr: float = 2e-3
    warmup: int = 300  # linear warm-up, then cosine decay to lr_floor × lr
    lr_floor: float = 0.05
    ema_decay: float = 0.999  # the shipped weights are the EMA (standard for diffusion models)
    weight_decay: float = 0.0
    seed: int = 0
    checkpoint_every: int = 250
    config: Dict = field(default_factory=COMPACT_64.to_dict)


@dataclass
class PretrainResult:
    model: ADMUNet  # EMA weights loaded
    losses: List[float]
    steps: int
    seconds: float  # wall time of this process (a resumed run adds its own)


def _lr_at(step: int, s: PretrainSettings) -> float:
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    frac = (step - s.warmup) / max(1, s.steps - s.warmup)
    return s.lr * (s.lr_floor + (1.0 - s.lr_floor) * 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0))))


def pretrain(sampler: CorpusSampler, settings: PretrainSettings, workdir: os.PathLike,
             progress: Optional[Progress] = None) -> PretrainResult:
    """Train every weight of a fresh ADM on the corpus; resume from ``workdir/state.pt`` when present."""
    progress = progress or Progress()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    state_path = workdir / "state.pt"
    config = UNetConfig.from_dict(settings.config)
    model = build_backbone(config, seed=settings.seed)
    ema = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    gen = torch.Generator().manual_seed(settings.seed)
    losses: List[float] = []
    start = 0
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state["settings"] != _settings_key(settings):
            raise ValueError(f"{state_path} was written with other pretraining settings: use another work folder")
        model.load_state_dict(state["model"])
        ema = dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        losses = [float(v) for v in state["losses"].tolist()]
        start = int(state["step"])
        progress.log(f"Resuming at step {start} of {settings.steps}")
    schedule = CosineSchedule()
    model.train()
    t0 = time.perf_counter()
    for step in range(start, settings.steps):
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, settings)
        x0, y = sampler.sample(settings.batch_size, gen)
        loss = denoise_loss(model, x0, y, gen, schedule, torch.device("cpu"))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for n, p in model.named_parameters():
                ema[n].mul_(settings.ema_decay).add_(p.detach(), alpha=1.0 - settings.ema_decay)
        losses.append(float(loss.detach()))
        done = step + 1
        if done % settings.checkpoint_every == 0 or done == settings.steps:
            with atomic_path(str(state_path)) as tmp:  # a kill mid-write leaves the previous state intact
                torch.save({"settings": _settings_key(settings), "model": model.state_dict(), "ema": ema,
                            "optimizer": opt.state_dict(), "generator": gen.get_state(),
                            "losses": torch.tensor(losses, dtype=torch.float32), "step": done}, tmp)
            rate = (done - start) / max(time.perf_counter() - t0, 1e-9)
            progress.log(f"step {done}/{settings.steps}  loss(last {settings.checkpoint_every}) "
                         f"{np.mean(losses[-settings.checkpoint_every:]):.4f}  lr {_lr_at(step, settings):.2e}  "
                         f"{rate:.2f} steps/s")
        progress.step(done / settings.steps)
    model.load_state_dict({**model.state_dict(), **ema})
    model.eval()
    return PretrainResult(model, losses, settings.steps, time.perf_counter() - t0)


def _settings_key(settings: PretrainSettings) -> str:
    """What must match to resume (the checkpoint cadence may change)."""
    d = asdict(settings)
    d.pop("checkpoint_every")
    return repr(sorted(d.items()))
