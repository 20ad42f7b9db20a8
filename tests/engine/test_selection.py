"""The one selection rule (engine.heads.selection) on planted cases: rare classes count, noise does not decide."""
import numpy as np
import pytest

from engine.heads.selection import select_simplest
from engine.tasks.spatial import Regulariser, centre_regularised, neighbourhood


def test_a_candidate_that_erases_a_rare_class_loses_although_it_wins_on_overall_accuracy():
    # 40 labels of a common class, 3 of a rare one. Candidate 1 gets 3 more common pixels right (OA +0.0)
    # but erases the rare class: plain OA prefers it, mean per-class recall does not.
    y = np.r_[np.zeros(40, int), np.ones(3, int)]
    plain = np.r_[np.r_[np.ones(35), np.zeros(5)], np.ones(3)]
    erasing = np.r_[np.ones(40), np.zeros(3)]
    assert erasing.mean() > plain.mean()  # what 0.2's OA rule would have chosen
    sel = select_simplest(np.stack([plain, erasing]), y, ["none", "smooth"])
    assert sel.label == "none" and sel.best == 0
    assert sel.scores[0].mean == pytest.approx((35 / 40 + 1) / 2)


def test_noise_features_are_not_chosen_on_a_one_pixel_difference():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(6), 8)
    simple = (rng.random(y.size) < 0.7).astype(float)
    simple[3] = 0.0
    complex_ = simple.copy()
    complex_[3] = 1.0  # one pixel apart: within the noise
    sel = select_simplest(np.stack([simple, complex_]), y, ["bands only", "bands + features"])
    assert sel.scores[1].mean > sel.scores[0].mean  # the complex one scores higher ...
    assert sel.label == "bands only"  # ... but not by more than one standard error
    best = select_simplest(np.stack([simple, complex_]), y, ["bands only", "bands + features"], rule="best")
    assert best.label == "bands + features"  # the control without the margin takes it


def test_a_clear_improvement_clears_the_noise():
    y = np.repeat(np.arange(4), 20)
    simple = np.tile(np.r_[np.ones(10), np.zeros(10)], 4)
    better = np.ones(y.size)
    sel = select_simplest(np.stack([simple, better]), y, ["off", "on"])
    assert sel.label == "on" and sel.chosen == sel.best == 1
    assert sel.scores[0].se > 0 and sel.scores[1].se == 0


def test_single_label_classes_borrow_the_pooled_variance():
    y = np.r_[np.zeros(10, int), [1]]
    a = np.r_[np.ones(10), 0.0]
    b = np.r_[np.ones(10), 1.0]  # differs only on the class with one label
    sel = select_simplest(np.stack([a, b]), y, ["a", "b"])
    assert sel.scores[0].se > 0  # one label is never taken as certain


def test_bad_shapes_and_rules_are_refused():
    with pytest.raises(ValueError, match="must be"):
        select_simplest(np.ones((2, 3)), np.zeros(4, int), ["a", "b"])
    with pytest.raises(ValueError, match="unknown selection rule"):
        select_simplest(np.ones((2, 3)), np.zeros(3, int), ["a", "b"], rule="oa")


def test_smoothing_that_would_erase_a_rare_class_is_not_chosen_from_out_of_fold_patches():
    """The planted case end to end: a rare class of 3 isolated pixels inside a large class. Every Gaussian
    smooths them away; OA at held-out pixels barely notices, the rule does."""
    k, h, w = 2, 40, 40
    p = np.zeros((k, h, w), np.float32)
    p[0], p[1] = 0.8, 0.2
    rare = [(10, 10), (20, 25), (30, 12)]
    for r, c in rare:
        p[:, r, c] = (0.3, 0.7)
    common = [(r, c) for r in range(5, 36, 6) for c in range(3, 38, 7)]
    rows = np.array([a for a, _ in common] + [a for a, _ in rare])
    cols = np.array([b for _, b in common] + [b for _, b in rare])
    y = np.r_[np.zeros(len(common), int), np.ones(len(rare), int)]
    cands = [Regulariser(), Regulariser("gaussian", 1.0), Regulariser("gaussian", 2.0)]
    patches = neighbourhood(p, rows, cols, max(c.halo for c in cands))
    correct = np.stack([centre_regularised(patches, c).argmax(axis=1) == y for c in cands]).astype(float)
    assert correct[1].mean() > 0.9  # OA hardly moves ...
    assert correct[1][y == 1].sum() == 0  # ... while the rare class is gone
    assert select_simplest(correct, y, [c.label for c in cands]).label == "none"
