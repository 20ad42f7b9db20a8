"""Self-training (engine.tasks.selftrain): class-balanced, confident, spatially consistent pseudo-labels from a pool
whose size does not grow with the scene; the streamed pipeline equals a whole-array one on a one-window scene."""
from types import SimpleNamespace

import numpy as np
import pytest

from engine.data.readers import ArrayReader, StackedReader
from engine.heads.forest import train_forest
from engine.progress import Progress
from engine.settings import PipelineSettings
from engine.tasks import selftrain
from engine.tasks.landcover import (FoldForests, TrainingPixels, fit_scene_representations, head_inputs,
                                    labelled_features, prepare_backbone, repeated_folds, report_vanished)
from engine.networks.features import FeatureExtractor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _grid_probs(label_map, conf_map):
    """A pool laid out as one window: grid [1, g, g] → rows of proba [n, K]."""
    g = label_map.shape[0]
    k = int(label_map.max()) + 1
    proba = np.zeros((g * g, k))
    proba[np.arange(g * g), label_map.ravel()] = conf_map.ravel()
    rest = (1 - conf_map.ravel()) / max(k - 1, 1)
    for c in range(k):
        other = label_map.ravel() != c
        proba[other, c] = rest[other]
    return proba, np.arange(g * g).reshape(1, g, g)


def test_pseudo_labels_are_balanced_confident_and_never_on_a_boundary():
    g = 12
    label = np.zeros((g, g), int)
    label[:, 8:] = 1  # a small class on the right
    conf = np.full((g, g), 0.6)
    conf[2:6, 2:6] = 0.9  # a sure patch of the large class
    proba, grid = _grid_probs(label, conf)
    rows, classes = selftrain.pseudo_labels(proba, grid, per_class=5)
    assert np.bincount(classes).tolist() == [5, 5]  # the same number for the large and the small class
    r, c = np.unravel_index(rows, (g, g))
    assert (label[r, c] == classes).all()
    assert not np.isin(c, [7, 8]).any()  # pixels next to the class boundary are never chosen
    assert not ((r == 0) | (r == g - 1) | (c == 0) | (c == g - 1)).any()  # nor pixels without all 8 neighbours
    big = classes == 0
    assert (conf[r[big], c[big]] == 0.9).all()  # the surest first


def test_nodata_pixels_are_not_candidates_and_starve_their_neighbours():
    g = 8
    label = np.zeros((g, g), int)
    proba, grid = _grid_probs(label, np.full((g, g), 0.9))
    grid = grid.copy()
    grid[0, 3:5, 3:5] = -1
    rows, _ = selftrain.pseudo_labels(proba, grid, per_class=100)
    r, c = np.unravel_index(rows, (g, g))
    assert not ((r >= 2) & (r <= 5) & (c >= 2) & (c <= 5)).any()


