"""Real data end to end: the Sen1Floods11 chip (S2 13 bands + S1 VV/VH dB) with sparse points from its hand
labels, through ``processing.run`` with short settings; judged on every other labelled pixel."""
from __future__ import annotations

import json

import numpy as np
import pytest

from helpers_rasters import label_points_from_raster, needs_real_data, read_array, real_chip_crop

SIZE = 512  # the whole chip: about 25 s here with these settings
PER_CLASS = 30  # sparse: 60 of 262,144 pixels


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
@needs_real_data
def test_real_chip_water_map_is_accurate_on_independent_pixels(qgis_app, tmp_path):
    import processing
    from qgis.core import QgsVectorLayer

    crop = real_chip_crop(tmp_path, row=0, col=0, size=SIZE)
    points, truth, rows, cols = label_points_from_raster(crop["labels"], tmp_path / "points.gpkg", PER_CLASS, seed=0)
    out = tmp_path / "water.tif"
    model = tmp_path / "water.difflc"
    processing.run("difflc:trainandclassify", {
        "HSI": crop["s2"], "SAR": crop["s1"], "LABELS": points, "CLASS_FIELD": "class_id", "OUTPUT": str(out),
        "MODEL": str(model), "COMPACT_STEPS": 2, "ADAPT_STEPS": 2, "STRIDE": 32, "SEED": 0})
    data, facts = read_array(out)
    assert facts["nodata"] == 255  # 0 ("not water") is a class value
    evaluate = truth != -1
    evaluate[rows, cols] = False
    assert evaluate.sum() > 0.9 * truth.size - 2 * PER_CLASS
    oa = float((data[evaluate] == truth[evaluate]).mean())
    assert oa > 0.8, f"overall accuracy {oa:.3f} on {evaluate.sum()} non-training labelled pixels"

    # the accuracy algorithm, told to leave out the training points and the -1 labels, agrees with that count
    js = tmp_path / "acc.json"
    result = processing.run("difflc:accuracy", {
        "CLASSIFIED": str(out), "REFERENCE": crop["labels"], "IGNORE": "-1",
        "EXCLUDE": QgsVectorLayer(points, "training", "ogr"), "JSON": str(js), "HTML": None})
    assert result["OA"] == pytest.approx(oa)
    assert json.loads(js.read_text())["n_samples"] == int(evaluate.sum())

    # the map cleaned with a 0.1 ha minimum mapping unit: the chip is in EPSG:4326, so the unit is converted with
    # the mean ellipsoidal pixel area (about 78.5 m², i.e. 13 pixels); class names and nodata carried over
    from scipy.ndimage import label

    cleaned = tmp_path / "water_clean.tif"
    processing.run("difflc:cleanmap", {"INPUT": str(out), "SIEVE_AREA": 0.1, "MAJORITY_RADIUS": 1,
                                       "OUTPUT": str(cleaned)})
    clean, clean_facts = read_array(cleaned)
    assert clean_facts["categories"][:2] == facts["categories"][:2] and clean_facts["nodata"] == facts["nodata"]
    assert np.array_equal(clean == facts["nodata"], data == facts["nodata"])
    for value in (0, 1):
        labelled, _ = label(clean == value)
        assert np.bincount(labelled.ravel())[1:].min() >= 13
    assert float((clean[evaluate] == truth[evaluate]).mean()) > oa - 0.02  # cleaning does not wreck the map

    # the saved model again, limited to a polygon mask over the top half, with per-class probabilities
    from osgeo import gdal, ogr, osr

    ds = gdal.Open(crop["s2"])
    gt, h, w = ds.GetGeoTransform(), ds.RasterYSize, ds.RasterXSize
    ds = None
    x0, x1, y0 = gt[0], gt[0] + w * gt[1], gt[3]
    ymid = y0 + (h // 2) * gt[5]
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    mask_path = str(tmp_path / "top_half.gpkg")
    src = ogr.GetDriverByName("GPKG").CreateDataSource(mask_path)
    layer = src.CreateLayer("mask", srs, ogr.wkbPolygon)
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetGeometry(ogr.CreateGeometryFromWkt(f"POLYGON(({x0} {y0},{x1} {y0},{x1} {ymid},{x0} {ymid},{x0} {y0}))"))
    layer.CreateFeature(feature)
    src = None
    masked, probs = tmp_path / "masked.tif", tmp_path / "probs.tif"
    processing.run("difflc:classify", {"MODEL": str(model), "HSI": crop["s2"], "SAR": crop["s1"],
                                       "MASK": mask_path, "OUTPUT": str(masked), "PROBABILITIES": str(probs)})
    mdata, mfacts = read_array(masked)
    nod = mfacts["nodata"]
    assert (mdata[h // 2 + 1:] == nod).all() and (mdata[: h // 2 - 1] != nod).all()
    # inside the mask, away from its edge (no 64-px window or smoothing halo reaches outside): the same map;
    # nearer the edge the windows see the masked half as nodata, so a few pixels may differ
    far = h // 2 - 64 - 16
    assert np.array_equal(mdata[:far], data[:far])
    assert float((mdata[: h // 2 - 1] == data[: h // 2 - 1]).mean()) > 0.97
    p = gdal.Open(str(probs))
    assert p.RasterCount == 2 and [p.GetRasterBand(i).GetDescription() for i in (1, 2)] == facts["categories"][:2]
    parr = p.ReadAsArray()
    p = None
    inside = mdata != nod
    assert np.array_equal(parr.argmax(axis=0)[inside], mdata[inside])
    assert (parr[:, ~inside] == -1).all()

