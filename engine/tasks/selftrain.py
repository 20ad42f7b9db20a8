"""Self-training on the scene's own unlabelled pixels: the target scene helps where labels are few.

UniDiff's premise is that the unlabelled target scene itself mitigates sparse labels (there through adapting the
network on it). Here the same scene also serves the head, by the oldest semi-supervised method there is —
self-training (Yarowsky 1995; for hyperspectral maps e.g. Tan et al., "Semi-supervised hyperspectral image
classification using segmentation-based self-training", 2014): the forest labels the pixels it is surest of,
and is grown again on its labels plus those.

Three guards keep it from drowning rare classes or learning its own mistakes:
- **class-balanced**: at most ``per_class`` pseudo-labels per class (the same for every class), so a large
  class cannot swamp a rare one;
- **confident**: within a class, the pixels with the highest forest probability;
- **spatially consistent**: a pixel is a candidate only when its 8 lattice neighbours (2 px apart) carry the
  same predicted class — class boundaries and mixed pixels are never pseudo-labelled.

Memory is independent of the scene: the pool is ``windows`` random 64×64 windows of the tiling grid, sampled on
a 2-px lattice. Whether it is used, and for how many rounds, is chosen on the training labels only: each fold's
forest is self-trained on the same pool and scored at its held-out labels (``engine.heads.selection``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..data.readers import read_padded
from ..progress import Progress

LATTICE = 2  # px between pool pixels (neighbours of the consistency check are this far apart)


@dataclass
class UnlabelledPool:
    """Head inputs of the scene's unlabelled pixels on a lattice of sampled windows."""

    x: np.ndarray  # [n, D] head-input columns the head reads, at valid lattice pixels
    grid: np.ndarray  # [windows, g, g] int64: row of ``x`` for each lattice pixel, -1 = nodata


def sample_pool(reader, reps, extractor, settings, first: int, progress: Progress) -> UnlabelledPool:
    """``settings.selftrain.windows`` windows of the tiling grid drawn with the run's seed; their head inputs on
    the lattice (columns ``first:``, the ones the head reads)."""
    from .landcover import head_inputs
    from .tiling import tile_origins

    patch = settings.tiles.patch
    rows = tile_origins(reader.height, patch, settings.tiles.stride)
    cols = tile_origins(reader.width, patch, settings.tiles.stride)
    grid_all = [(r, c) for r in rows for c in cols]
    rng = np.random.default_rng(settings.seed + 104729)
    n = min(int(settings.selftrain.windows), len(grid_all))
    chosen = [grid_all[i] for i in sorted(rng.choice(len(grid_all), size=n, replace=False))]
    g = (patch + LATTICE - 1) // LATTICE
    grid = np.full((n, g, g), -1, np.int64)
    parts: List[np.ndarray] = []
    count = 0
    batch = max(1, settings.features.batch_size)
    for start in range(0, n, batch):
        progress.check()
        idx = list(range(start, min(start + batch, n)))
        raw = np.stack([read_padded(reader, *chosen[w], patch) for w in idx])
        x, valid = head_inputs(reader, reps, extractor, raw, settings.head.include_spectrum, run_network=first == 0)
        for k, w in enumerate(idx):
            v = valid[k, ::LATTICE, ::LATTICE]
            # edge-padded copies of the scene's last rows/columns are not new pixels
            r0, c0 = chosen[w]
            v = v & (np.arange(g)[:, None] * LATTICE < reader.height - r0) & (np.arange(g)[None] * LATTICE < reader.width - c0)
            xs = x[k, first:, ::LATTICE, ::LATTICE]
            pr, pc = np.nonzero(v)
            parts.append(np.ascontiguousarray(xs[:, pr, pc].T))
            grid[w, pr, pc] = np.arange(count, count + pr.size)
            count += pr.size
        progress.step((idx[-1] + 1) / n)
    x_all = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    return UnlabelledPool(x_all.astype(np.float32), grid)


def pseudo_labels(proba: np.ndarray, grid: np.ndarray, per_class: int) -> Tuple[np.ndarray, np.ndarray]:
    """proba [n, K] at the pool's pixels, grid [windows, g, g] → (pool rows, classes) of the pseudo-labels:
    per class the ``per_class`` most confident spatially consistent pixels (ties: lower pool row first)."""
    n, k = proba.shape
    label = np.full(grid.shape, -1, np.int64)
    ok = grid >= 0
    label[ok] = proba[grid[ok]].argmax(axis=1)
    padded = np.pad(label, ((0, 0), (1, 1), (1, 1)), constant_values=-2)
    g = grid.shape[1]
    consistent = ok.copy()
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr or dc:
                consistent &= padded[:, 1 + dr:1 + dr + g, 1 + dc:1 + dc + grid.shape[2]] == label
    rows = grid[consistent]
    classes = label[consistent]
    conf = proba[rows, classes] if rows.size else np.zeros(0)
    pick_rows, pick_classes = [], []
    for c in range(k):
        mine = np.flatnonzero(classes == c)
        if not mine.size:
            continue
        order = mine[np.lexsort((rows[mine], -conf[mine]))][:per_class]
        pick_rows.append(rows[order])
        pick_classes.append(np.full(order.size, c, np.int64))
    if not pick_rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(pick_rows), np.concatenate(pick_classes)


