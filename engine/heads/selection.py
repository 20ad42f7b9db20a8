"""The one rule every choice made on the training labels goes through.

With a few dozen labels, plain overall accuracy at held-out training pixels is the wrong yardstick twice over: it
ignores the rare classes (erasing a class with 3 labels costs 3 pixels out of 46 — and is what map makers mind
most), and its noise is as large as the differences it is asked to decide. So every choice here (the smoothing's
strength, whether the diffusion features stay, self-training) is made the same way:

- **criterion**: mean per-class recall (balanced accuracy) of held-out predictions on the training labels —
  every class weighs the same whatever its number of labels, so a candidate that erases a class loses 1/K;
- **noise**: the standard error of the *paired* difference to the best candidate, per class (stratified: the
  variance of the per-pixel differences within each class over its labels), summed as the criterion is;
- **one-standard-error rule** (Breiman et al. 1984, *Classification and Regression Trees*; Hastie, Tibshirani &
  Friedman, *The Elements of Statistical Learning*, § 7.10): candidates are listed in order of preference, and
  the first whose score is within one standard error of the best is chosen. An option that departs from the
  preferred one must clear the noise to be used. The preferred option is the simpler one (no regularisation, no
  self-training), except for the feature check, where it is the configuration the benchmarks measured more
  accurate (the diffusion features kept; ``HeadSettings.feature_check_prefers``).

Held-out predictions may be averaged over repeated fold assignments (``correct`` then holds fractions).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np

CRITERION = "mean per-class recall"
RULE = "one-standard-error rule toward the preferred (first-listed) option"


@dataclass
class CandidateScore:
    label: str
    mean: float  # the criterion, 0..1
    se: float  # standard error of (best − this), paired; 0 for the best itself


@dataclass
class Selection:
    """Which candidate the rule chose, and the evidence (kept in the model file and the training report)."""

    chosen: int  # index into ``scores`` (candidates simplest first)
    best: int  # the highest-scoring candidate
    scores: List[CandidateScore] = field(default_factory=list)
    n_pixels: int = 0
    repeats: int = 1
    rule: str = "one-se"
    criterion: str = CRITERION

    @property
    def label(self) -> str:
        return self.scores[self.chosen].label

    def to_dict(self) -> Dict:
        return {"criterion": self.criterion, "rule": RULE if self.rule == "one-se" else "best", "chosen": self.label, "best": self.scores[self.best].label,
                "n_pixels": self.n_pixels, "repeats": self.repeats,
                "scores": {s.label: {"mean": round(s.mean, 6), "se": round(s.se, 6)} for s in self.scores}}

    def describe(self) -> str:
        parts = ", ".join(f"{s.label} {100 * s.mean:.1f} %" + (f" (±{100 * s.se:.1f})" if s.se > 0 else "")
                          for s in self.scores)
        why = ("the best" if self.chosen == self.best or self.rule != "one-se" else
               f"the simplest within one standard error of the best ({self.scores[self.best].label})")
        return f"{self.criterion} at held-out training labels: {parts} → {self.label}, {why}"


def class_recalls(correct: np.ndarray, y: np.ndarray) -> np.ndarray:
    """correct [C, N] (1/0 or fractions) → per-class recall [C, classes present]."""
    classes = np.unique(y)
    return np.stack([correct[:, y == c].mean(axis=1) for c in classes], axis=1)


def _paired_se(d: np.ndarray, y: np.ndarray) -> float:
    """SE of the mean per-class average of ``d`` (per-pixel differences), stratified by class.

    A class with one label has no variance of its own: it borrows the pooled variance of all pixels, so a
    single label never passes as certain."""
    classes = np.unique(y)
    pooled = float(np.var(d, ddof=1)) if d.size > 1 else 0.0
    total = 0.0
    for c in classes:
        dc = d[y == c]
        var = float(np.var(dc, ddof=1)) if dc.size > 1 else pooled
        total += var / dc.size
    return float(np.sqrt(total)) / classes.size


RULES = ("one-se", "best")


def select_simplest(correct: np.ndarray, y: np.ndarray, labels: Sequence[str], repeats: int = 1,
                    rule: str = "one-se", criterion: str = CRITERION) -> Selection:
    """``correct`` [C, N]: for C candidates (preferred first), whether each of N held-out training pixels was
    predicted right (or the fraction of repeats it was); ``y`` [N] their classes. The rule of the module
    docstring (``rule="best"``: the highest criterion, without the standard-error margin — a benchmark control);
    ties go to the simpler candidate."""
    if rule not in RULES:
        raise ValueError(f"unknown selection rule {rule!r}: use one of {RULES}")
    correct = np.asarray(correct, dtype=np.float64)
    y = np.asarray(y)
    if correct.ndim != 2 or correct.shape[1] != y.size or correct.shape[0] != len(labels) or y.size == 0:
        raise ValueError(f"select_simplest: correct {correct.shape} must be [{len(labels)}, {y.size}] (N > 0)")
    means = class_recalls(correct, y).mean(axis=1)
    best = int(np.flatnonzero(means >= means.max() - 1e-12)[0])
    ses = [_paired_se(correct[best] - correct[c], y) for c in range(len(labels))]
    margin = ses if rule == "one-se" else [0.0] * len(labels)
    chosen = next(c for c in range(len(labels)) if means[c] >= means[best] - margin[c] - 1e-12)
    scores = [CandidateScore(str(lab), float(m), float(s)) for lab, m, s in zip(labels, means, ses)]
    return Selection(chosen, best, scores, int(y.size), int(repeats), rule, criterion)
