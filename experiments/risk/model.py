"""Logistic regression of churn on features (statsmodels), its coefficients with confidence
intervals on the features' own scale, prediction, k-fold cross-validation and a JSON form.

The fit is maximum likelihood (Newton's method) on standardised columns (:mod:`.design`); the
coefficients and their Wald 95% intervals are transformed back to the original units with the
full covariance matrix. When the likelihood has no finite maximum (a feature separates churners
perfectly) or does not converge, a lightly L2-penalised fit (``GLM.fit_regularized``) is used
instead and the intervals are left out (``method == "ridge"``).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy.special import expit
from scipy.stats import norm
from statsmodels.tools.sm_exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from experiments.risk.design import (
    CategoricalColumn,
    Design,
    Matrix,
    NumericColumn,
    design_matrix,
    fit_design,
)
from experiments.risk.evaluation import (
    DecileRow,
    Vector,
    auc,
    calibration_by_decile,
    stratified_folds,
    top_decile_lift,
)

RIDGE_ALPHA = 1e-3
MAX_ITERATIONS = 35
PROBABILITY_FLOOR = 1e-6  # stored and reported risks stay inside [1e-6, 1 - 1e-6]


class RiskModelError(ValueError):
    """The data cannot make a model (one class only, too few rows, no usable column)."""


@dataclass(frozen=True)
class Coefficient:
    name: str
    estimate: float  # change in log-odds per unit of the feature (per indicator for levels)
    ci_low: float | None
    ci_high: float | None
    p_value: float | None


@dataclass(frozen=True)
class FittedModel:
    design: Design
    params: tuple[float, ...]  # intercept first, on the standardised columns
    method: Literal["newton", "ridge"]
    coefficients: tuple[Coefficient, ...]
    n: int
    churn_rate: float

    def predict(self, frame: pd.DataFrame) -> Vector:
        """Churn probability of each row of ``frame``."""
        matrix = design_matrix(self.design, frame)
        eta = self.params[0] + matrix @ np.array(self.params[1:])
        return np.clip(expit(eta), PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)

    def to_json(self) -> str:
        return json.dumps(asdict(self), allow_nan=False)

    @staticmethod
    def from_json(text: str) -> FittedModel:
        raw = json.loads(text)
        d = raw["design"]
        design = Design(
            numeric=tuple(NumericColumn(**c) for c in d["numeric"]),
            categorical=tuple(
                CategoricalColumn(c["name"], c["reference"], tuple(c["levels"]), c["has_other"])
                for c in d["categorical"]
            ),
            names=tuple(d["names"]),
            means=tuple(d["means"]),
            scales=tuple(d["scales"]),
        )
        return FittedModel(
            design=design,
            params=tuple(raw["params"]),
            method=raw["method"],
            coefficients=tuple(Coefficient(**c) for c in raw["coefficients"]),
            n=raw["n"],
            churn_rate=raw["churn_rate"],
        )


def fit(frame: pd.DataFrame, labels: Vector, *, min_level_count: int = 10) -> FittedModel:
    """Fit churn (``labels``: 1 churned, 0 stayed) on the columns of ``frame``.

    BLAS runs single-threaded here: the matrices are narrow, and threads competing for a few
    shared cores made each Newton step 30 times slower."""
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit(frame, labels, min_level_count)


def _fit(frame: pd.DataFrame, labels: Vector, min_level_count: int) -> FittedModel:
    y = np.asarray(labels, dtype=np.float64)
    if y.size < 2 or y.min() == y.max():
        raise RiskModelError(
            "the label has a single value in the training rows; a model needs both churners "
            "and customers who stayed"
        )
    design = fit_design(frame, min_level_count=min_level_count)
    x = np.column_stack([np.ones(y.size), design_matrix(design, frame)])
    newton = _newton(x, y)
    if newton is not None:
        params, covariance = newton
        method: Literal["newton", "ridge"] = "newton"
    else:
        params, covariance, method = _ridge(x, y), None, "ridge"
    return FittedModel(
        design=design,
        params=tuple(float(v) for v in params),
        method=method,
        coefficients=_coefficients(design, params, covariance),
        n=int(y.size),
        churn_rate=float(y.mean()),
    )


def _newton(x: Matrix, y: Vector) -> tuple[Vector, Matrix] | None:
    """Maximum likelihood, or None when it does not exist or does not converge.

    Converged means the score (gradient of the log-likelihood) is zero to 1e-6 per row. With
    quasi-separation (a rare indicator whose rows all share one label) the likelihood keeps
    creeping up as one coefficient drifts; the score is then already zero, the fit is kept and
    that coefficient's interval is simply very wide.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # separation, overflow, singular Hessian: use ridge
            warnings.simplefilter("ignore", category=ConvergenceWarning)  # the score decides
            result = sm.Logit(y, x).fit(method="newton", maxiter=MAX_ITERATIONS, disp=0)
            covariance = np.asarray(result.cov_params(), dtype=np.float64)
            score = np.asarray(result.model.score(result.params), dtype=np.float64)
    except (Warning, np.linalg.LinAlgError, ValueError, OverflowError):
        return None
    params = np.asarray(result.params, dtype=np.float64)
    if not np.all(np.isfinite(params)) or not np.all(np.isfinite(covariance)):
        return None
    if float(np.max(np.abs(score))) > 1e-6 * y.size:
        return None
    linear = x @ params
    positive, negative = linear[y == 1], linear[y == 0]
    if positive.size and negative.size and positive.min() > negative.max():
        return None  # complete separation: no maximum exists, whether or not a warning said so
    return params, covariance


