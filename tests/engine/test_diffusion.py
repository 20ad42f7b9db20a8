"""Cosine schedule, forward noising and device-independent fixed noise."""
from __future__ import annotations

import math

import pytest
import torch

from engine.networks.diffusion import CosineSchedule, fixed_noise, q_sample


def test_cosine_schedule_values():
    s = CosineSchedule()
    a = s.alphas_cumprod
    assert a.dtype == torch.float64 and a.shape == (1000,)
    assert 0.9999 < a[0].item() < 1.0
    assert a[-1].item() < 1e-6
    assert torch.all(a[1:] < a[:-1])
    assert s.betas.max().item() <= 0.999 and s.betas.min().item() > 0

    def abar(u):
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    for t in (0, 100, 500, 900):  # unclipped region: closed form
        assert a[t].item() == pytest.approx(abar((t + 1) / 1000) / abar(0), rel=1e-9)
    assert s.betas[-1].item() == pytest.approx(0.999)  # the clip is active at the end
    assert CosineSchedule(num_steps=50).alphas_cumprod.shape == (50,)


def test_q_sample_formula_and_broadcast():
    s = CosineSchedule()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 2, 4, 4, generator=g)
    eps = torch.randn(3, 2, 4, 4, generator=g)
    t = torch.tensor([0, 300, 999])
    xt = q_sample(x0, t, eps, s)
    for i, ti in enumerate(t.tolist()):
        ab = s.alphas_cumprod[ti].item()
        assert torch.allclose(xt[i], math.sqrt(ab) * x0[i] + math.sqrt(1 - ab) * eps[i], atol=1e-6)
    assert torch.allclose(q_sample(x0, 300, eps, s), q_sample(x0, torch.full((3,), 300), eps, s))
    assert torch.allclose(q_sample(x0, 0, eps, s), x0, atol=0.02)
    with pytest.raises(ValueError, match="0..999"):
        q_sample(x0, 1000, eps, s)


def test_fixed_noise_deterministic_and_seeded():
    a = fixed_noise((2, 3, 8, 8), seed=7)
    b = fixed_noise((2, 3, 8, 8), seed=7)
    c = fixed_noise((2, 3, 8, 8), seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    state = torch.random.get_rng_state()
    h = fixed_noise((2, 3, 8, 8), seed=7, dtype=torch.bfloat16)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    assert h.dtype == torch.bfloat16 and torch.equal(h, a.to(torch.bfloat16))
    assert abs(a.mean().item()) < 0.2 and 0.8 < a.std().item() < 1.2
