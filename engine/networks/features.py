"""Stage B: per-pixel diffusion features from the (adapted) frozen backbone.

Each patch of each modality is noised to timestep t with ONE fixed, seeded noise tensor (the same for every
patch, modality and run: features must be a deterministic function of the pixels), run through the network
up to the deepest requested decoder block only, and every requested block output is bilinearly upsampled
(align_corners=False) to the patch size.

Channel order of the result (``.groups``): modality-major in the order given (pRGB | PCA | SAR ...), then
timestep in ``settings.timesteps`` order, then block in ``blocks`` order.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .backbone import default_feature_blocks
from .device import autocast, resolve_device
from .diffusion import CosineSchedule, fixed_noise, q_sample
from ..settings import MODALITY_IDS, FeatureSettings


class FeatureExtractor:
    def __init__(self, model, settings: FeatureSettings, modalities: Sequence[str],
                 device: Union[str, torch.device] = "cpu"):
        unknown = [m for m in modalities if m not in MODALITY_IDS]
        if unknown or not modalities:
            raise ValueError(f"unknown or no modalities {list(modalities)}; known: {sorted(MODALITY_IDS)}")
        self.model = model
        self.settings = settings
        self.modalities = list(modalities)
        self.device = resolve_device(device)
        self.blocks = tuple(int(b) for b in (settings.blocks or default_feature_blocks(model)))
        self.timesteps = tuple(int(t) for t in settings.timesteps)
        if not self.timesteps:
            raise ValueError("FeatureSettings.timesteps is empty: give at least one timestep (e.g. 200)")
        info = {i: ch for i, ch, _ in model.decoder_blocks()}
        bad = [b for b in self.blocks if b not in info]
        if bad:
            raise ValueError(f"feature blocks {bad} do not exist in backbone {model.config.name!r}; decoder "
                             f"blocks are 0..{len(info) - 1}")
        self.groups: List[Tuple[str, int, int, int]] = [
            (m, t, b, int(info[b])) for m in self.modalities for t in self.timesteps for b in self.blocks]
        self.dim = sum(g[3] for g in self.groups)
        self.schedule = CosineSchedule()
        self._noise: Dict[int, torch.Tensor] = {}
        self.model.to(self.device).eval()
        # channels-last on the CPU: oneDNN's convolutions run ~1.4x faster and give the same bits whatever the
        # thread count (the default layout's do not), so maps do not depend on how many cores ran them
        self._layout = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        self.model.to(memory_format=self._layout)

    def noise(self, size: int) -> torch.Tensor:
        """The shared noise tensor [1, 3, size, size] (seed ``settings.noise_seed``)."""
        if size not in self._noise:
            self._noise[size] = fixed_noise((1, 3, size, size), self.settings.noise_seed, device=self.device)
        return self._noise[size]

    def __call__(self, patches: torch.Tensor) -> torch.Tensor:
        """[B, M, 3, P, P] (modalities in ``self.modalities`` order) → float32 CPU [B, dim, P, P]."""
        if isinstance(patches, np.ndarray):
            patches = torch.from_numpy(patches)
        if patches.ndim != 5 or patches.shape[1] != len(self.modalities) or patches.shape[2] != 3:
            raise ValueError(f"expected patches [B, {len(self.modalities)}, 3, P, P] for modalities "
                             f"{self.modalities}, got {tuple(patches.shape)}")
        b, m, _, p, q = patches.shape
        if p != q:
            raise ValueError(f"patches must be square, got {p}x{q}")
        out = torch.empty((b, self.dim, p, p), dtype=torch.float32)
        step = max(1, int(self.settings.batch_size))
        self.model.eval()
        with torch.inference_mode():
            for s in range(0, b, step):
                out[s:s + step] = self._batch(patches[s:s + step])
        return out

    def _batch(self, chunk: torch.Tensor) -> torch.Tensor:
        b, m, _, p, _ = chunk.shape
        x0 = torch.nan_to_num(chunk.to(self.device, torch.float32), nan=0.0).reshape(b * m, 3, p, p)
        y = torch.tensor([MODALITY_IDS[mod] for mod in self.modalities], device=self.device).repeat(b)
        noise = self.noise(p).expand(b * m, -1, -1, -1)
        per_t = {}
        for t in self.timesteps:
            tt = torch.full((b * m,), t, dtype=torch.long, device=self.device)
            xt = q_sample(x0, tt, noise, self.schedule).contiguous(memory_format=self._layout)
            with autocast(self.device):
                feats = self.model.forward_features(xt, tt, y, self.blocks)
            per_t[t] = {k: F.interpolate(v.float(), size=(p, p), mode="bilinear", align_corners=False)
                        .reshape(b, m, v.shape[1], p, p) for k, v in feats.items()}
        parts = [per_t[t][blk][:, self.modalities.index(mod)] for mod, t, blk, _ in self.groups]
        return torch.cat(parts, dim=1).cpu()
