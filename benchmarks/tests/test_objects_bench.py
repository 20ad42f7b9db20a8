"""benchmarks/objects.py: the real objects (connected regions of a label raster, optionally cut into parcels) and
the k-per-class training draw."""
from __future__ import annotations

import numpy as np

from benchmarks.objects import pick, region_objects


def test_regions_are_connected_per_class_small_ones_dropped_and_cells_cut_them():
    labels = np.full((20, 20), -1)
    labels[:10, :10] = 0  # one region of class 0
    labels[12:20, 12:20] = 0  # another
    labels[:10, 12:20] = 1
    labels[15, 2] = 1  # a single pixel: dropped (< 4)
    ids, classes, pixels = region_objects(labels)
    assert classes.tolist() == [0, 0, 1] and pixels.tolist() == [100, 64, 80]
    assert ids[15, 2] == 0 and (ids[labels == -1] == 0).all()
    ids, classes, pixels = region_objects(labels, cell=5)
    assert classes.tolist().count(0) == 4 + 4 and pixels.sum() == 100 + 64 + 80
    assert all(np.unique(labels[ids == k]).size == 1 for k in range(1, classes.size + 1))


def test_pick_draws_k_per_class_leaving_a_small_class_one_object_to_evaluate_on():
    classes = np.array([0] * 10 + [1] * 2 + [2] * 1)
    train = pick(classes, 3, seed=0)
    assert np.bincount(classes[train], minlength=3).tolist() == [3, 1, 1]
    np.testing.assert_array_equal(train, pick(classes, 3, seed=0))
