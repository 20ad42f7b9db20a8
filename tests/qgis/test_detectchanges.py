"""difflc:detectchanges headless: unsupervised with the default features, supervised from integer points (and that
model applied to a new pair with difflc:applychangemodel), a polygon mask, refusals before any work, and qgis_process on a crop of the real OSCD rennes pair."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers_rasters import EPSG, read_array, rectangle_layer, shared_data, write_points, write_raster

REPO = Path(__file__).resolve().parents[2]
GT = (400000.0, 10.0, 0.0, 5600000.0, 0.0, -10.0)
N = 48

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pair(folder, seed=0, where=(slice(8, 20), slice(24, 40))):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:N, 0:N]
    base = np.stack([100 + 30 * np.sin(xx / (3 + b)) + 20 * np.cos(yy / (4 + b)) for b in range(4)])
    t2 = base + rng.normal(0, 2, base.shape)
    change = np.zeros((N, N), bool)
    change[where] = True
    t2[:, change] += 60
    t1 = base + rng.normal(0, 2, base.shape)
    return (write_raster(folder / "t1.tif", t1.astype(np.float32), GT),
            write_raster(folder / "t2.tif", t2.astype(np.float32), GT), change)


def _change_points(path, change, seed):
    """10 change and 30 no-change points (field ``changed``: 1 / 0) at pixel centres of ``change``."""
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(change), 10, replace=False),
                          rng.choice(np.flatnonzero(~change), 30, replace=False)])
    rows, cols = idx // N, idx % N
    return write_points(path, GT[0] + 10 * (cols + 0.5), GT[3] - 10 * (rows + 0.5), change.ravel()[idx].astype(int),
                        field="changed")


@pytest.fixture
def pair(qgis_app, tmp_path):
    return _pair(tmp_path)


def test_unsupervised_default_writes_styled_map_score_and_report(pair, tmp_path):
    import processing

    before, after, change = pair
    out, score, report = tmp_path / "change.tif", tmp_path / "score.tif", tmp_path / "report.json"
    result = processing.run("difflc:detectchanges", {"BEFORE": before, "AFTER": after, "OUTPUT": str(out),
                                                     "SCORE": str(score), "REPORT": str(report), "STRIDE": 32})
    data, facts = read_array(out)
    assert facts["nodata"] == 255
    assert (data == 1)[change].mean() > 0.8 and (data == 1)[~change].mean() < 0.1
    assert (tmp_path / "change.qml").exists()
    rep = json.loads(report.read_text())
    assert rep["mode"] == "unsupervised" and rep["features"] == "diffusion+bands" and rep["backbone"] == "compact"
    assert result["CHANGED_PIXELS"] == rep["changed_pixels"] == int((data == 1).sum())
    assert result["THRESHOLD_VALUE"] == pytest.approx(rep["threshold"])


def test_supervised_from_integer_points(pair, tmp_path):
    import processing

    before, after, change = pair
    points = _change_points(tmp_path / "pts.gpkg", change, seed=2)
    out = tmp_path / "sup.tif"
    processing.run("difflc:detectchanges", {"BEFORE": before, "AFTER": after, "LABELS": points, "FIELD": "changed",
                                            "FEATURES": 1, "TREES": 50, "OUTPUT": str(out),
                                            "REPORT": str(tmp_path / "r.html")})
    data, _ = read_array(out)
    assert (data == 1)[change].mean() > 0.8
    assert "supervised" in (tmp_path / "r.html").read_text()


def test_a_saved_model_is_applied_to_a_new_pair_and_bad_models_are_refused_before_any_work(pair, tmp_path):
    """Fit (labels) and save with detectchanges; applychangemodel maps the change of another pair without labels.
    An unsupervised model and a pair of other bands are refused at the parameter check."""
    import processing
    from qgis.core import QgsProcessingException

    before, after, change = pair
    points = _change_points(tmp_path / "pts.gpkg", change, seed=3)
    model = tmp_path / "change.difflc"
    processing.run("difflc:detectchanges", {"BEFORE": before, "AFTER": after, "LABELS": points, "FIELD": "changed",
                                            "FEATURES": 1, "TREES": 50, "OUTPUT": str(tmp_path / "fit.tif"),
                                            "MODEL": str(model)})
    other = tmp_path / "other"
    other.mkdir()
    b2, a2, change2 = _pair(other, seed=5, where=(slice(28, 42), slice(4, 20)))
    out = tmp_path / "applied.tif"
    result = processing.run("difflc:applychangemodel", {"MODEL": str(model), "BEFORE": b2, "AFTER": a2,
                                                        "OUTPUT": str(out), "REPORT": str(tmp_path / "a.json")})
    data, facts = read_array(out)
    assert facts["nodata"] == 255 and (tmp_path / "applied.qml").exists()
    assert (data == 1)[change2].mean() > 0.8 and (data == 1)[~change2].mean() < 0.1
    assert result["CHANGED_PIXELS"] == json.loads((tmp_path / "a.json").read_text())["changed_pixels"]

    unsupervised = tmp_path / "unsup.difflc"
    processing.run("difflc:detectchanges", {"BEFORE": before, "AFTER": after, "FEATURES": 1,
                                            "OUTPUT": str(tmp_path / "u.tif"), "MODEL": str(unsupervised)})
    three = write_raster(tmp_path / "three.tif", np.ones((3, N, N), np.float32), GT)
    for params, message in (({"MODEL": str(unsupervised)}, "unsupervised run"),
                            ({"BEFORE": three, "AFTER": three}, r"has 3 band\(s\) and the change model was trained on 4")):
        with pytest.raises(QgsProcessingException, match=message):
            processing.run("difflc:applychangemodel", {"MODEL": str(model), "BEFORE": b2, "AFTER": a2,
                                                       "OUTPUT": str(tmp_path / "no.tif"), **params})
    assert not (tmp_path / "no.tif").exists()


def test_polygon_mask_keeps_detection_inside_and_nodata_outside(pair, tmp_path):
    """MASK takes polygons as in land cover (any CRS): outside them the map and the score are nodata."""
    import processing

    before, after, change = pair
    mask = rectangle_layer(tmp_path / "top.gpkg", GT, (0, 24), (0, N))  # rows 0-23 hold the whole change
    out, score, report = tmp_path / "masked.tif", tmp_path / "masked_score.tif", tmp_path / "masked.json"
    processing.run("difflc:detectchanges", {"BEFORE": before, "AFTER": after, "MASK": mask, "FEATURES": 1,
                                            "OUTPUT": str(out), "SCORE": str(score), "REPORT": str(report)})
    data, facts = read_array(out)
    inside = np.zeros((N, N), bool)
    inside[:24] = True
    assert (data[~inside] == facts["nodata"]).all() and (data[inside] != facts["nodata"]).all()
    assert (data == 1)[change].mean() > 0.8 and (data == 1)[inside & ~change].mean() < 0.1
    s, score_facts = read_array(score)
    assert np.isnan(score_facts["nodata"]) and np.isnan(s[~inside]).all() and np.isfinite(s[inside]).all()
    assert json.loads(report.read_text())["changed_pixels"] == int((data == 1).sum())


def test_band_mismatch_is_refused_before_any_work(pair, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    before, _, _ = pair
    three = write_raster(tmp_path / "three.tif", np.ones((3, N, N), np.float32), GT)
    with pytest.raises(QgsProcessingException, match=r"4 band\(s\) and AFTER 'three' 3"):
        processing.run("difflc:detectchanges", {"BEFORE": before, "AFTER": three, "OUTPUT": str(tmp_path / "x.tif")})
    assert not (tmp_path / "x.tif").exists()


@pytest.mark.real_data
def test_qgis_process_on_a_real_oscd_crop(qgis_app, tmp_path):
    """The README's command on a 96x96 crop of the OSCD rennes pair (bands only: the network path runs above)."""
    from osgeo import gdal

    folder = shared_data() / "change"
    if not (folder / "rennes_t1.tif").exists():
        pytest.skip("no OSCD data in shared/data/change")
    crops = []
    gdal.SetConfigOption("GDAL_PAM_ENABLED", "NO")  # read-only source: no .aux.xml beside the shared data
    try:
        for t in ("t1", "t2"):
            gdal.Translate(str(tmp_path / f"rennes_{t}.tif"), str(folder / f"rennes_{t}.tif"),
                           srcWin=[200, 150, 96, 96])
            crops.append(str(tmp_path / f"rennes_{t}.tif"))
    finally:
        gdal.SetConfigOption("GDAL_PAM_ENABLED", None)
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    env["QGIS_CUSTOM_CONFIG_PATH"] = str(tmp_path / "profile")
    out = tmp_path / "rennes_change.tif"
    proc = subprocess.run([str(REPO / "scripts" / "qgis_process"), "--json", "run", "difflc:detectchanges", "--",
                           f"BEFORE={crops[0]}", f"AFTER={crops[1]}", "FEATURES=1", f"OUTPUT={out}",
                           f"SCORE={tmp_path / 'score.tif'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(proc.stdout[proc.stdout.index("{"):])["results"]
    data, facts = read_array(out)
    assert set(np.unique(data)) <= {0, 1} and results["CHANGED_PIXELS"] == int((data == 1).sum()) > 0
    assert not list(folder.glob("*.aux.xml"))