def _ridge(x: Matrix, y: Vector) -> Vector:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = sm.GLM(y, x, family=sm.families.Binomial())
        result = model.fit_regularized(alpha=RIDGE_ALPHA, L1_wt=0.0)
    return np.asarray(result.params, dtype=np.float64)


def _coefficients(
    design: Design, params: Vector, covariance: Matrix | None
) -> tuple[Coefficient, ...]:
    """Coefficients per unit of the original features: beta = T b with T undoing the scaling."""
    k = len(design.names)
    means, scales = np.array(design.means), np.array(design.scales)
    transform = np.zeros((k + 1, k + 1))
    transform[0, 0] = 1.0
    transform[0, 1:] = -means / scales
    transform[1:, 1:] = np.diag(1.0 / scales)
    beta = transform @ params
    names = ("(intercept)", *design.names)
    if covariance is None:
        return tuple(
            Coefficient(n, float(b), None, None, None) for n, b in zip(names, beta, strict=True)
        )
    se = np.sqrt(np.maximum(np.diag(transform @ covariance @ transform.T), 0.0))
    z = norm.ppf(0.975)
    rows = []
    for name, b, s in zip(names, beta, se, strict=True):
        p = float(2 * norm.sf(abs(b / s))) if s > 0 else None
        rows.append(Coefficient(name, float(b), float(b - z * s), float(b + z * s), p))
    return tuple(rows)


@dataclass(frozen=True)
class CrossValidation:
    folds: int
    seed: int
    aucs: tuple[float, ...]
    auc_mean: float
    auc_std: float  # sample standard deviation across folds
    calibration: tuple[DecileRow, ...]  # of the pooled out-of-fold predictions
    top_decile_lift: float | None

    def as_json(self) -> dict[str, Any]:
        """The ``retain risk evaluate --json`` document."""
        return {
            "auc_cv_mean": self.auc_mean,
            "auc_cv_std": self.auc_std,
            "calibration": [asdict(row) for row in self.calibration],
            "top_decile_lift": self.top_decile_lift,
        }


def cross_validate(
    frame: pd.DataFrame, labels: Vector, *, folds: int = 5, seed: int = 20240601
) -> CrossValidation:
    """Stratified k-fold cross-validation: each fold is predicted by a model (design and
    coefficients) fitted on the other folds only."""
    y = np.asarray(labels, dtype=np.float64)
    if folds < 2:
        raise RiskModelError(f"--folds must be at least 2, not {folds}")
    smallest = int(min((y == 1).sum(), (y == 0).sum()))
    if smallest < folds:
        raise RiskModelError(
            f"each class needs at least {folds} rows for {folds}-fold cross-validation; "
            f"the smaller class has {smallest}"
        )
    assignment = stratified_folds(y, folds, seed)
    predicted = np.empty(y.size)
    aucs = []
    for fold in range(folds):
        test = assignment == fold
        model = fit(frame.loc[~test].reset_index(drop=True), y[~test])
        predicted[test] = model.predict(frame.loc[test].reset_index(drop=True))
        value = auc(predicted[test], y[test])
        aucs.append(float("nan") if value is None else value)
    mean = float(np.mean(aucs))
    std = float(np.std(aucs, ddof=1))
    if not (math.isfinite(mean) and math.isfinite(std)):
        raise RiskModelError("a fold had a single class; use fewer folds")
    return CrossValidation(
        folds=folds,
        seed=seed,
        aucs=tuple(aucs),
        auc_mean=mean,
        auc_std=std,
        calibration=tuple(calibration_by_decile(predicted, y)),
        top_decile_lift=top_decile_lift(predicted, y),
    )
