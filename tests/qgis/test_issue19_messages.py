"""Issue 19 through Processing (and a few through the real qgis_process): bad inputs found by driving
``scripts/qgis_process run difflc:<alg> -- PARAM=value``, each refused in one line that says what is wrong, with
which layer/band/parameter/file, and what to do. Checks before any work are asserted to write nothing."""
from __future__ import annotations

import json
import os
import subprocess
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from helpers_rasters import EPSG, styled_layer, synthetic_scene, write_raster
from test_issue10_safety import TINY, model, scene  # noqa: F401 - the fixtures

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "scripts" / "qgis_process"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def refusal(alg, params, feedback=None) -> str:
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException) as info:
        processing.run(f"difflc:{alg}", params, feedback=feedback)
    text = str(info.value)  # processing.run puts its own first line above a failed check's message
    return text.split("\n", 1)[1] if text.startswith("Unable to execute algorithm\n") else text


def qgis_process(args, cwd, env=None, timeout=180):
    environment = dict(os.environ)
    environment.pop("DISPLAY", None)
    environment.setdefault("QGIS_CUSTOM_CONFIG_PATH", str(Path(cwd) / "profile"))
    environment.update(env or {})
    return subprocess.run([str(LAUNCHER), *args], cwd=cwd, env=environment, text=True, capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)


class Recorder:
    """A feedback keeping what was logged."""

    def __new__(cls):
        from qgis.core import QgsProcessingFeedback

        class Feedback(QgsProcessingFeedback):
            def __init__(self):
                super().__init__()
                self.messages = []

            def pushInfo(self, info):  # noqa: N802
                self.messages.append(info)
                super().pushInfo(info)

        return Feedback()


def _classified(tmp_path, s, name="classes.tif", dtype=np.uint8, bands=1):
    data = np.stack([s.truth.astype(dtype)] * bands)
    return write_raster(tmp_path / name, data, s.geotransform)


# ------------------------------------------------------------------------------------------- 4. numeric ranges

@pytest.mark.parametrize("name, value, message", [
    ("TREES", 2e9, "TREES: 2000000000 is out of range: give a whole number from 10 to 5000."),
    ("TREES", 0, "TREES: 0 is out of range: give a whole number from 10 to 5000."),
    ("TREES", 12.5, "TREES: 12.5 is not a whole number: give a whole number from 10 to 5000."),
    ("STRIDE", 0, "STRIDE: 0 is out of range: give a whole number from 8 to 64."),
    ("STRIDE", 1000, "STRIDE: 1000 is out of range: give a whole number from 8 to 64."),
    ("SMOOTHING", -7, "SMOOTHING: -7 is out of range: give a number from -1 to 10."),
    ("SEED", "abc", "SEED: 'abc' is not a number: give a whole number of 0 or more."),
    ("SEED", -1, "SEED: -1 is out of range: give a whole number of 0 or more."),
])
def test_a_number_out_of_its_range_says_the_range(scene, tmp_path, name, value, message):
    s, labels, _ = scene
    params = {"HSI": s.hsi, "LABELS": labels, "CLASS_FIELD": "class_id", "OUTPUT": str(tmp_path / "map.tif"),
              **TINY, name: value}
    assert refusal("trainandclassify", params) == message
    assert not (tmp_path / "map.tif").exists()


def test_every_numeric_parameter_shows_its_range_in_the_help(qgis_app):
    from qgis.core import QgsApplication

    provider = QgsApplication.processingRegistry().providerById("difflc")
    checked = 0
    for alg in provider.algorithms():
        help_text = alg.shortHelpString()
        for definition in alg.parameterDefinitions():
            if definition.type() != "number":
                continue
            assert definition.help().startswith(f"{definition.name()}: a "), (alg.id(), definition.name())
            assert f"<b>{definition.name()}</b>: a " in help_text, (alg.id(), definition.name())
            checked += 1
    assert checked > 20
    alg = QgsApplication.processingRegistry().algorithmById("difflc:trainandclassify")
    assert "<b>TREES</b>: a whole number from 10 to 5000" in alg.shortHelpString()
    assert alg.parameterDefinition("SMOOTHING").help() == "SMOOTHING: a number from -1 to 10."


