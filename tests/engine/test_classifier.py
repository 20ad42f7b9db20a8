"""Pixel head: fusions learn, validation comes from training labels, determinism, save/load round trip."""
import json

import numpy as np
import pytest

from engine.heads.classifier import load_head, stratified_split, train_head
from engine.settings import HeadSettings


def _data(n=240, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = rng.normal(scale=3.0, size=(3, 12))
    x = (centres[y] + rng.normal(size=(n, 12))).astype(np.float32)
    x[:, 8:] *= 50.0  # a group on another scale: standardisation must cope
    return x, y


FAST = HeadSettings(max_epochs=40, patience=8)


@pytest.mark.parametrize("fusion", ["concat", "global", "local", "moe"])
def test_fusions_learn_and_round_trip(fusion):
    x, y = _data()
    head = train_head(x[:160], y[:160], [4, 4, 4], FAST, seed=0, fusion=fusion)
    proba = head.predict_proba(x[160:])
    assert proba.shape == (80, 3) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert (proba.argmax(1) == y[160:]).mean() >= 0.9
    assert head.val_metrics["n_samples"] == head.config["n_val"] > 0
    json.dumps(head.config)
    again = load_head(json.loads(json.dumps(head.config)), head.state_dict())
    np.testing.assert_array_equal(again.predict_proba(x[160:]), proba)


def test_same_seed_same_predictions_other_seed_differs():
    x, y = _data()
    a = train_head(x, y, [12], FAST, seed=3).predict_proba(x)
    b = train_head(x, y, [12], FAST, seed=3).predict_proba(x)
    c = train_head(x, y, [12], FAST, seed=4).predict_proba(x)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_stratified_split_keeps_every_class_in_training():
    y = np.array([0] * 10 + [1] * 2 + [2])
    tr, va = stratified_split(y, 0.2, seed=0)
    assert set(y[tr]) == {0, 1, 2}
    assert np.bincount(y[va], minlength=3).tolist() == [2, 1, 0]
    assert len(set(tr) & set(va)) == 0 and len(tr) + len(va) == len(y)


def test_deeper_head_and_early_stopping_restores_best():
    x, _ = _data()
    y = np.random.default_rng(9).integers(0, 3, len(x))  # labels unrelated to x: validation stops improving
    head = train_head(x, y, [12], HeadSettings(hidden=(128, 32), max_epochs=200, patience=5), seed=0)
    assert head.config["epochs_run"] < 200
    assert head.config["best_epoch"] == head.config["epochs_run"] - 1 - 5
    assert sum("BatchNorm" in type(m).__name__ for m in head.module.mlp) == 2


def test_bad_inputs_are_explained():
    x, y = _data(20)
    with pytest.raises(ValueError, match="sum to"):
        train_head(x, y, [5, 5], FAST, seed=0)
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train_head(x, y, [12], FAST, seed=0)
