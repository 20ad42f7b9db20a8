"""Objects route (issue 21): streamed segmentation without seams, exact streamed pooling, labels per object, and
the jobs end to end on tiny synthetic rasters (no QGIS)."""
from __future__ import annotations

import numpy as np
import pytest

from engine.data.readers import ArrayReader, StackedReader
from engine.progress import Progress
from engine.settings import PipelineSettings
from engine.tasks.objects import (ObjectPooler, SegmentSettings, assemble, from_id_channels, id_channels,
                                  majority_labels, pool_objects, segment_scene)

pytest.importorskip("skimage")


def _blocks(height=240, width=100, rh=30, rw=25, seed=0, noise=0.003):
    """Constant rectangles (truth ids), 6 bands, a little noise; neighbours never share a colour."""
    rng = np.random.default_rng(seed)
    i, j = np.arange(height)[:, None] // rh, np.arange(width)[None, :] // rw
    truth = np.unique(i * 100 + j, return_inverse=True)[1].reshape(height, width)
    palette = np.eye(6)[:5] * 0.6 + 0.2
    hsi = palette[(i + 2 * j) % 5].transpose(2, 0, 1).astype(np.float32)
    hsi += rng.normal(0, noise, hsi.shape).astype(np.float32)
    return hsi, truth


def _reps(reader):
    from engine.tasks.landcover import fit_scene_representations

    return fit_scene_representations(reader, {"band_count": reader.hsi_bands}, None, PipelineSettings(), Progress())


def _segment(hsi, **kw):
    reader = StackedReader(ArrayReader(hsi))
    reps = _reps(reader)
    out = np.full(hsi.shape[1:], -1, np.int64)
    rows_written = []

    def write(row, ids):
        assert (out[row:row + ids.shape[0]] == -1).all(), "a row written twice"
        out[row:row + ids.shape[0]] = ids
        rows_written.append((row, ids.shape[0]))

    result = segment_scene(reader, reps, SegmentSettings(**kw), write)
    return out, result, rows_written


# ------------------------------------------------------------------------------------------------ segmentation

def test_no_object_boundary_follows_a_window_seam_on_a_scene_of_several_windows():
    hsi, truth = _blocks()
    ids, result, rows = _segment(hsi, target_pixels=750, compactness=0.01, window_rows=40)
    assert len(result.windows) >= 3, result.windows  # several windows, so seams exist
    assert (ids >= 1).all() and sorted(r for r, _ in rows) == [r for r, _ in rows]
    seams = [stop for _, stop in result.windows[:-1]]
    for r in seams:
        same_region = truth[r - 1] == truth[r]
        split = ids[r - 1] != ids[r]
        assert not (same_region & split).any(), f"an object boundary lies along the seam at row {r}"
    # regions do span the seams (a tiler that cut there would draw those boundaries), and objects follow regions
    assert all((truth[r - 1] == truth[r]).all() for r in seams if r % 30)
    purity = [np.bincount(truth[ids == k]).max() / (ids == k).sum() for k in range(1, result.n_objects + 1)]
    assert np.mean(purity) > 0.95
    assert result.cut_objects == 0
    np.testing.assert_array_equal(result.pixels, np.bincount(ids.ravel(), minlength=result.n_objects + 1)[1:])


def test_objects_are_one_connected_piece_and_nodata_is_never_inside_one():
    from scipy.ndimage import label

    hsi, _ = _blocks(height=120, width=80)
    hsi[:, 50:57, 10:33] = np.nan
    hsi[2, 90:100, 60:70] = np.nan  # one band's nodata is nodata
    ids, result, _ = _segment(hsi, target_pixels=200, compactness=0.1, window_rows=40)
    assert (ids[50:57, 10:33] == 0).all() and (ids[90:100, 60:70] == 0).all()
    assert (ids[~np.isnan(hsi).any(axis=0)] > 0).all()
    for k in range(1, result.n_objects + 1):
        assert label(ids == k)[1] == 1, f"object {k} is in several pieces"


