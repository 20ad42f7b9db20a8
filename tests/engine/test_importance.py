"""engine.heads.importance: spatially blocked folds, blocked-CV OA and permutation importance per input group."""
import numpy as np

from engine.heads.importance import assess_inputs, describe, input_groups, spatial_block_folds


def test_block_folds_keep_whole_blocks_together():
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 200, 400), rng.integers(0, 200, 400)
    folds = spatial_block_folds(rows, cols, 32, 5, seed=1)
    assert sorted(np.concatenate(folds).tolist()) == list(range(400))
    block_fold = {}
    for f, idx in enumerate(folds):
        for i in idx:
            assert block_fold.setdefault((rows[i] // 32, cols[i] // 32), f) == f


def test_input_groups_by_modality_then_bands():
    groups = input_groups([("prgb", 200, 5, 4), ("pca", 200, 5, 4), ("prgb", 200, 6, 2), ("pca", 200, 6, 2)],
                          True, hsi_bands=6, sar_bands=2)
    assert [g.name for g in groups] == ["diffusion features (prgb)", "diffusion features (pca)", "HSI bands",
                                        "SAR bands"]
    assert groups[0].columns.tolist() == [0, 1, 2, 3, 8, 9] and groups[2].columns.tolist() == list(range(12, 18))


def test_noise_group_is_worth_nothing_and_the_informative_one_is():
    """A scene where class = left/right half with an informative 2-column group and a pure-noise 6-column group."""
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 128, 300), rng.integers(0, 128, 300)
    y = (cols >= 64).astype(np.int64)
    informative = y[:, None] + rng.normal(0, 0.3, (300, 2))
    noise = rng.normal(0, 1, (300, 6))
    x = np.concatenate([noise, informative], axis=1).astype(np.float32)
    groups = input_groups([("prgb", 200, 5, 6)], True, hsi_bands=2, sar_bands=0)
    v = assess_inputs(x, y, rows, cols, 2, groups, block=32, folds=4, trees=30, repeats=3, seed=0)
    assert v.folds == 4 and len(v.fold_oa) == 4 and 0.9 < v.oa_mean <= 1.0 and v.oa_std >= 0
    assert v.importance["HSI bands"] > 0.2
    assert abs(v.importance["diffusion features (prgb)"]) < 0.05
    assert v.importance["diffusion features (prgb)"] < v.importance["HSI bands"]
    text = describe(v, 0.97)
    assert "spatially blocked" in text and "out-of-bag OA of the final forest 97.0 %" in text
    # a forest that reads the bands only: the diffusion group is reported as not read, never scored
    v2 = assess_inputs(x, y, rows, cols, 2, groups, used_from=6, block=32, folds=4, trees=10, repeats=1)
    assert v2.not_used == ["diffusion features (prgb)"] and list(v2.importance) == ["HSI bands"]


def test_labels_in_one_block_say_so():
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    y = np.arange(20) % 2
    v = assess_inputs(x, y, np.arange(20) % 8, np.arange(20) % 8, 2, input_groups([], True, 3, 0), block=32)
    assert v.oa_mean is None and "one 32x32 px block" in v.note
