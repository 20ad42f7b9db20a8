"""Streaming tiled prediction: coverage, each pixel from its home window, order, memory independent of height,
row ranges, cancel."""
import numpy as np
import pytest

from engine.progress import Cancelled, Progress
from engine.settings import TileSettings
from engine.tasks.tiling import core_spans, home_windows, predict_tiled, tile_origins


def test_tile_origins_cover_and_flush():
    assert tile_origins(160, 64, 32) == [0, 32, 64, 96]
    assert tile_origins(150, 64, 32) == [0, 32, 64, 86]
    assert tile_origins(40, 64, 32) == [0]
    assert tile_origins(64, 64, 32) == [0]
    for length in (65, 97, 200, 513):
        o = tile_origins(length, 64, 32)
        covered = np.zeros(length, bool)
        for s in o:
            covered[s:s + 64] = True
        assert covered.all() and o[-1] == length - 64
    with pytest.raises(ValueError):
        tile_origins(100, 32, 64)


def _run(scene, predict, k, tiles=TileSettings(64, 32), progress=None, rows_range=None):
    rows = []

    def write(row, probs):
        rows.append((row, probs.copy()))

    def read(r, c, h, w):
        assert r >= 0 and c >= 0 and r + h <= scene.shape[1] and c + w <= scene.shape[2]
        return scene[:, r:r + h, c:c + w].copy()

    stats = predict_tiled(scene.shape[1], scene.shape[2], read, predict, k, write, tiles, progress=progress,
                          batch_size=3, rows=rows_range)
    return rows, stats


