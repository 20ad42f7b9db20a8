"""Random Forest head: it learns, stores as plain arrays, reloads identically, refuses damaged arrays, cancels."""
import json

import numpy as np
import pytest

from engine.classifier import ForestHead, fit_head, load_head
from engine.forest import Forest, train_forest
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
