"""Olofsson et al. 2014 stratified area and accuracy estimators (engine.assessment.area): the paper's worked example, a
hand-computed two-class case, and the errors for inputs the estimators cannot handle."""
import math

import numpy as np
import pytest

from engine.assessment.area import MapAreaCounter, check_class_names, stratified_estimates

# Olofsson et al. 2014, section 5 (Table 8): sample counts, rows = map class, columns = reference class, in the
# order deforestation, forest gain, stable forest, stable non-forest; mapped areas in 30 m pixels.
OLOFSSON_COUNTS = [[66, 0, 5, 4],
                   [0, 55, 8, 12],
                   [1, 0, 153, 11],
                   [2, 1, 9, 313]]
OLOFSSON_PIXELS = [200_000, 150_000, 3_200_000, 6_450_000]
HA_PER_PIXEL = 30 * 30 / 10_000


def test_olofsson_2014_worked_example_to_the_printed_digits():
    e = stratified_estimates(OLOFSSON_COUNTS, np.array(OLOFSSON_PIXELS) * HA_PER_PIXEL,
                             names=["Deforestation", "Forest gain", "Stable forest", "Stable non-forest"], unit="ha")
    assert e.sample_counts.sum() == 640
    # areas (ha) and 95 % CI half-widths as printed on p. 54: e.g. deforestation 21,158 ha ± 6,158 ha
    assert [round(a) for a in e.area] == [21_158, 11_686, 285_770, 581_386]
    assert [round(c) for c in e.area_ci] == [6_158, 3_756, 15_510, 16_282]
    # accuracies ± 95 % CI, two decimals as printed
    assert [round(u, 2) for u in e.users] == [0.88, 0.73, 0.93, 0.96]
    assert [round(c, 2) for c in e.users_ci] == [0.07, 0.10, 0.04, 0.02]
    assert [round(p, 2) for p in e.producers] == [0.75, 0.85, 0.93, 0.96]
    assert [round(c, 2) for c in e.producers_ci] == [0.21, 0.25, 0.03, 0.02]
    assert (round(e.overall, 2), round(e.overall_ci, 2)) == (0.95, 0.02)
    # the area-proportion matrix sums to 1 and its rows to the map weights
    assert e.proportions.sum() == pytest.approx(1.0)
    assert e.proportions.sum(axis=1) == pytest.approx(np.array(OLOFSSON_PIXELS) / 10_000_000)
    assert e.total_area == pytest.approx(900_000)
    # the estimate does not depend on the unit of the map areas (pixels or hectares)
    pixels = stratified_estimates(OLOFSSON_COUNTS, OLOFSSON_PIXELS)
    assert pixels.area * HA_PER_PIXEL == pytest.approx(e.area)
    assert pixels.producers_ci == pytest.approx(e.producers_ci)


def test_two_class_case_by_hand():
    # map: 800 pixels A, 200 pixels B; reference sample: 10 in map A (8 A, 2 B), 5 in map B (1 A, 4 B)
    e = stratified_estimates([[8, 2], [1, 4]], [800, 200], class_values=[1, 2], names=["A", "B"])
    # p = W_i n_ij / n_i. = [[0.8*0.8, 0.8*0.2], [0.2*0.2, 0.2*0.8]]
    assert e.proportions == pytest.approx(np.array([[0.64, 0.16], [0.04, 0.16]]))
    assert e.area == pytest.approx([680.0, 320.0])
    se = math.sqrt(0.8 ** 2 * 0.8 * 0.2 / 9 + 0.2 ** 2 * 0.2 * 0.8 / 4)  # the same for both classes
    assert e.area_proportion_se == pytest.approx([se, se])
    assert e.area_ci == pytest.approx([1.96 * 1000 * se] * 2)
    assert e.users == pytest.approx([0.8, 0.8])
    assert e.users_ci == pytest.approx([1.96 * math.sqrt(0.8 * 0.2 / 9), 1.96 * math.sqrt(0.8 * 0.2 / 4)])
    assert e.overall == pytest.approx(0.8)
    assert e.overall_ci == pytest.approx(1.96 * math.sqrt(0.64 * 0.16 / 9 + 0.04 * 0.16 / 4))
    pa_a, pa_b = 0.64 / 0.68, 0.16 / 0.32
    assert e.producers == pytest.approx([pa_a, pa_b])
    v_a = (0.64 * (1 - pa_a) ** 2 * 0.16 / 9 + pa_a ** 2 * 0.04 * 0.2 * 0.8 / 4) / 0.68 ** 2
    v_b = (0.04 * (1 - pa_b) ** 2 * 0.16 / 4 + pa_b ** 2 * 0.64 * 0.2 * 0.8 / 9) / 0.32 ** 2
    assert e.producers_ci == pytest.approx([1.96 * math.sqrt(v_a), 1.96 * math.sqrt(v_b)])
    d = e.to_dict()
    assert d["classes"][0]["estimated_area"] == pytest.approx(680.0) and "stratified random" in d["assumptions"]


def test_a_reference_class_missing_from_the_map_is_refused_by_name():
    with pytest.raises(ValueError, match=r"'Urban' \(value 3\) \(2 samples\) do not occur in the map"):
        stratified_estimates([[5, 1, 2], [1, 5, 0], [0, 0, 0]], [50, 50, 0], [1, 2, 3], ["Water", "Forest", "Urban"])


@pytest.mark.parametrize("row", [[0, 0], [1, 0]])
def test_an_empty_or_single_sample_stratum_is_refused(row):
    with pytest.raises(ValueError, match=r"empty stratum: map class\(es\) 'Forest' \(value 2\)"):
        stratified_estimates([[5, 1], row], [50, 50], [1, 2], ["Water", "Forest"])


def test_class_names_must_match_by_value():
    check_class_names({1: "Water", 2: "Forest"}, {1: " water ", 2: "2"})  # case, spaces and unnamed values pass
    with pytest.raises(ValueError, match="value 2 is 'Forest' in the map but 'Urban' in the reference"):
        check_class_names({1: "Water", 2: "Forest"}, {1: "Water", 2: "Urban"})


def test_map_area_counter_streams_blocks_and_weights_rows():
    block = np.array([[1, 1, np.nan], [2, 1, 2]], np.float32)
    counter = MapAreaCounter(row_area=np.array([10.0, 20.0, 30.0]))
    counter.add(0, block[:1])
    counter.add(1, block[1:])
    assert counter.pixels == {1: 3, 2: 2}
    assert counter.area == pytest.approx({1: 10 + 10 + 20, 2: 40})
