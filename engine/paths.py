"""Where the plugin keeps files that outlive one run (downloaded backbone, caches).

Torch-free and QGIS-free so that the environment check, the download algorithm and the engine agree on
one location without importing anything heavy.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple

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


PRIOR_NAME = "compact_rs_prior"
# what "auto" uses when no ImageNet checkpoint is installed: the most accurate Stage A measured on the real
# scenes (BENCHMARKS.md, "Accuracy: the prior, its adaptation and the spatial regularisation")
AUTO_FALLBACK = "untrained"


def shipped_prior() -> Path:
    """The remote-sensing prior that ships with the plugin (weights; its manifest is the ``.json`` beside it)."""
    return Path(__file__).resolve().parents[1] / "resources" / "priors" / f"{PRIOR_NAME}.safetensors"


def find_backbone() -> Optional[Path]:
    """First existing file among :func:`backbone_candidates`, or None when no checkpoint is installed."""
    for candidate in backbone_candidates():
        if candidate.is_file():
            return candidate
    return None


def resolve_backbone(source: str, checkpoint: Optional[str]) -> Tuple[str, Optional[Path], str]:
    """(kind, file, why): which network Stage A starts from, decided once for log, model file and checks.

    kind is "imagenet" (the ImageNet ADM checkpoint), "prior" (the shipped remote-sensing prior) or "scene"
    (a compact network trained from scratch on the scene; no file).
    """
    if source not in ("auto", "untrained", "prior", "imagenet", "scene"):
        raise ValueError(f"unknown backbone source {source!r}: use auto, untrained, prior, imagenet or scene")
    if checkpoint:
        return "imagenet", Path(checkpoint), "given as the BACKBONE parameter"
    if source in ("auto", "imagenet"):
        found = find_backbone()
        if found is not None:
            where = f"${BACKBONE_ENV}" if os.environ.get(BACKBONE_ENV, "").strip() and \
                Path(os.environ[BACKBONE_ENV]).expanduser() == found else "the plugin's download cache"
            return "imagenet", found, f"installed ImageNet ADM checkpoint found in {where}"
        if source == "imagenet":
            raise ValueError("no ImageNet ADM checkpoint found (looked in: "
                             + "; ".join(str(p) for p in backbone_candidates())
                             + "): run 'Download backbone' or give its path as BACKBONE")
    fallback = source == "auto"
    if fallback:
        source = AUTO_FALLBACK
    why = "no ImageNet checkpoint installed" if fallback else "asked for"
    if source == "untrained":
        return "untrained", None, f"a seeded, untrained compact ADM ({why}; the most accurate measured)"
    if source == "prior":
        prior = shipped_prior()
        if prior.is_file():
            return "prior", prior, f"the shipped remote-sensing prior ({why})"
        if not fallback:
            raise ValueError(f"the shipped prior {prior} is missing: reinstall the plugin")
        return "untrained", None, f"no ImageNet checkpoint installed and the shipped prior {prior} is missing"
    return "scene", None, "asked for (compact network trained from scratch on this scene)"

