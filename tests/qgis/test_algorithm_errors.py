"""Bad and awkward input through ``processing.run``: each case its own test, each message checked.

Tiny settings throughout (96x96 synthetic scene or a 128x128 crop of the real chip, COMPACT_STEPS=2,
STRIDE=32). Failing and cancelled runs must leave no output or temporary file and keep existing outputs.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from helpers_rasters import (CLASS_STYLE, label_points_from_raster, needs_real_data, read_array, real_chip_crop,
                             sample_pixels, scene_points, shared_data, styled_layer, synthetic_scene, write_points)

TINY = {"COMPACT_STEPS": 2, "ADAPT_STEPS": 2, "STRIDE": 32}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_feedback(cancel_above=None):
    """A QgsProcessingFeedback recording pushInfo; with ``cancel_above`` (percent) it asks to cancel once the
    reported progress has passed that value, like a user pressing Cancel half-way."""
    from qgis.core import QgsProcessingFeedback

    class Feedback(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.messages, self.highest, self.cancel_seen = [], 0.0, False

        def pushInfo(self, info):  # noqa: N802
            self.messages.append(info)
            super().pushInfo(info)

        def setProgress(self, progress):  # noqa: N802
            self.highest = max(self.highest, progress)
            super().setProgress(progress)

        def isCanceled(self):  # noqa: N802
            if cancel_above is not None and self.highest > cancel_above:
                self.cancel_seen = True
                return True
            return False

        @property
        def text(self):
            return "\n".join(self.messages)

    return Feedback()


def run(alg, params, feedback=None):
    import processing

    return processing.run(f"difflc:{alg}", params, feedback=feedback or make_feedback())


def error_of(alg, params, feedback=None) -> str:
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException) as info:
        run(alg, params, feedback)
    return str(info.value)


def leftovers(folder: Path):
    """Temporary files the writers use (``.difflc-*``) still in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".difflc-"))


@pytest.fixture(scope="module")
def scene(qgis_app, tmp_path_factory):
    return synthetic_scene(tmp_path_factory.mktemp("scene"))


@pytest.fixture(scope="module")
def labels(scene, tmp_path_factory):
    path, _, _ = scene_points(scene, tmp_path_factory.mktemp("labels") / "labels.gpkg", per_class=8)
    return path


@pytest.fixture(scope="module")
def model(scene, labels, tmp_path_factory):
    """A model trained on the 6-band scene (+ SAR), shared by the predict-time tests."""
    path = tmp_path_factory.mktemp("model") / "model.difflc"
    run("trainclassifier", {"HSI": scene.hsi, "SAR": scene.sar, "LABELS": styled_layer(labels),
                            "CLASS_FIELD": "class_id", "MODEL": str(path), **TINY})
    return str(path)


def train_params(scene, labels, field="class_id", **extra):
    return {"HSI": scene.hsi, "SAR": scene.sar, "LABELS": labels, "CLASS_FIELD": field, **TINY, **extra}


# ------------------------------------------------------------------------------------------------ SAR alignment

@pytest.fixture(scope="module")
def chip(qgis_app, tmp_path_factory):
    """A 128x128 crop of the real chip (EPSG:4326) with its S1 warped to EPSG:32630 (another CRS and grid)."""
    from osgeo import gdal

    folder = tmp_path_factory.mktemp("chip")
    crop = real_chip_crop(folder)
    warped = str(folder / "s1_utm30.tif")
    ds = gdal.Warp(warped, crop["s1"], dstSRS="EPSG:32630", xRes=12.0, yRes=12.0, resampleAlg="bilinear",
                   dstNodata=-9999)
    ds = None
    points, truth, rows, cols = label_points_from_raster(crop["labels"], folder / "points.gpkg", per_class=10)
    return crop, warped, points


