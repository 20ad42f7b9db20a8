"""difflc:changestatistics: the from-to matrix of two classified maps, hand-computed on two 6x5 maps."""
from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers_rasters import EPSG

REPO = Path(__file__).resolve().parents[2]
GT = (500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0)  # 10 m pixels: 100 m² = 0.01 ha
A = np.array([[1, 1, 1, 2, 2, 2],
              [1, 1, 2, 2, 2, 3],
              [1, 0, 2, 2, 3, 3],
              [1, 1, 0, 3, 3, 3],
              [2, 2, 1, 1, 3, 3]], np.uint8)
B = np.array([[1, 1, 4, 2, 2, 2],
              [1, 4, 4, 2, 2, 3],
              [1, 1, 2, 0, 3, 3],
              [0, 1, 1, 3, 4, 4],
              [2, 2, 1, 1, 3, 0]], np.uint8)
NAMES_A = ["", "Water", "Forest", "Urban"]
NAMES_B = ["", "Water", "Woodland", "Urban", "New housing"]  # 2 renamed, 4 new
# counted by hand from A and B above: rows = date-1 values 1..3, columns = date-2 values 1..4
EXPECTED = [[7, 0, 0, 2],
            [0, 8, 0, 1],
            [0, 0, 5, 2]]


def class_map(path, data, names, gt=GT, dtype=None, bands=1, nodata=0, colors=True):
    """A classified GeoTIFF the way the plugin writes them: category names and a colour table set at creation."""
    from osgeo import gdal, gdal_array, osr

    gdt = dtype or gdal_array.NumericTypeCodeToGDALTypeCode(data.dtype)
    ds = gdal.GetDriverByName("GTiff").Create(str(path), data.shape[-1], data.shape[-2], bands, gdt)
    ds.SetGeoTransform(gt)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    ds.SetProjection(srs.ExportToWkt())
    for b in range(bands):
        band = ds.GetRasterBand(b + 1)
        if nodata is not None:
            band.SetNoDataValue(nodata)
        if colors and names and gdt == gdal.GDT_Byte:
            ct = gdal.ColorTable()
            for v in range(1, len(names)):
                ct.SetColorEntry(v, (40 * v, 255 - 40 * v, 100, 255))
            band.SetRasterColorTable(ct)
        if names:
            band.SetCategoryNames(names)
        band.WriteArray(data)
    ds = None
    return str(path)


def run(params):
    import processing
    from qgis.core import QgsProcessingFeedback

    feedback = QgsProcessingFeedback()
    messages = []
    feedback.pushInfo = messages.append
    result = processing.run("difflc:changestatistics", params, feedback=feedback)
    return result, "\n".join(messages)


@pytest.fixture
def maps(qgis_app, tmp_path):
    return class_map(tmp_path / "t1.tif", A, NAMES_A), class_map(tmp_path / "t2.tif", B, NAMES_B)


def test_hand_computed_matrix_areas_nodata_and_legends(maps, tmp_path):
    first, second = maps
    out = {k: str(tmp_path / f"change.{ext}") for k, ext in (("TABLE", "csv"), ("HTML", "html"), ("JSON", "json"))}
    result, log = run({"FIRST": first, "SECOND": second, **out})
    report = json.loads(Path(out["JSON"]).read_text())
    assert report["pixels"] == EXPECTED
    assert report["from_values"] == [1, 2, 3] and report["to_values"] == [1, 2, 3, 4]
    assert report["from_names"] == ["Water", "Forest", "Urban"]
    assert report["to_names"] == ["Water", "Woodland", "Urban", "New housing"]
    assert report["unit"] == "ha"
    assert np.allclose(report["area"], np.array(EXPECTED) * 0.01)
    # nodata: date 1 at (2,1) and (3,2); date 2 at (2,3), (3,0), (4,5); never both
    assert report["excluded_pixels"] == {"nodata_date1_only": 2, "nodata_date2_only": 3, "nodata_both": 0, "total": 5}
    assert result["VALID_PIXELS"] == 25 and result["NODATA_PIXELS"] == 5
    assert result["CHANGED_PIXELS"] == 5 and result["CHANGED_AREA"] == pytest.approx(0.05)
    assert result["CHANGED_FRACTION"] == pytest.approx(5 / 25) and result["AREA_UNIT"] == "ha"
    water = report["classes"][0]
    assert (water["name"], water["pixels_date1"], water["pixels_date2"]) == ("Water", 9, 7)
    assert water["loss"] == pytest.approx(0.02) and water["gain"] == pytest.approx(0.0)
    assert report["classes"][3]["name"] == "New housing" and report["classes"][3]["gain"] == pytest.approx(0.05)
    assert any("'Forest' → 'Woodland'" in n for n in report["notes"])
    assert "'Forest' → 'Woodland'" in log and "5 pixels left out as nodata" in log
    with open(out["TABLE"], newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0].keys() == {"from_value", "from_name", "to_value", "to_name", "pixels", "area_ha", "changed"}
    by_pair = {(r["from_name"], r["to_name"]): r for r in rows}
    assert by_pair[("Water", "New housing")]["pixels"] == "2" and by_pair[("Water", "New housing")]["changed"] == "1"
    assert float(by_pair[("Forest", "Woodland")]["area_ha"]) == pytest.approx(0.08)
    assert sum(int(r["pixels"]) for r in rows) == 25 and len(rows) == 6
    from qgis.core import QgsVectorLayer

    layer = QgsVectorLayer(out["TABLE"], "change", "ogr")  # the table loads in QGIS
    assert layer.isValid() and layer.featureCount() == 6 and "area_ha" in layer.fields().names()
    text = Path(out["HTML"]).read_text(encoding="utf-8")
    assert '<table id="from-to-pixels">' in text and "New housing" in text and "<svg" in text


