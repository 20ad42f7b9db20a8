"""Issue 10 in the engine: output-path rules, atomic writes with the umask's permissions, sidecars, and the
translation of low-level failures (corrupt raster/model, Inf, no georeferencing, SAR coverage, band identity)
into one clear message. Tiny synthetic files only; no training."""
from __future__ import annotations

import json
import os
import stat
import zipfile

import numpy as np
import pytest
from osgeo import gdal, osr

from engine import files
from engine.jobs.bundle import BundleError, BundleMismatchError, check_inputs, load_bundle, save_bundle, validate_model
from engine.errors import CorruptFileError, OutputPathError, UserInputError
from engine.files import InputSpec, OutputSpec, check_outputs
from engine.data.raster_io import RasterReader, raster_sidecar_problem, read_info

GT = (500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0)


def _tif(path, data, gt=GT, epsg=32633, descriptions=None, nodata=None, compress=False):
    data = np.asarray(data, dtype=np.float32)
    data = data[None] if data.ndim == 2 else data
    opts = ["COMPRESS=DEFLATE"] if compress else []
    ds = gdal.GetDriverByName("GTiff").Create(str(path), data.shape[2], data.shape[1], data.shape[0],
                                              gdal.GDT_Float32, opts)
    ds.SetGeoTransform(gt)
    if epsg:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        ds.SetProjection(srs.ExportToWkt())
    for b in range(data.shape[0]):
        band = ds.GetRasterBand(b + 1)
        band.WriteArray(data[b])
        if nodata is not None:
            band.SetNoDataValue(nodata)
        if descriptions:
            band.SetDescription(descriptions[b])
    ds = None
    return str(path)


# ------------------------------------------------------------------------------------------- output rules

def test_output_equal_to_an_input_is_refused_by_real_path(tmp_path):
    hsi = tmp_path / "x.tif"
    hsi.write_bytes(b"hsi")
    (tmp_path / "link.tif").symlink_to(hsi)
    for given in (str(hsi), str(tmp_path / "sub" / ".." / "x.tif"), str(tmp_path / "link.tif")):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(OutputPathError, match=r"OUTPUT: .* is the input HSI; writing it would destroy"):
            check_outputs([OutputSpec("OUTPUT", given, (".tif",))], [InputSpec("HSI", str(hsi))])
    assert hsi.read_bytes() == b"hsi"


def test_two_outputs_on_one_file_are_refused(tmp_path):
    out = str(tmp_path / "map.tif")
    with pytest.raises(OutputPathError, match="CONFIDENCE: .*map.tif is also the output OUTPUT"):
        check_outputs([OutputSpec("OUTPUT", out, (".tif",)), OutputSpec("CONFIDENCE", out, (".tif",))], [])


@pytest.mark.parametrize("name,ext_message", [("map.jpg", "'.jpg' does not fit"), ("map.png", "'.png' does not fit"),
                                              ("map", "'no extension' does not fit")])
def test_extension_must_fit_the_format(tmp_path, name, ext_message):
    with pytest.raises(OutputPathError, match=f"OUTPUT: .*{ext_message}.*ending in .tif"):
        check_outputs([OutputSpec("OUTPUT", str(tmp_path / name), (".tif", ".tiff"))], [])
    check_outputs([OutputSpec("OUTPUT", str(tmp_path / "map.TIF"), (".tif", ".tiff"))], [])


