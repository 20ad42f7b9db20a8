"""engine.assessment.change: the streamed from-to counter, change scores, and the README's metrics on a small synthetic pair
and on the real Bern pair (shared/data/change)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from engine.assessment.change import (FromToCounter, abs_log_ratio, best_f1, cva_magnitude, evaluate_score, f1_at,
                           kittler_illingworth_threshold, legend_conflicts, otsu_threshold, roc_auc)
from benchmarks.change import CHANGE_DIR, load_pair


def test_counter_block_by_block_equals_one_pass_and_counts_nodata():
    rng = np.random.default_rng(0)
    a = rng.integers(1, 4, (37, 23)).astype(np.float32)
    b = rng.integers(1, 5, (37, 23)).astype(np.float32)
    a[rng.random(a.shape) < 0.1] = np.nan
    b[rng.random(b.shape) < 0.1] = np.nan
    row_area = np.linspace(80.0, 120.0, 37)  # varies by row, like a geographic CRS
    whole = FromToCounter(row_area)
    whole.add(0, a, b)
    blocks = FromToCounter(row_area)
    for row in range(0, 37, 5):
        blocks.add(row, a[row:row + 5], b[row:row + 5])
    m1, m2 = whole.matrix({}, {}), blocks.matrix({}, {})
    assert np.array_equal(m1.pixels, m2.pixels) and np.allclose(m1.area, m2.area)
    na, nb = np.isnan(a), np.isnan(b)
    assert (m2.nodata_first, m2.nodata_second, m2.nodata_both) == ((na & ~nb).sum(), (nb & ~na).sum(), (na & nb).sum())
    ok = ~(na | nb)
    for (i, u), (j, v) in itertools.product(enumerate(m2.from_values), enumerate(m2.to_values)):
        sel = ok & (a == u) & (b == v)
        assert m2.pixels[i, j] == sel.sum()
        assert m2.area[i, j] == pytest.approx((sel * row_area[:, None]).sum())
    assert m2.changed_pixels == int((ok & (a != b)).sum())


def test_named_classes_absent_from_a_map_get_empty_rows_and_conflicts_are_listed():
    c = FromToCounter()
    c.add(0, np.array([[1.0, 1.0]]), np.array([[1.0, 2.0]]))
    m = c.matrix({1: "Water", 3: "Snow"}, {1: "Water", 2: "Built"})
    assert m.from_values == [1, 3] and m.from_names == ["Water", "Snow"] and m.pixels.tolist() == [[1, 1], [0, 0]]
    assert legend_conflicts({1: "Water", 2: "Forest"}, {1: "water", 2: "Woodland"}) == ["2: 'Forest' → 'Woodland'"]


def _brute_auc(score, y):
    pos, neg = score[y], score[~y]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / (pos.size * neg.size)


def _brute_best_f1(score, y):
    return max(f1_at(score, y, t).f1 for t in np.unique(score))


def test_auc_and_best_f1_match_brute_force_with_ties():
    rng = np.random.default_rng(1)
    y = rng.random(300) < 0.2
    score = np.round(rng.normal(size=300) + 1.2 * y, 1)  # many ties
    assert roc_auc(score, y) == pytest.approx(_brute_auc(score, y), abs=1e-12)
    best = best_f1(score, y)
    assert best.f1 == pytest.approx(_brute_best_f1(score, y), abs=1e-12)
    at = f1_at(score, y, best.threshold)
    assert (at.f1, at.precision, at.recall) == pytest.approx((best.f1, best.precision, best.recall))


def test_scores_and_automatic_thresholds_on_a_synthetic_pair():
    rng = np.random.default_rng(2)
    t1 = rng.normal(100.0, 5.0, (3, 40, 40))
    t2 = t1 + rng.normal(0.0, 1.0, t1.shape)
    change = np.zeros((40, 40), bool)
    change[10:20, 5:25] = True
    t2[:, change] += 40.0
    cva = cva_magnitude(t1, t2)
    assert cva.shape == (40, 40) and cva[change].min() > cva[~change].max()
    ev = evaluate_score(cva, change)
    assert ev.auc == 1.0 and ev.best.f1 == 1.0
    for method in ("otsu", "kittler-illingworth"):  # two well-separated modes: both thresholds split them
        assert ev.automatic[method].f1 == 1.0
    lr = abs_log_ratio(np.full((2, 2), 9.0), np.array([[9.0, 19.0], [4.0, 99.0]]))
    assert lr == pytest.approx(np.abs(np.log(np.array([[10, 20], [5, 100]]) / 10.0)))


def test_otsu_maximises_the_between_class_variance():
    rng = np.random.default_rng(3)
    x = np.r_[rng.normal(0, 1, 5000), rng.normal(6, 1.5, 1500)]
    t = otsu_threshold(x, bins=256)
    hist, edges = np.histogram(x, bins=256)
    centres = 0.5 * (edges[:-1] + edges[1:])

    def between(k):  # classes: bins 0..k and k+1..
        w0, w1 = hist[:k + 1].sum(), hist[k + 1:].sum()
        m0 = (hist[:k + 1] * centres[:k + 1]).sum() / w0
        m1 = (hist[k + 1:] * centres[k + 1:]).sum() / w1
        return w0 * w1 * (m0 - m1) ** 2

    k_best = max(range(255), key=between)
    assert t == pytest.approx(edges[k_best + 1])
    assert 1.5 < t < 4.5 and 1.0 < kittler_illingworth_threshold(x, bins=256) < 5.0


@pytest.mark.real_data
@pytest.mark.skipif(not (CHANGE_DIR / "bern_t1.tif").exists(), reason="shared change data not present")
def test_bern_reproduces_the_data_readme():
    """README of shared/data/change: |log-ratio| AUC 0.9780, best F1 0.7095 at 1.569 (P 0.702, R 0.717);
    CVA AUC 0.9611, best F1 0.5305 at 2.563."""
    pair = load_pair("bern")
    assert pair.label.shape == (301, 301) and pair.label.sum() == 1155
    score = abs_log_ratio(pair.t1[0], pair.t2[0])
    best = best_f1(score, pair.label)
    assert f"{roc_auc(score, pair.label):.4f}" == "0.9780"
    assert (f"{best.f1:.4f}", f"{best.threshold:.3f}", f"{best.precision:.3f}", f"{best.recall:.3f}") == \
        ("0.7095", "1.569", "0.702", "0.717")
    cva = cva_magnitude(pair.t1, pair.t2)
    best = best_f1(cva, pair.label)
    assert (f"{roc_auc(cva, pair.label):.4f}", f"{best.f1:.4f}", f"{best.threshold:.3f}") == ("0.9611", "0.5305", "2.563")


def _write(path, data, gt, epsg, nodata=0):
    from osgeo import gdal, osr

    ds = gdal.GetDriverByName("GTiff").Create(str(path), data.shape[1], data.shape[0], 1, gdal.GDT_Byte)
    ds.SetGeoTransform(gt)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds.SetProjection(srs.ExportToWkt())
    ds.GetRasterBand(1).SetNoDataValue(nodata)
    ds.GetRasterBand(1).WriteArray(data)
    ds = None
    return str(path)


def test_change_statistics_job_geographic_areas_and_small_blocks(tmp_path):
    """In EPSG:4326 each row's pixels get their ellipsoidal area (raster_io.pixel_area); streaming two rows at a
    time gives the same matrix as one block."""
    from engine.jobs import change_statistics
    from engine.data.raster_io import pixel_area, read_info

    rng = np.random.default_rng(4)
    a = rng.integers(0, 3, (9, 7)).astype(np.uint8)
    b = rng.integers(0, 4, (9, 7)).astype(np.uint8)
    gt = (7.0, 0.01, 0.0, 60.0, 0.0, -0.01)
    first, second = _write(tmp_path / "a.tif", a, gt, 4326), _write(tmp_path / "b.tif", b, gt, 4326)
    m1 = change_statistics(first, second, json_path=str(tmp_path / "c.json"), block_rows=2)
    m2 = change_statistics(first, second)
    assert np.array_equal(m1.pixels, m2.pixels) and np.allclose(m1.area, m2.area)
    row_ha = pixel_area(read_info(first)).row_area * 1e-4
    assert m1.unit == "ha" and row_ha[0] < row_ha[-1]  # rows nearer the equator are larger
    ok = (a > 0) & (b > 0)
    i, j = m1.from_values.index(1), m1.to_values.index(2)
    assert m1.area[i, j] == pytest.approx((((a == 1) & (b == 2)) * row_ha[:, None]).sum())
    assert m1.valid_pixels == ok.sum() and m1.excluded_pixels == (~ok).sum()
    assert (tmp_path / "c.json").exists()