def test_qgis_process_says_the_range_of_a_number(scene, tmp_path):
    s, labels, _ = scene
    proc = qgis_process(["run", "difflc:trainandclassify", "--", f"HSI={s.hsi}", f"LABELS={labels}",
                         "CLASS_FIELD=class_id", f"OUTPUT={tmp_path / 'map.tif'}", "STRIDE=1000"], tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "STRIDE: 1000 is out of range: give a whole number from 8 to 64." in proc.stderr, proc.stderr
    assert "Incorrect parameter value" not in proc.stderr
    assert not (tmp_path / "map.tif").exists()


# ------------------------------------------------------------------------------------------- 1. disk full, mid-run


FILLER = "someone-elses-data.bin"


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs filled up to its last 2 KiB by another file: too small for any map, however well it compresses
    (root is needed; a test that cannot mount fails, it does not skip)."""
    where = tmp_path / "tiny"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], check=True)
    try:
        st = os.statvfs(where)
        (where / FILLER).write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 2048))
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def test_qgis_process_classify_onto_a_full_disk_names_the_folder_and_the_size(tmp_path, tiny_disk, model):
    big = synthetic_scene(tmp_path, size=128, name="big")
    out = tiny_disk / "map.tif"
    proc = qgis_process(["run", "difflc:classify", "--", f"MODEL={model}", f"HSI={big.hsi}", f"SAR={big.sar}",
                         f"OUTPUT={out}"], tmp_path, timeout=400)
    err = proc.stderr
    assert proc.returncode == 1, proc.stdout + err
    assert (f"no space left on the disk of {tiny_disk} while writing map.tif: it needs up to 16.0 KiB (128×128 pixels "
            "× 1 band(s) × 1 byte(s) (Byte), before compression): free that much space there, or choose an output "
            "folder on another disk.") in err, err
    assert "a bug in" not in err and "Traceback" not in err and "Exception ignored" not in err
    assert os.listdir(tiny_disk) == [FILLER]  # no map, no temporary left


def test_a_gdal_or_system_failure_that_reaches_the_boundary_is_not_called_a_bug(qgis_app):
    from diffusion_landcover.algorithms.base import error_message

    assert error_message(RuntimeError("_tiffWriteProc:No space left on device")) == (
        "no space left on the disk (_tiffWriteProc:No space left on device): free some space, or choose an output "
        "folder on another disk.")
    assert error_message(OSError(28, "No space left on device", "/data/out/m.difflc")) == (
        "no space left on the disk of /data/out (No space left on device): free some space, or choose an output "
        "folder on another disk.")
    assert error_message(PermissionError(13, "Permission denied", "/data/out/r.html")) == (
        "permission denied (/data/out/r.html) (Permission denied): make the file and its folder readable/writable for "
        "you, or choose another folder.")
    assert error_message(RuntimeError("x.tif: No such file or directory")).startswith(
        "a file the run needs is gone (x.tif: No such file or directory): it was moved or deleted during the run")
    assert "a bug in Diffusion Land Cover" in error_message(RuntimeError("something else"))


def test_an_input_deleted_after_the_checks_is_named(scene, model, tmp_path):
    """The HSI passes the checks, then disappears before the job opens it (another program deleted it)."""
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback

    copy = synthetic_scene(tmp_path, size=64, name="gone")
    alg = QgsApplication.processingRegistry().createAlgorithmById("difflc:classify")
    params = {"MODEL": model, "HSI": copy.hsi, "SAR": copy.sar, "OUTPUT": str(tmp_path / "map.tif")}
    context = QgsProcessingContext()
    assert alg.checkParameterValues(params, context)[0]
    os.remove(copy.hsi)  # after the checks, before the run
    with pytest.raises(QgsProcessingException) as info:
        alg.processAlgorithm(params, context, QgsProcessingFeedback())
    assert str(info.value) == f"the raster {copy.hsi} does not exist: check the path.", info.value
    assert not (tmp_path / "map.tif").exists()


# ------------------------------------------------------------------------------------------- 2. complex rasters

def _complex_sar(s, path):
    """The scene's SAR as CFloat32 whose amplitude is the dB value made positive (a stand-in for an SLC)."""
    from osgeo import gdal

    from helpers_rasters import read_array

    sar, _ = read_array(s.sar)
    phase = np.random.default_rng(1).uniform(0, 2 * np.pi, sar.shape)
    z = (-sar * np.exp(1j * phase)).astype(np.complex64)
    return write_raster(path, z, s.geotransform, dtype=gdal.GDT_CFloat32)


def test_a_complex_sar_is_used_as_its_amplitude_and_the_log_says_so(scene, tmp_path):
    import processing

    s, labels, _ = scene
    sar = _complex_sar(s, tmp_path / "slc.tif")
    feedback = Recorder()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's ComplexWarning (only the real part kept) fails the test
        processing.run("difflc:trainclassifier", {"HSI": s.hsi, "SAR": sar, "LABELS": styled_layer(labels),
                                                  "CLASS_FIELD": "class_id", "MODEL": str(tmp_path / "m.difflc"),
                                                  **TINY}, feedback=feedback)
    assert "SAR bands 1, 2 of slc.tif are complex (CFloat32): their amplitude |z| is used" in feedback.messages


def test_a_complex_hsi_is_refused_naming_the_band(scene, tmp_path):
    from osgeo import gdal

    s, labels, _ = scene
    hsi = write_raster(tmp_path / "cplx.tif", np.ones((4, 64, 64), np.complex64), s.geotransform,
                       dtype=gdal.GDT_CFloat32)
    message = refusal("trainclassifier", {"HSI": hsi, "LABELS": labels, "CLASS_FIELD": "class_id",
                                          "MODEL": str(tmp_path / "m.difflc"), **TINY})
    assert message.startswith("HSI band 1 of cplx.tif is complex (CFloat32): the HSI must hold real values; give a "
                              "real image (a complex SAR image such as an SLC belongs in SAR"), message
    assert not (tmp_path / "m.difflc").exists()


# ------------------------------------------------------------------------------------------- 3. cleanmap input

def test_cleanmap_refuses_a_float_or_multiband_raster_like_accuracy(scene, tmp_path):
    s, _, _ = scene
    flt = _classified(tmp_path, s, "float.tif", np.float32)
    out = tmp_path / "clean.tif"
    assert refusal("cleanmap", {"INPUT": flt, "SIEVE_PIXELS": 4, "OUTPUT": str(out)}) == (
        "INPUT: float.tif has 1 band(s) of Float32; a classified map has one band of integer class values "
        "(Byte/UInt16, e.g. the OUTPUT of 'Classify'): choose the classified raster, not an image.")
    two = _classified(tmp_path, s, "two.tif", np.uint8, bands=2)
    assert refusal("cleanmap", {"INPUT": two, "SIEVE_PIXELS": 4, "OUTPUT": str(out)}).startswith(
        "INPUT: two.tif has 2 band(s) of Byte; a classified map has one band")
    assert not out.exists()


def test_the_classified_map_rule_has_one_implementation():
    text = "".join(p.read_text() for folder in ("engine", "algorithms") for p in (REPO / folder).rglob("*.py"))
    assert text.count("map has one band of integer class values") == 1


# ------------------------------------------------------------------------------------------- 5. folders

def test_a_folder_given_as_hsi_or_model_says_it_is_a_folder(scene, model, tmp_path):
    s, labels, _ = scene
    folder = tmp_path / "S2_scene.SAFE"
    folder.mkdir()
    message = refusal("trainclassifier", {"HSI": str(folder), "LABELS": labels, "CLASS_FIELD": "class_id",
                                          "MODEL": str(tmp_path / "m.difflc"), **TINY})
    assert message == f"HSI: {folder} is a folder, not a raster file: choose the raster file inside it.", message
    message = refusal("classify", {"MODEL": str(tmp_path), "HSI": s.hsi, "OUTPUT": str(tmp_path / "map.tif")})
    assert message == f"MODEL: {tmp_path} is a folder, not a file: choose the .difflc file inside it."
    assert not (tmp_path / "map.tif").exists()


# ------------------------------------------------------------------------------------------- 6. VRT sources

def test_a_vrt_whose_source_is_missing_is_refused_before_any_work_naming_the_source(scene, model, tmp_path):
    from osgeo import gdal

    s, _, _ = scene
    copy = synthetic_scene(tmp_path, size=64, name="part")
    vrt = tmp_path / "stack.vrt"
    gdal.BuildVRT(str(vrt), [copy.hsi])
    os.remove(copy.hsi)
    message = refusal("classify", {"MODEL": model, "HSI": str(vrt), "SAR": s.sar, "OUTPUT": str(tmp_path / "m.tif")})
    assert message == (f"HSI: the VRT {vrt} refers to the source file {copy.hsi}, which does not exist (moved or "
                       "deleted): put it back, or build the VRT again from the files where they are now."), message
    assert not (tmp_path / "m.tif").exists()


# ------------------------------------------------------------------------------------------- 7. subdatasets

def _netcdf(path, s):
    """A netCDF on the scene's grid with two variables, 'Band1' (the class map) and 'other': two subdatasets."""
    from osgeo import gdal

    assert gdal.GetDriverByName("netCDF") is not None, "GDAL's netCDF driver is needed for this test"
    first = write_raster(path.with_suffix(".tif"), s.truth.astype(np.uint8), s.geotransform)
    gdal.Translate(str(path), first, format="netCDF", creationOptions=["FORMAT=NC4"])
    md = gdal.OpenEx(str(path), gdal.OF_MULTIDIM_RASTER | gdal.OF_UPDATE)
    root = md.GetRootGroup()
    dims = root.OpenMDArray("Band1").GetDimensions()
    other = root.CreateMDArray("other", dims, gdal.ExtendedDataType.Create(gdal.GDT_Int16))
    other.Write(np.ones([d.GetSize() for d in dims], np.int16))
    md = None
    return str(path)


def test_a_netcdf_with_subdatasets_lists_them_and_takes_the_netcdf_name(scene, tmp_path):
    import processing

    s, _, _ = scene
    nc = _netcdf(tmp_path / "maps.nc", s)
    out = tmp_path / "clean.tif"
    message = refusal("cleanmap", {"INPUT": nc, "SIEVE_PIXELS": 4, "OUTPUT": str(out)})
    assert message == (f'INPUT: {nc} holds 2 subdataset(s) and no raster of its own: give one of them as the raster, '
                       f'e.g. NETCDF:"{nc}":Band1 (subdatasets: NETCDF:"{nc}":Band1, NETCDF:"{nc}":other).'), message
    result = processing.run("difflc:cleanmap", {"INPUT": f'NETCDF:"{nc}":Band1', "SIEVE_PIXELS": 4,
                                                "OUTPUT": str(out)})
    assert Path(result["OUTPUT"]).exists()


def test_qgis_process_takes_a_netcdf_subdataset_name(scene, tmp_path):
    s, _, _ = scene
    nc = _netcdf(tmp_path / "maps.nc", s)
    out = tmp_path / "clean.tif"
    proc = qgis_process(["run", "difflc:cleanmap", "--", f'INPUT=NETCDF:"{nc}":Band1', "SIEVE_PIXELS=4",
                         f"OUTPUT={out}"], tmp_path)
    assert proc.returncode == 0 and out.exists(), proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------------- 8. CSV without geometry

def test_a_csv_of_x_y_columns_says_it_has_no_geometry_and_how_to_load_it(scene, tmp_path):
    s, _, _ = scene
    rows, cols = np.divmod(np.arange(40) * 97 % (64 * 64), 64)
    xs, ys = s.pixel_centre(rows, cols)
    csv = tmp_path / "points.csv"
    csv.write_text("X,Y,class_id\n" + "".join(f"{x},{y},{s.truth[r, c]}\n" for x, y, r, c in zip(xs, ys, rows, cols)))
    message = refusal("trainclassifier", {"HSI": s.hsi, "LABELS": str(csv), "CLASS_FIELD": "class_id",
                                          "MODEL": str(tmp_path / "m.difflc"), **TINY})
    assert message == ("The layer 'points' has 40 features but no geometry (a table, e.g. a CSV with X/Y columns): "
                       "load it as points first (QGIS: Layer > Add Layer > Add Delimited Text Layer, with its X and Y "
                       "fields and CRS), then give that layer, or save it as a GeoPackage and give the .gpkg."), message


# ------------------------------------------------------------------------------------------- 9. classifymany

def test_classifymany_names_the_missing_input(scene, model, tmp_path):
    pytest.importorskip("dask")
    s, _, _ = scene
    missing = tmp_path / "scene_b.tif"
    message = refusal("classifymany", {"MODEL": model, "INPUTS": [s.hsi, str(missing)],
                                       "OUTPUT_FOLDER": str(tmp_path / "maps")})
    assert message == (f"INPUTS: {missing} does not exist: check the path (or remove it from the list); the other 1 "
                       "input(s) were not the problem."), message


# ------------------------------------------------------------------------------------------- 10. model kinds

def _fake_bundle(path, fmt):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"format": fmt, "format_version": 1}))
        zf.writestr("weights.safetensors", b"")
    return str(path)


