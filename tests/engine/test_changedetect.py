"""engine.tasks.changedetect and jobs.detect_changes: a planted change is found (unsupervised and supervised), the
automatic threshold works, bad inputs stop with messages naming the layers, and nothing is left half-written."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from osgeo import gdal, osr

from engine.assessment.change import roc_auc
from engine.tasks.changedetect import ChangeLabels, ChangeSettings, DateReader, PooledReader, detect_arrays
from engine.errors import UserInputError
from engine.jobs import ChangeRequest, LabelGeometries, detect_changes
from engine.data.readers import ArrayReader
from engine.settings import PipelineSettings

gdal.UseExceptions()
H = W = 48


def _pair(seed=0, bands=4):
    """A smooth textured scene; date 2 = date 1 + noise, with a bright square planted (the change)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.stack([100 + 30 * np.sin(xx / (3 + b)) + 20 * np.cos(yy / (4 + b)) for b in range(bands)])
    t1 = base + rng.normal(0, 2, base.shape)
    t2 = base + rng.normal(0, 2, base.shape)
    change = np.zeros((H, W), bool)
    change[10:22, 26:40] = True
    t2[:, change] += 60
    return t1.astype(np.float32), t2.astype(np.float32), change


def _tiny(features="bands", **kw):
    ps = PipelineSettings(device="cpu")
    ps.representation.sample_size = 5000
    ps.tiles.patch, ps.tiles.stride = 32, 16
    return ChangeSettings(pipeline=ps, features=features, stats_windows=4, trees=50, **kw)


def _tif(path, array, gt=(500000.0, 10.0, 0.0, 5300000.0, 0.0, -10.0), epsg=32632, nodata=None):
    ds = gdal.GetDriverByName("GTiff").Create(str(path), array.shape[2], array.shape[1], array.shape[0],
                                              gdal.GDT_Float32)
    ds.SetGeoTransform(gt)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds.SetProjection(srs.ExportToWkt())
    for b in range(array.shape[0]):
        ds.GetRasterBand(b + 1).WriteArray(array[b])
        if nodata is not None:
            ds.GetRasterBand(b + 1).SetNoDataValue(nodata)
    ds = None
    return str(path)


def test_pooled_reader_spans_both_dates_and_date_reader_repeats_bands():
    a, b = np.zeros((1, 4, 3), np.float32), np.ones((1, 4, 3), np.float32)
    pooled = PooledReader(ArrayReader(a), ArrayReader(b))
    assert pooled.height == 8 and pooled.read(2, 0, 4, 3)[0, :, 0].tolist() == [0, 0, 1, 1]
    sar = DateReader(ArrayReader(np.full((1, 2, 2), np.e - 1, np.float32)), sar=True)
    block = sar.read(0, 0, 2, 2)
    assert sar.band_count == 3 and block.shape == (3, 2, 2) and np.allclose(block, 1.0)


@pytest.mark.parametrize("features", ["bands", "diffusion+bands"])
def test_unsupervised_score_finds_the_planted_change(features):
    t1, t2, change = _pair()
    score, cmap, model = detect_arrays(t1, t2, _tiny(features))
    assert roc_auc(score, change) > 0.95
    assert model.threshold is not None and set(np.unique(cmap)) <= {0, 1}
    hit = (cmap == 1)
    assert (hit & change).sum() / change.sum() > 0.8 and (hit & ~change).sum() / (~change).sum() < 0.1
    if features == "diffusion+bands":
        assert model.n_diffusion > 0 and model.mean.size > model.n_diffusion


