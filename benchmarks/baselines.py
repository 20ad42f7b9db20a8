"""Raw-band baselines the diffusion pipeline must beat: RF-500, RBF-SVM (CV on training pixels), MLP.

Inputs are the scene's raw values at each pixel (good HSI bands, SAR in dB appended where present); bad
bands and NaN pixels never reach a model (the protocol already removed NaN pixels from the labels). Model
selection (the SVM grid) sees the TRAINING pixels only. Every function returns evaluation-pixel predictions
(0..K-1) in the order of ``split.eval_y``.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from .protocol import SceneData, Split

PREDICT_CHUNK = 65_536  # evaluation pixels per predict call: bounds memory on large scenes


def training_data(scene: SceneData, split: Split):
    x = scene.pixel_matrix(split.train_rows, split.train_cols)
    if not np.isfinite(x).all():
        raise ValueError("training pixels contain NaN/inf: the loader should have removed nodata pixels")
    return x, split.train_y


def _predict(model, scene: SceneData, split: Split) -> np.ndarray:
    out = np.empty(split.n_eval, dtype=np.int64)
    for start in range(0, split.n_eval, PREDICT_CHUNK):
        stop = min(start + PREDICT_CHUNK, split.n_eval)
        x = scene.pixel_matrix(split.eval_rows[start:stop], split.eval_cols[start:stop])
        out[start:stop] = model.predict(x)
    return out


def random_forest(scene: SceneData, split: Split, seed: int, n_trees: int = 500) -> np.ndarray:
    from sklearn.ensemble import RandomForestClassifier

    x, y = training_data(scene, split)
    model = RandomForestClassifier(n_estimators=n_trees, n_jobs=1, random_state=seed).fit(x, y)
    return _predict(model, scene, split)


SVM_C = (1.0, 10.0, 100.0, 1000.0)
SVM_GAMMA_FACTORS = (0.1, 1.0, 10.0)  # × 1/D, the 'scale' value for standardised inputs


def svm_cv_folds(y: np.ndarray, max_folds: int = 5) -> int:
    """As many stratified folds as the rarest training class allows (2..max_folds)."""
    smallest = int(np.bincount(y)[np.bincount(y) > 0].min())
    return max(2, min(max_folds, smallest))


def rbf_svm(scene: SceneData, split: Split, seed: int, info: Dict = None) -> np.ndarray:
    """StandardScaler + SVC(rbf); C and gamma by stratified CV on the training pixels only."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    x, y = training_data(scene, split)
    d = x.shape[1]
    grid = {"svc__C": list(SVM_C), "svc__gamma": [f / d for f in SVM_GAMMA_FACTORS]}
    cv = StratifiedKFold(n_splits=svm_cv_folds(y), shuffle=True, random_state=seed)
    search = GridSearchCV(make_pipeline(StandardScaler(), SVC(kernel="rbf")), grid, cv=cv, n_jobs=1,
                          scoring="accuracy", refit=True).fit(x, y)
    if info is not None:
        info.update(search.best_params_, cv_accuracy=float(search.best_score_))
    return _predict(search.best_estimator_, scene, split)


def mlp(scene: SceneData, split: Split, seed: int) -> np.ndarray:
    """Reference only: StandardScaler + one hidden layer of 128 (the head's shape), L2 5e-4, Adam 1e-3.

    No early stopping: with 2 training pixels in the rarest class a held-out split is not meaningful.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = training_data(scene, split)
    model = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(128,), alpha=5e-4,
                                                          learning_rate_init=1e-3, batch_size=64,
                                                          max_iter=300, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return _predict(model, scene, split)


# ---------------------------------------------------------------------------------------------------------
# spatial baselines (issue 12): the strongest simple competitors of the diffusion features

def _cv_settings():
    """The product's own cross-validation settings (one source: engine.settings.SpatialSettings)."""
    from engine.settings import SpatialSettings

    s = SpatialSettings()
    return s.folds, s.cv_trees


def _valid_pixels(scene: SceneData):
    good = scene.good_bands
    invalid = np.isnan(scene.hsi[good]).any(axis=0)
    if scene.sar is not None:
        invalid |= np.isnan(scene.sar).any(axis=0)
    return np.nonzero(~invalid)


def _proba_map(model, x_of, rows, cols, scene: SceneData) -> np.ndarray:
    """[K, H, W] class probabilities of a fitted scikit-learn model at (rows, cols), NaN elsewhere."""
    k = scene.n_classes
    out = np.full((k, *scene.shape), np.nan, np.float32)
    for start in range(0, rows.size, PREDICT_CHUNK):
        r, c = rows[start:start + PREDICT_CHUNK], cols[start:start + PREDICT_CHUNK]
        p = np.zeros((r.size, k), np.float32)
        p[:, model.classes_] = model.predict_proba(x_of(r, c))
        out[:, r, c] = p.T
    return out


