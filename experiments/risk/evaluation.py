"""How good a churn-risk score is: AUC, calibration by decile, top-decile lift, k-fold splits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

Vector = npt.NDArray[np.float64]


@dataclass(frozen=True)
class DecileRow:
    decile: int  # 1: the lowest predicted risks, 10: the highest
    predicted: float  # mean predicted probability
    observed: float  # share that churned
    n: int


def auc(scores: Vector, labels: Vector) -> float | None:
    """Area under the ROC curve by the Mann–Whitney U statistic (ties count one half);
    None when one class is absent."""
    positives = labels == 1
    n1, n0 = int(positives.sum()), int((~positives).sum())
    if n1 == 0 or n0 == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def calibration_by_decile(scores: Vector, labels: Vector, groups: int = 10) -> list[DecileRow]:
    """Rows sorted by predicted risk (stable), cut into ``groups`` groups of (nearly) equal
    size; per group the mean prediction and the observed churn rate."""
    order = np.argsort(scores, kind="stable")
    rows = []
    for decile, part in enumerate(np.array_split(order, groups), start=1):
        if part.size == 0:
            continue
        rows.append(
            DecileRow(
                decile, float(scores[part].mean()), float(labels[part].mean()), int(part.size)
            )
        )
    return rows


def top_decile_lift(scores: Vector, labels: Vector) -> float | None:
    """Churn rate among the 10% highest predicted risks over the overall churn rate
    (None when nobody churned)."""
    overall = float(labels.mean()) if labels.size else 0.0
    if overall == 0:
        return None
    top = calibration_by_decile(scores, labels)[-1]
    return top.observed / overall


def stratified_folds(labels: Vector, folds: int, seed: int) -> npt.NDArray[np.int64]:
    """Fold number (0..folds-1) of every row: each class is shuffled with ``seed`` and dealt
    round-robin, so every fold has the same share of churners (deterministic)."""
    rng = np.random.default_rng(seed)
    assignment = np.empty(labels.size, dtype=np.int64)
    for value in (0, 1):
        members = np.flatnonzero(labels == value)
        shuffled = rng.permutation(members)
        assignment[shuffled] = np.arange(shuffled.size) % folds
    return assignment
