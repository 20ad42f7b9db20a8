"""Real published rasters from ../shared/data (read-only)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, ogr

from engine.data.labels import collect_point_labels
from engine.data.raster_io import RasterReader, read_info, sample_valid_pixels, scan_bad_bands
from engine.data.representations import fit_representations
from engine.settings import RepresentationSettings

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
ENMAP = DATA / "enmap_potsdam_west" / "enmap_potsdam_west.tif"
CHIP = DATA / "sen1floods11_spain_7370579"
pytestmark = [pytest.mark.real_data,
              pytest.mark.skipif(not ENMAP.exists(), reason="shared real data not present")]


def test_enmap_metadata_scale_and_nodata():
    info = read_info(str(ENMAP))
    assert info.band_count == 224 and (info.width, info.height) == (96, 160) and info.epsg == 32633
    assert info.wavelengths_nm[0] == pytest.approx(418.24) and len(info.wavelengths_nm) == 224
    assert all(b > a for a, b in zip(info.wavelengths_nm[:50], info.wavelengths_nm[1:50]))
    assert info.bad_bands == list(range(129, 135))  # bands 130–135 (1-based)
    assert info.fwhm_nm is not None and 3 < info.fwhm_nm[0] < 30
    reader = RasterReader(str(ENMAP))
    block = reader.read(0, 0, 160, 96)
    ds = gdal.Open(str(ENMAP))
    raw = ds.GetRasterBand(50).ReadAsArray()
    valid = raw != -32768
    assert (~valid).any() and valid.any()
    np.testing.assert_allclose(block[49][valid], raw[valid] * 1e-4, rtol=1e-6)
    assert np.isnan(block[49][~valid]).all()
    assert set(scan_bad_bands(reader)) >= set(info.bad_bands)


def test_enmap_representations_choose_bands_by_wavelength():
    info = read_info(str(ENMAP))
    reader = RasterReader(str(ENMAP))
    sample, _, _ = sample_valid_pixels(reader, 3000, seed=0)
    model = fit_representations(sample, None, info.meta(), None, RepresentationSettings(), seed=0)
    waves = np.array(info.wavelengths_nm)
    assert model.rgb_rule == "wavelength"
    assert np.all(np.abs(waves[model.rgb_bands] - [640, 550, 460]) < 10)
    assert not set(model.usable_bands) & set(info.bad_bands) and len(model.usable_bands) == 218
    out = model.apply(reader.read(0, 0, 64, 64))
    assert np.nanmin(out["pca"]) >= -1 and np.nanmax(out["pca"]) <= 1


def test_flood_chip_sar_is_db_dual_and_s2_bands_by_name():
    s2, s1 = read_info(str(CHIP / "Spain_7370579_S2Hand.tif")), read_info(str(CHIP / "Spain_7370579_S1Hand.tif"))
    hsi = RasterReader(str(CHIP / "Spain_7370579_S2Hand.tif"))
    sar = RasterReader(str(CHIP / "Spain_7370579_S1Hand.tif"), ref=s2)
    assert not sar.warped
    h, _, _ = sample_valid_pixels(hsi, 2000, seed=0)
    rows_cols = sample_valid_pixels(hsi, 2000, seed=0)[1:]
    srows = sar.read(0, 0, 512, 512)[:, rows_cols[0], rows_cols[1]]
    ok = ~np.isnan(srows).any(axis=0)
    model = fit_representations(h[:, ok], srows[:, ok], s2.meta(), s1.meta(), RepresentationSettings())
    assert model.rgb_rule == "band names" and model.rgb_bands == [3, 2, 1]
    assert model.sar["db"] and model.sar["mode"] == "dual" and model.sar["bands"] == {"C11": 0, "C22": 1}


def test_make_demo_points_script(tmp_path):
    labels = CHIP / "Spain_7370579_LabelHand.tif"
    out = tmp_path / "points.gpkg"
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "make_demo_points.py"), "--labels", str(labels),
                          "--fraction", "0.002", "--seed", "0", "--ignore", "-1", "--names", "0=not-water,1=water",
                          "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "class 1 (water)" in res.stdout
    ds = ogr.Open(str(out))
    layer = ds.GetLayer(0)
    xs, ys, ids, names = [], [], [], []
    for f in layer:
        g = f.GetGeometryRef()
        xs.append(g.GetX())
        ys.append(g.GetY())
        ids.append(f.GetField("class_id"))
        names.append(f.GetField("class_name"))
    lab = gdal.Open(str(labels)).ReadAsArray()
    counts = {v: int((lab == v).sum()) for v in (0, 1)}
    assert ids.count(0) == round(0.002 * counts[0]) and ids.count(1) == round(0.002 * counts[1])
    assert set(names) == {"not-water", "water"}
    # the points land back on pixels that carry their class
    s = collect_point_labels(np.array(xs), np.array(ys), ids, read_info(str(labels)))
    assert s.report["used"] == len(ids)
    assert np.array_equal(lab[s.rows, s.cols], np.array([c.value for c in s.classes])[s.class_index])
