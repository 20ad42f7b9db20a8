"""Diffusion schedule for ADM features and training: cosine ᾱ (improved DDPM), forward noising, fixed noise.

Features use ONE seeded noise tensor shared by all patches and modalities, so ``fixed_noise`` draws on the CPU
with its own generator and only then moves the tensor: CPU and CUDA runs see identical noise.
"""
from __future__ import annotations

import math
from typing import Sequence, Union

import torch

from ..settings import DIFFUSION_STEPS

__all__ = ["CosineSchedule", "q_sample", "fixed_noise"]


class CosineSchedule:
    """Cosine noise schedule (Nichol & Dhariwal 2021): ᾱ(t) = cos²((t/T + s)/(1 + s)·π/2), betas clipped at 0.999.

    ``alphas_cumprod`` is float64 [num_steps]; index t = 0 is the least noisy step.
    """

    def __init__(self, num_steps: int = DIFFUSION_STEPS, s: float = 0.008, max_beta: float = 0.999):
        if num_steps < 1:
            raise ValueError(f"CosineSchedule: num_steps must be >= 1, got {num_steps}")
        self.num_steps = int(num_steps)
        self.s = float(s)

        def abar(u: float) -> float:
            return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

        betas = [min(1 - abar((i + 1) / num_steps) / abar(i / num_steps), max_beta) for i in range(num_steps)]
        self.betas = torch.tensor(betas, dtype=torch.float64)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()

    def __len__(self) -> int:
        return self.num_steps


def _coef(values: torch.Tensor, t: Union[int, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """values[t] as like's dtype/device, shaped [B, 1, 1, ...] to broadcast over a batch."""
    t = torch.as_tensor(t, dtype=torch.long)
    if t.ndim == 0:
        t = t.expand(like.shape[0])
    if t.min() < 0 or t.max() >= len(values):
        raise ValueError(f"timesteps must be in 0..{len(values) - 1}, got {t.min().item()}..{t.max().item()}")
    out = values[t.cpu()].to(device=like.device, dtype=like.dtype)
    return out.reshape(-1, *([1] * (like.ndim - 1)))


def q_sample(x0: torch.Tensor, t: Union[int, torch.Tensor], noise: torch.Tensor,
             schedule: CosineSchedule) -> torch.Tensor:
    """x_t = sqrt(ᾱ_t)·x0 + sqrt(1−ᾱ_t)·ε (coefficients computed in float64, applied in x0's dtype)."""
    if noise.shape != x0.shape:
        raise ValueError(f"q_sample: noise shape {tuple(noise.shape)} differs from x0 {tuple(x0.shape)}")
    return (_coef(schedule.sqrt_alphas_cumprod, t, x0) * x0
            + _coef(schedule.sqrt_one_minus_alphas_cumprod, t, x0) * noise)


def fixed_noise(shape: Sequence[int], seed: int, device: Union[str, torch.device] = "cpu",
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise from a CPU generator seeded with ``seed``, then moved: device-independent."""
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=g, dtype=torch.float32).to(device=device, dtype=dtype)