def _scene(n=64, bands=6, seed=0):
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, n), np.int64)
    truth[:, n // 2:] = 1
    truth[n // 2:, :n // 4] = 2
    spectra = np.array([np.linspace(0.1, 0.3, bands), np.linspace(0.4, 0.1, bands),
                        np.full(bands, 0.25)], np.float32)
    hsi = spectra[truth].transpose(2, 0, 1) + rng.normal(scale=0.08, size=(bands, n, n)).astype(np.float32)
    rows, cols = [], []
    for c in range(3):
        r, k = np.nonzero(truth == c)
        pick = rng.choice(r.size, 4, replace=False)
        rows.append(r[pick])
        cols.append(k[pick])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    return hsi.astype(np.float32), TrainingPixels(rows, cols, truth[rows, cols], 3)


def _settings():
    s = PipelineSettings()
    s.device, s.seed = "cpu", 5
    s.backbone.source = "untrained"
    s.head.trees = 30
    s.spatial.cv_trees = 20
    s.representation.rgb_bands = (5, 3, 1)
    s.selftrain.mode = "on"
    s.selftrain.rounds = (1,)
    return s


def test_streamed_self_training_equals_a_whole_array_one_on_a_one_window_scene():
    hsi, labels = _scene()
    reader = StackedReader(ArrayReader(hsi))
    s = _settings()
    reps = fit_scene_representations(reader, {"band_count": hsi.shape[0], "bad_bands": []}, None, s, Progress())
    backbone = prepare_backbone(reader, reps, s, Progress())
    extractor = FeatureExtractor(backbone.model, s.features, ["prgb", "pca"], "cpu")
    x = labelled_features(reader, reps, extractor, labels, s, Progress())
    forest = train_forest(x, labels.class_index, 3, n_trees=s.head.trees, seed=s.seed)
    from engine.heads.classifier import ForestHead

    head = ForestHead(forest, {"n_features": x.shape[1], "group_sizes": [x.shape[1]], "n_classes": 3})
    cv = FoldForests(x, labels.class_index, 3, repeated_folds(labels.class_index, s), s)
    got, report = selftrain.self_train(reader, reps, extractor, labels, x, head, 0, cv, s, Progress())
    assert report["used"] and report["rounds"] == 1

    # the whole scene as one array: features, lattice, pseudo-labels by their definition, forest grown again
    xs, valid = head_inputs(reader, reps, extractor, hsi[None], True)
    lattice = xs[0][:, ::2, ::2]
    ok = valid[0][::2, ::2]
    flat = lattice.reshape(lattice.shape[0], -1).T
    proba = forest.predict_proba(flat)
    pred = proba.argmax(axis=1).reshape(ok.shape)
    g = ok.shape[0]
    per_class = report["per_class"]
    chosen = []
    for c in range(3):
        cand = []
        for i in range(1, g - 1):
            for j in range(1, g - 1):
                block = pred[i - 1:i + 2, j - 1:j + 2]
                if ok[i - 1:i + 2, j - 1:j + 2].all() and (block == c).all():
                    cand.append((-proba[i * g + j, c], i * g + j))
        chosen += [(idx, c) for _, idx in sorted(cand)[:per_class]]
    px = np.array([flat[i] for i, _ in chosen])
    py = np.array([c for _, c in chosen])
    again = train_forest(np.concatenate([x, px]), np.concatenate([labels.class_index, py]), 3,
                         n_trees=s.head.trees, seed=s.seed)
    assert report["pseudo_labels_per_class"] == np.bincount(py, minlength=3).tolist()
    np.testing.assert_array_equal(got.forest.predict_proba(flat), again.predict_proba(flat))


class _CountingReader:
    """A large scene made up on read, which records how many pixels were read."""

    def __init__(self, height, width, bands=6):
        self.height, self.width, self.band_count, self.pixels = height, width, bands, 0

    def read(self, row, col, rows, cols):
        self.pixels += rows * cols
        rr, cc = np.meshgrid(np.arange(row, row + rows), np.arange(col, col + cols), indexing="ij")
        base = ((rr // 50 + cc // 50) % 2).astype(np.float32)
        return np.stack([base * 0.2 + 0.05 * b for b in range(self.band_count)]).astype(np.float32)


def test_the_pool_does_not_grow_with_the_scene():
    s = _settings()
    s.selftrain.windows = 4
    hsi, _ = _scene()
    small = StackedReader(ArrayReader(hsi))
    reps = fit_scene_representations(small, {"band_count": 6, "bad_bands": []}, None, s, Progress())
    extractor = FeatureExtractor(prepare_backbone(small, reps, s, Progress()).model, s.features, ["prgb", "pca"], "cpu")
    sizes = []
    for n in (256, 2048):
        raw = _CountingReader(n, n)
        pool = selftrain.sample_pool(StackedReader(raw), reps, extractor, s, 0, Progress())
        sizes.append((pool.x.shape[0], raw.pixels))
    assert sizes[0] == sizes[1] == (4 * 32 * 32, 4 * 64 * 64)  # the same pool, the same pixels read


def test_a_class_that_vanishes_from_the_map_is_named_in_the_log():
    messages = []
    model = SimpleNamespace(report={"labels_per_class": [10, 3, 5]})
    gone = report_vanished(model, np.array([900, 0, 40]), Progress(on_message=messages.append),
                           ["water", "wetland", "forest"])
    assert gone == [1]
    assert len(messages) == 1 and "wetland (3 training labels)" in messages[0] and "received no pixel" in messages[0]
    messages.clear()
    assert report_vanished(model, np.array([900, 1, 40]), Progress(on_message=messages.append)) == []
    assert messages == []
