"""Probability smoothing: the whole-array, streamed and single-pixel forms agree; nodata never votes."""
import numpy as np
import pytest

from engine.tasks.spatial import (RowSmoother, centre_smoothed, choose_sigma, cv_folds, neighbourhood, radius,
                            smooth_probabilities)


def _probs(k=3, h=37, w=29, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.random((k, h, w)).astype(np.float32)
    p /= p.sum(axis=0, keepdims=True)
    p[:, 5:9, 3:6] = np.nan  # a nodata hole
    p[:, :, 0] = np.nan  # a nodata column on the scene edge
    return p


def test_zero_sigma_is_identity_and_nodata_stays():
    p = _probs()
    np.testing.assert_array_equal(smooth_probabilities(p, 0.0), p)
    s = smooth_probabilities(p, 1.5)
    assert np.isnan(s[:, 5:9, 3:6]).all() and np.isnan(s[:, :, 0]).all()
    valid = ~np.isnan(p).any(axis=0)
    np.testing.assert_allclose(s[:, valid].sum(axis=0), 1.0, atol=1e-5)  # still probabilities


def test_smoothing_removes_an_isolated_pixel_but_keeps_a_region():
    p = np.zeros((2, 21, 21), np.float32)
    p[0] = 0.9
    p[1] = 0.1
    p[:, 10, 10] = (0.3, 0.7)  # one noisy pixel
    p[0, :, 15:], p[1, :, 15:] = 0.2, 0.8  # a real region
    s = smooth_probabilities(p, 1.0).argmax(axis=0)
    assert s[10, 10] == 0
    assert (s[:, 17:] == 1).all()


def test_nodata_does_not_vote():
    p = np.zeros((2, 9, 9), np.float32)
    p[0] = 1.0
    q = p.copy()
    q[:, 4, 5:] = np.nan  # change only pixels that become nodata
    q[:, 4, 6:] = np.nan
    a = smooth_probabilities(p, 1.0)
    b = smooth_probabilities(q, 1.0)
    np.testing.assert_allclose(a[:, 4, 4], b[:, 4, 4], atol=1e-6)  # all valid neighbours say class 0


@pytest.mark.parametrize("sigma", [0.0, 0.7, 2.0, 3.0])
@pytest.mark.parametrize("blocks", [[37], [5, 11, 3, 18], [1] * 37])
def test_streamed_rows_equal_whole_array(sigma, blocks):
    p = _probs()
    out = np.full_like(p, -5.0)
    rows = []

    def emit(row, block):
        rows.append((row, block.shape[1]))
        out[:, row:row + block.shape[1]] = block

    sm = RowSmoother(sigma, p.shape[1], emit)
    r = 0
    for n in blocks:
        sm.push(r, p[:, r:r + n])
        r += n
    sm.finish()
    np.testing.assert_allclose(out, smooth_probabilities(p, sigma), atol=1e-6, equal_nan=True)
    assert sum(n for _, n in rows) == p.shape[1]  # each row exactly once, in order
    assert [a for a, _ in rows] == sorted(a for a, _ in rows)


def test_streamed_buffer_stays_bounded():
    h = 400
    p = np.random.default_rng(1).random((2, h, 8)).astype(np.float32)
    seen = []
    sm = RowSmoother(2.0, h, lambda row, b: None)
    for r in range(0, h, 10):
        sm.push(r, p[:, r:r + 10])
        seen.append(sm._buf.shape[1])
    assert max(seen) <= 10 + 2 * radius(2.0)


def test_centre_form_equals_whole_array_at_pixels():
    p = _probs(h=30, w=30)
    rows = np.array([0, 7, 15, 29, 12])
    cols = np.array([3, 1, 15, 29, 4])
    r = radius(3.0)
    patches = neighbourhood(p, rows, cols, r)
    for sigma in (0.0, 0.7, 1.0, 3.0):
        full = smooth_probabilities(p, sigma)[:, rows, cols].T
        got = centre_smoothed(patches, sigma)
        ok = ~np.isnan(full).any(axis=1)
        np.testing.assert_allclose(got[ok], full[ok], atol=1e-5)


def test_choose_sigma_prefers_smaller_on_ties_and_picks_the_best():
    p = np.zeros((2, 15, 15), np.float32)
    p[0], p[1] = 0.6, 0.4
    p[:, 7, 7] = (0.4, 0.6)  # isolated wrong pixel, truth is class 0
    patches = neighbourhood(p, np.array([7, 2]), np.array([7, 2]), radius(3.0))
    choice = choose_sigma(patches, np.array([0, 0]))
    assert choice.sigma > 0 and choice.cv_accuracy["0"] == 0.5 and choice.cv_accuracy[f"{choice.sigma:g}"] == 1.0
    flat = neighbourhood(np.full((2, 15, 15), 0.5, np.float32) + np.array([0.1, -0.1])[:, None, None].astype(np.float32),
                         np.array([7]), np.array([7]), radius(3.0))
    assert choose_sigma(flat, np.array([0])).sigma == 0.0


def test_cv_folds_stratified_and_deterministic():
    y = np.array([0] * 7 + [1] * 2 + [2] * 5)
    f1, f2 = cv_folds(y, 3, 4), cv_folds(y, 3, 4)
    assert all((a == b).all() for a, b in zip(f1, f2))
    assert sorted(np.concatenate(f1).tolist()) == list(range(y.size))
    for c in (0, 2):
        per = [int((y[f] == c).sum()) for f in f1]
        assert max(per) - min(per) <= 1


# ---------------------------------------------------------------------------------------------------------
# the edge-aware regulariser (guided filter) and the Regulariser record

from engine.tasks import spatial as spatial_mod  # noqa: E402
from engine.tasks.spatial import Regulariser, centre_regularised, guided_filter  # noqa: E402


def _guided_reference(p, g, r, eps):
    """He et al.'s guided filter written pixel by pixel, over the valid pixels of each window (independent of
    the vectorised one)."""
    k, h, w = p.shape
    valid = ~(np.isnan(p).any(axis=0) | np.isnan(g).any(axis=0))
    a = np.zeros((h, w, g.shape[0], k))
    b = np.zeros((h, w, k))
    for i in range(h):
        for j in range(w):
            win = valid[max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1]
            gi = g[:, max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1][:, win].astype(np.float64)  # [G, n]
            pi = p[:, max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1][:, win].astype(np.float64)  # [K, n]
            if gi.shape[1] == 0:
                continue
            mu, mp = gi.mean(axis=1), pi.mean(axis=1)
            cov = gi @ gi.T / gi.shape[1] - np.outer(mu, mu)
            cip = gi @ pi.T / gi.shape[1] - np.outer(mu, mp)
            a[i, j] = np.linalg.solve(cov + eps * np.eye(len(mu)), cip)
            b[i, j] = mp - a[i, j].T @ mu
    q = np.full((k, h, w), np.nan)
    for i in range(h):
        for j in range(w):
            if not valid[i, j]:
                continue
            win = valid[max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1]
            ma = a[max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1][win].mean(axis=0)
            mb = b[max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1][win].mean(axis=0)
            q[:, i, j] = ma.T @ g[:, i, j] + mb
    q = np.clip(q, 0, 1)
    return q / q.sum(axis=0, keepdims=True)


def _guide(h=37, w=29, seed=3):
    rng = np.random.default_rng(seed)
    g = rng.random((3, h, w)).astype(np.float32)
    g[:, :, w // 2:] += 0.5  # an edge
    return np.clip(g, 0, 1)


def test_guided_filter_equals_the_pixel_by_pixel_definition():
    p, g = _probs(h=14, w=11), _guide(14, 11)
    got = guided_filter(p, g, 2, 0.01)
    np.testing.assert_allclose(got, _guided_reference(p, g, 2, 0.01), atol=1e-5, equal_nan=True)
    assert np.isnan(got[:, 5:9, 3:6]).all()  # nodata stays nodata


def test_guided_filter_keeps_a_thin_class_the_gaussian_erases():
    h, w = 30, 30
    g = np.zeros((3, h, w), np.float32)
    g[:, :, 14:16] = 1.0  # a 2-px road the image shows clearly
    p = np.zeros((2, h, w), np.float32)
    p[0], p[1] = 0.7, 0.3
    p[:, :, 14:16] = np.array([0.4, 0.6], np.float32)[:, None, None]
    p[:, ::3, 14] = np.array([0.55, 0.45], np.float32)[:, None]  # noisy road pixels
    guided = Regulariser("guided", r=3, eps=0.001).apply(p, g).argmax(axis=0)
    gauss = Regulariser("gaussian", 2.0).apply(p).argmax(axis=0)
    assert (gauss[:, 14:16] == 0).all()  # the Gaussian erases the road
    assert (guided[:, 14:16] == 1).all() and (guided[:, :12] == 0).all()  # the guided filter keeps it, and cleans it


@pytest.mark.parametrize("blocks", [[37], [5, 11, 3, 18], [1] * 37])
def test_guided_streamed_rows_equal_whole_array(blocks):
    p, g = _probs(), _guide()
    reg = Regulariser("guided", r=2, eps=0.01)
    planes = np.concatenate([p, g])
    out = np.full_like(p, -5.0)

    def emit(row, block):
        out[:, row:row + block.shape[1]] = block

    sm = RowSmoother(reg, p.shape[1], emit, n_guide=3)
    r = 0
    for n in blocks:
        sm.push(r, planes[:, r:r + n])
        r += n
    sm.finish()
    np.testing.assert_allclose(out, guided_filter(p, g, 2, 0.01), atol=1e-5, equal_nan=True)


def test_guided_in_column_chunks_equals_whole_width(monkeypatch):
    p, g = _probs(w=61), _guide(w=61)
    whole = guided_filter(p, g, 2, 0.01)
    monkeypatch.setattr(spatial_mod, "COLUMN_CHUNK", 7)
    np.testing.assert_allclose(Regulariser("guided", r=2, eps=0.01).apply(p, g), whole, atol=1e-6, equal_nan=True)


def test_guided_centre_of_a_neighbourhood_equals_whole_array():
    p, g = _probs(), _guide()
    reg = Regulariser("guided", r=2, eps=0.001)
    rows, cols = np.array([0, 7, 20, 36, 12]), np.array([1, 2, 28, 15, 9])
    patches = neighbourhood(np.concatenate([p, g]), rows, cols, reg.halo)
    got = centre_regularised(patches, reg, n_guide=3)
    np.testing.assert_allclose(got, guided_filter(p, g, 2, 0.001)[:, rows, cols].T, atol=1e-5)


def test_regulariser_record_round_trips_and_refuses_damage():
    for reg in (Regulariser(), Regulariser("gaussian", 1.5), Regulariser("guided", r=3, eps=0.01)):
        assert Regulariser.from_dict(reg.to_dict()) == reg
    assert Regulariser.from_dict({"sigma": 1.0}) == Regulariser("gaussian", 1.0)  # a 0.2 file
    assert Regulariser.from_dict({"sigma": 0.0}) == Regulariser() and Regulariser.from_dict(None) == Regulariser()
    with pytest.raises(ValueError, match="unknown keys"):
        Regulariser.from_dict({"method": "guided", "r": 2, "eps": 0.01, "extra": 1})
    with pytest.raises(ValueError, match="unknown spatial regulariser"):
        Regulariser("median")
    with pytest.raises(ValueError, match="guided filter needs"):
        Regulariser("guided", r=0, eps=0.01)
    assert Regulariser("guided", r=3, eps=0.01).halo == 6 and Regulariser("gaussian", 1.0).halo == radius(1.0)
