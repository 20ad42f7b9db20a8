"""Random Forest pixel head kept as plain arrays, so a model file never needs unpickling.

Why a forest at all: with tens of labels per class, an RF on the pixel's bands is what users run today and is
hard to beat (BENCHMARKS.md, "Accuracy"); given the diffusion features beside the bands it is the
most accurate head measured here.

Training uses scikit-learn; the fitted trees are flattened into five arrays (children, split feature,
threshold, leaf class probabilities) plus per-tree root offsets, which is all a model bundle stores.
Prediction rebuilds scikit-learn trees from those arrays (its compiled traversal, ~5x faster than numpy,
run on row chunks in threads) and falls back to a numpy traversal with identical results if the installed scikit-learn refuses them.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from ..progress import Progress

ARRAY_NAMES = ("left", "right", "feature", "threshold", "proba", "roots")
MIN_ROWS_PER_THREAD = 2048  # below this a thread costs more than it saves (500 tree calls per chunk)
# Rows traversed by every tree before the next rows: all threads' blocks together fill about half the last-level
# cache, so they stay there while 500 trees read them. Measured with 2 threads and a 32 MiB L3, 141 features, ns
# per pixel and tree: 4,096 rows per thread (2.3 MiB) 17.4, 8,192 14.4, 16,384 (9.2 MiB) 13.4, 32,768 (more than
# the cache) 20.3, whole 65,536-row batches 20.9.
CACHE_SHARE = 0.5
UNKNOWN_CACHE_BYTES = 16 << 20  # where the cache size cannot be read (Windows, macOS): a common desktop L3
MIN_CACHE_ROWS = 1024


def cache_rows(n_features: int, threads: int) -> int:
    from ..cpu import last_level_cache_bytes

    budget = CACHE_SHARE * (last_level_cache_bytes() or UNKNOWN_CACHE_BYTES) / max(1, int(threads))
    return max(MIN_CACHE_ROWS, int(budget) // (4 * max(1, int(n_features))))


def cpu_threads() -> int:
    """Threads the traversal may use: torch's intra-op count when torch is loaded (it honours
    ``OMP_NUM_THREADS`` and ``torch.set_num_threads``, so the network and the forest agree), else the cores
    this process may run on."""
    import os
    import sys

    from ..cpu import available_cores

    if "torch" in sys.modules:
        return max(1, int(sys.modules["torch"].get_num_threads()))
    env = os.environ.get("OMP_NUM_THREADS", "")
    cores = available_cores()
    return min(cores, int(env)) if env.isdigit() and int(env) > 0 else cores


class Forest:
    """Flattened trees: node ``i`` of tree ``t`` is row ``roots[t] + i``; children indices are tree-local."""

    def __init__(self, arrays: Dict[str, np.ndarray], n_features: int, n_classes: int):
        missing = [k for k in ARRAY_NAMES if k not in arrays]
        if missing:
            raise ValueError(f"forest arrays incomplete: missing {missing}")
        self.left = np.asarray(arrays["left"], np.int64)
        self.right = np.asarray(arrays["right"], np.int64)
        self.feature = np.asarray(arrays["feature"], np.int64)
        self.threshold = np.asarray(arrays["threshold"], np.float64)
        self.proba = np.asarray(arrays["proba"], np.float32)
        self.roots = np.asarray(arrays["roots"], np.int64)
        self.n_features, self.n_classes = int(n_features), int(n_classes)
        n = self.left.size
        same_length = self.right.size == self.feature.size == self.threshold.size == n
        if not (same_length and self.proba.shape == (n, n_classes)):
            raise ValueError("forest arrays disagree in length or class count")
        if self.roots.size == 0 or self.roots[0] != 0 or np.any(np.diff(self.roots) <= 0) or self.roots[-1] >= n:
            raise ValueError("forest root offsets are not increasing offsets into the node arrays")
        inner = self.left >= 0
        if np.any(self.feature[inner] >= self.n_features) or np.any(self.feature[inner] < 0):
            raise ValueError(f"forest splits on a feature outside its {self.n_features} inputs")
        # children must point forward inside their own tree (as scikit-learn numbers them): no cycles, and
        # the compiled traversal can never read outside the arrays of a damaged or hand-made file
        tree_of = np.searchsorted(self.roots, np.arange(n), side="right") - 1
        local = np.arange(n) - self.roots[tree_of]
        size = np.r_[self.roots[1:], n][tree_of] - self.roots[tree_of]
        for child in (self.left, self.right):
            bad = inner & ((child <= local) | (child >= size))
            if bad.any() or np.any((child < 0) != ~inner):
                raise ValueError("forest child links are inconsistent (a damaged model file?)")
        if not np.isfinite(self.threshold[inner]).all() or not np.isfinite(self.proba).all():
            raise ValueError("forest thresholds or leaf probabilities are not finite")
        self._sk = None
        self.oob_proba: Optional[np.ndarray] = None

    @property
    def n_trees(self) -> int:
        return int(self.roots.size)

    def arrays(self) -> Dict[str, np.ndarray]:
        return {"left": self.left.astype(np.int32), "right": self.right.astype(np.int32),
                "feature": self.feature.astype(np.int32), "threshold": self.threshold.astype(np.float64),
                "proba": self.proba, "roots": self.roots.astype(np.int64)}

    def _tree_slices(self):
        ends = np.r_[self.roots[1:], self.left.size]
        return zip(self.roots.tolist(), ends.tolist())

    # ---------------------------------------------------------------------------------------------------
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """[N, n_features] → [N, n_classes] float32: the mean of the trees' leaf probabilities.

        Rows are split over threads (scikit-learn's traversal releases the GIL); each row sums its trees in the
        same order whatever the thread count, so results are identical with 1 or many threads.
        """
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"forest expects [N, {self.n_features}] inputs, got {x.shape}")
        trees = self._sklearn_trees()
        if trees is None:
            return self.predict_proba_numpy(x)
        out = np.zeros((x.shape[0], self.n_classes), np.float64)

        threads = min(cpu_threads(), max(1, x.shape[0] // MIN_ROWS_PER_THREAD))
        block = cache_rows(self.n_features, threads)

        def run(lo: int, hi: int) -> None:
            for a in range(lo, hi, block):  # all trees on a block that stays in cache, then the next block
                b = min(a + block, hi)
                part = x[a:b]
                for tree in trees:
                    out[a:b] += tree.predict(part).reshape(b - a, -1)[:, :self.n_classes]

        if threads <= 1:
            run(0, x.shape[0])
        else:
            from concurrent.futures import ThreadPoolExecutor

            bounds = np.linspace(0, x.shape[0], threads + 1).astype(int)
            with ThreadPoolExecutor(threads) as pool:
                for f in [pool.submit(run, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]:
                    f.result()
        return (out / len(trees)).astype(np.float32)

    def predict_proba_numpy(self, x: np.ndarray) -> np.ndarray:
        """Reference traversal: each pixel walks every tree (only still-moving pixels are indexed)."""
        x = np.asarray(x, dtype=np.float32)
        out = np.zeros((x.shape[0], self.n_classes), np.float64)
        thr = self.threshold.astype(np.float32)  # scikit-learn compares float32 inputs with float32 thresholds
        for start, end in self._tree_slices():
            left, right = self.left[start:end], self.right[start:end]
            feat, th = self.feature[start:end], thr[start:end]
            node = np.zeros(x.shape[0], np.int64)
            active = np.flatnonzero(left[node] >= 0)
            while active.size:
                nd = node[active]
                go_left = x[active, feat[nd]] <= th[nd]
                node[active] = np.where(go_left, left[nd], right[nd])
                active = active[left[node[active]] >= 0]
            out += self.proba[start:end][node]
        return (out / self.n_trees).astype(np.float32)

    def _sklearn_trees(self):
        if self._sk is None:
            try:
                self._sk = _rebuild_sklearn(self)
            except Exception:  # noqa: BLE001 - any version difference falls back to the numpy traversal
                self._sk = False
        return self._sk or None


def _rebuild_sklearn(forest: Forest):
    from sklearn.tree._tree import NODE_DTYPE, Tree

    trees = []
    for start, end in forest._tree_slices():
        n = end - start
        nodes = np.zeros(n, dtype=NODE_DTYPE)
        nodes["left_child"] = forest.left[start:end]
        nodes["right_child"] = forest.right[start:end]
        leaf = forest.left[start:end] < 0
        nodes["feature"] = np.where(leaf, -2, forest.feature[start:end])
        nodes["threshold"] = np.where(leaf, -2.0, forest.threshold[start:end])
        nodes["n_node_samples"] = 1
        nodes["weighted_n_node_samples"] = 1.0
        values = forest.proba[start:end].astype(np.float64)[:, None, :]
        tree = Tree(forest.n_features, np.array([forest.n_classes], dtype=np.intp), 1)
        tree.__setstate__({"max_depth": _depth(forest.left[start:end], forest.right[start:end]),
                           "node_count": n, "nodes": nodes, "values": np.ascontiguousarray(values)})
        trees.append(tree)
    return trees


def _depth(left: np.ndarray, right: np.ndarray) -> int:
    """Depth of a tree, level by level from the root (a Python loop over nodes cost ~1 s per 500 trees)."""
    depth, level = 0, np.array([0])
    while True:
        inner = level[left[level] >= 0]
        if inner.size == 0:
            return depth
        level = np.concatenate([left[inner], right[inner]])
        depth += 1


def train_forest(x: np.ndarray, y: np.ndarray, n_classes: int, n_trees: int = 500, seed: int = 0,
                 progress: Optional[Progress] = None, balanced: bool = False, oob: bool = True) -> Forest:
    """Fit ``n_trees`` (sqrt-features, bootstrap) and flatten them; deterministic for a seed.

    ``forest.oob_proba`` holds out-of-bag class probabilities of the training pixels (NaN rows for a pixel
    that every bootstrap drew): a validation estimate that costs no labels. ``balanced`` weights classes by
    inverse frequency (raises rare-class recall, may lower OA). ``oob=False`` (cross-validation forests, which
    are scored on held-out pixels) skips the out-of-bag pass and leaves ``oob_proba`` None.
    """
    import warnings

    from sklearn.ensemble import RandomForestClassifier

    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    if not np.isfinite(x).all():
        raise ValueError("forest training inputs contain NaN/inf: labelled pixels must lie on valid data")
    progress = progress or Progress()
    progress.check()
    if x.shape[0] < 2 or np.unique(y).size < 2:
        raise ValueError("a forest needs labelled pixels of at least 2 classes")
    # grown in chunks (warm start) so Cancel is honoured between them; scikit-learn advances the seed's
    # stream past the existing trees, so the forest is identical to one grown in a single call
    model = RandomForestClassifier(n_estimators=0, random_state=int(seed), n_jobs=1, warm_start=True,
                                   class_weight="balanced" if balanced else None)
    n_trees = int(n_trees)
    for n in list(range(50, n_trees, 50)) + [n_trees]:  # chunks of 50 trees
        progress.check()
        model.set_params(n_estimators=n, oob_score=bool(oob) and n == n_trees)  # out-of-bag once, on the whole forest
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "some inputs do not have OOB scores" with few trees
            model.fit(x, y)
        progress.step(n / n_trees)
    left, right, feature, threshold, proba, roots = [], [], [], [], [], []
    offset = 0
    for est in model.estimators_:
        t = est.tree_
        roots.append(offset)
        left.append(t.children_left)
        right.append(t.children_right)
        feature.append(np.where(t.children_left >= 0, t.feature, 0))
        threshold.append(np.where(t.children_left >= 0, t.threshold, 0.0))
        v = np.zeros((t.node_count, n_classes), np.float64)
        v[:, model.classes_] = t.value[:, 0, :]
        v /= np.maximum(v.sum(axis=1, keepdims=True), 1e-12)
        proba.append(v.astype(np.float32))
        offset += t.node_count
    arrays = {"left": np.concatenate(left), "right": np.concatenate(right), "feature": np.concatenate(feature),
              "threshold": np.concatenate(threshold), "proba": np.concatenate(proba),
              "roots": np.asarray(roots, np.int64)}
    forest = Forest(arrays, x.shape[1], n_classes)
    if oob:
        oob_proba = np.full((x.shape[0], n_classes), np.nan, np.float32)
        oob_proba[:, model.classes_] = model.oob_decision_function_
        forest.oob_proba = oob_proba
    return forest


def shift_features(forest: Forest, offset: int, n_features: int) -> Forest:
    """The same trees reading their inputs ``offset`` columns further along an ``n_features``-wide vector
    (a forest trained on one column group then serves the head's full input)."""
    arrays = forest.arrays()
    inner = arrays["left"] >= 0
    arrays["feature"] = np.where(inner, arrays["feature"] + int(offset), 0).astype(np.int32)
    out = Forest(arrays, n_features, forest.n_classes)
    out.oob_proba = forest.oob_proba
    return out


def sign_test_greater(wins: int, losses: int) -> float:
    """One-sided exact sign test: P(≥ ``wins`` of ``wins + losses`` fair coin flips)."""
    from math import comb

    n = int(wins) + int(losses)
    if n == 0:
        return 1.0
    return float(sum(comb(n, i) for i in range(int(wins), n + 1)) / 2 ** n)