def test_the_same_scene_gives_the_same_ids_and_the_target_size_sets_the_count():
    hsi, _ = _blocks(height=120, width=100, rh=120, rw=100)  # one homogeneous field
    a, ra, _ = _segment(hsi, target_pixels=100, compactness=1.0, window_rows=40)
    b, _, _ = _segment(hsi, target_pixels=100, compactness=1.0, window_rows=40)
    np.testing.assert_array_equal(a, b)
    _, rb, _ = _segment(hsi, target_pixels=400, compactness=1.0, window_rows=40)
    assert 0.5 * 120 < ra.n_objects < 2 * 120 and rb.n_objects < ra.n_objects / 2


# ------------------------------------------------------------------------------------------------ pooling

def test_pooler_equals_whole_array_statistics_whatever_the_blocks():
    rng = np.random.default_rng(1)
    ids = rng.integers(1, 40, 5000)
    x = rng.normal(3, 2, (5000, 7))
    pooler = ObjectPooler(50, 7)
    for s in range(0, 5000, 333):
        pooler.add(ids[s:s + 333], x[s:s + 333])
    mean, std, count = pooler.mean_std()
    for k in (1, 17, 39):
        np.testing.assert_allclose(mean[k - 1], x[ids == k].mean(axis=0), rtol=1e-10)
        np.testing.assert_allclose(std[k - 1], x[ids == k].std(axis=0), rtol=1e-7)
    assert count[44] == 0 and np.isnan(mean[44]).all()


def test_id_channels_are_exact_for_large_ids():
    ids = np.array([[0, 1, 4095, 4096, 2**31 - 1]])
    np.testing.assert_array_equal(from_id_channels(id_channels(ids)), ids)


class PixelwiseExtractor:
    """A stand-in network whose features at a pixel depend on that pixel only (so a whole-array computation is
    the reference): the pRGB image's three channels, doubled."""

    modalities = ["prgb", "pca"]
    dim = 3
    groups = [("prgb", 0, 0, 3)]

    def __call__(self, patches):
        return patches[:, 0] * 2.0


def test_streamed_pooling_gives_each_polygon_exactly_its_own_pixels_statistics():
    """Objects spanning many 32x32 windows (stride 16): pooled over windows equals the whole-array computation."""
    from engine.settings import TileSettings

    rng = np.random.default_rng(2)
    h, w = 150, 130
    hsi = rng.random((5, h, w)).astype(np.float32)
    hsi[:, 100:110, 5:50] = np.nan
    ids = np.zeros((h, w), np.int64)
    ids[5:140, 3:120] = 1  # spans many windows
    ids[20:60, 20:60] = 2
    ids[70:75, 100:101] = 3
    ids[145:150, 125:130] = 4
    reader = StackedReader(ArrayReader(hsi))
    reps = _reps(reader)
    pooler = pool_objects(reader, ArrayReader(ids[None].astype(np.float64)), 5, reps, PixelwiseExtractor(),
                          TileSettings(patch=32, stride=16), batch_size=3)
    mean, std, count = pooler.mean_std()
    images = reps.apply(hsi)
    spec = reps.spectrum(hsi)
    full = np.concatenate([2 * np.nan_to_num(images["prgb"], nan=0.0), spec])  # [D, h, w]
    valid = ~np.isnan(spec).any(axis=0)
    for k in (1, 2, 3, 4):
        sel = (ids == k) & valid
        assert count[k - 1] == sel.sum()
        np.testing.assert_allclose(mean[k - 1], full[:, sel].mean(axis=1), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(std[k - 1], full[:, sel].std(axis=1), rtol=1e-4, atol=1e-5)
    assert count[4] == 0  # object 5 has no pixel
    x = assemble(mean, std, 3)
    np.testing.assert_allclose(x[0, 3:6], std[0, :3], rtol=1e-6)


def test_a_closed_object_frees_its_slot_and_a_late_pixel_is_an_error():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(60, 3))
    ids = np.repeat(np.arange(1, 7), 10)
    pooler = ObjectPooler(6, 3, capacity=2)
    pooler.add(ids[:20], x[:20])
    assert pooler.open_objects == 2
    mean, std, count = pooler.close(np.array([1, 2]))
    np.testing.assert_allclose(mean[1], x[10:20].mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std[0], x[:10].std(axis=0), rtol=1e-9)
    assert count.tolist() == [10, 10] and pooler.open_objects == 0
    pooler.add(ids[20:60], x[20:60])  # four more: the two freed slots are reused, then the store grows
    assert pooler.open_objects == 4
    mean, _, _ = pooler.mean_std()
    np.testing.assert_allclose(mean[5], x[50:60].mean(axis=0), rtol=1e-12)
    with pytest.raises(ValueError, match="object 1 arrived after it was closed"):
        pooler.add(np.array([1]), x[:1])


