import numpy as np
import pytest
from osgeo import ogr

from engine.data.labels import (ClassInfo, LabelError, collect_point_labels, collect_polygon_labels, default_colors,
                           rasterize_polygons, stratified_sample)
from engine.data.raster_io import RasterInfo

GT = (1000.0, 10.0, 0.0, 2000.0, 0.0, -10.0)


def _ref(h=20, w=30):
    return RasterInfo(path="ref.tif", width=w, height=h, band_count=1, geotransform=GT, crs_wkt="", epsg=None,
                      nodata=[None], scale=[1.0], offset=[0.0], wavelengths_nm=None, fwhm_nm=None, bad_bands=[],
                      descriptions=[""], units=[""], dtype="Float32")


def _xy(rows, cols):
    return GT[0] + (np.asarray(cols) + 0.5) * GT[1], GT[3] + (np.asarray(rows) + 0.5) * GT[5]


def test_default_colors_distinct():
    for n in (1, 7, 20, 45):
        c = default_colors(n)
        assert len(c) == n == len(set(c)) and all(len(x) == 7 and x.startswith("#") for x in c)


def test_points_counts_outside_nodata_duplicates():
    rows = np.array([0, 1, 2, 3, 5, 5, 7, 8, 8, -3, 25, 6])
    cols = np.array([0, 1, 2, 3, 5, 5, 7, 9, 9, 4, 4, 6])
    vals = [1, 1, 2, 2, 3, 3, 3, 1, 2, 1, 2, 3]  # (8, 9) conflicting; (5, 5) duplicate
    valid = np.ones((20, 30), bool)
    valid[7, 7] = False
    xs, ys = _xy(rows, cols)
    s = collect_point_labels(xs, ys, vals, _ref(), valid=valid)
    r = s.report
    assert r["total"] == 12 and r["outside_raster"] == 2 and r["on_nodata"] == 1
    assert r["duplicates"] == 1 and r["conflicting"] == 2 and r["used"] == 6
    assert r["per_class"] == {"class 1": 2, "class 2": 2, "class 3": 2}
    assert [c.value for c in s.classes] == [1, 2, 3]
    assert sorted(zip(s.rows.tolist(), s.cols.tolist())) == [(0, 0), (1, 1), (2, 2), (3, 3), (5, 5), (6, 6)]
    assert s.class_index[s.rows == 5].tolist() == [2]
    with pytest.raises(LabelError, match="'class 3' \\(value 3: 1 usable\\)"):  # class 3 has one usable pixel left
        collect_point_labels(xs, ys, vals, _ref(), valid=lambda r, c: ~((r == 5) & (c == 5)) & valid[r, c])


def test_text_class_field_and_class_infos():
    xs, ys = _xy([0, 1, 2, 3, 4, 5], [0, 0, 0, 0, 0, 0])
    s = collect_point_labels(xs, ys, ["water", "forest", "water", "forest", " urban", "urban"], _ref(),
                             field_name="landcover")
    assert [(c.value, c.name) for c in s.classes] == [(1, "forest"), (2, "urban"), (3, "water")]
    assert s.class_index.tolist() == [2, 0, 2, 0, 1, 1]
    infos = [ClassInfo(5, "Built-up", "#ff0000")]
    s = collect_point_labels(xs, ys, [5, 5, 7, 7, None, 7], _ref(), class_infos=infos)
    assert s.classes[0] == infos[0] and s.classes[1].name == "class 7" and s.report["missing_value"] == 1


def test_label_errors():
    xs, ys = _xy([0, 1, 2], [0, 0, 0])
    with pytest.raises(LabelError, match="has no features"):
        collect_point_labels([], [], [], _ref(), layer_name="points.gpkg")
    with pytest.raises(LabelError, match="'class 2' \\(value 2: 1 usable\\).*field 'cls'"):
        collect_point_labels(xs, ys, [1, 1, 2], _ref(), field_name="cls")
    with pytest.raises(LabelError, match="only one class"):
        collect_point_labels(xs, ys, [1, 1, 1], _ref())
    with pytest.raises(LabelError, match="empty 'class' value"):
        collect_point_labels(xs, ys, [None, None, None], _ref())
    with pytest.raises(LabelError, match="negative"):
        collect_point_labels(xs, ys, [1, -1, 2], _ref())
    with pytest.raises(LabelError, match="none of the 3 features.*3 outside"):
        collect_point_labels(xs + 1e6, ys, [1, 1, 2], _ref())


def _box(r0, c0, r1, c1):
    x0, y0 = GT[0] + c0 * 10, GT[3] - r0 * 10
    x1, y1 = GT[0] + c1 * 10, GT[3] - r1 * 10
    ring = ogr.Geometry(ogr.wkbLinearRing)
    for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)):
        ring.AddPoint_2D(x, y)
    poly = ogr.Geometry(ogr.wkbPolygon)
    poly.AddGeometry(ring)
    return poly.ExportToWkb()


def test_polygons_rasterize_all_inside_pixels():
    wkb = [_box(2, 3, 5, 7), _box(10, 25, 14, 40)]  # second one runs off the right edge
    rows, cols, which = rasterize_polygons(wkb, ["a", "b"], _ref())
    a = which == 0
    assert a.sum() == 3 * 4 and rows[a].min() == 2 and rows[a].max() == 4 and cols[a].min() == 3
    assert (~a).sum() == 4 * 5 and cols[~a].max() == 29
    s = collect_polygon_labels(wkb, ["a", "b"], _ref())
    assert s.report["used"] == 32 and s.report["polygons"] == 2 and [c.name for c in s.classes] == ["a", "b"]
    with pytest.raises(LabelError, match="covers a pixel centre"):
        collect_polygon_labels([_box(100, 100, 110, 110)], [1], _ref())