def test_supervised_forest_learns_change_from_sparse_labels():
    t1, t2, change = _pair(1)
    rng = np.random.default_rng(0)
    ch, no = np.flatnonzero(change), np.flatnonzero(~change)
    idx = np.concatenate([rng.choice(ch, 10, replace=False), rng.choice(no, 30, replace=False)])
    labels = ChangeLabels(idx // W, idx % W, change.ravel()[idx].astype(np.int64))
    score, cmap, model = detect_arrays(t1, t2, _tiny("bands"), labels=labels)
    assert model.supervised and model.threshold == 0.5
    assert roc_auc(score, change) > 0.95
    assert model.report["validation"]["pixels"] > 0
    pred = cmap == 1
    assert 2 * (pred & change).sum() / (pred.sum() + change.sum()) > 0.8


def test_thresholds_are_selectable():
    t1, t2, change = _pair(2)
    for method in ("otsu", "kittler-illingworth"):
        _, cmap, model = detect_arrays(t1, t2, _tiny("bands", threshold=method))
        assert (cmap == 1)[change].mean() > 0.7
    with pytest.raises(ValueError, match="threshold"):
        _tiny(threshold="median")


def _request(tmp_path, before, after, **kw):
    return ChangeRequest(before, after, str(tmp_path / "change.tif"), _tiny("bands"), **kw)


def test_job_writes_styled_map_score_report_model(tmp_path):
    t1, t2, change = _pair(3)
    before, after = _tif(tmp_path / "t1.tif", t1), _tif(tmp_path / "t2.tif", t2)
    req = _request(tmp_path, before, after, score=str(tmp_path / "score.tif"),
                   report_path=str(tmp_path / "report.json"), model_path=str(tmp_path / "change.difflc"))
    out = detect_changes(req)
    ds = gdal.Open(req.output)
    band = ds.GetRasterBand(1)
    m = band.ReadAsArray()
    assert band.DataType == gdal.GDT_Byte and band.GetNoDataValue() == 255
    assert band.GetCategoryNames()[:2] == ["no change", "change"]
    assert os.path.exists(tmp_path / "change.qml")
    assert (m == 1)[change].mean() > 0.8
    s = gdal.Open(req.score).ReadAsArray()
    assert s.dtype == np.float32 and roc_auc(s, change) > 0.95
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["mode"] == "unsupervised" and rep["changed_pixels"] == int((m == 1).sum())
    assert rep["changed_area_ha"] == pytest.approx(rep["changed_pixels"] * 0.01)
    assert out.result.threshold == rep["threshold"]
    import zipfile
    assert json.loads(zipfile.ZipFile(req.model_path).read("metadata.json"))["format"] == "difflc-change-model"
    assert _names(tmp_path) == ["change.difflc", "change.qml", "change.tif", "report.json", "score.tif", "t1.tif",
                                "t2.tif"]


def test_job_resamples_after_onto_before_grid_and_logs_it(tmp_path):
    t1, t2, change = _pair(4)
    before = _tif(tmp_path / "t1.tif", t1)
    # date 2 at half the pixel size: 2x2 upsampled, same extent
    after = _tif(tmp_path / "t2.tif", np.repeat(np.repeat(t2, 2, 1), 2, 2),
                 gt=(500000.0, 5.0, 0.0, 5300000.0, 0.0, -5.0))
    logs = []
    from engine.progress import Progress
    out = detect_changes(_request(tmp_path, before, after), Progress(on_message=logs.append))
    assert any("AFTER resampled onto the BEFORE grid" in m for m in logs)
    assert out.report["after_resampled"]
    m = gdal.Open(out.output).ReadAsArray()
    assert (m == 1)[change].mean() > 0.7


def _names(folder):
    """Files in ``folder``, GDAL's .aux.xml sidecars (category names of the map) aside."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".aux.xml"))


def _assert_nothing_written(tmp_path, inputs):
    assert _names(tmp_path) == sorted(inputs)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".aux.xml") and not p.name.startswith("t")]


def test_refuses_band_mismatch_non_overlap_all_nodata_and_one_class_labels(tmp_path):
    t1, t2, change = _pair(5)
    before = _tif(tmp_path / "t1.tif", t1)
    three = _tif(tmp_path / "t3.tif", t2[:3])
    far = _tif(tmp_path / "far.tif", t2, gt=(900000.0, 10.0, 0.0, 5300000.0, 0.0, -10.0))
    empty = _tif(tmp_path / "empty.tif", np.full_like(t2, -9999), nodata=-9999)
    inputs = ["t1.tif", "t3.tif", "far.tif", "empty.tif"]
    with pytest.raises(UserInputError, match=r"BEFORE raster t1.tif has 4 band.*AFTER raster t3.tif 3"):
        detect_changes(_request(tmp_path, before, three))
    with pytest.raises(ValueError, match=r"AFTER raster far.tif .*does not overlap the BEFORE raster t1.tif"):
        detect_changes(_request(tmp_path, before, far))
    with pytest.raises(UserInputError, match=r"AFTER raster empty.tif has no valid pixel"):
        detect_changes(_request(tmp_path, before, empty, score=str(tmp_path / "s.tif")))
    xs = 500000.0 + 10 * (np.arange(5) + 0.5)
    ys = np.full(5, 5300000.0 - 5.0)
    labels = LabelGeometries("pts", "changed", xs, ys, [0, 0, 0, 0, 0])
    with pytest.raises(UserInputError, match=r"label layer 'pts' holds only one class .* in field 'changed'"):
        detect_changes(_request(tmp_path, before, _tif(tmp_path / "t2.tif", t2), labels=labels))
    _assert_nothing_written(tmp_path, inputs + ["t2.tif"])


def test_text_labels_and_a_failure_mid_run_leave_nothing(tmp_path, monkeypatch):
    t1, t2, change = _pair(6)
    before, after = _tif(tmp_path / "t1.tif", t1), _tif(tmp_path / "t2.tif", t2)
    rng = np.random.default_rng(1)
    ch, no = np.flatnonzero(change), np.flatnonzero(~change)
    idx = np.concatenate([rng.choice(ch, 8, replace=False), rng.choice(no, 20, replace=False)])
    xs = 500000.0 + 10 * (idx % W + 0.5)
    ys = 5300000.0 - 10 * (idx // W + 0.5)
    values = ["change" if change.ravel()[i] else "no change" for i in idx]
    labels = LabelGeometries("pts", "state", xs, ys, values)
    out = detect_changes(_request(tmp_path, before, after, labels=labels, report_path=str(tmp_path / "r.html")))
    assert out.result.mode == "supervised" and "validation" in out.report
    m = gdal.Open(out.output).ReadAsArray()
    assert (m == 1)[change].mean() > 0.7
    page = (tmp_path / "r.html").read_text(encoding="utf-8")  # quick-looks of both dates and the map, histogram
    assert page.count("<image") == 3 and 'class="threshold"' in page and "full resolution" in page
    for p in (tmp_path / "change.tif", tmp_path / "change.tif.aux.xml", tmp_path / "change.qml", tmp_path / "r.html"):
        p.unlink(missing_ok=True)

    import engine.tasks.changedetect as cd

    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(cd, "automatic_threshold", boom)
    with pytest.raises(RuntimeError):
        detect_changes(_request(tmp_path, before, after, score=str(tmp_path / "s.tif"),
                                report_path=str(tmp_path / "r.json")))
    _assert_nothing_written(tmp_path, ["t1.tif", "t2.tif"])


def _labels(change, seed=1, n_change=8, n_no=20):
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(change), n_change, replace=False),
                          rng.choice(np.flatnonzero(~change), n_no, replace=False)])
    xs = 500000.0 + 10 * (idx % W + 0.5)
    ys = 5300000.0 - 10 * (idx // W + 0.5)
    return LabelGeometries("pts", "changed", xs, ys, [int(change.ravel()[i]) for i in idx])


def test_a_saved_supervised_model_scores_its_own_pair_identically_and_transfers(tmp_path):
    """Fit on one pair and save; applied to the same pair the score is the same bit for bit (representations,
    network, channel statistics and forest all come from the file); applied to another pair of the sensor it
    finds that pair's change without labels."""
    t1, t2, change = _pair(7)
    before, after = _tif(tmp_path / "t1.tif", t1), _tif(tmp_path / "t2.tif", t2)
    settings = _tiny("diffusion+bands")
    trained = detect_changes(ChangeRequest(before, after, str(tmp_path / "fit.tif"), settings,
                                           score=str(tmp_path / "fit_score.tif"), labels=_labels(change),
                                           model_path=str(tmp_path / "change.difflc")))
    assert trained.result.mode == "supervised"
    again = detect_changes(ChangeRequest(before, after, str(tmp_path / "applied.tif"), ChangeSettings(),
                                         score=str(tmp_path / "applied_score.tif"),
                                         report_path=str(tmp_path / "applied.json"),
                                         apply_model=str(tmp_path / "change.difflc")))
    np.testing.assert_array_equal(gdal.Open(str(tmp_path / "applied_score.tif")).ReadAsArray(),
                                  gdal.Open(str(tmp_path / "fit_score.tif")).ReadAsArray())
    rep = json.loads((tmp_path / "applied.json").read_text())
    assert rep["mode"] == "supervised" and rep["applied_model"].endswith("change.difflc")
    assert rep["features"] == "diffusion+bands" and again.result.threshold == 0.5

    u1, u2, other = _pair(8)  # another pair: new noise, the same kind of change elsewhere
    u2[:, other] -= 60
    moved = np.zeros_like(other)
    moved[30:42, 5:20] = True
    u2[:, moved] += 60
    b2, a2 = _tif(tmp_path / "u1.tif", u1), _tif(tmp_path / "u2.tif", u2)
    out = detect_changes(ChangeRequest(b2, a2, str(tmp_path / "other.tif"), ChangeSettings(),
                                       apply_model=str(tmp_path / "change.difflc")))
    m = gdal.Open(out.output).ReadAsArray()
    assert (m == 1)[moved].mean() > 0.8 and (m == 1)[~moved].mean() < 0.1


def test_applying_a_model_refuses_labels_an_unsupervised_model_and_other_bands(tmp_path):
    t1, t2, change = _pair(9)
    before, after = _tif(tmp_path / "t1.tif", t1), _tif(tmp_path / "t2.tif", t2)
    detect_changes(_request(tmp_path, before, after, labels=_labels(change), model_path=str(tmp_path / "sup.difflc")))
    detect_changes(ChangeRequest(before, after, str(tmp_path / "u.tif"), _tiny("bands"),
                                 model_path=str(tmp_path / "unsup.difflc")))
    three1, three2 = _tif(tmp_path / "x1.tif", t1[:3]), _tif(tmp_path / "x2.tif", t2[:3])
    cases = [
        (dict(apply_model=str(tmp_path / "sup.difflc"), labels=_labels(change)), "LABELS and a change model"),
        (dict(apply_model=str(tmp_path / "unsup.difflc")), "unsupervised run"),
    ]
    for kw, message in cases:
        with pytest.raises(UserInputError, match=message):
            detect_changes(ChangeRequest(before, after, str(tmp_path / "no.tif"), ChangeSettings(), **kw))
    with pytest.raises(UserInputError, match=r"trained on 4 band\(s\) and BEFORE x1.tif has 3"):
        detect_changes(ChangeRequest(three1, three2, str(tmp_path / "no.tif"), ChangeSettings(),
                                     apply_model=str(tmp_path / "sup.difflc")))
    assert not (tmp_path / "no.tif").exists()