def test_unstyled_maps_without_crs_count_pixels(qgis_app, tmp_path):
    plain = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    from osgeo import gdal

    paths = []
    for name, data in (("a.tif", A), ("b.tif", B)):
        ds = gdal.GetDriverByName("GTiff").Create(str(tmp_path / name), 6, 5, 1, gdal.GDT_UInt16)
        ds.GetRasterBand(1).SetNoDataValue(0)
        ds.GetRasterBand(1).WriteArray(data.astype(np.uint16))
        ds = None
        paths.append(str(tmp_path / name))
    js = tmp_path / "c.json"
    run({"FIRST": paths[0], "SECOND": paths[1], "JSON": str(js)})
    report = json.loads(js.read_text())
    assert report["unit"] == "pixels" and report["area"] == [[float(v) for v in r] for r in EXPECTED]
    assert report["to_names"][-1] == "class 4"


def test_second_map_on_another_grid_is_resampled_by_nearest_neighbour(maps, tmp_path):
    first, _ = maps
    fine = class_map(tmp_path / "fine.tif", np.repeat(np.repeat(B, 2, axis=0), 2, axis=1), NAMES_B,
                     gt=(GT[0], 5.0, 0.0, GT[3], 0.0, -5.0))
    js = tmp_path / "c.json"
    _, log = run({"FIRST": first, "SECOND": fine, "JSON": str(js)})
    report = json.loads(js.read_text())
    assert report["pixels"] == EXPECTED
    assert "resampled onto the date-1 map grid" in log and "nearest" in log
    assert any("nearest neighbour" in n for n in report["notes"])


@pytest.mark.parametrize("case", ["float", "multiband", "no-overlap", "all-nodata"])
def test_refusals(maps, tmp_path, case):
    from osgeo import gdal
    from qgis.core import QgsProcessingException

    first, second = maps
    if case == "float":
        second = class_map(tmp_path / "f.tif", B.astype(np.float32), None, dtype=gdal.GDT_Float32)
        expected = "has 1 band(s) of Float32; a classified map has one band of integer class values"
    elif case == "multiband":
        second = class_map(tmp_path / "m.tif", B, None, bands=3)
        expected = "has 3 band(s) of Byte"
    elif case == "no-overlap":
        second = class_map(tmp_path / "far.tif", B, NAMES_B, gt=(GT[0] + 10000.0, 10.0, 0.0, GT[3], 0.0, -10.0))
        expected = "does not overlap"
    else:
        second = class_map(tmp_path / "empty.tif", np.zeros_like(B), NAMES_B)
        expected = "no pixel has a class in both maps"
    with pytest.raises(QgsProcessingException) as info:
        run({"FIRST": first, "SECOND": second, "JSON": str(tmp_path / "x.json")})
    assert expected in str(info.value)
    assert not (tmp_path / "x.json").exists()


def test_through_qgis_process(maps, tmp_path):
    first, second = maps
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    env["QGIS_CUSTOM_CONFIG_PATH"] = str(tmp_path / "profile")
    table = tmp_path / "change.csv"
    proc = subprocess.run([str(REPO / "scripts" / "qgis_process"), "--json", "run", "difflc:changestatistics", "--",
                           f"FIRST={first}", f"SECOND={second}", f"TABLE={table}", f"HTML={tmp_path / 'c.html'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(proc.stdout[proc.stdout.index("{"):])["results"]
    assert results["CHANGED_PIXELS"] == 5 and results["VALID_PIXELS"] == 25
    assert table.read_text().startswith("from_value,from_name,to_value,to_name,pixels,area_ha,changed\n")
