"""Issue 10 through Processing: outputs checked before any work, one error line, band identity, accuracy input
(stops at any moment: test_stops.py). Path refusals are checked in headless QGIS (no training: they must stop
before it) and a representative few through the real qgis_process; every case asserts that no input file
changed."""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers_rasters import scene_points, styled_layer, synthetic_scene, write_raster

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "scripts" / "qgis_process"
TINY = {"COMPACT_STEPS": 2, "STRIDE": 32, "TREES": 10}


def digest(folder: Path):
    """Every file below ``folder`` with its content hash: an input that changed shows up here.

    GDAL/QGIS statistics sidecars (``.aux.xml``) are left out: QGIS itself writes them beside any raster it
    loads as a layer (not this plugin; see the README's troubleshooting table)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(".aux.xml")}


def refusal(alg, params) -> str:
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException) as info:
        processing.run(f"difflc:{alg}", params)
    return str(info.value)


@pytest.fixture(scope="module")
def scene(qgis_app, tmp_path_factory):
    folder = tmp_path_factory.mktemp("scene10")
    scene = synthetic_scene(folder, size=64)
    labels, _, _ = scene_points(scene, folder / "labels.gpkg", per_class=6)
    return scene, labels, folder


@pytest.fixture(scope="module")
def model(scene, tmp_path_factory):
    import processing

    s, labels, _ = scene
    path = tmp_path_factory.mktemp("model10") / "model.difflc"
    processing.run("difflc:trainclassifier", {"HSI": s.hsi, "SAR": s.sar, "LABELS": styled_layer(labels),
                                              "CLASS_FIELD": "class_id", "MODEL": str(path), **TINY})
    return str(path)


def test_outputs_that_would_destroy_inputs_or_each_other_are_refused_before_any_work(scene, tmp_path):
    s, labels, folder = scene
    before = digest(folder)
    base = {"HSI": s.hsi, "SAR": s.sar, "LABELS": labels, "CLASS_FIELD": "class_id", **TINY}
    (tmp_path / "afile").write_text("x")
    cases = [
        ({"OUTPUT": s.hsi}, f"OUTPUT: {s.hsi} is the input HSI; writing it would destroy that input"),
        ({"OUTPUT": s.sar}, "is the input SAR"),
        ({"OUTPUT": str(tmp_path / "m.tif"), "REPORT": labels}, f"REPORT: {labels} is the input LABELS"),
        ({"OUTPUT": str(tmp_path / "m.tif"), "CONFIDENCE": str(tmp_path / "m.tif")},
         "CONFIDENCE: " + str(tmp_path / "m.tif") + " is also the output OUTPUT"),
        ({"OUTPUT": str(tmp_path / "m.tif"), "MODEL": str(tmp_path / "m.tif")}, "MODEL: "),
        ({"OUTPUT": str(tmp_path / "map.jpg")}, "OUTPUT: " + str(tmp_path / "map.jpg") + " — '.jpg' does not fit"),
        ({"OUTPUT": str(tmp_path / "map.png")}, "'.png' does not fit what is written here (.tif, .tiff)"),
        ({"OUTPUT": str(tmp_path / "m.tif"), "REPORT": str(tmp_path / "r.txt")}, "REPORT: "),
        ({"OUTPUT": str(tmp_path / "nope" / "m.tif")}, f"OUTPUT: the folder {tmp_path / 'nope'} does not exist"),
        ({"OUTPUT": str(tmp_path / "afile" / "m.tif")}, "is not a folder"),
        ({"OUTPUT": "/proc/m.tif"}, "OUTPUT: the folder /proc is not writable"),
    ]
    for extra, expected in cases:
        message = refusal("trainandclassify", {**base, **extra})
        assert expected in message, (extra, message)
    assert digest(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_every_algorithm_with_file_outputs_checks_them(scene, model, tmp_path):
    s, labels, folder = scene
    before = digest(folder)
    shutil_copy = (tmp_path / "model.difflc")
    shutil_copy.write_bytes(Path(model).read_bytes())
    cases = [
        ("classify", {"MODEL": str(shutil_copy), "HSI": s.hsi, "OUTPUT": str(shutil_copy)}, "MODEL"),
        ("trainclassifier", {"HSI": s.hsi, "LABELS": labels, "CLASS_FIELD": "class_id", "MODEL": labels}, "LABELS"),
        ("adaptbackbone", {"HSI": s.hsi, "OUTPUT": s.hsi}, "HSI"),
        ("buildrepresentations", {"HSI": s.hsi, "PRGB": s.sar, "SAR": s.sar}, "SAR"),
        ("accuracy", {"CLASSIFIED": s.hsi, "REFERENCE": s.sar, "HTML": s.sar}, "REFERENCE"),
    ]
    for alg, params, source in cases:
        message = refusal(alg, params)
        assert f"is the input {source}" in message, (alg, message)
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    message = refusal("classify", {"MODEL": model, "HSI": str(text), "OUTPUT": str(tmp_path / "m.tif")})
    assert f"HSI: {text} exists but is not a raster GDAL can read" in message and "not found" not in message
    assert digest(folder) == before and shutil_copy.read_bytes() == Path(model).read_bytes()


def test_a_foreign_aux_xml_beside_the_output_is_never_replaced(scene, model, tmp_path):
    s, _, _ = scene
    aux = tmp_path / "map.tif.aux.xml"
    aux.write_text("<PAMDataset><!-- my statistics --></PAMDataset>")
    message = refusal("classify", {"MODEL": model, "HSI": s.hsi, "SAR": s.sar, "OUTPUT": str(tmp_path / "map.tif")})
    assert "OUTPUT: " in message and "map.tif.aux.xml exists and was not written by this plugin" in message
    assert aux.read_text() == "<PAMDataset><!-- my statistics --></PAMDataset>"


def test_corrupt_or_edited_model_and_reordered_bands_are_one_clear_line(scene, model, tmp_path):
    import json
    import zipfile

    s, _, folder = scene
    with zipfile.ZipFile(model) as zf:
        meta, weights = json.loads(zf.read("metadata.json")), zf.read("weights.safetensors")
    edited = tmp_path / "edited.difflc"
    with zipfile.ZipFile(edited, "w") as zf:
        zf.writestr("metadata.json", json.dumps({k: v for k, v in meta.items() if k != "classes"}))
        zf.writestr("weights.safetensors", weights)
    message = refusal("classify", {"MODEL": str(edited), "HSI": s.hsi, "SAR": s.sar,
                                   "OUTPUT": str(tmp_path / "a.tif")})
    assert "edited.difflc was edited or is incomplete: metadata.json lacks classes" in message
    assert "Traceback" not in message and "\n" not in message

    from osgeo import gdal

    swapped = str(tmp_path / "swapped.tif")
    gdal.Translate(swapped, s.hsi, bandList=[2, 1, 3, 4, 5, 6])
    message = refusal("classify", {"MODEL": model, "HSI": swapped, "SAR": s.sar, "OUTPUT": str(tmp_path / "b.tif")})
    assert "training bands in another order (band 1 is 550.00 nm here, 460.00 nm at training" in message
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".aux.xml")) == ["edited.difflc",
                                                                                         "swapped.tif"]


def test_accuracy_refuses_a_multiband_or_float_classified_raster(scene, tmp_path):
    s, _, _ = scene
    ref = write_raster(tmp_path / "ref.tif", s.truth.astype(np.uint8), s.geotransform)
    message = refusal("accuracy", {"CLASSIFIED": s.hsi, "REFERENCE": ref, "HTML": str(tmp_path / "a.html")})
    assert "CLASSIFIED: scene_hsi.tif has 6 band(s) of Float32; a classified map has one band of integer" in message
    flt = write_raster(tmp_path / "float.tif", s.truth.astype(np.float32), s.geotransform)
    assert "has 1 band(s) of Float32" in refusal("accuracy", {"CLASSIFIED": flt, "REFERENCE": ref})
    assert not (tmp_path / "a.html").exists()


def test_inf_in_the_hsi_is_nodata_and_the_run_works(model, tmp_path):
    """±Inf pixels are nodata in the map (the engine test covers the PCA fit that used to fail on them)."""
    import processing
    from osgeo import gdal

    s = synthetic_scene(tmp_path, size=64, name="inf")
    ds = gdal.Open(s.hsi, gdal.GA_Update)
    band = ds.GetRasterBand(3)
    a = band.ReadAsArray()
    a[:4, :4], a[5, 5] = np.inf, -np.inf
    band.WriteArray(a)
    ds = None
    out = tmp_path / "map.tif"
    processing.run("difflc:classify", {"MODEL": model, "HSI": s.hsi, "SAR": s.sar, "OUTPUT": str(out)})
    data = gdal.Open(str(out)).ReadAsArray()
    assert (data[:4, :4] == 0).all() and data[5, 5] == 0 and (data[20:, 20:] > 0).all()


# ------------------------------------------------------------------------------------------- qgis_process

def _qgis_process(args, tmp_path, **popen):
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    env["QGIS_CUSTOM_CONFIG_PATH"] = str(tmp_path / "profile")
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([str(LAUNCHER), "run", *args], cwd=tmp_path, env=env, text=True,
                            stdin=subprocess.DEVNULL, **popen)


def test_qgis_process_refuses_output_on_input_and_prints_an_engine_error_once(scene, tmp_path):
    s, labels, folder = scene
    before = digest(folder)
    proc = _qgis_process(["difflc:trainandclassify", "--", f"HSI={s.hsi}", f"LABELS={labels}",
                          "CLASS_FIELD=class_id", f"OUTPUT={s.hsi}", "COMPACT_STEPS=2"], tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and f"OUTPUT: {s.hsi} is the input HSI" in err, out + err
    broken = tmp_path / "broken.difflc"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    proc = _qgis_process(["difflc:classify", "--", f"MODEL={broken}", f"HSI={s.hsi}",
                          f"OUTPUT={tmp_path / 'map.tif'}"], tmp_path)
    out, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if "broken.difflc" in line]
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert digest(folder) == before
