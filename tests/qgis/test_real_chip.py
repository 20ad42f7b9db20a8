"""Real data end to end: the Sen1Floods11 chip (S2 13 bands + S1 VV/VH dB) with sparse points from its hand
labels, through ``processing.run`` with short settings; judged on every other labelled pixel."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from helpers_rasters import CHIP, label_points_from_raster, read_array, real_chip_crop, shared_data

SIZE = int(os.environ.get("DIFFLC_TEST_CHIP_SIZE", "128"))  # 512 = the whole chip
PER_CLASS = int(os.environ.get("PC", "15"))

pytestmark = pytest.mark.skipif(not (shared_data() / CHIP).is_dir(), reason="real data folder ../shared/data absent")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_real_chip_water_map_is_accurate_on_independent_pixels(qgis_app, tmp_path):
    import processing
    from qgis.core import QgsVectorLayer

    row, col = (128, 256) if SIZE == 128 else (0, 0)
    crop = real_chip_crop(tmp_path, row=row, col=col, size=SIZE)
    points, truth, rows, cols = label_points_from_raster(crop["labels"], tmp_path / "points.gpkg", PER_CLASS, seed=0)
    out = tmp_path / "water.tif"
    processing.run("difflc:trainandclassify", {
        "HSI": crop["s2"], "SAR": crop["s1"], "LABELS": points, "CLASS_FIELD": "class_id", "OUTPUT": str(out),
        "COMPACT_STEPS": int(os.environ.get("CS", "2")), "STRIDE": 32, "SEED": 0})
    data, facts = read_array(out)
    assert facts["nodata"] == 255  # 0 ("not water") is a class value
    evaluate = truth != -1
    evaluate[rows, cols] = False
    assert evaluate.sum() > 0.9 * truth.size - 2 * PER_CLASS
    oa = float((data[evaluate] == truth[evaluate]).mean())
    print(f"\nOA {oa:.4f}")
    assert oa > 0.8, f"overall accuracy {oa:.3f} on {evaluate.sum()} non-training labelled pixels"

    # the accuracy algorithm, told to leave out the training points and the -1 labels, agrees with that count
    js = tmp_path / "acc.json"
    result = processing.run("difflc:accuracy", {
        "CLASSIFIED": str(out), "REFERENCE": crop["labels"], "IGNORE": "-1",
        "EXCLUDE": QgsVectorLayer(points, "training", "ogr"), "JSON": str(js), "HTML": None})
    assert result["OA"] == pytest.approx(oa)
    assert json.loads(js.read_text())["n_samples"] == int(evaluate.sum())
