"""The evaluation protocol (splits, paired intervals, loaders), the baselines and the accuracy runner."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks import accuracy, baselines
from benchmarks.protocol import (DATA_DIR, SceneData, load_chip, load_enmap, make_split, n_train_per_class,
                                 paired_ci, scene_split)

ENMAP_COUNTS = [225, 484, 1491, 1037, 47, 323]  # data README


def _labels_with_counts(counts, shape=(60, 80), seed=0):
    """Label map with exactly ``counts`` pixels per class at random places, -1 elsewhere."""
    rng = np.random.default_rng(seed)
    flat = np.full(shape[0] * shape[1], -1, dtype=np.int64)
    places = rng.permutation(flat.size)
    start = 0
    for c, n in enumerate(counts):
        flat[places[start:start + n]] = c
        start += n
    return flat.reshape(shape)


def test_split_is_stratified_disjoint_and_complete():
    labels = _labels_with_counts(ENMAP_COUNTS)
    split = make_split(labels, 0.02, seed=3)
    per_class = np.bincount(split.train_y, minlength=6)
    # round(0.02 n) with halves up, ≥ 2: 4.5→5, 9.68→10, 29.82→30, 20.74→21, 0.94→2, 6.46→6
    assert per_class.tolist() == [5, 10, 30, 21, 2, 6]
    assert split.n_train == 74  # README: ≈ 74 training pixels at 2 %
    train = set(zip(split.train_rows.tolist(), split.train_cols.tolist()))
    evaluation = set(zip(split.eval_rows.tolist(), split.eval_cols.tolist()))
    assert not train & evaluation
    labelled = set(zip(*[a.tolist() for a in np.nonzero(labels >= 0)]))
    assert train | evaluation == labelled
    # the stored class of every pixel is the label map's
    assert (labels[split.train_rows, split.train_cols] == split.train_y).all()
    assert (labels[split.eval_rows, split.eval_cols] == split.eval_y).all()
    assert np.bincount(split.eval_y, minlength=6).tolist() == [c - t for c, t in zip(ENMAP_COUNTS, per_class)]


def test_split_is_deterministic_per_seed_and_varies_across_seeds():
    labels = _labels_with_counts(ENMAP_COUNTS)
    a, b, c = make_split(labels, 0.02, 0), make_split(labels, 0.02, 0), make_split(labels, 0.02, 1)
    assert np.array_equal(a.train_rows, b.train_rows) and np.array_equal(a.train_cols, b.train_cols)
    assert np.array_equal(a.eval_rows, b.eval_rows)
    assert not (np.array_equal(a.train_rows, c.train_rows) and np.array_equal(a.train_cols, c.train_cols))


def test_split_rejects_tiny_classes_and_bad_fractions():
    with pytest.raises(ValueError, match="only 2 labelled pixels"):
        make_split(_labels_with_counts([50, 2]), 0.1, 0)
    with pytest.raises(ValueError, match="fraction"):
        make_split(_labels_with_counts([50, 20]), 1.5, 0)
    # an absent class takes no training pixels and does not fail
    assert n_train_per_class([100, 0, 10], 0.02) == [2, 0, 2]


def test_label_map_round_trip():
    labels = _labels_with_counts([40, 30, 20], shape=(20, 20))
    split = make_split(labels, 0.1, 0, n_classes=3)
    m = split.train_label_map(labels.shape)
    assert (m > 0).sum() == split.n_train and (m[split.train_rows, split.train_cols] == split.train_y + 1).all()
    truth_map = np.where(labels >= 0, labels + 1, 0)
    assert np.array_equal(split.predictions_from_map(truth_map), split.eval_y)
    truth_map[split.eval_rows[0], split.eval_cols[0]] = 0
    with pytest.raises(ValueError, match="no class"):
        split.predictions_from_map(truth_map)


def test_paired_ci_on_known_data():
    # differences 2, 3, 4: mean 3, sd 1, t(0.975, df 2) = 4.302653 (t table) → 3 ± 2.484
    ci = paired_ci([12.0, 13.0, 14.0], [10.0, 10.0, 10.0])
    half = 4.302653 / math.sqrt(3)
    assert ci.mean == pytest.approx(3.0) and ci.std == pytest.approx(1.0)
    assert ci.low == pytest.approx(3.0 - half, abs=1e-5) and ci.high == pytest.approx(3.0 + half, abs=1e-5)
    assert ci.significant
    # differences 1, 2, 3: the interval (−0.48, 4.48) contains 0
    assert not paired_ci([11.0, 12.0, 13.0], [10.0, 10.0, 10.0]).significant
    noisy = paired_ci([1.0, -1.0, 2.0, -2.0], [0.0, 0.0, 0.0, 0.0])
    assert noisy.mean == pytest.approx(0.0) and noisy.low < 0 < noisy.high and not noisy.significant
    single = paired_ci([1.0], [0.5])
    assert single.mean == pytest.approx(0.5) and math.isnan(single.low) and not single.significant
    with pytest.raises(ValueError, match="equal length"):
        paired_ci([1.0, 2.0], [1.0])


# ---------------------------------------------------------------------------------------------------------
# real scenes

def needs_data(test):
    return pytest.mark.real_data(pytest.mark.skipif(not DATA_DIR.exists(),
                                                    reason="real data folder <repo>/../shared/data missing")(test))


@needs_data
def test_enmap_loader_and_protocol_counts():
    scene = load_enmap()
    assert scene.hsi.shape == (224, 160, 96) and scene.sar is None and scene.n_classes == 6
    assert list(scene.hsi_meta.bad_bands) == list(range(129, 135))  # bands 130-135, 1-based
    assert np.bincount(scene.labels[scene.labels >= 0], minlength=6).tolist() == ENMAP_COUNTS
    valid = scene.hsi[scene.good_bands][:, scene.labels >= 0]
    assert np.isfinite(valid).all() and 0 < np.median(valid) < 1  # reflectance, scale applied
    split = scene_split(scene, 0)
    assert split.n_train == 74 and split.n_eval == sum(ENMAP_COUNTS) - 74
    assert scene.fraction == 0.02 and scene.seeds == tuple(range(10))
    x = scene.pixel_matrix(split.train_rows, split.train_cols)
    assert x.shape == (74, 218)  # 224 bands less 6 bad ones


@needs_data
def test_chip_loader_and_protocol_counts():
    scene = load_chip()
    assert scene.hsi.shape == (13, 512, 512) and scene.sar.shape == (2, 512, 512)
    assert scene.class_names == ["not water", "water"]
    counts = np.bincount(scene.labels[scene.labels >= 0], minlength=2)
    assert counts.sum() > 0.99 * 512 * 512  # only the -1 no-data pixels are unlabelled
    split = scene_split(scene, 1)
    expected = [max(2, int(math.floor(0.005 * n + 0.5))) for n in counts]
    assert np.bincount(split.train_y, minlength=2).tolist() == expected
    x = scene.pixel_matrix(split.train_rows[:5], split.train_cols[:5])
    assert x.shape == (5, 15)
    assert (x[:, :13] > 0).all() and (x[:, :13] < 2).all()  # reflectance
    assert (x[:, 13:] < 30).all() and (x[:, 13:] > -60).all()  # backscatter in dB


# ---------------------------------------------------------------------------------------------------------
# baselines and the runner on a tiny synthetic scene

def _toy_scene(seed=0) -> SceneData:
    """Three classes with distinct spectra + noise; one bad band full of NaN that must never be used."""
    rng = np.random.default_rng(seed)
    h, w, bands = 30, 30, 6
    labels = rng.integers(0, 3, size=(h, w))
    centres = rng.normal(size=(3, bands)) * 2
    hsi = (centres[labels].transpose(2, 0, 1) + rng.normal(scale=0.7, size=(bands, h, w))).astype(np.float32)
    hsi[4] = np.nan  # a bad band
    sar = rng.normal(-15, 2, size=(2, h, w)).astype(np.float32)
    from engine.data.representations import BandMeta

    return SceneData("toy", hsi, sar, labels, ["a", "b", "c"], BandMeta(bands, bad_bands=(4,)), BandMeta(2), 0.1,
                     (0, 1, 2))


@pytest.mark.parametrize("fn", [baselines.random_forest, baselines.rbf_svm, baselines.mlp])
def test_baselines_predict_every_evaluation_pixel_and_learn(fn):
    scene = _toy_scene()
    split = scene_split(scene, 0)
    pred = fn(scene, split, 0)
    assert pred.shape == split.eval_y.shape and set(np.unique(pred)) <= {0, 1, 2}
    assert (pred == split.eval_y).mean() > 0.8  # separable classes: far above chance (1/3)


def test_svm_selects_parameters_on_training_pixels_only():
    scene = _toy_scene()
    split = scene_split(scene, 0)
    info = {}
    baselines.rbf_svm(scene, split, 0, info=info)
    assert info["svc__C"] in baselines.SVM_C and 0 <= info["cv_accuracy"] <= 1
    assert baselines.svm_cv_folds(np.array([0, 0, 1, 1, 1])) == 2
    assert baselines.svm_cv_folds(np.array([0] * 50 + [1] * 9)) == 5


def test_runner_pairs_methods_on_identical_splits(tmp_path):
    scene = _toy_scene()
    seen = []

    def oracle(scene, split, seed):
        seen.append((seed, split.eval_rows.copy()))
        return split.eval_y.copy()

    def constant(scene, split, seed):
        return np.zeros_like(split.eval_y)

    accuracy.register("test-oracle", oracle)
    accuracy.register("test-constant", constant)
    try:
        results = accuracy.run([scene], ["rf", "test-oracle", "test-constant"], n_seeds=3, log=lambda s: None)
    finally:
        del accuracy.METHODS["test-oracle"], accuracy.METHODS["test-constant"]
    res = results["toy"]
    assert res["seeds"] == [0, 1, 2] and [s for s, _ in seen] == [0, 1, 2]
    summary = res["summary"]
    assert summary["mean"]["test-oracle"]["overall_accuracy"] == 1.0
    rf = [r["overall_accuracy"] for r in res["methods"]["rf"]]
    d = summary["paired"]["test-oracle"]["rf"]["overall_accuracy"]
    assert d["mean"] == pytest.approx(1.0 - np.mean(rf)) and d["n"] == 3
    assert summary["paired"]["test-constant"]["rf"]["overall_accuracy"]["high"] < 0
    table = accuracy.markdown(results)
    assert "| test-oracle |" in table and "100.00 ± 0.00" in table and "ΔOA" in table
    json.dumps(accuracy._jsonable(results))  # serialisable (NaN → null)
    with pytest.raises(ValueError, match="unknown method"):
        accuracy.run([scene], ["nope"], n_seeds=1)


def test_map_predictor_sees_training_labels_only():
    scene = _toy_scene()
    split = scene_split(scene, 0)
    seen = {}

    def fill_with_nearest_training_label(scene, train_map, seed):
        seen["labelled"] = int((train_map > 0).sum())
        rows, cols = np.nonzero(train_map)
        grid = np.indices(train_map.shape).reshape(2, -1)
        nearest = ((grid[:, :, None] - np.stack([rows, cols])[:, None]) ** 2).sum(0).argmin(1)
        return train_map[rows, cols][nearest].reshape(train_map.shape)

    pred = accuracy.from_map_predictor(fill_with_nearest_training_label)(scene, split, 0)
    assert seen["labelled"] == split.n_train and pred.shape == split.eval_y.shape
    assert pred.min() >= 0 and pred.max() <= 2


def test_runner_rejects_wrong_prediction_length():
    scene = _toy_scene()
    split = scene_split(scene, 0)
    with pytest.raises(ValueError, match="one per evaluation pixel"):
        accuracy.evaluate(lambda s, sp, seed: np.zeros(3, dtype=int), scene, split, 0)
