import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, osr

from engine.data.labels import ClassInfo
from engine.data.raster_io import (ClassifiedWriter, RasterReader, read_info, sample_valid_pixels, scan_bad_bands,
                              write_qml)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
S1 = DATA / "sen1floods11_spain_7370579" / "Spain_7370579_S1Hand.tif"
S2 = DATA / "sen1floods11_spain_7370579" / "Spain_7370579_S2Hand.tif"
PYRO = DATA / "pyrosar_s1_vv_db" / "S1A__IW___A_20150309T173017_VV_grd_mli_geo_norm_db.tif"


def _make(path, array, epsg=32633, gt=(500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0), dtype=gdal.GDT_Float32,
          fmt="GTiff", nodata=None, scale=None, offset=None, band_md=None, descriptions=None, ds_md=None):
    b, h, w = array.shape
    ds = gdal.GetDriverByName(fmt).Create(str(path), w, h, b, dtype)
    ds.SetGeoTransform(gt)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds.SetProjection(srs.ExportToWkt())
    for i in range(b):
        band = ds.GetRasterBand(i + 1)
        band.WriteArray(array[i])
        if nodata is not None:
            band.SetNoDataValue(nodata)
        if scale is not None:
            band.SetScale(scale)
        if offset is not None:
            band.SetOffset(offset)
        if band_md:
            band.SetMetadata(band_md[i])
        if descriptions:
            band.SetDescription(descriptions[i])
    for domain, md in (ds_md or {}).items():
        ds.SetMetadata(md, domain)
    ds.FlushCache()
    return ds


def test_wavelengths_from_band_metadata_units(tmp_path):
    a = np.zeros((3, 4, 4), np.float32)
    md = [{"wavelength": "0.45", "wavelength_units": "Micrometers", "fwhm": "0.01", "bbl": "1"},
          {"wavelength": "0.55", "wavelength_units": "µm", "bbl": "0", "fwhm": "0.01"},
          {"wavelength": "650", "wavelength_units": "nm", "fwhm": "10"}]
    _make(tmp_path / "a.tif", a, band_md=md)
    info = read_info(str(tmp_path / "a.tif"))
    np.testing.assert_allclose(info.wavelengths_nm, [450, 550, 650])
    np.testing.assert_allclose(info.fwhm_nm, [10, 10, 10])
    assert info.bad_bands == [1] and info.epsg == 32633 and info.band_count == 3


def test_wavelengths_from_descriptions_and_envi(tmp_path):
    a = np.zeros((2, 4, 4), np.float32)
    _make(tmp_path / "d.tif", a, descriptions=["band 1 (418.24 Nanometers)", "band 2 (0.5 Micrometers)"])
    assert read_info(str(tmp_path / "d.tif")).wavelengths_nm == pytest.approx([418.24, 500.0])
    ds = _make(tmp_path / "e.bsq", a, fmt="ENVI")
    ds.SetMetadataItem("wavelength", "{0.45, 0.46}", "ENVI")
    ds.SetMetadataItem("wavelength_units", "Micrometers", "ENVI")
    ds.SetMetadataItem("bbl", "{1, 0}", "ENVI")
    ds = None
    info = read_info(str(tmp_path / "e.bsq"))
    assert info.wavelengths_nm == pytest.approx([450, 460]) and info.bad_bands == [1]
    # missing wavelengths → None, not a partial list
    _make(tmp_path / "n.tif", a, descriptions=["band 1 (418 Nanometers)", "other"])
    assert read_info(str(tmp_path / "n.tif")).wavelengths_nm is None


def test_unreadable_file_is_a_clear_error(tmp_path):
    p = tmp_path / "junk.tif"
    p.write_text("not a raster")
    with pytest.raises(ValueError, match="exists but is not a raster"):  # not "not found": it is there
        read_info(str(p))
    with pytest.raises(ValueError, match="does not exist"):
        read_info(str(tmp_path / "missing.tif"))


def test_read_nodata_scale_offset_and_bad_band_scan(tmp_path):
    a = np.arange(3 * 5 * 6, dtype=np.int16).reshape(3, 5, 6)
    a[0, 1, 2] = -32768
    a[2] = -32768
    _make(tmp_path / "s.tif", a, dtype=gdal.GDT_Int16, nodata=-32768, scale=1e-4, offset=0.5)
    r = RasterReader(str(tmp_path / "s.tif"))
    block = r.read(1, 1, 3, 4)
    assert block.dtype == np.float32 and block.shape == (3, 3, 4)
    assert np.isnan(block[0, 0, 1])
    assert block[1, 0, 0] == pytest.approx(a[1, 1, 1] * 1e-4 + 0.5, rel=1e-6)
    assert scan_bad_bands(r, block_rows=2) == [2]
    with pytest.raises(ValueError, match="leaves"):
        r.read(4, 0, 3, 3)


