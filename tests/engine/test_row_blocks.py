"""One row-block iterator with a byte cap (issue 19 item 6): every streamed reader of full-width rows goes through
``readers.row_blocks``, so a wide many-band scene is read in blocks under ``readers.BLOCK_BYTES`` whatever the
reader (bad-band scan, sampling, representation images). Checked on a 4000-pixel-wide, 224-band scene: each read
stays under the cap and the Python-side peak memory (tracemalloc, numpy's buffers included) stays far below one
uncapped 256-row block."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from engine.data import readers
from engine.data.raster_io import scan_bad_bands
from engine.data.readers import row_blocks, rows_per_block, sample_valid_pixels

WIDTH, BANDS = 4000, 224
ROW_BYTES = 4 * BANDS * WIDTH  # 3.6 MB: 256 uncapped rows are 917 MB
CAP = 8 * 2**20


class LazyWideReader:
    """A float32 [BANDS, height, WIDTH] scene generated window by window (never held): band 5 all nodata.
    Records the bytes of every read."""

    def __init__(self, height: int):
        self.height, self.width, self.band_count = height, WIDTH, BANDS
        self.reads = []

    def read(self, row, col, rows, cols):
        self.reads.append(4 * self.band_count * rows * cols)
        r = np.arange(row, row + rows, dtype=np.float32)[:, None]
        c = np.arange(col, col + cols, dtype=np.float32)[None, :]
        base = (r * 0.001 + c * 0.0001).astype(np.float32)
        out = np.empty((self.band_count, rows, cols), np.float32)
        for b in range(self.band_count):
            out[b] = base + b * 0.01
        out[5] = np.nan
        return out


def test_row_blocks_cover_every_row_once_under_the_cap():
    for height, width, bands, itemsize, cap, max_rows in [(1000, 10_000, 224, 4, 256 * 2**20, 256),
                                                         (7, 3, 1, 4, 2**20, 256), (300, 50, 4, 4, 2**20, 64),
                                                         (10, 10**6, 500, 8, 1024, 256)]:
        blocks = list(row_blocks(height, width, bands, itemsize, cap, max_rows))
        assert [r for r, _ in blocks] == list(np.cumsum([0] + [n for _, n in blocks[:-1]]))
        assert sum(n for _, n in blocks) == height and all(n >= 1 for _, n in blocks)
        step = rows_per_block(width, bands, itemsize, cap, max_rows)
        assert all(n == step for _, n in blocks[:-1]) and step <= max_rows
        assert step == 1 or step * width * bands * itemsize <= cap  # one row is the least a block can hold
    assert rows_per_block(10_000, 224) == 29  # the readers' own example: 256 rows would be 2.3 GB
    assert list(row_blocks(0, 10)) == []


def _peak(fn):
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_scan_and_sampling_of_a_wide_scene_read_capped_blocks(monkeypatch):
    monkeypatch.setattr(readers, "BLOCK_BYTES", CAP)
    reader = LazyWideReader(height=60)  # uncapped: one 60-row read of 215 MB
    bad, peak = _peak(lambda: scan_bad_bands(reader))
    assert bad == [5]
    assert max(reader.reads) <= CAP and sum(reader.reads) == 60 * ROW_BYTES
    assert peak < 4 * CAP, f"peak {peak / 2**20:.0f} MiB"
    reader.reads.clear()
    (values, rows, cols), peak = _peak(lambda: sample_valid_pixels(reader, 500, seed=0, valid_bands=[0, 1, 2]))
    assert values.shape == (BANDS, 500) and max(reader.reads) <= CAP
    assert peak < 4 * CAP, f"peak {peak / 2**20:.0f} MiB"
    # the blocks do not change the sample: the same pixels as with the scene read a row at a time
    again = sample_valid_pixels(reader, 500, seed=0, valid_bands=[0, 1, 2], block_rows=1)
    np.testing.assert_array_equal(rows, again[1])
    np.testing.assert_array_equal(cols, again[2])


@pytest.mark.slow
def test_build_representations_of_a_wide_scene_reads_capped_blocks(monkeypatch, tmp_path):
    """jobs.build_representations (bad-band scan, sample, pRGB/PCA images by row blocks) on a 40-row, 4000-pixel,
    224-band GeoTIFF (143 MB): every HSI read under the cap and the peak a few blocks (30 MiB), where the one
    uncapped block and the PCA's float64 copies of it made it 1130 MiB; the images equal those written with
    one-row blocks."""
    from osgeo import gdal

    from engine import jobs
    from engine.data import raster_io
    from engine.settings import PipelineSettings

    height = 40
    path = str(tmp_path / "wide.tif")
    ds = gdal.GetDriverByName("GTiff").Create(path, WIDTH, height, BANDS, gdal.GDT_Float32,
                                              ["INTERLEAVE=BAND", "TILED=YES"])
    ds.SetGeoTransform((500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0))
    lazy = LazyWideReader(height)
    block = lazy.read(0, 0, height, WIDTH)  # 143 MB, written once before the measured run
    rng = np.random.default_rng(0)
    for b in range(BANDS):
        band = ds.GetRasterBand(b + 1)
        band.SetNoDataValue(-9999.0)
        band.SetMetadataItem("wavelength", f"{400 + 9 * b}")
        band.SetMetadataItem("wavelength_units", "Nanometers")
        data = block[b] + rng.normal(scale=0.01, size=block[b].shape).astype(np.float32)
        band.WriteArray(np.where(np.isnan(data), -9999.0, data))
    ds = block = None

    reads = []
    original = raster_io.RasterReader.read

    def recording_read(self, row, col, rows, cols):
        out = original(self, row, col, rows, cols)
        reads.append(out.nbytes)
        return out

    monkeypatch.setattr(raster_io.RasterReader, "read", recording_read)
    monkeypatch.setattr(readers, "BLOCK_BYTES", CAP)
    settings = PipelineSettings()
    settings.representation.sample_size = 2000
    settings.representation.pca_sample_size = 2000
    outputs = {"prgb": str(tmp_path / "prgb.tif"), "pca": str(tmp_path / "pca.tif")}
    _, peak = _peak(lambda: jobs.build_representations(path, None, settings, outputs))
    assert max(reads) <= CAP
    uncapped = height * ROW_BYTES
    assert peak < 6 * CAP < uncapped / 2, f"peak {peak / 2**20:.0f} MiB"  # before: 1130 MiB (8x the block)
    print(f"build_representations peak {peak / 2**20:.1f} MiB (one uncapped block: {uncapped / 2**20:.0f} MiB)")

    monkeypatch.setattr(readers, "BLOCK_BYTES", ROW_BYTES)  # one row a block
    rows = {"prgb": str(tmp_path / "prgb1.tif"), "pca": str(tmp_path / "pca1.tif")}
    jobs.build_representations(path, None, settings, rows)
    for m in outputs:
        a, b = gdal.Open(outputs[m]).ReadAsArray(), gdal.Open(rows[m]).ReadAsArray()
        np.testing.assert_array_equal(a, b)
