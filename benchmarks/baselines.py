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
