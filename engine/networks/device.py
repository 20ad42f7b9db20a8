"""Device choice, mixed precision and seeding in one place, so every stage behaves the same.

CPU runs in fp32 (bf16/fp16 on CPU is slow or fails for some ops); CUDA runs under bf16 autocast, which
needs no loss scaling. Determinism is promised on CPU only: CUDA kernels (e.g. bilinear upsample
backward) have no deterministic variant, so there determinism is requested with ``warn_only``.
"""
from __future__ import annotations

import contextlib
import os
import random
from typing import Union

import numpy as np
import torch


def resolve_device(name: Union[str, torch.device, None] = "auto") -> torch.device:
    """"auto" → CUDA when available else CPU; "cuda" without a GPU is an error, not a silent fallback."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was requested but no CUDA GPU is available to torch: "
                             "choose 'auto' or 'cpu'")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {name!r}: use 'auto', 'cpu' or 'cuda'")


def autocast(device: Union[str, torch.device]):
    """bf16 autocast on CUDA; a no-op context on CPU (fp32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch; ask torch for deterministic kernels (warn-only: CUDA has gaps)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
    except Exception:  # pragma: no cover - very old torch
        pass
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
