"""From a table of features to a design matrix for logistic regression.

Numeric columns: a missing value is replaced by the training median and flagged in an extra
``<column> missing`` indicator (when the training data had at least ``min_level_count`` blanks).
A non-negative numeric column with at least 20 distinct values also enters as ``log(1 + x)``
(``<column> (log)``): churn usually falls fast over the first months of tenure, then slowly, and
a straight line in tenure or spend alone mis-calibrates the middle deciles. Categorical columns: one
indicator per level seen at least ``min_level_count`` times in training, except the most frequent
level (the reference); rarer levels and levels unseen in training share an ``(other)`` indicator,
a blank is the level ``(missing)``. Every column is then centred and scaled by its training mean
and standard deviation (so the fit is well conditioned), constant columns are dropped, and a
pivoted QR decomposition drops columns that are linear combinations of others (for example the
"No internet service" levels that several telco columns share). Everything learned from the
training rows is kept in :class:`Design`, so new rows are encoded the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.linalg

Matrix = npt.NDArray[np.float64]
LOG_MIN_DISTINCT = 20
OTHER = "(other)"
MISSING = "(missing)"


@dataclass(frozen=True)
class NumericColumn:
    name: str
    median: float
    flag_missing: bool
    log: bool = False  # also enters as log(1 + x): a non-negative column with many values


@dataclass(frozen=True)
class CategoricalColumn:
    name: str
    reference: str
    levels: tuple[str, ...]  # levels with their own indicator
    has_other: bool


@dataclass(frozen=True)
class Design:
    """How to turn feature rows into the model's columns (all learned from training rows)."""

    numeric: tuple[NumericColumn, ...]
    categorical: tuple[CategoricalColumn, ...]
    names: tuple[str, ...]  # kept model columns, in order (without the intercept)
    means: tuple[float, ...]
    scales: tuple[float, ...]


def column_kinds(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(numeric, categorical) column names: a column is numeric when its dtype is numeric or
    boolean; text columns are categorical."""
    numeric, categorical = [], []
    for name in frame.columns:
        dtype = frame[name].dtype
        if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
            numeric.append(str(name))
        else:
            categorical.append(str(name))
    return numeric, categorical


def fit_design(frame: pd.DataFrame, *, min_level_count: int = 10) -> Design:
    """Learn the encoding of ``frame`` (numeric and text columns; NaN/None are blanks)."""
    numeric_names, categorical_names = column_kinds(frame)
    numeric: list[NumericColumn] = []
    for name in numeric_names:
        values = _as_float(frame[name])
        present = values[~np.isnan(values)]
        if present.size == 0:
            continue
        flag = int(values.size - present.size) >= min_level_count
        spread = present.min() >= 0 and np.unique(present).size >= LOG_MIN_DISTINCT
        numeric.append(NumericColumn(name, float(np.median(present)), flag, bool(spread)))
    categorical: list[CategoricalColumn] = []
    for name in categorical_names:
        counts = _as_text(frame[name]).value_counts(sort=False)
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        if len(ordered) < 2:
            continue
        frequent = [level for level, count in ordered if count >= min_level_count]
        reference = ordered[0][0]
        levels = tuple(level for level in frequent if level != reference)
        categorical.append(CategoricalColumn(name, reference, levels, len(frequent) < len(ordered)))
    raw, names = _raw_matrix(frame, tuple(numeric), tuple(categorical))
    means = raw.mean(axis=0) if raw.size else np.zeros(0)
    scales = raw.std(axis=0) if raw.size else np.zeros(0)
    varying = [i for i in range(len(names)) if scales[i] > 1e-12]
    kept = _independent(((raw - means) / np.where(scales > 1e-12, scales, 1.0))[:, varying])
    chosen = [varying[i] for i in kept]
    return Design(
        numeric=tuple(numeric),
        categorical=tuple(categorical),
        names=tuple(names[i] for i in chosen),
        means=tuple(float(means[i]) for i in chosen),
        scales=tuple(float(scales[i]) for i in chosen),
    )


def design_matrix(design: Design, frame: pd.DataFrame) -> Matrix:
    """The standardised model columns of ``frame`` (rows × ``len(design.names)``), no intercept."""
    raw, names = _raw_matrix(frame, design.numeric, design.categorical)
    index = {name: i for i, name in enumerate(names)}
    columns = raw[:, [index[name] for name in design.names]]
    return (columns - np.array(design.means)) / np.array(design.scales)


def _raw_matrix(
    frame: pd.DataFrame,
    numeric: tuple[NumericColumn, ...],
    categorical: tuple[CategoricalColumn, ...],
) -> tuple[Matrix, list[str]]:
    columns: list[Matrix] = []
    names: list[str] = []
    for column in numeric:
        values = (
            _as_float(frame[column.name]) if column.name in frame else np.full(len(frame), np.nan)
        )
        missing = np.isnan(values)
        imputed = np.where(missing, column.median, values)
        columns.append(imputed)
        names.append(column.name)
        if column.log:
            columns.append(np.log1p(np.maximum(imputed, 0.0)))
            names.append(f"{column.name} (log)")
        if column.flag_missing:
            columns.append(missing.astype(np.float64))
            names.append(f"{column.name} missing")
    for cat in categorical:
        text = _as_text(frame[cat.name]) if cat.name in frame else pd.Series([MISSING] * len(frame))
        values = text.to_numpy()
        for level in cat.levels:
            columns.append((values == level).astype(np.float64))
            names.append(f"{cat.name}={level}")
        if cat.has_other:
            known = np.isin(values, [cat.reference, *cat.levels])
            columns.append((~known).astype(np.float64))
            names.append(f"{cat.name}={OTHER}")
    matrix = np.column_stack(columns) if columns else np.zeros((len(frame), 0))
    return matrix.astype(np.float64), names


def _independent(matrix: Matrix, tolerance: float = 1e-7) -> list[int]:
    """Indices of the columns not (nearly) a linear combination of the columns before them.

    In an unpivoted QR decomposition ``|R[k, k]|`` is the length of the part of column k
    orthogonal to columns 0..k-1; the columns are standardised (length sqrt(rows)), so a
    column whose own part is below ``tolerance`` of that adds nothing and is dropped; the
    earlier column of a redundant pair is the one kept.
    """
    if matrix.shape[1] == 0:
        return []
    r = scipy.linalg.qr(matrix, mode="r")[0]
    diagonal = np.abs(np.diag(r))
    threshold = tolerance * np.sqrt(matrix.shape[0])
    return [int(i) for i in np.flatnonzero(diagonal > threshold)]


def _as_float(series: pd.Series) -> Matrix:
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _as_text(series: pd.Series) -> pd.Series:
    return series.astype("object").where(series.notna(), MISSING).astype(str)
