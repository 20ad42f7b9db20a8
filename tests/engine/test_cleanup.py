"""Map clean-up (engine.tasks.cleanup): the majority filter against a brute-force one, streaming equal to the whole band,
and GDAL's sieve on a GeoTIFF with nodata."""
import numpy as np
import pytest

from engine.tasks.cleanup import clean_band, majority_in_place, majority_window, sieve_threshold
from engine.settings import CleanupSettings


def brute_majority(a: np.ndarray, r: int) -> np.ndarray:
    out = a.copy()
    h, w = a.shape
    for y in range(h):
        for x in range(w):
            if a[y, x] < 0:
                continue
            win = a[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1]
            values, counts = np.unique(win[win >= 0], return_counts=True)
            tied = values[counts == counts.max()]
            out[y, x] = a[y, x] if a[y, x] in tied else tied.min()
    return out


class ArrayBand:
    def __init__(self, a):
        self.a = a.copy()
        self.height, self.width = a.shape

    def read(self, row, rows):
        return self.a[row:row + rows].copy()

    def write(self, row, values):
        self.a[row:row + values.shape[0]] = values


@pytest.mark.parametrize("radius", [1, 2])
def test_majority_matches_brute_force_and_streams_like_the_whole_band(radius):
    rng = np.random.default_rng(radius)
    a = rng.integers(0, 4, size=(23, 17)).astype(np.int64)
    a[rng.random(a.shape) < 0.15] = -1  # nodata
    expected = brute_majority(a, radius)
    pad = np.full((radius, a.shape[1]), -1)
    assert np.array_equal(majority_window(np.vstack([pad, a, pad]), radius), expected)
    band = ArrayBand(a)
    changed = majority_in_place(band, radius, block_rows=5)  # blocks smaller than the halo edges
    assert np.array_equal(band.a, expected)
    assert changed == int((expected != a).sum())
    assert np.array_equal(band.a < 0, a < 0)  # nodata never changes


def test_majority_removes_a_lone_pixel_and_keeps_ties():
    a = np.ones((5, 5), np.int64)
    a[2, 2] = 2
    assert (majority_window(np.pad(a, ((1, 1), (0, 0)), constant_values=-1), 1) == 1).all()
    half = np.array([[1, 1, 2, 2]] * 2, np.int64)  # every window is a 1/2 tie or a clear majority
    out = majority_window(np.pad(half, ((1, 1), (0, 0)), constant_values=-1), 1)
    assert np.array_equal(out, half)


def test_sieve_threshold_from_pixels_or_hectares():
    assert sieve_threshold(CleanupSettings(sieve_pixels=4), None) == 4
    assert sieve_threshold(CleanupSettings(sieve_area_ha=0.5), 100.0) == 50  # 0.5 ha of 10 m pixels
    assert sieve_threshold(CleanupSettings(sieve_pixels=80, sieve_area_ha=0.5), 100.0) == 80
    with pytest.raises(ValueError, match="needs a map with a CRS"):
        sieve_threshold(CleanupSettings(sieve_area_ha=1.0), None)


def test_gdal_sieve_in_place_keeps_nodata(tmp_path):
    from osgeo import gdal

    from engine.progress import Progress
    from engine.data.raster_io import ClassBandEditor

    a = np.full((12, 12), 1, np.uint8)
    a[1:2, 1:4] = 2  # 3-pixel island
    a[6:7, 1:6] = 3  # 5-pixel island
    a[9:12, 9:12] = 0  # nodata corner
    a[10, 8] = 2  # 1 pixel touching nodata and class 1
    path = str(tmp_path / "m.tif")
    ds = gdal.GetDriverByName("GTiff").Create(path, 12, 12, 1, gdal.GDT_Byte)
    ds.GetRasterBand(1).SetNoDataValue(0)
    ds.GetRasterBand(1).WriteArray(a)
    ds = None
    band = ClassBandEditor(path)
    summary = clean_band(band, CleanupSettings(sieve_pixels=4), progress=Progress())
    band.close()
    out = gdal.Open(path).ReadAsArray()
    assert summary["sieve_pixels"] == 4
    assert (out[1, 1:4] == 1).all() and (out[6, 1:6] == 3).all() and out[10, 8] == 1
    assert (out[9:12, 9:12] == 0).all()
