"""What each input is worth, on the training labels: spatially blocked cross-validation of the forest head and the
permutation importance of each input group on the held-out blocks — numpy + ``engine.heads.forest`` only.

Random pixels as folds overstate accuracy on spatially autocorrelated images: neighbours of a held-out pixel sit in
the training part (Roberts et al., "Cross-validation strategies for data with temporal, spatial, hierarchical, or
phylogenetic structure", Ecography 2017). Folds here are whole square blocks of pixels. Permutation importance is
Breiman's (Random Forests, Machine Learning 2001): the drop in held-out accuracy when one group's columns are
shuffled together across the held-out pixels; a group the forest cannot use scores about 0 (or below). Groups that
carry the same information (e.g. the bands and features computed from them) share it: each alone may then score low.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..progress import Progress


@dataclass
class InputGroup:
    """Named columns of the head's input."""

    name: str
    columns: np.ndarray


@dataclass
class InputValue:
    """Blocked-CV OA (mean, spread over folds, pooled) and the OA drop per permuted group; ``note`` says why not."""

    kind: str = "spatially blocked cross-validation on the training labels"
    block_px: int = 32
    folds: int = 0
    trees: int = 0
    repeats: int = 0
    fold_oa: List[float] = field(default_factory=list)
    oa_mean: Optional[float] = None
    oa_std: Optional[float] = None
    oa_pooled: Optional[float] = None
    importance: Dict[str, float] = field(default_factory=dict)  # group → mean OA drop (held-out, permuted)
    importance_std: Dict[str, float] = field(default_factory=dict)
    not_used: List[str] = field(default_factory=list)  # groups the final head does not read
    note: str = ""

    def to_dict(self) -> Dict:
        return asdict(self)


def input_groups(extractor_groups: Sequence[Tuple], spectrum: bool, hsi_bands: int, sar_bands: int) -> List[InputGroup]:
    """Column groups of the head input: diffusion features per modality (all timesteps and blocks of that modality
    together), then the pixel's HSI bands and SAR bands."""
    groups: Dict[str, List[int]] = {}
    start = 0
    for modality, _t, _block, channels in extractor_groups:
        groups.setdefault(f"diffusion features ({modality})", []).extend(range(start, start + int(channels)))
        start += int(channels)
    out = [InputGroup(name, np.asarray(cols, np.int64)) for name, cols in groups.items()]
    if spectrum:
        for name, size in (("HSI bands", hsi_bands), ("SAR bands", sar_bands)):
            if size:
                out.append(InputGroup(name, np.arange(start, start + size)))
                start += size
    return out


def spatial_block_folds(rows: np.ndarray, cols: np.ndarray, block: int, n_folds: int, seed: int) -> List[np.ndarray]:
    """Training pixels grouped by ``block``×``block`` squares, whole squares dealt to ``n_folds`` folds at random."""
    key = (np.asarray(rows) // block) * (1 << 20) + np.asarray(cols) // block
    blocks, which = np.unique(key, return_inverse=True)
    order = np.random.default_rng(seed).permutation(blocks.size)
    fold_of_block = np.empty(blocks.size, np.int64)
    fold_of_block[order] = np.arange(blocks.size) % n_folds
    fold = fold_of_block[which]
    return [np.flatnonzero(fold == f) for f in range(n_folds)]


def assess_inputs(x: np.ndarray, y: np.ndarray, rows: np.ndarray, cols: np.ndarray, n_classes: int,
                  groups: Sequence[InputGroup], *, used_from: int = 0, block: int = 32, folds: int = 5,
                  trees: int = 100, repeats: int = 3, seed: int = 0, balanced: bool = False,
                  progress: Optional[Progress] = None) -> InputValue:
    """Blocked CV of a forest on columns ``used_from:`` (those the final head reads) + permutation importance.

    Each fold's forest (``trees``) is trained on the other blocks and scored on its own; each group's columns are
    permuted ``repeats`` times across the held-out pixels and the OA drop is averaged over repeats and folds.
    """
    from .forest import train_forest

    progress = progress or Progress()
    out = InputValue(block_px=int(block), trees=int(trees), repeats=int(repeats))
    used = [g for g in groups if g.columns.min() >= used_from]
    out.not_used = [g.name for g in groups if g.columns.min() < used_from]
    n_blocks = np.unique((rows // block) * (1 << 20) + cols // block).size
    k = int(min(folds, n_blocks))
    if k < 2:
        out.note = f"all training labels lie in one {block}x{block} px block: no spatially blocked estimate"
        return out
    rng = np.random.default_rng(seed)
    fold_idx = spatial_block_folds(rows, cols, block, k, seed)
    xs = x[:, used_from:]
    drops: Dict[str, List[float]] = {g.name: [] for g in used}
    right = total = 0
    for f, held in enumerate(fold_idx):
        keep = np.setdiff1d(np.arange(y.size), held)
        if held.size == 0 or np.unique(y[keep]).size < 2:
            continue
        forest = train_forest(xs[keep], y[keep], n_classes, n_trees=trees, seed=seed + f, balanced=balanced)
        xh = xs[held]
        base = forest.predict_proba(xh).argmax(axis=1) == y[held]
        out.fold_oa.append(float(base.mean()))
        right += int(base.sum())
        total += int(held.size)
        for g in used:
            c = g.columns - used_from
            for _ in range(repeats):
                xp = xh.copy()
                xp[:, c] = xh[rng.permutation(held.size)][:, c]
                drops[g.name].append(float(base.mean() - (forest.predict_proba(xp).argmax(axis=1) == y[held]).mean()))
        progress.step((f + 1) / k)
    if not out.fold_oa:
        out.note = "no fold left two classes to train on: no spatially blocked estimate"
        return out
    out.folds = len(out.fold_oa)
    out.oa_mean = float(np.mean(out.fold_oa))
    out.oa_std = float(np.std(out.fold_oa, ddof=1)) if len(out.fold_oa) > 1 else 0.0
    out.oa_pooled = right / max(total, 1)
    out.importance = {name: float(np.mean(d)) for name, d in drops.items()}
    out.importance_std = {name: float(np.std(d)) for name, d in drops.items()}
    return out


def describe(value: InputValue, oob_oa: Optional[float]) -> str:
    """One log paragraph."""
    parts = []
    if oob_oa is not None:
        parts.append(f"out-of-bag OA of the final forest {100 * oob_oa:.1f} %")
    if value.oa_mean is not None:
        parts.append(f"{value.kind} ({value.folds} folds of {value.block_px}x{value.block_px} px blocks, "
                     f"{value.trees} trees): OA {100 * value.oa_mean:.1f} ± {100 * value.oa_std:.1f} % "
                     f"(mean ± sd over folds; pooled {100 * value.oa_pooled:.1f} %)")
        imp = ", ".join(f"{k} {100 * v:+.1f}" for k, v in sorted(value.importance.items(), key=lambda kv: -kv[1]))
        parts.append(f"permutation importance (held-out OA drop, percentage points): {imp}")
    if value.not_used:
        parts.append(f"not read by the final head: {', '.join(value.not_used)}")
    if value.note:
        parts.append(value.note)
    return "What each input is worth (training labels only): " + "; ".join(parts)