def test_sample_valid_pixels_streaming_uniform(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 40, 30)).astype(np.float32)
    a[:, :10, :] = np.nan  # nodata rows
    a[1, 20, 5] = np.nan
    _make(tmp_path / "v.tif", a)
    r = RasterReader(str(tmp_path / "v.tif"))
    vals, rows, cols = sample_valid_pixels(r, 100, seed=1, block_rows=7)
    assert vals.shape == (2, 100) and not np.isnan(vals).any()
    np.testing.assert_array_equal(vals, a[:, rows, cols])
    assert rows.min() >= 10 and len(set(zip(rows, cols))) == 100
    again = sample_valid_pixels(r, 100, seed=1, block_rows=7)
    np.testing.assert_array_equal(again[1], rows)
    # fewer valid pixels than asked: all of them
    vals, rows, _ = sample_valid_pixels(r, 10_000, seed=0, block_rows=13)
    assert vals.shape[1] == 30 * 30 - 1
    # a band flagged bad is not part of the validity test
    vals, _, _ = sample_valid_pixels(r, 10_000, seed=0, valid_bands=[0])
    assert vals.shape[1] == 30 * 30


@pytest.mark.skipif(not S1.exists(), reason="shared real data not present")
def test_warp_other_crs_onto_reference_grid(tmp_path):
    warped = tmp_path / "s1_utm.tif"
    gdal.Warp(str(warped), str(S1), dstSRS="EPSG:32630", resampleAlg="bilinear", xRes=10, yRes=10)
    ref = read_info(str(S1))
    logs = []
    r = RasterReader(str(warped), ref=ref, log=logs.append)
    assert r.warped and (r.width, r.height) == (512, 512)
    assert logs and "EPSG:32630 → EPSG:4326" in logs[0] and "SAR resampled onto the HSI grid" in logs[0]
    got = r.read(100, 100, 300, 300)
    orig = RasterReader(str(S1)).read(100, 100, 300, 300)
    ok = ~np.isnan(got) & ~np.isnan(orig)
    assert ok.mean() > 0.95
    diff = np.abs(got - orig)[ok]
    assert np.median(diff) < 0.6 and np.corrcoef(got[ok], orig[ok])[0, 1] > 0.9
    # same grid → no warp
    assert not RasterReader(str(S1), ref=read_info(str(S2))).warped


@pytest.mark.skipif(not PYRO.exists(), reason="shared real data not present")
def test_non_overlapping_sar_is_a_clear_error():
    with pytest.raises(ValueError) as err:
        RasterReader(str(PYRO), ref=read_info(str(S2)))
    msg = str(err.value)
    assert "does not overlap" in msg and "EPSG:32631" in msg and "EPSG:4326" in msg and "same area" in msg


def _classes(n, start=1):
    return [ClassInfo(start + i, f"c{start + i}", "#%02x%02x%02x" % (i * 7 % 256, 200, 50)) for i in range(n)]


def test_classified_writer(tmp_path):
    ref_ds = _make(tmp_path / "ref.tif", np.zeros((1, 300, 270), np.float32))
    ref_ds = None
    ref = read_info(str(tmp_path / "ref.tif"))
    out, conf = tmp_path / "map.tif", tmp_path / "conf.tif"
    classes = _classes(3)
    vals = np.random.default_rng(0).integers(1, 4, size=(300, 270))
    vals[:5, :5] = -1
    with ClassifiedWriter(str(out), ref, classes, confidence_path=str(conf)) as w:
        for row in range(0, 300, 100):
            w.write(row, 0, vals[row:row + 100], np.full((100, 270), 0.75, np.float32))
        assert not out.exists()  # nothing in place before completion
    ds = gdal.Open(str(out))
    band = ds.GetRasterBand(1)
    assert band.DataType == gdal.GDT_Byte and band.GetNoDataValue() == 0
    assert band.GetBlockSize() == [256, 256]
    assert ds.GetMetadata("IMAGE_STRUCTURE").get("COMPRESSION") == "DEFLATE"
    data = band.ReadAsArray()
    assert (data[:5, :5] == 0).all() and np.array_equal(data[5:, 5:], vals[5:, 5:])
    ct = band.GetColorTable()
    assert ct.GetColorEntry(2)[:3] == (7, 200, 50)
    assert band.GetCategoryNames()[1:4] == ["c1", "c2", "c3"]
    assert ds.GetGeoTransform() == ref.geotransform
    cds = gdal.Open(str(conf))
    c = cds.GetRasterBand(1).ReadAsArray()
    assert cds.GetRasterBand(1).GetNoDataValue() == -1 and c[0, 0] == -1 and c[10, 10] == pytest.approx(0.75)
    root = ET.parse(tmp_path / "map.qml").getroot()
    entries = root.findall("./pipe/rasterrenderer/colorPalette/paletteEntry")
    assert root.find("./pipe/rasterrenderer").get("type") == "paletted"
    assert [(e.get("value"), e.get("label")) for e in entries] == [("1", "c1"), ("2", "c2"), ("3", "c3")]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".difflc-")]


