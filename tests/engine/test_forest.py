"""Random Forest head: it learns, stores as plain arrays, reloads identically, refuses damaged arrays, cancels."""
import json

import numpy as np
import pytest

from engine.heads.classifier import ForestHead, fit_head, load_head
from engine.heads.forest import Forest, train_forest
from engine.progress import Cancelled, Progress
from engine.settings import HeadSettings


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = (rng.normal(scale=2.0, size=(3, 10))[y] + rng.normal(size=(n, 10))).astype(np.float32)
    return x, y


def test_forest_head_learns_and_round_trips_through_plain_tensors():
    x, y = _data()
    head = fit_head(x[:200], y[:200], [6, 4], HeadSettings(kind="forest", trees=60), seed=0, n_classes=3)
    assert isinstance(head, ForestHead)
    proba = head.predict_proba(x[200:])
    assert proba.shape == (100, 3) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert (proba.argmax(1) == y[200:]).mean() >= 0.9
    assert head.val_metrics["n_samples"] == head.config["n_val"] > 150  # out-of-bag: nearly every pixel
    state = head.state_dict()
    assert sorted(state) == [f"forest.{k}" for k in sorted(("left", "right", "feature", "threshold", "proba",
                                                              "roots"))]
    again = load_head(json.loads(json.dumps(head.config)), state)
    np.testing.assert_array_equal(again.predict_proba(x[200:]), proba)
    with pytest.raises(ValueError, match=r"expects \[N, 10\]"):
        again.predict_proba(x[:, :9])


def test_numpy_traversal_matches_compiled_and_seed_decides():
    x, y = _data()
    f = train_forest(x, y, 3, n_trees=40, seed=5)
    np.testing.assert_allclose(f.predict_proba_numpy(x), f.predict_proba(x), atol=1e-6)
    same = train_forest(x, y, 3, n_trees=40, seed=5)
    other = train_forest(x, y, 3, n_trees=40, seed=6)
    np.testing.assert_array_equal(same.predict_proba(x), f.predict_proba(x))
    assert not np.array_equal(other.predict_proba(x), f.predict_proba(x))


def test_chunked_growth_equals_one_scikit_learn_fit():
    from sklearn.ensemble import RandomForestClassifier

    x, y = _data()
    f = train_forest(x, y, 3, n_trees=120, seed=2)  # 3 chunks of 50 / 50 / 20 trees
    ref = RandomForestClassifier(n_estimators=120, random_state=2, n_jobs=1, oob_score=True).fit(x, y)
    assert f.n_trees == 120
    np.testing.assert_allclose(f.predict_proba(x), ref.predict_proba(x), atol=1e-6)
    np.testing.assert_allclose(f.oob_proba, ref.oob_decision_function_, atol=1e-6)


def test_a_class_absent_from_training_gets_zero_probability():
    x, y = _data()
    keep = y != 1
    f = train_forest(x[keep], y[keep], 3, n_trees=20, seed=0)
    p = f.predict_proba(x)
    assert p.shape == (300, 3) and np.all(p[:, 1] == 0)


@pytest.mark.parametrize("damage, message", [
    (lambda a: a.pop("threshold"), "missing"),
    (lambda a: a.__setitem__("left", np.where(a["left"] > 0, a["left"] + 10 ** 6, a["left"])), "child links"),
    (lambda a: a.__setitem__("right", np.where(a["right"] > 0, 0, a["right"])), "child links"),
    (lambda a: a.__setitem__("feature", a["feature"] + 99), "outside its"),
    (lambda a: a.__setitem__("roots", a["roots"][::-1].copy()), "root offsets"),
    (lambda a: a.__setitem__("proba", a["proba"][:, :2]), "disagree"),
])
def test_damaged_arrays_are_refused_before_any_traversal(damage, message):
    x, y = _data()
    arrays = train_forest(x, y, 3, n_trees=5, seed=0).arrays()
    damage(arrays)
    with pytest.raises(ValueError, match=message):
        Forest(arrays, 10, 3)
    head = fit_head(x, y, [10], HeadSettings(kind="forest", trees=5), seed=0)
    state = {k: v for k, v in head.state_dict().items() if k != "forest.roots"}
    with pytest.raises(ValueError, match="stored forest head is damaged"):
        load_head(head.config, state)


def test_cancel_stops_training_and_bad_inputs_are_explained():
    x, y = _data()
    calls = []

    def cancel_after_first_chunk():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        train_forest(x, y, 3, n_trees=500, seed=0, progress=Progress(is_canceled=cancel_after_first_chunk))
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train_forest(bad, y, 3, n_trees=5)
    with pytest.raises(ValueError, match="at least 2 classes"):
        train_forest(x, np.zeros_like(y), 3, n_trees=5)
    with pytest.raises(ValueError, match="unknown head kind 'svm'"):
        fit_head(x, y, [10], HeadSettings(kind="svm"), seed=0)


