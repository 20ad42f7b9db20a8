import numpy as np
import pytest

from engine.assessment.metrics import classification_metrics, confusion_matrix


def test_confusion_matrix_counts_reference_rows_prediction_columns():
    cm = confusion_matrix([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_metrics_match_hand_computation():
    y_true = np.array([0] * 50 + [1] * 30 + [2] * 20)
    y_pred = y_true.copy()
    y_pred[:10] = 1  # 10 class-0 pixels called class 1
    y_pred[80:85] = 0  # 5 class-2 pixels called class 0
    m = classification_metrics(y_true, y_pred, 3, ["a", "b", "c"])
    assert m["overall_accuracy"] == pytest.approx(85 / 100)
    recalls = [40 / 50, 30 / 30, 15 / 20]
    assert m["average_accuracy"] == pytest.approx(np.mean(recalls))
    ref, pred = np.array([50, 30, 20]), np.array([45, 40, 15])
    pe = (ref * pred).sum() / 100**2
    assert m["kappa"] == pytest.approx((0.85 - pe) / (1 - pe))
    ious = [40 / (50 + 45 - 40), 30 / (30 + 40 - 30), 15 / (20 + 15 - 15)]
    assert m["mean_iou"] == pytest.approx(np.mean(ious))
    f1 = [2 * 40 / 95, 2 * 30 / 70, 2 * 15 / 35]
    assert m["mean_f1"] == pytest.approx(np.mean(f1))
    assert m["per_class"][1]["precision"] == pytest.approx(30 / 40)


def test_class_absent_from_reference_is_left_out_of_means():
    m = classification_metrics([0, 0, 1, 1], [0, 0, 1, 2], 3)
    assert m["per_class"][2]["recall"] is None
    assert m["average_accuracy"] == pytest.approx((1.0 + 0.5) / 2)


def test_out_of_range_class_is_an_error():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 3], [0, 1], 2)
