"""Device choice, mixed precision and seeding in one place, so every stage behaves the same.

CPU runs in fp32 (bf16/fp16 on CPU is slow or fails for some ops); CUDA runs under bf16 autocast, which
needs no loss scaling. Determinism is promised on CPU only: CUDA kernels (e.g. bilinear upsample
backward) have no deterministic variant, so there determinism is requested with ``warn_only``.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Union

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


_INIT_LOCK = threading.RLock()


@contextlib.contextmanager
def seeded(seed: int, device: Union[str, torch.device, None] = None, exclusive: bool = False):
    """torch's global generator seeded for the body and put back afterwards, for what cannot take a local
    generator (module initialisation, dropout); every other draw in the engine uses its own generator.

    Nothing process-wide is left changed (QGIS runs other plugins and other runs in the same process). On CUDA
    deterministic kernels are requested for the body (``warn_only``: some have no deterministic variant) and
    the previous flags come back. ``exclusive`` holds a lock for the body, so two runs building networks at
    the same time in one process do not interleave their draws (keep it to short steps).
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    cuda = dev.type == "cuda"
    devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if cuda else []
    lock = _INIT_LOCK if exclusive else contextlib.nullcontext()
    with lock, torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        if not cuda:
            yield
            return
        flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                 torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = flags[2], flags[3]