def test_a_change_model_given_to_classify_says_use_apply_change_model(scene, tmp_path):
    s, _, _ = scene
    change = _fake_bundle(tmp_path / "change.difflc", "difflc-change-model")
    assert refusal("classify", {"MODEL": change, "HSI": s.hsi, "OUTPUT": str(tmp_path / "map.tif")}) == (
        f"MODEL: {change} is a change model (saved by Detect changes), not a land-cover model: use it with Apply "
        "change model (difflc:applychangemodel), or give a land-cover model here.")
    assert not (tmp_path / "map.tif").exists()


def test_a_land_cover_model_given_to_applychangemodel_says_use_classify(scene, model, tmp_path):
    s, _, _ = scene
    message = refusal("applychangemodel", {"MODEL": model, "BEFORE": s.hsi, "AFTER": s.hsi,
                                           "OUTPUT": str(tmp_path / "change.tif")})
    assert message == (f"MODEL: {model} is a land-cover model (saved by Train classifier / Train and classify), not a "
                       "change model: use it with Classify with a trained model (difflc:classify), or give a change "
                       "model here."), message


# ------------------------------------------------------------------------------------------- 11. MASK of lines

def test_a_line_layer_as_mask_says_mask_needs_polygons(scene, model, tmp_path):
    from osgeo import ogr, osr

    s, _, _ = scene
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    path = tmp_path / "roads.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = ds.CreateLayer("roads", srs=srs, geom_type=ogr.wkbLineString)
    x0, y0 = s.pixel_centre(0, 0)
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetGeometry(ogr.CreateGeometryFromWkt(f"LINESTRING ({x0} {y0}, {x0 + 300} {y0 - 300})"))
    layer.CreateFeature(feature)
    ds = None
    message = refusal("classify", {"MODEL": model, "HSI": s.hsi, "SAR": s.sar, "MASK": str(path),
                                   "OUTPUT": str(tmp_path / "map.tif")})
    assert message == ("MASK: the layer 'roads' holds lines; MASK needs polygons (or a raster, nonzero = inside): give "
                       "a polygon layer, or turn the lines into polygons first (e.g. Vector > Geoprocessing Tools > "
                       "Buffer)."), message
    assert not (tmp_path / "map.tif").exists()


