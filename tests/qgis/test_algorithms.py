"""Every difflc Processing algorithm through ``processing.run`` on small synthetic rasters (tiny settings).

One model is trained per module and shared; each run uses COMPACT_STEPS=2 and STRIDE=32 on a 96x96 scene,
so a pipeline run takes seconds on a 2-core CPU.
"""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from helpers_rasters import (CLASS_STYLE, EPSG, HSI_NODATA, read_array, rectangle_layer, scene_points, styled_layer,
                             synthetic_scene, write_points, write_raster)

TINY = {"COMPACT_STEPS": 2, "ADAPT_STEPS": 2, "STRIDE": 32}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Recorder:
    """Collects what an algorithm logs (pushInfo) through a real QgsProcessingFeedback."""

    def __init__(self):
        from qgis.core import QgsProcessingFeedback

        self.feedback = QgsProcessingFeedback()
        self.messages = []
        self.feedback.pushInfo = self.messages.append

    @property
    def text(self) -> str:
        return "\n".join(self.messages)


def run(alg, params, recorder=None):
    import processing

    return processing.run(f"difflc:{alg}", params, feedback=(recorder or Recorder()).feedback)


@pytest.fixture(scope="module")
def scene(qgis_app, tmp_path_factory):
    return synthetic_scene(tmp_path_factory.mktemp("scene"))


@pytest.fixture(scope="module")
def labels(scene, tmp_path_factory):
    path, rows, cols = scene_points(scene, tmp_path_factory.mktemp("labels") / "labels.gpkg", per_class=8)
    return styled_layer(path), rows, cols


@pytest.fixture(scope="module")
def trained(scene, labels, tmp_path_factory):
    """One trainclassifier run shared by the model-file and classify tests."""
    folder = tmp_path_factory.mktemp("trained")
    rec = Recorder()
    result = run("trainclassifier", {"HSI": scene.hsi, "SAR": scene.sar, "LABELS": labels[0],
                                     "CLASS_FIELD": "class_id", "MODEL": str(folder / "model.difflc"),
                                     "REPORT": str(folder / "report.json"), **TINY}, rec)
    return result, rec, folder


def _bundle(path):
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        metadata = json.loads(zf.read("metadata.json"))
        weights = zf.read("weights.safetensors")
    from safetensors.torch import load

    return names, metadata, load(weights)


# ------------------------------------------------------------------------------------------------ representations

def test_buildrepresentations_writes_three_band_images_with_nan_at_nodata(qgis_app, tmp_path):
    from scipy.stats import spearmanr

    hsi_hole, sar_hole = (slice(10, 20), slice(30, 45)), (slice(60, 70), slice(5, 12))
    scene = synthetic_scene(tmp_path, hole=hsi_hole, sar_hole=sar_hole, name="holed")
    out = {k: str(tmp_path / f"{k.lower()}.tif") for k in ("PRGB", "PCA", "SAR_IMAGE")}
    result = run("buildrepresentations", {"HSI": scene.hsi, "SAR": scene.sar, **out})
    assert result == out
    hsi, _ = read_array(scene.hsi)
    for key, path in out.items():
        data, facts = read_array(path)
        assert facts["bands"] == 3 and facts["dtype"] == "Float32", key
        assert facts["size"] == scene.shape and facts["geotransform"] == scene.geotransform
        hole = sar_hole if key == "SAR_IMAGE" else hsi_hole
        assert np.isnan(data[:, hole[0], hole[1]]).all(), f"{key}: its input's nodata must stay NaN"
        valid = np.delete(data.reshape(3, -1), np.flatnonzero(np.isnan(data[0]).ravel()), axis=1)
        assert valid.size and not np.isnan(valid).any()
        assert valid.min() >= -1.0 and valid.max() <= 1.0, key
        assert valid.min() < -0.9 and valid.max() > 0.9, f"{key}: a 2-98 % stretch spans [-1, 1]"
    # pseudo-RGB red is the band nearest 640 nm (band 3 by its wavelength metadata), not band 1
    prgb, _ = read_array(out["PRGB"])
    ok = hsi[0] != HSI_NODATA
    assert spearmanr(prgb[0][ok], hsi[2][ok]).correlation > 0.95
    assert spearmanr(prgb[2][ok], hsi[0][ok]).correlation > 0.95  # blue: 460 nm = band 1