def test_stratified_sample():
    rng = np.random.default_rng(0)
    lab = rng.choice([-1, 0, 1, 2], size=(100, 100), p=[0.1, 0.3, 0.58, 0.02])
    lab[0, 0] = 3  # a single-pixel class
    r, c, v = stratified_sample(lab, 0.01, seed=1, ignore_values=(-1,))
    for cls in (0, 1, 2):
        n = (lab == cls).sum()
        assert (v == cls).sum() == max(2, round(0.01 * n))
    assert (v == 3).sum() == 1 and -1 not in v
    np.testing.assert_array_equal(lab[r, c], v)
    r2, c2, _ = stratified_sample(lab, 0.01, seed=1, ignore_values=(-1,))
    np.testing.assert_array_equal(r, r2)
    with pytest.raises(ValueError):
        stratified_sample(lab, 0, seed=0)


def test_reader_valid_fn_reads_blocks():
    from engine.data.labels import build_samples, reader_valid_fn
    from engine.data.readers import ArrayReader

    a = np.ones((2, 50, 40), np.float32)
    a[1, 30, 7] = np.nan
    fn = reader_valid_fn(ArrayReader(a), block_rows=16)
    rows, cols = np.array([0, 30, 30, 49, 17]), np.array([0, 7, 8, 39, 20])
    assert fn(rows, cols).tolist() == [True, False, True, True, True]
    xs, ys = _xy(rows, cols)
    ref = _ref(50, 40)
    s = collect_point_labels(np.r_[xs, xs], np.r_[ys, ys - 50], [1, 1, 2, 2, 2] * 2, ref, valid=ArrayReader(a))
    r = s.report
    assert r["on_nodata"] == 1 and r["outside_raster"] == 1 and r["used"] == 8 and r["duplicates"] == 0


def test_polygon_mask_streams_row_blocks_and_masks_reads_and_labels():
    """PolygonMask burns 7-row bands yet equals the whole-box rasterisation; MaskedReader → NaN outside;
    labels outside the mask are skipped and counted as outside_mask (not as nodata)."""
    from engine.data.raster_io import PolygonMask
    from engine.data.readers import ArrayReader, MaskedReader

    ref = _ref()
    wkb = [_box(2, 3, 5, 7), _box(10, 25, 14, 40)]
    rows, cols, _ = rasterize_polygons(wkb, [1, 1], ref)
    expect = np.zeros((ref.height, ref.width), bool)
    expect[rows, cols] = True
    mask = PolygonMask(wkb, ref, block_rows=7)
    got = np.concatenate([mask.read(r, 0, min(5, ref.height - r), ref.width)[0] for r in range(0, ref.height, 5)])
    assert ((got == 1) == expect).all() and np.isnan(got[~expect]).all()
    image = ArrayReader(np.ones((2, ref.height, ref.width), np.float32))
    masked = MaskedReader(image, mask).read(0, 0, ref.height, ref.width)
    assert (np.isnan(masked).all(axis=0) == ~expect).all()
    from engine.data.labels import build_samples, reader_valid_fn

    s = build_samples([3, 3, 4, 0, 0, 11, 12], [3, 4, 5, 0, 1, 26, 27], [1, 1, 2, 1, 2, 2, 1], ref.height, ref.width,
                      valid=None, mask=reader_valid_fn(mask))
    assert s.report["outside_mask"] == 2 and s.report["on_nodata"] == 0 and s.report["used"] == 5


def test_a_mask_that_misses_the_scene_is_refused_before_any_work(tmp_path):
    """A polygon mask outside the HSI extent would silently give an all-nodata map: refused, naming the mask."""
    from osgeo import gdal, osr

    from engine.errors import UserInputError
    from engine.jobs import MaskSpec, open_inputs
    from engine.progress import Progress

    path = str(tmp_path / "hsi.tif")
    ds = gdal.GetDriverByName("GTiff").Create(path, 20, 10, 3, gdal.GDT_Float32)
    ds.SetGeoTransform((500000.0, 10.0, 0.0, 5000000.0, 0.0, -10.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    ds.SetProjection(srs.ExportToWkt())
    for b in range(3):
        ds.GetRasterBand(b + 1).WriteArray(np.full((10, 20), b + 1.0, np.float32))
    ds = None
    from osgeo import ogr

    miss = ogr.CreateGeometryFromWkt("POLYGON((0 0,1 0,1 1,0 1,0 0))").ExportToWkb()  # thousands of km away
    with pytest.raises(UserInputError, match="the mask 'far' covers no pixel of the HSI raster hsi.tif"):
        open_inputs(path, None, Progress(), mask=MaskSpec("far", polygons_wkb=[miss]))
    hit = ogr.CreateGeometryFromWkt("POLYGON((500000 5000000,500100 5000000,500100 4999950,500000 4999950,"
                                    "500000 5000000))").ExportToWkb()
    inputs = open_inputs(path, None, Progress(), mask=MaskSpec("left", polygons_wkb=[hit]))
    block = inputs.reader.read(0, 0, 10, 20)
    assert np.isfinite(block[:, :5, :10]).all() and np.isnan(block[:, 5:, :]).all()