# ------------------------------------------------------------------------------------------- 12. the launcher


@pytest.fixture
def read_only(tmp_path):
    """Read-only folders for root too: a tmpfs mounted read-only (chmod does not stop root)."""
    mounts = []

    def make(name):
        where = tmp_path / name
        where.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(where)], check=True)
        mounts.append(where)
        return where

    yield make
    for where in mounts:
        subprocess.run(["umount", "-l", str(where)], check=True)


def test_launcher_with_read_only_home_and_profile_falls_back_to_a_private_profile(read_only, tmp_path):
    home, profile = read_only("home"), read_only("profile")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    proc = qgis_process(["list"], tmp_path, env={"HOME": str(home), "QGIS_CUSTOM_CONFIG_PATH": str(profile),
                                                 "TMPDIR": str(scratch)})
    fallback = scratch / f"difflc-qgis-profile-{os.getuid()}"
    assert proc.returncode == 0, proc.stderr
    assert "difflc:classify" in proc.stdout
    assert (f"scripts/qgis_process: {profile} is not writable; using the profile {fallback} (set "
            "QGIS_CUSTOM_CONFIG_PATH to choose another)") in proc.stderr
    assert "Permission denied" not in proc.stderr and "Read-only file system" not in proc.stderr, proc.stderr


def test_launcher_says_which_folder_it_needs_when_nothing_is_writable(read_only, tmp_path):
    profile, scratch = read_only("profile"), read_only("scratch")
    proc = qgis_process(["list"], tmp_path, env={"QGIS_CUSTOM_CONFIG_PATH": str(profile), "TMPDIR": str(scratch)})
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"scripts/qgis_process: neither {profile} nor {scratch}/difflc-qgis-profile-{os.getuid()} can take the QGIS "
        "profile (read-only?): set QGIS_CUSTOM_CONFIG_PATH to a folder you can write to")