@needs_real_data
def test_sar_on_another_crs_is_resampled_onto_the_hsi_grid(chip, tmp_path):
    crop, warped, points = chip
    out = tmp_path / "map.tif"
    fb = make_feedback()
    run("trainandclassify", {"HSI": crop["s2"], "SAR": warped, "LABELS": points, "CLASS_FIELD": "class_id",
                             "OUTPUT": str(out), **TINY}, fb)
    resampled = [m for m in fb.messages if m.startswith("SAR resampled onto the HSI grid")]
    assert resampled and "EPSG:32630 → EPSG:4326" in resampled[0], fb.text
    data, facts = read_array(out)
    s2, s2_facts = read_array(crop["s2"])
    assert facts["size"] == (128, 128) and facts["geotransform"] == s2_facts["geotransform"]
    assert (data != facts["nodata"]).mean() > 0.95  # the warped SAR covers the scene: almost every pixel classified
    assert set(np.unique(data)) - {facts["nodata"]} == {0, 1}  # 0 = not water is a class: nodata moved to 255


@needs_real_data
def test_sar_that_does_not_overlap_stops_with_both_layer_names(scene, labels, tmp_path):
    sar = next((shared_data() / "pyrosar_s1_vv_db").glob("*.tif"))
    message = error_of("trainandclassify", {**train_params(scene, labels), "SAR": str(sar),
                                            "OUTPUT": str(tmp_path / "map.tif")})
    assert "does not overlap" in message
    assert sar.name in message and Path(scene.hsi).name in message
    assert "EPSG:32631" in message and "EPSG:32633" in message
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ labels

def test_points_outside_the_raster_are_counted_and_skipped(scene, tmp_path):
    rows, cols = sample_pixels(scene.truth, 6, seed=3)
    xs, ys = scene.pixel_centre(rows, cols)
    outside_x = [scene.geotransform[0] - 55.0, scene.geotransform[0] + 2000.0, scene.geotransform[0] + 100.0]
    outside_y = [scene.geotransform[3] - 100.0, scene.geotransform[3] - 100.0, scene.geotransform[3] + 35.0]
    values = list(scene.truth[rows, cols]) + [1, 2, 1]
    layer = write_points(tmp_path / "pts.gpkg", list(xs) + outside_x, list(ys) + outside_y, values)
    fb = make_feedback()
    model = tmp_path / "m.difflc"
    run("trainclassifier", train_params(scene, layer, MODEL=str(model)), fb)
    assert "12 of 15 labels used; 3 outside the raster (skipped)" in fb.text
    with zipfile.ZipFile(model) as zf:
        report = json.loads(zf.read("metadata.json"))["labels"]
    assert report["outside_raster"] == 3 and report["used"] == 12


def test_labels_in_another_crs_are_transformed(scene, tmp_path):
    from osgeo import osr

    rows, cols = sample_pixels(scene.truth, 6, seed=6)
    xs, ys = scene.pixel_centre(rows, cols)
    utm, wgs84 = osr.SpatialReference(), osr.SpatialReference()
    utm.ImportFromEPSG(scene.epsg)
    wgs84.ImportFromEPSG(4326)
    for srs in (utm, wgs84):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    lonlat = osr.CoordinateTransformation(utm, wgs84).TransformPoints(np.stack([xs, ys], axis=1).tolist())
    layer = write_points(tmp_path / "pts.gpkg", [p[0] for p in lonlat], [p[1] for p in lonlat],
                         scene.truth[rows, cols], epsg=4326)
    fb = make_feedback()
    run("trainclassifier", train_params(scene, layer, MODEL=str(tmp_path / "m.difflc")), fb)
    assert "12 of 12 labels used" in fb.text  # every point lands on its own pixel of the UTM raster


def test_text_class_field_uses_the_texts_as_class_names(scene, tmp_path):
    names = {1: "water", 2: "forest"}
    layer, rows, cols = scene_points(scene, tmp_path / "pts.gpkg", per_class=8, text_names=names, field="landcover")
    out = tmp_path / "map.tif"
    run("trainandclassify", train_params(scene, layer, field="landcover", OUTPUT=str(out),
                                         MODEL=str(tmp_path / "m.difflc")))
    with zipfile.ZipFile(tmp_path / "m.difflc") as zf:
        classes = json.loads(zf.read("metadata.json"))["classes"]
    assert [(c["value"], c["name"]) for c in classes] == [(1, "forest"), (2, "water")]  # sorted texts → 1..K
    data, facts = read_array(out)
    assert facts["categories"][1:3] == ["forest", "water"]
    assert 'label="forest"' in (tmp_path / "map.qml").read_text()
    code = {"forest": 1, "water": 2}
    expected = np.vectorize(lambda v: code[names[v]])(scene.truth)
    assert (data == expected).mean() > 0.9