def pixelwise(batch, need=None):  # softmax of the channels: a per-pixel function
    e = np.exp(batch - batch.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("shape", [(150, 173), (40, 50), (64, 100)])
def test_pixelwise_equals_untiled_and_rows_once_in_order(shape):
    rng = np.random.default_rng(0)
    scene = rng.normal(size=(3, *shape)).astype(np.float32)
    rows, _ = _run(scene, pixelwise, 3)
    starts = [r for r, _ in rows]
    assert starts[0] == 0 and starts == sorted(starts)
    got = np.concatenate([p for _, p in rows], axis=1)
    assert got.shape == (3, *shape)
    assert sum(p.shape[1] for _, p in rows) == shape[0]
    for (r, p), nxt in zip(rows, starts[1:] + [shape[0]]):
        assert r + p.shape[1] == nxt
    np.testing.assert_allclose(got, pixelwise(scene[None])[0], rtol=1e-5, atol=1e-6)


def _spatial(batch, need=None):  # depends on the position in the window and on the window's mean
    p = batch.shape[-1]
    ramp = np.linspace(0.0, 1.0, p * p, dtype=np.float32).reshape(p, p)
    m = batch.mean(axis=(1, 2, 3), keepdims=True)
    a = batch[:, :1] * ramp + m
    return np.concatenate([a, -a], axis=1)


def test_each_pixel_comes_from_its_home_window_once():
    rng = np.random.default_rng(1)
    h, w, p, s = 130, 110, 64, 32
    scene = rng.normal(size=(2, h, w)).astype(np.float32)
    asked = []

    def spatial(batch, need):
        asked.append(int(need.sum()))
        return _spatial(batch)

    rows, stats = _run(scene, spatial, 2)
    got = np.concatenate([pr for _, pr in rows], axis=1)
    ro, co = tile_origins(h, p, s), tile_origins(w, p, s)
    hr, hc = home_windows(np.arange(h), ro, p), home_windows(np.arange(w), co, p)
    want = np.zeros((2, h, w))
    for y in range(h):
        for x in range(w):
            r, c = ro[hr[y]], co[hc[x]]
            want[:, y, x] = _spatial(scene[None, :, r:r + p, c:c + p])[0, :, y - r, x - c]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert sum(asked) == stats.pixels == h * w  # the expensive per-pixel work runs once per pixel


def test_home_window_rule_matches_brute_force_and_cores_partition():
    rng = np.random.default_rng(5)
    for _ in range(200):
        patch = int(rng.integers(2, 80))
        stride = int(rng.integers(1, patch + 1))
        length = int(rng.integers(1, 400))
        origins = np.asarray(tile_origins(length, patch, stride))
        pos = np.arange(length)
        centre = origins + patch / 2.0
        dist = np.abs(pos[:, None] - centre[None, :])
        inside = (pos[:, None] >= origins[None, :]) & (pos[:, None] < origins[None, :] + patch)
        dist[~inside] = np.inf
        np.testing.assert_array_equal(home_windows(pos, origins, patch), dist.argmin(axis=1))
        spans = core_spans(length, patch, stride)
        cover = np.zeros(length, int)
        for o, a, b in spans:
            assert o <= a and b <= o + patch
            cover[a:b] += 1
        assert (cover == 1).all()


@pytest.mark.parametrize("rows_range", [(0, 1), (37, 90), (100, 130), (63, 64)])
def test_row_range_equals_the_same_rows_of_the_whole_scene(rows_range):
    rng = np.random.default_rng(2)
    scene = rng.normal(size=(2, 130, 75)).astype(np.float32)
    whole = np.concatenate([pr for _, pr in _run(scene, _spatial, 2)[0]], axis=1)
    part_rows, _ = _run(scene, _spatial, 2, rows_range=rows_range)
    assert part_rows[0][0] == rows_range[0]
    part = np.concatenate([pr for _, pr in part_rows], axis=1)
    np.testing.assert_array_equal(part, whole[:, rows_range[0]:rows_range[1]])
    with pytest.raises(ValueError):
        _run(scene, _spatial, 2, rows_range=(50, 50))


def test_buffer_independent_of_height_and_nan_passes_through():
    for h in (100, 700):
        scene = np.ones((2, h, 90), np.float32)
        scene[:, 10, 20] = np.nan
        rows, stats = _run(scene, pixelwise, 2)
        assert stats.buffer_shape == (2, 49, 90)  # the largest core band: rows 0-48 of the first window (ties go first)
        assert stats.max_block_shape == (2, 64, 90)
        got = np.concatenate([pr for _, pr in rows], axis=1)
        assert np.isnan(got[:, 10, 20]).all() and np.isfinite(np.delete(got.reshape(2, -1), 10 * 90 + 20, 1)).all()


def test_cancel_raises():
    calls = {"n": 0}

    def cancelled():
        calls["n"] += 1
        return calls["n"] > 2

    scene = np.zeros((1, 300, 70), np.float32)
    with pytest.raises(Cancelled):
        _run(scene, pixelwise, 1, progress=Progress(is_canceled=cancelled))


def test_input_block_does_not_grow_with_scene_width():
    """Reads follow the window batches: a 4x wider scene reads blocks of the same size, and maps the same."""
    rng = np.random.default_rng(3)
    narrow = rng.normal(size=(3, 70, 300)).astype(np.float32)
    wide = np.concatenate([narrow] * 4, axis=2)
    shapes = []
    for scene in (narrow, wide):
        calls = []

        def read(r, c, h, w, scene=scene, calls=calls):
            calls.append((h, w))
            return scene[:, r:r + h, c:c + w].copy()

        out = []
        stats = predict_tiled(scene.shape[1], scene.shape[2], read, pixelwise, 3,
                              lambda row, p, out=out: out.append(p), TileSettings(64, 32), batch_size=4)
        shapes.append(stats.max_block_shape)
        got = np.concatenate(out, axis=1)
        np.testing.assert_allclose(got, pixelwise(scene[None])[0], rtol=1e-5, atol=1e-6)
        assert max(w for _, w in calls) <= 3 * 32 + 64
    assert shapes[0] == shapes[1] == (3, 64, 3 * 32 + 64)