def smoothed_forest(scene: SceneData, split: Split, seed: int, x_of, info: Dict = None,
                    n_trees: int = 500) -> np.ndarray:
    """RF on ``x_of(rows, cols)`` with its class probabilities smoothed by a Gaussian before the argmax;
    σ chosen per split by cross-validation on the training pixels only (``engine.tasks.spatial.choose_sigma``)."""
    from sklearn.ensemble import RandomForestClassifier

    from engine.tasks.spatial import SIGMAS, choose_sigma, cv_folds, neighbourhood, radius, smooth_probabilities

    y = split.train_y
    x = x_of(split.train_rows, split.train_cols)
    n_folds, cv_trees = _cv_settings()
    n_folds = int(min(n_folds, np.bincount(y).max()))
    r = radius(max(SIGMAS))
    patches = np.full((y.size, scene.n_classes, 2 * r + 1, 2 * r + 1), np.nan, np.float32)
    vr, vc = _valid_pixels(scene)
    for f, held in enumerate(cv_folds(y, n_folds, seed)):
        keep = np.setdiff1d(np.arange(y.size), held)
        model = RandomForestClassifier(n_estimators=cv_trees, n_jobs=1, random_state=seed + f).fit(x[keep], y[keep])
        near = np.zeros(scene.shape, bool)  # only the neighbourhoods of the held-out pixels are needed
        for a, b in zip(split.train_rows[held], split.train_cols[held]):
            near[max(a - r, 0):a + r + 1, max(b - r, 0):b + r + 1] = True
        sel = near[vr, vc]
        probs = _proba_map(model, x_of, vr[sel], vc[sel], scene)
        patches[held] = neighbourhood(probs, split.train_rows[held], split.train_cols[held], r)
    choice = choose_sigma(patches, y, SIGMAS, n_folds)
    model = RandomForestClassifier(n_estimators=n_trees, n_jobs=1, random_state=seed).fit(x, y)
    probs = smooth_probabilities(_proba_map(model, x_of, vr, vc, scene), choice.sigma)
    if info is not None:
        info.update(choice.to_dict())
    return probs[:, split.eval_rows, split.eval_cols].argmax(axis=0)


def rf_smoothed(scene: SceneData, split: Split, seed: int, info: Dict = None) -> np.ndarray:
    """RF-500 on the bands, probabilities smoothed with σ from {0, 0.7, 1, 1.5, 2, 3} px by CV."""
    return smoothed_forest(scene, split, seed, scene.pixel_matrix, info)


MULTISCALE_SIGMAS = (1.0, 2.0, 4.0)  # px


def multiscale_matrix(scene: SceneData):
    """x_of(rows, cols) → [N, 4·D]: the bands and their Gaussian-filtered copies at 1, 2 and 4 px (nodata-aware
    normalised convolution — the product's own ``engine.tasks.spatial.smooth_probabilities``, applied to band planes;
    no network) — spatial context for a per-pixel forest."""
    from engine.tasks.spatial import smooth_probabilities

    key = id(scene)
    if _MS_CACHE.get("key") != key:
        bands = np.concatenate([scene.hsi[scene.good_bands]] + ([scene.sar] if scene.sar is not None else []))
        bands = bands.astype(np.float32)
        stack = [bands] + [smooth_probabilities(bands, s) for s in MULTISCALE_SIGMAS]
        _MS_CACHE.clear()
        _MS_CACHE.update(key=key, cube=np.concatenate(stack))
    cube = _MS_CACHE["cube"]
    return lambda rows, cols: np.ascontiguousarray(cube[:, rows, cols].T)


_MS_CACHE: Dict = {}


def rf_ms_smoothed(scene: SceneData, split: Split, seed: int, info: Dict = None) -> np.ndarray:
    """RF-500 on the bands + filtered bands (``rf_ms``'s inputs), probabilities smoothed with σ by CV
    (``rf_smooth``'s rule): the two strongest simple baselines combined."""
    return smoothed_forest(scene, split, seed, multiscale_matrix(scene), info)


def rf_multiscale(scene: SceneData, split: Split, seed: int, n_trees: int = 500) -> np.ndarray:
    """RF-500 on the bands + Gaussian-filtered bands at 1, 2, 4 px (no network, no smoothing)."""
    from sklearn.ensemble import RandomForestClassifier

    x_of = multiscale_matrix(scene)
    model = RandomForestClassifier(n_estimators=n_trees, n_jobs=1, random_state=seed)
    model.fit(x_of(split.train_rows, split.train_cols), split.train_y)
    out = np.empty(split.n_eval, dtype=np.int64)
    for start in range(0, split.n_eval, PREDICT_CHUNK):
        stop = min(start + PREDICT_CHUNK, split.n_eval)
        out[start:stop] = model.predict(x_of(split.eval_rows[start:stop], split.eval_cols[start:stop]))
    return out
