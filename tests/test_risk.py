"""The churn-risk model, pure: design matrix, fit, AUC, calibration, lift, cross-validation and
the CSV reader, checked against independent references, simulations and the real telco data."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.risk.design import design_matrix, fit_design
from experiments.risk.evaluation import (
    auc,
    calibration_by_decile,
    stratified_folds,
    top_decile_lift,
)
from experiments.risk.model import FittedModel, RiskModelError, cross_validate, fit
from experiments.risk.table import RiskDataError, read_labeled_csv

TELCO = Path("/work/shared/data/telco_customer_churn.csv")


# --- Evaluation measures against brute force -------------------------------------------------------


def test_auc_equals_the_share_of_correctly_ordered_pairs() -> None:
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 6, 60).astype(float)  # many ties
    labels = (rng.random(60) < 0.4).astype(float)
    pairs = [
        1.0 if s1 > s0 else 0.5 if s1 == s0 else 0.0
        for s1, s0 in itertools.product(scores[labels == 1], scores[labels == 0])
    ]
    assert auc(scores, labels) == pytest.approx(sum(pairs) / len(pairs), abs=1e-12)
    assert auc(np.array([0.1, 0.9]), np.array([0.0, 1.0])) == 1.0
    assert auc(np.array([0.1, 0.9]), np.array([1.0, 1.0])) is None


def test_calibration_deciles_and_lift() -> None:
    scores = np.arange(100, dtype=float) / 100
    labels = (np.arange(100) >= 80).astype(float)  # the top 20 churn
    rows = calibration_by_decile(scores, labels)
    assert [r.n for r in rows] == [10] * 10 and [r.decile for r in rows] == list(range(1, 11))
    assert rows[0].predicted == pytest.approx(0.045) and rows[9].predicted == pytest.approx(0.945)
    assert [r.observed for r in rows] == [0.0] * 8 + [1.0, 1.0]
    assert top_decile_lift(scores, labels) == pytest.approx(1.0 / 0.2)
    assert top_decile_lift(scores, np.zeros(100)) is None


def test_stratified_folds_are_balanced_and_deterministic() -> None:
    labels = (np.arange(103) % 4 == 0).astype(float)
    folds = stratified_folds(labels, 5, seed=3)
    assert np.array_equal(folds, stratified_folds(labels, 5, seed=3))
    assert not np.array_equal(folds, stratified_folds(labels, 5, seed=4))
    for fold in range(5):
        churners = int(labels[folds == fold].sum())
        assert churners in (5, 6)  # 26 churners over 5 folds


# --- Design matrix --------------------------------------------------------------------------------


def test_design_handles_blanks_levels_and_redundant_columns() -> None:
    frame = pd.DataFrame(
        {
            "age": [1.0, 2.0, np.nan, 4.0, 5.0] * 10,  # 10 blanks: flagged
            "twice_age": [2.0, 4.0, np.nan, 8.0, 10.0] * 10,  # collinear with age: dropped
            "constant": [7.0] * 50,  # no spread: dropped
            "plan": ["a", "b", "a", None, "a"] * 10,  # None is the level (missing)
            "rare": ["x"] * 45 + ["y"] * 5,  # y is rarer than 10 rows: (other)
        }
    )
    design = fit_design(frame)
    assert "constant" not in design.names and "twice_age" not in design.names
    assert design.names == ("age", "age missing", "plan=(missing)", "plan=b", "rare=(other)")
    matrix = design_matrix(design, frame)
    assert matrix.shape == (50, len(design.names))
    assert np.allclose(matrix.mean(axis=0), 0) and np.allclose(matrix.std(axis=0), 1)
    new = pd.DataFrame({"age": [np.nan], "plan": ["never seen"], "rare": ["y"]})  # no twice_age
    values = design_matrix(design, new)[0] * np.array(design.scales) + np.array(design.means)
    row = dict(zip(design.names, values, strict=True))
    assert row["age"] == pytest.approx(3.0) and row["age missing"] == pytest.approx(1.0)
    assert row["plan=b"] == pytest.approx(0) and row["plan=(missing)"] == pytest.approx(0)
    assert row["rare=(other)"] == pytest.approx(1.0)  # unseen plan: the reference; rare: other


# --- Fit against a simulation with known coefficients --------------------------------------------


def simulated(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, dict[str, float]]:
    rng = np.random.default_rng(seed)
    usage = rng.normal(0, 1, n)
    plan = rng.choice(["basic", "pro", "team"], n, p=[0.5, 0.3, 0.2])
    truth = {"(intercept)": -1.0, "usage": -0.8, "plan=pro": 0.7, "plan=team": -0.5}
    eta = truth["(intercept)"] + truth["usage"] * usage
    eta += np.where(plan == "pro", truth["plan=pro"], 0) + np.where(
        plan == "team", truth["plan=team"], 0
    )
    labels = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    frame = pd.DataFrame({"usage": usage, "plan": plan})
    return frame, labels, truth


def test_confidence_intervals_cover_the_true_coefficients() -> None:
    """Over 40 simulated data sets, each 95% interval covers its true value 95% of the time
    (binomial: at least 33 of 40 with probability > 0.99)."""
    covered = {name: 0 for name in simulated(10, 0)[2]}
    for seed in range(40):
        frame, labels, truth = simulated(800, seed)
        model = fit(frame, labels)
        assert model.method == "newton"
        for c in model.coefficients:
            if c.name in truth:
                assert c.ci_low is not None and c.ci_high is not None
                covered[c.name] += c.ci_low <= truth[c.name] <= c.ci_high
    assert all(count >= 33 for count in covered.values()), covered


def test_model_round_trips_through_json_and_is_calibrated() -> None:
    frame, labels, _ = simulated(4000, 99)
    model = fit(frame, labels)
    again = FittedModel.from_json(model.to_json())
    assert np.array_equal(model.predict(frame), again.predict(frame))
    predicted = model.predict(frame)
    assert predicted.mean() == pytest.approx(labels.mean(), abs=1e-6)  # MLE with intercept
    for row in calibration_by_decile(predicted, labels):
        assert abs(row.predicted - row.observed) < 0.06


def test_separation_falls_back_to_ridge_without_an_exception() -> None:
    frame = pd.DataFrame({"x": np.arange(40, dtype=float)})
    labels = (np.arange(40) >= 20).astype(float)  # x separates the classes perfectly
    model = fit(frame, labels)
    assert model.method == "ridge" and model.coefficients[1].ci_low is None
    assert auc(model.predict(frame), labels) == 1.0
    with pytest.raises(RiskModelError, match="single value"):
        fit(frame, np.zeros(40))
    with pytest.raises(RiskModelError, match="at least 5 rows"):
        cross_validate(frame, (np.arange(40) < 3).astype(float), folds=5)


# --- The telco data (issue 7's acceptance check) ------------------------------------------------


def test_telco_cross_validated_auc_and_calibration() -> None:
    """5-fold CV on the IBM telco churn data: AUC at least 0.84 (the published logistic
    regression baseline is 0.841 ± 0.008) and predicted within 5 points of observed in every
    decile of the pooled out-of-fold predictions (deterministic folds, seed 20240601)."""
    table = read_labeled_csv(TELCO, "Churn", "customerID")
    assert table.features.shape == (7043, 19)
    assert int(table.features["TotalCharges"].isna().sum()) == 11  # the " " cells are blanks
    assert "TotalCharges" in table.numeric and "Contract" in table.categorical
    result = cross_validate(table.features, table.labels, folds=5, seed=20240601)
    assert result.auc_mean >= 0.84, result.aucs
    assert len(result.calibration) == 10 and sum(r.n for r in result.calibration) == 7043
    for row in result.calibration:
        assert abs(row.predicted - row.observed) <= 0.05, row
    assert result.top_decile_lift is not None and result.top_decile_lift > 2.5
    document = result.as_json()
    assert set(document) == {"auc_cv_mean", "auc_cv_std", "calibration", "top_decile_lift"}
    assert set(document["calibration"][0]) == {"decile", "predicted", "observed", "n"}


# --- The CSV reader --------------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def rows(n: int, line: str) -> str:
    return "".join(line.format(i=i, churn="yes" if i % 3 == 0 else "no") for i in range(n))


def test_csv_blanks_types_and_separators(tmp_path: Path) -> None:
    text = "id;spend;plan;churned\n" + rows(30, "c{i}; {i}.5 ;basic;{churn}\n")
    text += "c30;;pro;YES\nc31; ;;0\n"
    table = read_labeled_csv(write(tmp_path, "\ufeff" + text), "churned", "id")
    assert table.numeric == ("spend",) and table.categorical == ("plan",)
    assert table.ids is not None and table.ids[:2] == ("c0", "c1")
    assert np.isnan(table.features["spend"].iloc[-1]) and pd.isna(table.features["plan"].iloc[-1])
    assert table.labels[-2:].tolist() == [1.0, 0.0]


@pytest.mark.parametrize(
    ("text", "label", "fragment"),
    [
        ("a,churn\n" + rows(30, "1,maybe\n"), "churn", "row 1: label column 'churn' holds 'maybe'"),
        ("a,churn\n" + rows(30, "1,{churn}\n") + "2,\n", "churn", "row 31: label column"),
        ("a,churn\n" + rows(30, "1,no\n"), "churn", "every row of 'churn' says stayed"),
        ("a,churn\n" + rows(5, "1,{churn}\n"), "churn", "has 5 rows"),
        ("a,churn\n" + rows(30, "1,{churn}\n"), "Churn", "no column 'Churn' for --label"),
        ("churn\n" + rows(30, "{churn}\n"), "churn", "no feature columns"),
        ("a,a,churn\n" + rows(30, "1,2,{churn}\n"), "churn", "column 'a' appears twice"),
        ("", "churn", "is empty"),
        ('a,churn\n"1,yes\n', "churn", "cannot be read as CSV"),
    ],
)
def test_csv_problems_are_one_line(tmp_path: Path, text: str, label: str, fragment: str) -> None:
    with pytest.raises(RiskDataError) as caught:
        read_labeled_csv(write(tmp_path, text), label)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_csv_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "latin1.csv").write_bytes("a,churn\nå,1\n".encode("latin-1"))
    for path, fragment in [
        (tmp_path / "missing.csv", "file not found"),
        (tmp_path, "is a folder"),
        (tmp_path / "latin1.csv", "not UTF-8"),
    ]:
        with pytest.raises(RiskDataError, match=fragment):
            read_labeled_csv(path, "churn")
