"""Accuracy metrics from a confusion matrix (rows = reference, columns = prediction)."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"reference and prediction differ in length: {y_true.size} vs {y_pred.size}")
    bad = (y_true < 0) | (y_true >= n_classes) | (y_pred < 0) | (y_pred >= n_classes)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} samples have class indices outside 0..{n_classes - 1}")
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def metrics_from_confusion(cm: np.ndarray, class_names: Optional[Sequence[str]] = None) -> Dict:
    """OA, AA, kappa, per-class precision/recall/F1/IoU, mF1 and mIoU.

    Classes absent from the reference are left out of the class means (their recall is undefined) rather
    than counted as zero, so a missing class cannot masquerade as a failure.
    """
    cm = np.asarray(cm, dtype=np.float64)
    k = cm.shape[0]
    total = cm.sum()
    tp = np.diag(cm)
    ref = cm.sum(axis=1)
    pred = cm.sum(axis=0)
    recall = _safe_div(tp, ref)
    precision = _safe_div(tp, pred)
    f1 = _safe_div(2 * tp, ref + pred)
    iou = _safe_div(tp, ref + pred - tp)
    present = ref > 0
    oa = float(tp.sum() / total) if total else float("nan")
    pe = float((ref * pred).sum() / total**2) if total else float("nan")
    kappa = (oa - pe) / (1 - pe) if total and pe < 1 else float("nan")
    names = list(class_names) if class_names is not None else [f"class {i}" for i in range(k)]

    def mean(v):
        v = v[present]
        v = v[~np.isnan(v)] if v.size else v
        return float(v.mean()) if v.size else float("nan")

    return {
        "n_samples": int(total),
        "overall_accuracy": oa,
        "average_accuracy": mean(recall),
        "kappa": float(kappa),
        "mean_f1": mean(np.nan_to_num(f1, nan=0.0)),
        "mean_iou": mean(np.nan_to_num(iou, nan=0.0)),
        "per_class": [
            {"index": i, "name": names[i], "reference": int(ref[i]), "predicted": int(pred[i]),
             "precision": _nan_to_none(precision[i]), "recall": _nan_to_none(recall[i]),
             "f1": _nan_to_none(f1[i]), "iou": _nan_to_none(iou[i])}
            for i in range(k)
        ],
        "confusion_matrix": cm.astype(np.int64).tolist(),
    }


def classification_metrics(y_true, y_pred, n_classes: int, class_names: Optional[Sequence[str]] = None) -> Dict:
    return metrics_from_confusion(confusion_matrix(y_true, y_pred, n_classes), class_names)


def _nan_to_none(v: float):
    return None if np.isnan(v) else float(v)