def grow(x: np.ndarray, y: np.ndarray, pool: UnlabelledPool, forest, rounds: int, per_class: int, n_classes: int,
         n_trees: int, seed: int, balanced: bool, progress: Optional[Progress] = None, oob: bool = True):
    """``rounds`` of self-training from ``forest`` (trained on x, y): returns (forest, pseudo rows, classes)."""
    from ..heads.forest import train_forest

    rows, classes = np.zeros(0, np.int64), np.zeros(0, np.int64)
    for _ in range(int(rounds)):
        if progress is not None:
            progress.check()
        rows, classes = pseudo_labels(forest.predict_proba(pool.x), pool.grid, per_class)
        if not rows.size:
            break
        forest = train_forest(np.concatenate([x, pool.x[rows]]), np.concatenate([y, classes]), n_classes,
                              n_trees=n_trees, seed=seed, balanced=balanced, oob=oob)
    return forest, rows, classes


def self_train(reader, reps, extractor, labels, x: np.ndarray, head, first: int, cv, settings, progress: Progress):
    """Choose (on the training labels, with the shared fold forests ``cv``: ``landcover.FoldForests``) and apply
    self-training to the forest ``head``; returns (head, report)."""
    from ..heads.classifier import with_forest
    from ..heads.selection import select_simplest

    st = settings.selftrain
    if st.mode not in ("auto", "on", "off"):
        raise ValueError(f"unknown self-training mode {st.mode!r}: use auto, on or off")
    y = labels.class_index
    k = labels.n_classes
    per_class = min(1000, max(1, int(round(st.per_class * y.size / max(1, np.unique(y).size)))))
    pool = sample_pool(reader, reps, extractor, settings, first, progress.sub(0.0, 0.3))
    if pool.x.shape[0] == 0:
        progress.log("Self-training: off (no valid unlabelled pixels sampled)")
        return head, {"used": False, "rounds": 0, "why": "no unlabelled pixels"}
    xs = x[:, first:]
    rounds = sorted({int(r) for r in st.rounds if int(r) > 0})
    report: Dict = {"pool_pixels": int(pool.x.shape[0]), "windows": int(pool.grid.shape[0]),
                    "per_class": per_class}
    balanced = settings.head.class_weighting
    if st.mode == "auto":
        folds = cv.folds
        labels_txt = ["off"] + [f"{r} round{'s' if r > 1 else ''}" for r in rounds]
        correct = np.zeros((1 + len(rounds), y.size))
        steps = len(folds) * len(folds[0])
        done = 0
        for rep, assignment in enumerate(folds):
            for f, held in enumerate(assignment):
                keep = cv.kept(rep, f)
                forest = cv.get(rep, f)
                correct[0, held] += forest.predict_proba(xs[held]).argmax(axis=1) == y[held]
                for j, r in enumerate(rounds):  # round r continues from round r-1
                    extra = r - (rounds[j - 1] if j else 0)
                    forest, _, _ = grow(xs[keep], y[keep], pool, forest, extra, per_class, k,
                                        settings.spatial.cv_trees, cv.seed(rep, f), balanced, progress, oob=False)
                    correct[1 + j, held] += forest.predict_proba(xs[held]).argmax(axis=1) == y[held]
                done += 1
                progress.step(0.3 + 0.6 * done / steps)
        choice = select_simplest(correct / len(folds), y, labels_txt, len(folds), rule=st.selection)
        n_rounds = 0 if choice.chosen == 0 else rounds[choice.chosen - 1]
        report["selection"] = choice.to_dict()
        progress.log(f"Self-training on {pool.x.shape[0]} unlabelled pixels of {pool.grid.shape[0]} windows: "
                     f"{choice.describe()}")
    else:
        n_rounds = max(rounds) if rounds else 0
    report["rounds"] = n_rounds
    report["used"] = n_rounds > 0
    if n_rounds == 0:
        return head, report
    base = head.forest
    if first:  # the head reads columns first:; the pool holds those columns only
        from ..heads.forest import shift_features

        base = shift_features(base, -first, xs.shape[1])
    forest, rows, classes = grow(xs, y, pool, base, n_rounds, per_class, k, settings.head.trees, settings.seed,
                                 balanced, progress)
    counts = np.bincount(classes, minlength=k).tolist()
    report["pseudo_labels_per_class"] = counts
    progress.log(f"Self-training: {n_rounds} round(s), {rows.size} pseudo-labels ({counts} per class) added to the "
                 f"{y.size} training labels")
    progress.step(1.0)
    return with_forest(head, forest, first, y, report), report