def test_class_with_one_point_names_the_class(scene, tmp_path):
    rows, cols = sample_pixels(scene.truth, 5, seed=4)
    xs, ys = scene.pixel_centre(rows, cols)
    values = list(scene.truth[rows, cols]) + [3]
    layer = write_points(tmp_path / "pts.gpkg", list(xs) + [float(xs[0]) + 10.0], list(ys) + [float(ys[0])], values)
    styles = {**CLASS_STYLE, 3: ("Sand", "#ffff99")}
    message = error_of("trainclassifier", train_params(scene, styled_layer(layer, styles=styles),
                                                       MODEL=str(tmp_path / "m.difflc")))
    assert "'Sand' (value 3: 1 usable)" in message and "fewer than 2 usable samples" in message and "class_id" in message
    assert not (tmp_path / "m.difflc").exists() and leftovers(tmp_path) == []


def test_missing_class_field_names_the_field(scene, labels, tmp_path):
    message = error_of("trainclassifier", train_params(scene, labels, field="landuse",
                                                       MODEL=str(tmp_path / "m.difflc")))
    assert "landuse" in message and "class_id" in message  # the missing field and the fields there are
    assert list(tmp_path.iterdir()) == []


def test_empty_label_layer_says_it_is_empty(scene, tmp_path):
    layer = write_points(tmp_path / "empty.gpkg", [], [], [])
    message = error_of("trainandclassify", train_params(scene, layer, OUTPUT=str(tmp_path / "map.tif")))
    assert "is empty" in message and "at least two points per class" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.gpkg"]


# ------------------------------------------------------------------------------------------------ rasters

def test_nodata_holes_in_the_hsi_stay_nodata_in_the_outputs(qgis_app, tmp_path):
    hole = (slice(40, 56), slice(8, 30))
    scene = synthetic_scene(tmp_path, hole=hole, name="holed")
    rows, cols = sample_pixels(scene.truth, 8, seed=5)
    keep = ~((rows >= 40) & (rows < 56) & (cols >= 8) & (cols < 30))
    rows, cols = rows[keep], cols[keep]
    rows, cols = np.append(rows, [45, 50]), np.append(cols, [10, 20])  # two labels inside the hole
    xs, ys = scene.pixel_centre(rows, cols)
    layer = write_points(tmp_path / "pts.gpkg", xs, ys, scene.truth[rows, cols])
    out, conf = tmp_path / "map.tif", tmp_path / "conf.tif"
    fb = make_feedback()
    run("trainandclassify", train_params(scene, layer, OUTPUT=str(out), CONFIDENCE=str(conf)), fb)
    assert "2 on nodata pixels (skipped)" in fb.text
    data, facts = read_array(out)
    cdata, _ = read_array(conf)
    in_hole = np.zeros(scene.shape, bool)
    in_hole[hole] = True
    assert (data[in_hole] == facts["nodata"]).all() and (cdata[in_hole] == -1).all()
    assert (data[~in_hole] != facts["nodata"]).all() and (cdata[~in_hole] >= 0.5 - 1e-6).all()


def test_band_mismatch_at_predict_time_says_what_differs(model, tmp_path):
    five = synthetic_scene(tmp_path, bands=5, name="five")
    message = error_of("classify", {"MODEL": model, "HSI": five.hsi, "SAR": five.sar,
                                    "OUTPUT": str(tmp_path / "map.tif")})
    assert "has 5 bands" in message and "trained on 6" in message
    assert not (tmp_path / "map.tif").exists() and leftovers(tmp_path) == []


def test_classify_without_the_sar_the_model_needs(model, scene, tmp_path):
    message = error_of("classify", {"MODEL": model, "HSI": scene.hsi, "OUTPUT": str(tmp_path / "map.tif")})
    assert "trained with a SAR raster" in message


# ------------------------------------------------------------------------------------------------ cancel

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    from diffusion_landcover.engine.networks.backbone import COMPACT_64, build_backbone, save_backbone

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "base.safetensors"
    save_backbone(build_backbone(COMPACT_64), path)
    return str(path)