def _bands_and_noise(n=400, seed=0):
    """Bands that separate the classes, beside 'diffusion features' that are pure noise (or informative)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    bands = (y[:, None] * 1.2 + rng.normal(size=(n, 4))).astype(np.float32)
    noise = rng.normal(size=(n, 60)).astype(np.float32)
    return noise, bands, y


def test_feature_check_drops_features_that_hurt_and_keeps_those_that_help():
    noise, bands, y = _bands_and_noise()
    x = np.c_[noise, bands]
    s = HeadSettings(kind="forest", trees=100)
    head = fit_head(x, y, [60, 4], s, seed=0, spectrum_last=True)
    check = head.config["feature_check"]
    assert check["diffusion_features_used"] is False and check["rule"] == "best"
    assert check["bands_only_right"] > check["features_right"]
    sel = check["selection"]  # the features are listed first: ties keep them
    assert sel["chosen"] == "bands only" and list(sel["scores"]) == ["bands + features", "bands only"]
    se = fit_head(x, y, [60, 4], HeadSettings(kind="forest", trees=100, feature_check_rule="one-se"), seed=0,
                  spectrum_last=True).config["feature_check"]["selection"]  # the bands clear one SE as well
    assert se["chosen"] == "bands only"
    assert se["scores"]["bands only"]["mean"] > se["scores"]["bands + features"]["mean"] + se["scores"]["bands + features"]["se"]
    sign = fit_head(x, y, [60, 4], HeadSettings(kind="forest", trees=100, feature_check_rule="sign"), seed=0,
                    spectrum_last=True).config["feature_check"]
    assert sign["diffusion_features_used"] is False and sign["p_value"] < 0.1  # 0.2's test agrees here
    inner = head.forest.left >= 0
    assert head.forest.feature[inner].min() >= 60  # the kept forest reads the band columns of the full input
    bands_only = train_forest(bands, y, 2, n_trees=100, seed=0)
    np.testing.assert_allclose(head.predict_proba(x), bands_only.predict_proba(bands), atol=1e-6)
    # features that carry the class (a cleaner copy of it) are kept
    informative = np.c_[y[:, None] + 0.1 * noise[:, :60], bands].astype(np.float32)
    kept = fit_head(informative, y, [60, 4], s, seed=0, spectrum_last=True)
    assert kept.config["feature_check"]["diffusion_features_used"] is True
    # off when asked, and when the head is not told the last group is the bands
    off = fit_head(x, y, [60, 4], HeadSettings(kind="forest", trees=100, feature_check_p=0.0), seed=0,
                   spectrum_last=True)
    assert off.config["feature_check"] is None
    assert fit_head(x, y, [60, 4], s, seed=0).config["feature_check"] is None


def test_sign_test_tail():
    from engine.heads.forest import sign_test_greater

    assert sign_test_greater(0, 0) == 1.0
    assert sign_test_greater(5, 0) == pytest.approx(1 / 32)
    assert sign_test_greater(24, 14) == pytest.approx(0.0717, abs=1e-3)  # scipy.stats.binomtest(24, 38)


def test_cache_blocks_and_threads_do_not_change_a_single_bit(monkeypatch):
    """The traversal's row blocks and thread chunks are a speed choice only: every row sums its trees in the
    same order, so any block size and thread count give the same bits."""
    from engine.heads import forest as forest_module

    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 600)
    x = (rng.normal(scale=2.0, size=(4, 40))[y] + rng.normal(size=(600, 40))).astype(np.float32)
    f = train_forest(x, y, 4, n_trees=30, seed=0)
    big = np.concatenate([x] * 12)  # 7,200 rows: several blocks and threads
    monkeypatch.setattr(forest_module, "MIN_ROWS_PER_THREAD", 10**9)
    reference = f.predict_proba(big)
    for share, min_rows, threads in ((1e-9, 1, 1), (0.5, 1000, 1), (0.01, 500, 3)):
        monkeypatch.setattr(forest_module, "CACHE_SHARE", share)
        monkeypatch.setattr(forest_module, "MIN_CACHE_ROWS", min_rows)
        monkeypatch.setattr(forest_module, "MIN_ROWS_PER_THREAD", 1)
        monkeypatch.setattr(forest_module, "cpu_threads", lambda n=threads: n)
        np.testing.assert_array_equal(f.predict_proba(big), reference)


def test_row_blocks_share_the_last_level_cache_between_threads(monkeypatch):
    from engine import cpu
    from engine.heads import forest as forest_module

    monkeypatch.setattr(cpu, "last_level_cache_bytes", lambda: 32 << 20)
    assert forest_module.cache_rows(141, 2) == (8 << 20) // (4 * 141)  # 14,873 rows: the measured best region
    assert forest_module.cache_rows(141, 1) == (16 << 20) // (4 * 141)
    assert forest_module.cache_rows(10_000, 8) == forest_module.MIN_CACHE_ROWS
    monkeypatch.setattr(cpu, "last_level_cache_bytes", lambda: None)  # unknown: a common desktop L3
    assert forest_module.cache_rows(141, 2) == int(0.5 * forest_module.UNKNOWN_CACHE_BYTES / 2) // (4 * 141)


def test_last_level_cache_is_read_or_unknown():
    from engine.cpu import last_level_cache_bytes

    size = last_level_cache_bytes()
    assert size is None or size >= 64 << 10