def test_streamed_pooling_closes_objects_as_the_rows_pass_and_equals_keeping_them_all():
    """16,384 objects of 2x2 pixels on a tall scene: each object is handed out (once) with the statistics the
    whole-layer pooling gives, and no more than about a band of windows' objects is held at once."""
    from engine.settings import TileSettings

    rng = np.random.default_rng(5)
    h, w = 1024, 64
    hsi = rng.random((4, h, w)).astype(np.float32)
    hsi[:, 300:310, :7] = np.nan
    ids = (np.arange(h)[:, None] // 2) * (w // 2) + np.arange(w)[None, :] // 2 + 1
    n = int(ids.max())
    last_row = np.full(n + 1, -1, np.int64)
    last_row[ids.ravel()] = np.broadcast_to(np.arange(h)[:, None], (h, w)).ravel()
    reader = StackedReader(ArrayReader(hsi))
    reps = _reps(reader)
    tiles = TileSettings(patch=32, stride=32)
    dense = pool_objects(reader, ArrayReader(ids[None].astype(np.float64)), n, reps, PixelwiseExtractor(), tiles)
    want_mean, want_std, want_count = dense.mean_std()
    seen = np.zeros(n + 1, np.int64)
    peak = [0]
    def on_closed(which, mean, std, count):
        seen[which] += 1
        np.testing.assert_array_equal(mean, want_mean[which - 1])
        np.testing.assert_array_equal(std, want_std[which - 1])
        np.testing.assert_array_equal(count, want_count[which - 1])

    holder = []

    class Tracking(ObjectPooler):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            holder.append(self)

        def add(self, *a):
            super().add(*a)
            peak[0] = max(peak[0], self.open_objects)

    import engine.tasks.objects as objects_module

    original = objects_module.ObjectPooler
    objects_module.ObjectPooler = Tracking
    try:
        pool_objects(reader, ArrayReader(ids[None].astype(np.float64)), n, reps, PixelwiseExtractor(), tiles,
                     last_row=last_row, on_closed=on_closed, close_chunk=1000)
    finally:
        objects_module.ObjectPooler = original
    assert (seen[1:] == 1).all()
    assert 0 < peak[0] <= 2 * 16 * 32  # a band of 32 rows holds 16 x 32 objects; never the layer's 16,384
    assert holder[0]._sum.shape[0] <= 1024


def test_pooling_skips_windows_without_a_wanted_object():
    from engine.settings import TileSettings

    calls = []

    class Counting(PixelwiseExtractor):
        def __call__(self, patches):
            calls.append(patches.shape[0])
            return super().__call__(patches)

    hsi = np.random.default_rng(3).random((4, 128, 128)).astype(np.float32)
    ids = np.zeros((128, 128))
    ids[:10, :10], ids[100:, 100:] = 1, 2
    reader = StackedReader(ArrayReader(hsi))
    reps = _reps(reader)
    pool_objects(reader, ArrayReader(ids[None]), 2, reps, Counting(), TileSettings(patch=32, stride=32),
                 wanted=np.array([False, True, False]), batch_size=1)
    assert sum(calls) == 1  # only the window holding object 1


# ------------------------------------------------------------------------------------------------ labels

def test_majority_of_label_points_with_ties_and_conflicts_reported():
    where = np.array([0, 0, 0, 1, 1, 2, -1, 3, 3, 3])
    cls = np.array([1, 1, 0, 0, 1, 2, 0, 2, 2, 2])
    got = majority_labels(where, cls, 5)
    np.testing.assert_array_equal(got.index, [1, -1, 2, 2, -1])
    assert (got.ties, got.conflicts, got.points_outside) == (1, 2, 1)
