"""Where the plugin keeps files that outlive one run (downloaded backbone, caches).

Torch-free and QGIS-free so that the environment check, the download algorithm and the engine agree on
one location without importing anything heavy.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

BACKBONE_FILENAME = "64x64_diffusion.pt"  # the official guided-diffusion ImageNet 64x64 checkpoint name
CACHE_ENV = "DIFFLC_CACHE_DIR"
BACKBONE_ENV = "DIFFLC_BACKBONE"


def cache_dir() -> Path:
    """``$DIFFLC_CACHE_DIR``, else ``$XDG_CACHE_HOME/diffusion_landcover``, else ``~/.cache/diffusion_landcover``.

    Not created here: callers that write create it, callers that only look must not leave empty folders.
    """
    override = os.environ.get(CACHE_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "diffusion_landcover"


def default_backbone_path() -> Path:
    """Where the download step stores the ImageNet ADM checkpoint."""
    return cache_dir() / BACKBONE_FILENAME


def backbone_candidates() -> List[Path]:
    """Places searched for a pretrained backbone, in order: ``$DIFFLC_BACKBONE``, then the cache."""
    out: List[Path] = []
    env = os.environ.get(BACKBONE_ENV, "").strip()
    if env:
        out.append(Path(env).expanduser())
    out.append(default_backbone_path())
    return out


def find_backbone() -> Optional[Path]:
    """First existing file among :func:`backbone_candidates`, or None when no checkpoint is installed."""
    for candidate in backbone_candidates():
        if candidate.is_file():
            return candidate
    return None