def test_classified_writer_uint16_zero_class_and_failure(tmp_path):
    _make(tmp_path / "ref.tif", np.zeros((1, 20, 20), np.float32))
    ref = read_info(str(tmp_path / "ref.tif"))
    out = tmp_path / "big.tif"
    with ClassifiedWriter(str(out), ref, _classes(2, start=299)) as w:
        w.write(0, 0, np.full((20, 20), 300))
    ds = gdal.Open(str(out))
    band = ds.GetRasterBand(1)
    assert band.DataType == gdal.GDT_UInt16 and band.ReadAsArray()[0, 0] == 300
    # class 0 exists → nodata moves to 255
    z = tmp_path / "zero.tif"
    with ClassifiedWriter(str(z), ref, _classes(2, start=0)) as w:
        w.write(0, 0, np.where(np.eye(20) > 0, -1, 0))
    zds = gdal.Open(str(z))
    zb = zds.GetRasterBand(1)
    assert zb.GetNoDataValue() == 255 and zb.ReadAsArray()[0, 0] == 255 and zb.ReadAsArray()[0, 1] == 0
    # failure mid-way: the previous output stays untouched, no temp files remain
    before = out.read_bytes()
    with pytest.raises(RuntimeError, match="boom"):
        with ClassifiedWriter(str(out), ref, _classes(2, start=299)) as w:
            w.write(0, 0, np.full((10, 20), 299))
            raise RuntimeError("boom")
    ds = band = None
    assert out.read_bytes() == before
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".difflc-")]
    # success replaces it
    with ClassifiedWriter(str(out), ref, _classes(2, start=299)) as w:
        w.write(0, 0, np.full((20, 20), 299))
    assert gdal.Open(str(out)).ReadAsArray()[0, 0] == 299


def test_qml_loads_in_qgis(tmp_path, qgis_app):
    from qgis.core import QgsRasterLayer

    _make(tmp_path / "ref.tif", np.zeros((1, 8, 8), np.float32))
    ref = read_info(str(tmp_path / "ref.tif"))
    out = tmp_path / "styled.tif"
    with ClassifiedWriter(str(out), ref, _classes(3)) as w:
        w.write(0, 0, np.full((8, 8), 2))
    layer = QgsRasterLayer(str(out), "styled")
    assert layer.isValid()
    msg, ok = layer.loadNamedStyle(str(tmp_path / "styled.qml"))
    assert ok, msg
    renderer = layer.renderer()
    assert renderer.type() == "paletted"
    assert [(c.value, c.label) for c in renderer.classes()] == [(1.0, "c1"), (2.0, "c2"), (3.0, "c3")]
    write_qml(str(tmp_path / "x.qml"), _classes(1))  # the helper alone writes valid XML too
    ET.parse(tmp_path / "x.qml")


def test_pixel_area_projected_and_on_the_ellipsoid():
    from osgeo import osr

    from engine.data.raster_io import RasterInfo, pixel_area

    def info(epsg, gt, width, height):
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        return RasterInfo("x", width, height, 1, gt, srs.ExportToWkt(), epsg, [None], [1.0], [0.0], None, None, [],
                          [""], [""], "Byte")

    utm = pixel_area(info(32633, (500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0), 3, 2))
    assert utm.unit == "m2" and utm.row_area.tolist() == [100.0, 100.0]
    # a global 1-degree grid sums to the area of the WGS 84 ellipsoid, 510,065,621.7 km²
    globe = pixel_area(info(4326, (-180.0, 1.0, 0.0, 90.0, 0.0, -1.0), 360, 180))
    assert globe.row_area.sum() * 360 / 1e6 == pytest.approx(510_065_621.7, rel=1e-9)
    assert "ellipsoid" in globe.note
    assert pixel_area(RasterInfo("x", 1, 1, 1, (0, 1, 0, 0, 0, -1), "", None, [None], [1.0], [0.0], None, None, [],
                                 [""], [""], "Byte")).row_area is None