def test_buildrepresentations_without_sar_skips_the_sar_image(qgis_app, scene, tmp_path):
    rec = Recorder()
    warnings = []
    rec.feedback.pushWarning = warnings.append
    result = run("buildrepresentations", {"HSI": scene.hsi, "PRGB": str(tmp_path / "p.tif"), "PCA": None,
                                          "SAR_IMAGE": str(tmp_path / "s.tif")}, rec)
    assert result["SAR_IMAGE"] is None and not (tmp_path / "s.tif").exists()
    assert any("No SAR raster" in w for w in warnings)
    assert read_array(tmp_path / "p.tif")[1]["bands"] == 3


# ------------------------------------------------------------------------------------------------ training

def test_trainclassifier_writes_a_self_describing_model_file(trained, scene):
    result, rec, folder = trained
    names, metadata, tensors = _bundle(result["MODEL"])
    assert sorted(names) == ["metadata.json", "weights.safetensors"]
    # classes with the names and colours of the label layer's categorized renderer
    assert metadata["classes"] == [{"value": v, "name": n, "color": c} for v, (n, c) in CLASS_STYLE.items()]
    hsi, sar = metadata["inputs"]["hsi"], metadata["inputs"]["sar"]
    assert hsi["band_count"] == 6 and hsi["wavelengths_nm"] == pytest.approx([460, 550, 640, 710, 840, 1610])
    assert sar["band_count"] == 2 and sar["descriptions"] == ["VV", "VH"]
    assert metadata["settings"]["backbone"]["compact_steps"] == 2
    assert metadata["settings"]["tiles"]["stride"] == 32  # TINY
    # the default Stage A without an ImageNet checkpoint: a seeded, untrained compact network (stored whole)
    assert metadata["backbone"]["kind"] == "compact" and len(metadata["backbone"]["fingerprint"]) == 64
    assert metadata["settings"]["backbone"]["source"] == "auto"
    assert metadata["spatial"]["sigma"] in metadata["settings"]["spatial"]["candidates"]
    assert str(EPSG) in metadata["crs_wkt"] and metadata["pixel_size"] == [10.0, 10.0]
    assert metadata["labels"]["used"] == 16 and metadata["labels"]["per_class"] == {"Water": 8, "Forest": 8}
    assert any(k.startswith("head.") for k in tensors) and any(k.startswith("backbone.") for k in tensors)
    # the validation metrics are logged, returned and written to the report
    report = json.loads((folder / "report.json").read_text())
    assert 0.0 <= result["VALIDATION_OA"] <= 1.0
    assert report["overall_accuracy"] == pytest.approx(result["VALIDATION_OA"])
    assert "Validation on out-of-bag training labels" in rec.text
    # the default forest head says whether it kept the diffusion features, and why
    check = metadata["training"]["feature_check"]
    assert metadata["head"]["kind"] == "forest" and isinstance(check["diffusion_features_used"], bool)
    assert "Diffusion-feature check (out-of-bag, training labels)" in rec.text
    assert "16 of 16 labels used" in rec.text
    # what each input is worth: out-of-bag OA, spatially blocked CV (mean, spread) and importance per input group
    worth = report["extra"]["input_value"]
    assert worth["out_of_bag_oa"] == pytest.approx(result["VALIDATION_OA"])
    assert worth["kind"].startswith("spatially blocked") and worth["block_px"] == 32 and worth["folds"] >= 2
    assert 0.5 <= worth["oa_mean"] <= 1.0 and worth["oa_std"] >= 0.0
    groups = set(worth["importance"]) | set(worth["not_used"])
    assert {"HSI bands", "SAR bands", "diffusion features (prgb)", "diffusion features (pca)",
            "diffusion features (sar)"} == groups
    assert "spatially blocked" in report["extra"]["what_each_input_is_worth"]
    assert "What each input is worth (training labels only)" in rec.text


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A small stand-in for the ImageNet checkpoint: a seeded compact ADM saved as our safetensors file."""
    import torch

    from diffusion_landcover.engine.networks.backbone import COMPACT_64, build_backbone, save_backbone

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "base.safetensors"
    fingerprint = save_backbone(build_backbone(COMPACT_64), path)
    return str(path), fingerprint


def test_adaptbackbone_then_trainclassifier_uses_the_adapted_file(scene, labels, checkpoint, tmp_path):
    base, base_fp = checkpoint
    adapted = tmp_path / "scene.difflcbb"
    rec = Recorder()
    result = run("adaptbackbone", {"HSI": scene.hsi, "SAR": scene.sar, "BACKBONE": base, "ADAPT_STEPS": 2,
                                   "ADAPT_BATCH": 2, "OUTPUT": str(adapted)}, rec)
    assert result["OUTPUT"] == str(adapted) and adapted.is_file()
    assert result["KIND"] == "checkpoint" and result["FINGERPRINT"] == base_fp
    assert "FiLM adaptation" in rec.text
    names, meta, film = _bundle(adapted)
    assert meta["format"] == "difflc-backbone" and meta["backbone"]["fingerprint"] == base_fp
    assert meta["backbone"]["modalities"] == ["prgb", "pca", "sar"]
    # only the FiLM path was trained: label embedding + decoder emb_layers
    assert film and all(k.startswith("film.") for k in film)
    assert all(k.startswith(("film.label_emb", "film.output_blocks.")) and
               (k.startswith("film.label_emb") or ".emb_layers." in k) for k in film), sorted(film)

    rec2 = Recorder()
    model = tmp_path / "model.difflc"
    run("trainclassifier", {"HSI": scene.hsi, "SAR": scene.sar, "LABELS": labels[0], "CLASS_FIELD": "class_id",
                            "ADAPTED": str(adapted), "BACKBONE": base, "MODEL": str(model), **TINY}, rec2)
    assert f"Backbone: given (checkpoint, fingerprint {base_fp[:12]})" in rec2.text
    assert "FiLM adaptation" not in rec2.text and "trained on this scene" not in rec2.text  # Stage A not repeated
    _, mmeta, mtensors = _bundle(model)
    assert mmeta["backbone"]["kind"] == "checkpoint" and mmeta["backbone"]["fingerprint"] == base_fp
    for name, tensor in film.items():
        assert np.array_equal(mtensors[name].numpy(), tensor.numpy()), name


def test_adaptbackbone_prior_source_adapts_the_shipped_prior(scene, tmp_path):
    rec = Recorder()
    result = run("adaptbackbone", {"HSI": scene.hsi, "OUTPUT": str(tmp_path / "p.difflcbb"), "ADAPT_STEPS": 2,
                                   "BACKBONE_SOURCE": 2}, rec)
    assert result["KIND"] == "prior" and "shipped remote-sensing prior" in rec.text
    _, meta, tensors = _bundle(tmp_path / "p.difflcbb")
    assert meta["backbone"]["modalities"] == ["prgb", "pca"]  # no SAR given
    assert tensors and all(k.startswith("film.") for k in tensors)  # the delta only, never the prior itself


def test_adaptbackbone_scene_source_trains_the_compact_backbone(scene, tmp_path):
    result = run("adaptbackbone", {"HSI": scene.hsi, "OUTPUT": str(tmp_path / "c.difflcbb"), "COMPACT_STEPS": 2,
                                   "BACKBONE_SOURCE": 4})
    assert result["KIND"] == "compact"
    _, meta, tensors = _bundle(tmp_path / "c.difflcbb")
    assert tensors and all(k.startswith("backbone.") for k in tensors)


# ------------------------------------------------------------------------------------------------ classification

def test_classify_writes_a_styled_byte_map_and_confidence(qgis_app, trained, scene, tmp_path):
    from qgis.core import QgsRasterLayer

    out, conf = tmp_path / "map.tif", tmp_path / "conf.tif"
    rec = Recorder()
    result = run("classify", {"MODEL": trained[0]["MODEL"], "HSI": scene.hsi, "SAR": scene.sar,
                              "OUTPUT": str(out), "CONFIDENCE": str(conf)}, rec)
    assert result == {"OUTPUT": str(out), "CONFIDENCE": str(conf), "PROBABILITIES": None}
    data, facts = read_array(out)
    assert facts["dtype"] == "Byte" and facts["nodata"] == 0
    assert set(np.unique(data)) <= {1, 2} and facts["size"] == scene.shape
    assert facts["categories"][1:3] == ["Water", "Forest"] and not facts["categories"][0]
    assert facts["colors"][1][:3] == (0x1f, 0x78, 0xb4) and facts["colors"][2][:3] == (0x33, 0xa0, 0x2c)
    assert facts["geotransform"] == scene.geotransform
    # per-class pixel counts are logged and add up to the scene
    counts = {name: int(rec.text.split(f"{name}: ")[1].split(" pixels")[0]) for name in ("Water", "Forest")}
    assert counts == {"Water": int((data == 1).sum()), "Forest": int((data == 2).sum())}
    # the .qml beside it makes QGIS show the class names and colours
    qml = (tmp_path / "map.qml").read_text()
    assert 'label="Water"' in qml and 'color="#1f78b4"' in qml and 'label="Forest"' in qml
    layer = QgsRasterLayer(str(out), "map", "gdal")
    assert layer.renderer().type() == "paletted"
    assert [(c.value, c.label) for c in layer.renderer().classes()] == [(1, "Water"), (2, "Forest")]
    cdata, cfacts = read_array(conf)
    assert cfacts["dtype"] == "Float32" and cfacts["nodata"] == -1
    assert cdata.min() >= 0.5 - 1e-6 and cdata.max() <= 1.0 + 1e-6  # winning probability of two classes


def test_trainandclassify_one_step_beats_chance_clearly(scene, labels, tmp_path):
    layer, rows, cols = labels
    out = tmp_path / "lc.tif"
    rec = Recorder()
    result = run("trainandclassify", {"HSI": scene.hsi, "SAR": scene.sar, "LABELS": layer, "CLASS_FIELD": "class_id",
                                      "OUTPUT": str(out), "MODEL": str(tmp_path / "m.difflc"),
                                      "REPORT": str(tmp_path / "train.html"), **TINY}, rec)
    assert result["OUTPUT"] == str(out) and result["CONFIDENCE"] is None
    assert (tmp_path / "lc.qml").is_file() and (tmp_path / "m.difflc").is_file()
    page = (tmp_path / "train.html").read_text()
    assert "<svg" in page and 'id="classes"' in page and 'id="smoothing"' in page
    assert page.count("<circle") >= len(rows) and "<image" in page  # the training points over the scene
    data, _ = read_array(out)
    held_out = np.ones(scene.shape, bool)
    held_out[rows, cols] = False
    accuracy = (data[held_out] == scene.truth[held_out]).mean()
    assert accuracy > 0.9, f"accuracy {accuracy:.3f} on pixels without a label (chance is about 0.5)"
    assert "Classifying 96x96 pixels into 2 classes" in rec.text


def test_trainandclassify_classifies_from_memory_exactly_as_train_then_classify(scene, labels, trained, tmp_path):
    """The one-step run uses the model it just fitted (no file written, reloaded or hashed) and maps exactly as
    trainclassifier + classify with the same settings do."""
    result, _, folder = trained
    two_step = tmp_path / "two.tif"
    run("classify", {"MODEL": result["MODEL"], "HSI": scene.hsi, "SAR": scene.sar, "OUTPUT": str(two_step)})
    one_step = tmp_path / "one.tif"
    rec = Recorder()
    out = run("trainandclassify", {"HSI": scene.hsi, "SAR": scene.sar, "LABELS": labels[0], "CLASS_FIELD": "class_id",
                                   "OUTPUT": str(one_step), **TINY}, rec)
    assert out["MODEL"] is None and not list(tmp_path.glob("*.difflc"))
    np.testing.assert_array_equal(read_array(one_step)[0], read_array(two_step)[0])


# ------------------------------------------------------------------------------------------------ accuracy

# a 4x5 map and reference: map classes 1/2/3 (0 = nodata), reference -1 = "no reference"
MAP = np.array([[1, 1, 2, 2, 3],
                [1, 1, 2, 3, 3],
                [1, 2, 2, 3, 0],
                [1, 1, 3, 3, 3]], np.uint8)
REF = np.array([[1, 1, 2, 2, 3],
                [1, 2, 2, 3, 1],
                [-1, 2, 2, 3, 3],
                [2, 1, 3, 3, -1]], np.int16)
NAMES = ["", "Water", "Forest", "Urban"]


def _small_map(folder):
    from osgeo import gdal

    gt = (500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0)
    path = write_raster(folder / "map.tif", MAP, gt, nodata=0)
    ds = gdal.Open(path, gdal.GA_Update)
    ds.GetRasterBand(1).SetCategoryNames(NAMES)
    ds = None
    ref = write_raster(folder / "ref.tif", REF, gt)
    return path, ref, gt


def _hand_confusion(mask):
    """Rows = reference 1..3, columns = map 1..3, counted with plain loops over the pixels kept by ``mask``."""
    cm = np.zeros((3, 3), np.int64)
    for r in range(MAP.shape[0]):
        for c in range(MAP.shape[1]):
            if mask[r, c] and REF[r, c] in (1, 2, 3) and MAP[r, c] in (1, 2, 3):
                cm[REF[r, c] - 1, MAP[r, c] - 1] += 1
    return cm


def test_accuracy_with_reference_raster_ignore_and_exclude(qgis_app, tmp_path):
    from qgis.core import QgsVectorLayer

    classified, reference, gt = _small_map(tmp_path)
    # leave out two pixels (row 0 col 0, row 1 col 1), e.g. where the training points were
    excl = write_points(tmp_path / "train.gpkg", [gt[0] + 5, gt[0] + 15], [gt[3] - 5, gt[3] - 15], [1, 2])
    html, js = tmp_path / "acc.html", tmp_path / "acc.json"
    result = run("accuracy", {"CLASSIFIED": classified, "REFERENCE": reference, "IGNORE": "-1",
                              "EXCLUDE": QgsVectorLayer(excl, "train", "ogr"), "HTML": str(html), "JSON": str(js)})
    mask = np.ones(MAP.shape, bool)
    mask[0, 0] = mask[1, 1] = False
    expected = _hand_confusion(mask)
    assert expected.sum() == 15  # 20 pixels - 2 ignored - 1 map nodata - 2 excluded
    report = json.loads(js.read_text())
    assert report["confusion_matrix"] == expected.tolist()
    assert report["class_values"] == [1, 2, 3]
    assert [c["name"] for c in report["per_class"]] == ["Water", "Forest", "Urban"]
    oa = np.trace(expected) / expected.sum()
    assert report["overall_accuracy"] == pytest.approx(oa) and result["OA"] == pytest.approx(oa)
    recall = np.diag(expected) / expected.sum(axis=1)
    assert result["AA"] == pytest.approx(recall.mean())
    pe = (expected.sum(axis=1) * expected.sum(axis=0)).sum() / expected.sum() ** 2
    assert result["KAPPA"] == pytest.approx((oa - pe) / (1 - pe))
    assert report["extra"]["excluded_pixels"] == 2
    text = html.read_text()
    assert '<table id="confusion-matrix">' in text and "<svg" in text
    table = text.split('<table id="confusion-matrix">')[1].split("</table>")[0]
    assert all(name in table for name in ("Water", "Forest", "Urban"))


def test_accuracy_without_ignore_counts_every_reference_value(qgis_app, tmp_path):
    classified, reference, _ = _small_map(tmp_path)
    js = tmp_path / "acc.json"
    run("accuracy", {"CLASSIFIED": classified, "REFERENCE": reference, "JSON": str(js), "HTML": None,
                     "AREA_ESTIMATES": False})  # -1 is no map class: the area estimators would refuse it
    report = json.loads(js.read_text())
    assert report["class_values"] == [-1, 1, 2, 3]  # -1 is a reference class now
    assert report["n_samples"] == 19  # only the map's nodata pixel is left out


def test_accuracy_with_reference_points(qgis_app, tmp_path):
    from qgis.core import QgsVectorLayer

    classified, _, gt = _small_map(tmp_path)
    # (row, col, reference class): 3 right, 2 wrong, 1 on map nodata, 1 outside the map
    picks = [(0, 0, 1), (0, 2, 2), (3, 4, 3), (1, 0, 2), (3, 2, 1), (2, 4, 3), (9, 9, 1)]
    xs = [gt[0] + (c + 0.5) * gt[1] for _, c, _ in picks]
    ys = [gt[3] + (r + 0.5) * gt[5] for r, _, _ in picks]
    pts = write_points(tmp_path / "ref.gpkg", xs, ys, [v for *_, v in picks], field="truth")
    js = tmp_path / "acc.json"
    result = run("accuracy", {"CLASSIFIED": classified, "REFERENCE_LABELS": QgsVectorLayer(pts, "ref", "ogr"),
                              "REFERENCE_FIELD": "truth", "JSON": str(js), "HTML": None,
                              "AREA_ESTIMATES": False})  # map class 2 holds a single reference point
    report = json.loads(js.read_text())
    # reference 1: (0,0)->1, (3,2)->3; reference 2: (0,2)->2, (1,0)->1; reference 3: (3,4)->3
    assert report["confusion_matrix"] == [[1, 0, 1], [1, 1, 0], [0, 0, 1]]
    assert report["n_samples"] == 5 and result["OA"] == pytest.approx(3 / 5)


def test_accuracy_area_estimates_weight_the_sample_by_the_map_areas(qgis_app, tmp_path):
    """Olofsson et al. 2014 section of the report on the 4x5 map (10 m pixels = 0.01 ha), checked with plain loops."""
    classified, reference, _ = _small_map(tmp_path)
    html, js = tmp_path / "acc.html", tmp_path / "acc.json"
    result = run("accuracy", {"CLASSIFIED": classified, "REFERENCE": reference, "IGNORE": "-1",
                              "HTML": str(html), "JSON": str(js)})
    est = json.loads(js.read_text())["area_estimation"]
    n = _hand_confusion(np.ones(MAP.shape, bool)).T  # rows = map class, columns = reference class
    map_ha = np.array([(MAP == v).sum() for v in (1, 2, 3)]) * 0.01
    total = map_ha.sum()
    assert est["unit"] == "ha" and est["total_area"] == pytest.approx(total) and "projected CRS" in est["area_note"]
    assert [c["map_area"] for c in est["classes"]] == pytest.approx(map_ha.tolist())
    for j, c in enumerate(est["classes"]):
        share = sum(map_ha[i] / total * n[i, j] / n[i].sum() for i in range(3))
        assert c["estimated_area"] == pytest.approx(total * share)
        assert c["users_accuracy"] == pytest.approx(n[j, j] / n[j].sum())
    oa = sum(map_ha[i] / total * n[i, i] / n[i].sum() for i in range(3))
    assert result["ADJUSTED_OA"] == pytest.approx(oa) and est["overall_accuracy"] == pytest.approx(oa)
    text = html.read_text()
    assert "Olofsson et al. 2014" in text and '<table id="area-estimates">' in text
    assert "stratified random sample" in text and "independently of the training data" in text
    assert '<table id="confusion-matrix">' in text  # the plain confusion matrix stays


def test_accuracy_area_estimates_refuse_unusable_samples_with_the_class_name(qgis_app, tmp_path):
    from qgis.core import QgsProcessingException, QgsVectorLayer

    classified, _, gt = _small_map(tmp_path)
    # map class 2 (Forest) gets one reference point only: no stratum variance
    picks = [(0, 0, 1), (1, 0, 1), (0, 2, 2), (3, 4, 3), (3, 2, 3)]
    xs = [gt[0] + (c + 0.5) * gt[1] for _, c, _ in picks]
    ys = [gt[3] + (r + 0.5) * gt[5] for r, _, _ in picks]
    pts = write_points(tmp_path / "ref.gpkg", xs, ys, [v for *_, v in picks], field="truth")
    with pytest.raises(QgsProcessingException, match=r"empty stratum: map class\(es\) 'Forest' \(value 2\)"):
        run("accuracy", {"CLASSIFIED": classified, "REFERENCE_LABELS": QgsVectorLayer(pts, "ref", "ogr"),
                         "REFERENCE_FIELD": "truth", "HTML": None})
    # the same class value named differently in the reference layer's style
    layer = styled_layer(pts, field="truth", styles={1: ("Water", "#1f78b4"), 2: ("Urban", "#e31a1c")})
    with pytest.raises(QgsProcessingException, match="value 2 is 'Forest' in the map but 'Urban' in the reference"):
        run("accuracy", {"CLASSIFIED": classified, "REFERENCE_LABELS": layer, "REFERENCE_FIELD": "truth",
                         "HTML": None, "AREA_ESTIMATES": False})


# ------------------------------------------------------------------------------------------------ clean-up

CLEAN_NAMES = ["", "Meadow", "Lake", "Road"]
CLEAN_COLORS = {1: (10, 200, 30), 2: (0, 60, 250), 3: (120, 120, 120)}


def _styled_map(path, data):
    """A Byte map (nodata 0) styled the GDAL way only: category names + colour table, no .qml.

    Styled at creation: GDAL 3.6's GTiff drops category names set in update mode next to a colour table."""
    from osgeo import gdal, osr

    ds = gdal.GetDriverByName("GTiff").Create(str(path), data.shape[1], data.shape[0], 1, gdal.GDT_Byte)
    ds.SetGeoTransform((500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    ds.SetProjection(srs.ExportToWkt())
    band = ds.GetRasterBand(1)
    band.SetNoDataValue(0)
    ct = gdal.ColorTable()
    for value, rgb in CLEAN_COLORS.items():
        ct.SetColorEntry(value, (*rgb, 255))
    band.SetRasterColorTable(ct)
    band.SetCategoryNames(CLEAN_NAMES)
    band.WriteArray(data.astype(np.uint8))
    ds = None
    return str(path)


def _patch_sizes(data, value, connectivity=4):
    from scipy.ndimage import label

    structure = None if connectivity == 4 else np.ones((3, 3), int)
    labelled, n = label(data == value, structure=structure)
    return sorted(np.bincount(labelled.ravel())[1:].tolist())


def test_cleanmap_sieve_majority_nodata_and_style(qgis_app, tmp_path):
    data = np.ones((20, 20), np.uint8)
    data[2, 2:5] = 2  # a 3-pixel lake: below a 4-pixel unit
    data[8, 2:7] = 2  # a 5-pixel lake: kept
    data[14, 14] = 3  # a lone road pixel: the majority filter takes it
    data[15:20, 0:6] = 0  # nodata
    data[12, 0:3] = 0  # a nodata strip
    source = _styled_map(tmp_path / "map.tif", data)
    sieved = tmp_path / "sieved.tif"
    rec = Recorder()
    run("cleanmap", {"INPUT": source, "SIEVE_PIXELS": 4, "CONNECTIVITY": 0, "OUTPUT": str(sieved)}, rec)
    out, facts = read_array(sieved)
    assert (out[2, 2:5] == 1).all() and (out[8, 2:7] == 2).all()  # 3-pixel island merged, 5-pixel one kept
    assert out[14, 14] == 1  # a lone pixel is below the unit too
    assert np.array_equal(out == 0, data == 0) and facts["nodata"] == 0  # nodata kept, at the same pixels
    assert facts["categories"][:4] == CLEAN_NAMES and facts["colors"][2][:3] == CLEAN_COLORS[2]
    qml = (tmp_path / "sieved.qml").read_text()
    assert 'label="Lake"' in qml and 'color="#003cfa"' in qml
    assert "Lake: 5 pixels" in rec.text

    smooth = tmp_path / "smooth.tif"
    run("cleanmap", {"INPUT": source, "MAJORITY_RADIUS": 1, "OUTPUT": str(smooth)})
    out, _ = read_array(smooth)
    assert out[14, 14] == 1 and (out[8, 2:7] == 1).all()  # a 1-pixel-wide line loses every 3x3 vote
    assert np.array_equal(out == 0, data == 0)


def test_a_map_the_desktop_loads_after_a_run_has_its_class_legend(qgis_app, tmp_path):
    """Processing loads result layers without their default style (the colour table's 256 entries would be the
    legend); the algorithms hand the desktop the map's .qml (issue 22, found by `make desktop-check`)."""
    import processing
    from qgis.core import QgsProject

    data = np.ones((20, 20), np.uint8)
    data[5:9, 5:9] = 2
    source = _styled_map(tmp_path / "map.tif", data)
    out = tmp_path / "loaded.tif"
    project = QgsProject.instance()
    try:
        processing.runAndLoadResults("difflc:cleanmap", {"INPUT": source, "SIEVE_PIXELS": 2, "OUTPUT": str(out)})
        layers = [lay for lay in project.mapLayers().values() if lay.source() == str(out)]
        assert len(layers) == 1
        labels = [c.label for c in layers[0].renderer().classes()]
        assert labels == [n for n in CLEAN_NAMES[1:4] if n], labels
    finally:
        project.removeAllMapLayers()


def test_classify_cleanup_is_the_cleanmap_algorithm(trained, scene, tmp_path):
    """The optional clean-up of classify gives exactly what cleanmap gives on the uncleaned map."""
    model = trained[2] / "model.difflc"
    base = {"MODEL": str(model), "HSI": scene.hsi, "SAR": scene.sar}
    clean = {"MAJORITY_RADIUS": 1, "SIEVE_PIXELS": 30, "CONNECTIVITY": 1}
    run("classify", {**base, "OUTPUT": str(tmp_path / "raw.tif")})
    run("classify", {**base, **clean, "OUTPUT": str(tmp_path / "cleaned.tif")})
    run("cleanmap", {"INPUT": str(tmp_path / "raw.tif"), **clean, "OUTPUT": str(tmp_path / "cleanmap.tif")})
    cleaned, facts = read_array(tmp_path / "cleaned.tif")
    again, _ = read_array(tmp_path / "cleanmap.tif")
    assert np.array_equal(cleaned, again)
    assert facts["categories"][1:3] == ["Water", "Forest"] and (tmp_path / "cleaned.qml").exists()
    for value in (1, 2):
        assert min(_patch_sizes(cleaned, value, connectivity=8)) >= 30


def test_classify_probabilities_are_what_the_map_is_the_argmax_of(qgis_app, trained, scene, tmp_path):
    """PROBABILITIES: one Float32 band per class named after it; argmax = map, max = confidence, nodata shared."""
    from osgeo import gdal

    from helpers_rasters import WAVELENGTHS_NM

    # a scene with a nodata corner, so the nodata rule is exercised
    hsi = gdal.Open(scene.hsi).ReadAsArray().astype(np.float32)
    hsi[:, :10, :12] = HSI_NODATA
    holed = write_raster(tmp_path / "holed.tif", hsi, scene.geotransform, nodata=HSI_NODATA,
                         wavelengths_nm=WAVELENGTHS_NM)
    out, conf, prob = tmp_path / "map.tif", tmp_path / "conf.tif", tmp_path / "prob.tif"
    result = run("classify", {"MODEL": trained[0]["MODEL"], "HSI": holed, "SAR": scene.sar, "OUTPUT": str(out),
                              "CONFIDENCE": str(conf), "PROBABILITIES": str(prob)})
    assert result["PROBABILITIES"] == str(prob)
    data, _ = read_array(out)
    cdata, _ = read_array(conf)
    ds = gdal.Open(str(prob))
    assert ds.RasterCount == 2 and ds.GetRasterBand(1).DataType == gdal.GDT_Float32
    assert [ds.GetRasterBand(b).GetDescription() for b in (1, 2)] == ["Water", "Forest"]
    assert [ds.GetRasterBand(b).GetNoDataValue() for b in (1, 2)] == [-1.0, -1.0]
    p = ds.ReadAsArray()
    nodata = data == 0
    assert nodata[:10, :12].all() and not nodata[20:, 20:].any()
    assert (p[:, nodata] == -1).all() and (cdata[nodata] == -1).all()
    valid = ~nodata
    assert np.allclose(p[:, valid].sum(axis=0), 1.0, atol=1e-4)
    assert (np.array([1, 2])[p.argmax(axis=0)][valid] == data[valid]).all()
    assert np.allclose(p.max(axis=0)[valid], cdata[valid], atol=1e-6)


# ------------------------------------------------------------------------------------------------ mask
def _outputs_nodata_exactly_outside(out, conf, prob, inside):
    data, _ = read_array(out)
    cdata, _ = read_array(conf)
    from osgeo import gdal

    p = gdal.Open(str(prob)).ReadAsArray()
    assert (data[~inside] == 0).all() and (data[inside] > 0).all()
    assert (cdata[~inside] == -1).all() and (cdata[inside] >= 0.5 - 1e-6).all()
    assert (p[:, ~inside] == -1).all() and (p[:, inside] >= 0).all()
    return data


def test_trainandclassify_raster_mask_skips_labels_outside_and_maps_nodata_there(scene, labels, tmp_path):
    layer, rows, cols = labels
    inside = np.zeros(scene.shape, bool)
    inside[:, :60] = True
    mask = write_raster(tmp_path / "mask.tif", inside.astype(np.uint8), scene.geotransform)
    out, conf, prob = tmp_path / "lc.tif", tmp_path / "c.tif", tmp_path / "p.tif"
    rec = Recorder()
    run("trainandclassify", {"HSI": scene.hsi, "SAR": scene.sar, "LABELS": layer, "CLASS_FIELD": "class_id",
                             "MASK": mask, "OUTPUT": str(out), "CONFIDENCE": str(conf), "PROBABILITIES": str(prob),
                             "REPORT": str(tmp_path / "train.json"), **TINY}, rec)
    outside_labels = int((cols >= 60).sum())
    assert 0 < outside_labels < cols.size
    report = json.loads((tmp_path / "train.json").read_text())
    assert report["extra"]["labels"]["outside_mask"] == outside_labels
    assert report["extra"]["labels"]["used"] == cols.size - outside_labels
    assert f"{outside_labels} outside the mask (skipped)" in rec.text
    _outputs_nodata_exactly_outside(out, conf, prob, inside)


def test_classify_polygon_mask_maps_nodata_outside_the_polygons(trained, scene, tmp_path):
    inside = np.zeros(scene.shape, bool)
    inside[10:50, 20:70] = True
    mask = rectangle_layer(tmp_path / "area.gpkg", scene, (10, 50), (20, 70))
    out, conf, prob = tmp_path / "map.tif", tmp_path / "c.tif", tmp_path / "p.tif"
    run("classify", {"MODEL": trained[0]["MODEL"], "HSI": scene.hsi, "SAR": scene.sar, "MASK": mask,
                     "OUTPUT": str(out), "CONFIDENCE": str(conf), "PROBABILITIES": str(prob)})
    data = _outputs_nodata_exactly_outside(out, conf, prob, inside)
    assert (data[inside] == scene.truth[inside]).mean() > 0.9
