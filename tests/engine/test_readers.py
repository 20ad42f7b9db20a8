import numpy as np

from engine.networks.adaptation import PoolSampler
from engine.tasks.tiling import home_windows
from engine.data.readers import ArrayReader, StackedReader, read_padded, sample_valid_pixels


def test_sample_valid_pixels_skips_nodata_and_respects_size():
    rng = np.random.default_rng(0)
    arr = rng.normal(size=(4, 300, 50)).astype(np.float32)
    arr[:, :100, :] = np.nan  # a nodata third
    out, rows, _ = sample_valid_pixels(ArrayReader(arr), 500, seed=1, block_rows=64)
    assert out.shape == (4, 500)
    assert not np.isnan(out).any()
    again, _, _ = sample_valid_pixels(ArrayReader(arr), 500, seed=1, block_rows=64)
    assert (rows >= 100).all()
    np.testing.assert_array_equal(out, again)


def test_stacked_reader_and_edge_padding():
    hsi = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6)
    sar = -np.ones((1, 5, 6), dtype=np.float32)
    reader = StackedReader(ArrayReader(hsi), ArrayReader(sar))
    block = read_padded(reader, 2, 3, 4)
    assert block.shape == (3, 4, 4)
    np.testing.assert_array_equal(block[0, :3, :3], hsi[0, 2:5, 3:6])
    np.testing.assert_array_equal(block[0, 3], block[0, 2])  # edge rows repeated
    h, s = reader.split(block)
    assert h.shape[0] == 2 and s.shape[0] == 1


def test_home_origin_is_the_most_central_containing_window():
    origins = np.array([0, 32, 64, 96, 136])  # last window flush with a 200-pixel edge
    pos = np.array([0, 40, 60, 199, 140])
    idx = home_windows(pos, origins, 64)
    for p, i in zip(pos, idx):
        assert origins[i] <= p < origins[i] + 64
    assert idx.tolist() == [0, 0, 1, 4, 3]  # 60 is nearer window 32's centre (64) than window 0's (32)


def test_pool_sampler_always_has_the_prgb_anchor():
    import torch

    pool = {m: np.random.default_rng(0).normal(size=(5, 3, 64, 64)).astype(np.float32) for m in ("prgb", "pca", "sar")}
    sampler = PoolSampler(pool)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        x, y = sampler.sample(4, g)
        assert x.shape == (4, 3, 64, 64)
        assert (y == 1).any()