def test_cancel_during_adaptation_leaves_no_file(scene, checkpoint, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    fb = make_feedback(cancel_above=40.0)
    message = error_of("adaptbackbone", {"HSI": scene.hsi, "SAR": scene.sar, "BACKBONE": checkpoint,
                                         "ADAPT_STEPS": 40, "ADAPT_BATCH": 2,
                                         "OUTPUT": str(out_dir / "a.difflcbb")}, fb)
    assert "Cancelled" in message
    assert fb.cancel_seen and "FiLM adaptation" in fb.text and fb.highest < 99.0  # stopped inside the loop
    assert list(out_dir.iterdir()) == []


def test_cancel_during_prediction_leaves_no_file(model, scene, tmp_path):
    fb = make_feedback(cancel_above=40.0)
    message = error_of("classify", {"MODEL": model, "HSI": scene.hsi, "SAR": scene.sar,
                                    "OUTPUT": str(tmp_path / "map.tif"), "CONFIDENCE": str(tmp_path / "c.tif")}, fb)
    assert "Cancelled" in message and fb.cancel_seen and 40.0 < fb.highest < 100.0
    assert list(tmp_path.iterdir()) == []  # neither the maps, their temp files nor a .qml


def test_trainandclassify_without_model_output_leaves_no_temporary_model(scene, labels, tmp_path, monkeypatch):
    """Without MODEL the bundle lives in a temporary folder only while the scene is classified, cancel or not."""
    import tempfile

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    out = tmp_path / "out"
    out.mkdir()
    run("trainandclassify", train_params(scene, labels, OUTPUT=str(out / "map.tif")))
    ours = lambda: sorted(p.name for p in temp.iterdir() if p.name.startswith("difflc-"))  # noqa: E731
    assert (out / "map.tif").is_file() and ours() == []
    fb = make_feedback(cancel_above=70.0)  # training is 0-60 %, classification 60-100 %
    message = error_of("trainandclassify", train_params(scene, labels, OUTPUT=str(out / "again.tif")), fb)
    assert "Cancelled" in message and "Classifying" in fb.text
    assert ours() == [] and not list(out.glob("again*")) and leftovers(out) == []


# ------------------------------------------------------------------------------------------------ existing outputs

OLD_MAP, OLD_STYLE = b"previous map bytes", "<qgis>previous style</qgis>"


@pytest.fixture
def existing(tmp_path):
    out, qml = tmp_path / "map.tif", tmp_path / "map.qml"
    out.write_bytes(OLD_MAP)
    qml.write_text(OLD_STYLE)
    return out, qml


def test_failing_run_keeps_an_existing_output(model, existing, tmp_path):
    out, qml = existing
    five = synthetic_scene(tmp_path, bands=5, name="five")
    error_of("classify", {"MODEL": model, "HSI": five.hsi, "SAR": five.sar, "OUTPUT": str(out)})
    assert out.read_bytes() == OLD_MAP and qml.read_text() == OLD_STYLE and leftovers(tmp_path) == []


def test_cancelled_run_keeps_an_existing_output(model, scene, existing, tmp_path):
    out, qml = existing
    error_of("classify", {"MODEL": model, "HSI": scene.hsi, "SAR": scene.sar, "OUTPUT": str(out)},
             make_feedback(cancel_above=40.0))
    assert out.read_bytes() == OLD_MAP and qml.read_text() == OLD_STYLE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.qml", "map.tif"]


def test_successful_run_replaces_an_existing_output_but_never_a_users_style(model, scene, existing):
    """The map is what OUTPUT asked for; the user's own .qml beside it is kept (and said so); a .qml the plugin
    wrote itself (its marker) is replaced."""
    from diffusion_landcover.engine.files import SIDECAR_MARKER

    out, qml = existing
    fb = make_feedback()
    run("classify", {"MODEL": model, "HSI": scene.hsi, "SAR": scene.sar, "OUTPUT": str(out)}, fb)
    data, facts = read_array(out)
    assert facts["size"] == scene.shape and facts["categories"][1:3] == ["Water", "Forest"]
    assert qml.read_text() == OLD_STYLE and "was not written by this plugin: kept" in fb.text
    qml.write_text(f"<!-- {SIDECAR_MARKER} -->\n{OLD_STYLE}")
    run("classify", {"MODEL": model, "HSI": scene.hsi, "SAR": scene.sar, "OUTPUT": str(out)})
    style = qml.read_text()
    assert OLD_STYLE not in style and 'label="Water"' in style and SIDECAR_MARKER in style