def test_folder_missing_not_a_folder_or_not_writable(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = {str(tmp_path / "nope" / "map.tif"): "does not exist",
             str(afile / "map.tif"): "is not a folder",
             "/proc/difflc-test/map.tif": "does not exist",  # /proc takes no files, even as root
             "/proc/map.tif": "is not writable"}
    for path, problem in cases.items():
        with pytest.raises(OutputPathError, match=f"OUTPUT: the folder .* {problem}: choose a folder"):
            check_outputs([OutputSpec("OUTPUT", path, (".tif",))], [])
    with pytest.raises(OutputPathError, match="is a folder"):
        check_outputs([OutputSpec("OUTPUT", str(tmp_path))], [])
    # a folder the algorithm creates itself (the download cache) only needs a writable parent
    check_outputs([OutputSpec("OUTPUT", str(tmp_path / "a" / "b" / "m.pt"), (".pt",), create_folder=True)], [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # the probes left nothing


def test_atomic_write_follows_the_umask_and_leaves_nothing_on_failure(tmp_path):
    old = os.umask(0o027)
    try:
        files.write_text(str(tmp_path / "r.json"), "{}")
        assert stat.S_IMODE(os.stat(tmp_path / "r.json").st_mode) == 0o640
    finally:
        os.umask(old)
    files.write_text(str(tmp_path / "r.json"), "{}")
    assert stat.S_IMODE(os.stat(tmp_path / "r.json").st_mode) == 0o666 & ~old
    with pytest.raises(RuntimeError):
        with files.atomic_path(str(tmp_path / "m.difflc")) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_live_temporaries_are_removed_on_termination(tmp_path):
    tmp = files.temp_beside(str(tmp_path / "map.tif"), ".tif")
    open(tmp, "w").write("x")
    open(f"{tmp}.aux.xml", "w").write("x")
    assert files.remove_temporaries() == [tmp]
    assert list(tmp_path.iterdir()) == []


def test_model_file_gets_the_umask_permissions(tmp_path):
    torch = pytest.importorskip("torch")
    save_bundle(str(tmp_path / "m.difflc"), {"classes": []}, {"head.w": torch.zeros(2)})
    assert stat.S_IMODE(os.stat(tmp_path / "m.difflc").st_mode) == files.file_mode()


def test_foreign_aux_xml_beside_a_raster_output_is_a_problem(tmp_path):
    out = tmp_path / "map.tif"
    assert raster_sidecar_problem(str(out)) is None
    (tmp_path / "map.tif.aux.xml").write_text("<PAMDataset/>")
    assert "map.tif.aux.xml exists and was not written by this plugin" in raster_sidecar_problem(str(out))
    _tif(out, np.zeros((4, 4)))
    ds = gdal.Open(str(out), gdal.GA_Update)
    ds.SetMetadataItem("DIFFLC_WRITER", "diffusion_landcover")
    ds = None
    assert raster_sidecar_problem(str(out)) is None  # an earlier output of ours: its sidecar may go


def test_own_sidecar_marker():
    assert files.is_own_sidecar("/nonexistent/x.qml")


# ------------------------------------------------------------------------------------------- reading

def test_not_a_raster_is_not_reported_as_missing(tmp_path):
    p = tmp_path / "notes.tif"
    p.write_text("hello")
    with pytest.raises(UserInputError, match="exists but is not a raster GDAL can read"):
        read_info(str(p))
    with pytest.raises(UserInputError, match="does not exist"):
        read_info(str(tmp_path / "missing.tif"))


def test_truncated_geotiff_names_the_file(tmp_path):
    full = _tif(tmp_path / "full.tif", np.random.default_rng(0).random((3, 64, 64)))
    data = open(full, "rb").read()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) // 2])
    reader = RasterReader(str(cut), name="HSI")
    with pytest.raises(CorruptFileError, match=r"the HSI raster .*cut.tif cannot be read .*damaged or truncated"):
        reader.read(0, 0, 64, 64)


def test_inf_values_become_nodata_with_the_band_named(tmp_path):
    a = np.ones((3, 8, 8), np.float32)
    a[1, 2, 2], a[2, 3, 3] = np.inf, -np.inf
    logged = []
    block = RasterReader(_tif(tmp_path / "inf.tif", a), log=logged.append, name="HSI").read(0, 0, 8, 8)
    assert np.isnan(block[1, 2, 2]) and np.isnan(block[2, 3, 3]) and np.isfinite(np.delete(block.ravel(), [
        1 * 64 + 2 * 8 + 2, 2 * 64 + 3 * 8 + 3])).all()
    assert logged == ["HSI band(s) 2, 3 of inf.tif hold ±Inf values: treated as nodata"]


def test_inf_in_a_sample_does_not_break_the_pca():
    from engine.data.representations import fit_representations
    from engine.settings import RepresentationSettings

    rng = np.random.default_rng(0)
    sample = rng.random((4, 200))
    sample[2, :5] = np.inf
    model = fit_representations(sample, None, {"band_count": 4, "wavelengths_nm": None, "bad_bands": []},
                                None, RepresentationSettings())
    assert model.usable_bands == [0, 1, 2, 3]


# ------------------------------------------------------------------------------------------- model files

@pytest.fixture
def bundle(tmp_path):
    torch = pytest.importorskip("torch")
    meta = {"classes": [{"value": 1, "name": "water", "color": "#0000ff"}, {"value": 2, "name": "forest",
                                                                            "color": "#00ff00"}],
            "inputs": {}, "representations": {}, "settings": {}, "backbone": {}, "modalities": [],
            "group_sizes": [], "head": {"n_classes": 2}}
    path = tmp_path / "m.difflc"
    save_bundle(str(path), meta, {"head.w": torch.arange(4000, dtype=torch.float32)})
    return path, meta


def test_a_flipped_byte_in_the_model_is_a_damaged_file(bundle, tmp_path):
    path, _ = bundle
    data = bytearray(path.read_bytes())
    info = zipfile.ZipFile(path).getinfo("weights.safetensors")
    data[info.header_offset + 30 + len(info.filename) + len(info.extra) + 100] ^= 0xFF
    bad = tmp_path / "bad.difflc"
    bad.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"the model file .*bad.difflc is damaged \(weights.safetensors"):
        load_bundle(str(bad))


def test_edited_model_metadata_is_named(bundle, tmp_path):
    path, meta = bundle
    validate_model(meta, str(path))
    no_classes = {k: v for k, v in meta.items() if k != "classes"}
    with pytest.raises(BundleError, match="was edited or is incomplete: metadata.json lacks classes"):
        validate_model(no_classes, str(path))
    with pytest.raises(BundleError, match="lists 1 class\\(es\\) but the classifier predicts 2"):
        validate_model({**meta, "classes": meta["classes"][:1]}, str(path))


# ------------------------------------------------------------------------------------------- band identity

def _hsi(descriptions, waves=None):
    return {"band_count": len(descriptions), "descriptions": descriptions, "wavelengths_nm": waves, "bad_bands": []}


def test_reordered_or_other_bands_are_refused_with_what_differs():
    trained = {"inputs": {"hsi": _hsi(["B1", "B2", "B3", "B4"])}}
    check_inputs(trained, _hsi(["b1", "B2 ", "B3", "B4"]))  # case and spacing do not matter
    check_inputs(trained, _hsi(["", "", "", ""]))  # unnamed bands: nothing to compare
    with pytest.raises(BundleMismatchError, match="training bands in another order \\(band 1 is 'B2' here, 'B1' at "
                                                  "training; 2 positions differ\\)"):
        check_inputs(trained, _hsi(["B2", "B1", "B3", "B4"]))
    with pytest.raises(BundleMismatchError, match="band names differ .*band 4 is 'B8' here, 'B4' at training"):
        check_inputs(trained, _hsi(["B1", "B2", "B3", "B8"]))
    waves = [460.0, 550.0, 640.0, 840.0]
    with pytest.raises(BundleMismatchError, match="another order \\(band 1 is 550.00 nm here, 460.00 nm"):
        check_inputs({"inputs": {"hsi": _hsi(["", "", "", ""], waves)}},
                     _hsi(["", "", "", ""], [550.0, 460.0, 640.0, 840.0]))


# ------------------------------------------------------------------------------------------- georef, SAR

def test_no_georeferencing_is_named_not_blamed_on_the_labels(tmp_path):
    from engine.jobs import LabelGeometries, label_samples, open_inputs
    from engine.progress import Progress

    hsi = _tif(tmp_path / "plain.tif", np.ones((3, 16, 16)), gt=(0, 1, 0, 0, 0, 1), epsg=None)
    labels = LabelGeometries("pts", "class_id", np.array([5.0, 6.0]), np.array([5.0, 6.0]), [1, 2])
    with pytest.raises(UserInputError, match="the HSI raster plain.tif has no georeferencing .* label layer 'pts'"):
        label_samples(labels, open_inputs(hsi, None, Progress()))


def test_sar_coverage_is_measured_and_an_empty_sar_named(tmp_path):
    from engine.jobs import open_inputs
    from engine.progress import Progress

    hsi = _tif(tmp_path / "hsi.tif", np.ones((3, 20, 20)))
    half = np.ones((2, 20, 20), np.float32)
    half[:, :, :10] = -99
    logged = []
    inputs = open_inputs(hsi, _tif(tmp_path / "half.tif", half, nodata=-99), Progress(on_message=logged.append),
                         scan_bands=True)
    assert inputs.sar_coverage == pytest.approx(0.5)
    assert any("half.tif covers 50 % of the HSI scene" in m for m in logged)
    from engine.jobs import LabelGeometries, label_samples
    from engine.data.labels import LabelError

    xs = GT[0] + 10.0 * np.array([2.5, 3.5, 12.5, 13.5, 14.5])  # class 2: one point where the SAR has data
    ys = GT[3] - 10.0 * np.array([5.5, 6.5, 5.5, 6.5, 7.5])
    labels = LabelGeometries("pts", "class_id", xs, ys, [2, 2, 1, 1, 2])
    with pytest.raises(LabelError, match=r"'class 2' \(value 2: 1 usable\).*the SAR raster covers only 50 % of the "
                                         r"HSI scene"):
        label_samples(labels, inputs)
    empty = np.full((2, 20, 20), -99, np.float32)
    with pytest.raises(UserInputError, match="the SAR raster empty.tif has no valid pixel over the HSI scene in "
                                             "band\\(s\\) 1, 2"):
        open_inputs(hsi, _tif(tmp_path / "empty.tif", empty, nodata=-99), Progress(), scan_bands=True)


def test_training_report_uses_class_names_and_keeps_non_ascii(tmp_path):
    from engine.jobs import _write_training_report

    val = {"overall_accuracy": 1.0, "per_class": [{"name": "class 0", "reference": 1, "predicted": 1, "precision": 1,
                                                   "recall": 1, "f1": 1, "iou": 1}]}
    meta = {"classes": [{"value": 3, "name": "Wasser/Gewässer", "color": "#0000ff"}],
            "labels": {"per_class": {"Wasser/Gewässer": 1}}, "head": {"kind": "forest"}}
    _write_training_report(str(tmp_path / "r.json"), val, meta)
    _write_training_report(str(tmp_path / "r.html"), val, meta)
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert report["per_class"][0]["name"] == "Wasser/Gewässer"
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Wasser/Gewässer" in html and "\\u00e4" not in html and "class 0" not in html
