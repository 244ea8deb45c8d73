"""The churn-risk model's prediction as one SQL expression, so scoring a million customers is one
``INSERT ... SELECT`` over the feature query instead of a million rows through Python.

A fitted logistic regression (:class:`experiments.risk.model.FittedModel`) is a linear predictor
on its design's columns (:mod:`experiments.risk.design`), each built from one feature exactly as
:func:`experiments.risk.design.design_matrix` builds it:

* a number (true/false as 1/0): the value, or the training median when it is missing;
  ``<name> (log)`` is ``ln(1 + max(value, 0))``; ``<name> missing`` is 1 when the value is missing;
* a text level ``<name>=<level>``: 1 when the value is that level (a missing value is the level
  ``(missing)``); ``<name>=(other)``: 1 when it is neither the reference nor a kept level.

Each column is standardised with the training mean and scale and multiplied by its coefficient;
the risk is ``1 / (1 + exp(-eta))`` kept inside ``[PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR]``
like :meth:`FittedModel.predict` (``eta`` is clamped to +-40 first: PostgreSQL's ``exp`` raises on
overflow, and the clamp is far beyond where the floor applies). SQLite builds without its math
functions get ``exp`` and ``ln`` from Python (:func:`ensure_math_functions`).
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import Float, String, case, cast, func, literal, null
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.sql import ColumnElement, Subquery

from experiments.risk.design import MISSING, OTHER, CategoricalColumn, NumericColumn
from experiments.risk.model import PROBABILITY_FLOOR, FittedModel
from experiments.rules import FIELDS

ETA_LIMIT = 40.0


def _number(value: float) -> ColumnElement[float]:
    return literal(float(value), Float())


def _raw_columns(model: FittedModel, features: Subquery) -> dict[str, ColumnElement[Any]]:
    """Every column the design can build, by its design name, as SQL over ``features``."""
    columns: dict[str, ColumnElement[Any]] = {}
    for num in model.design.numeric:
        columns.update(_numeric(num, features.c[num.name]))
    for cat in model.design.categorical:
        columns.update(_categorical(cat, features.c[cat.name]))
    return columns


def _numeric(column: NumericColumn, source: ColumnElement[Any]) -> dict[str, ColumnElement[Any]]:
    if FIELDS[column.name].type == "bool":
        value: ColumnElement[Any] = case(
            (source.is_(None), null()), (source, _number(1.0)), else_=_number(0.0)
        )
    else:
        value = cast(source, Float)
    imputed = func.coalesce(value, _number(column.median), type_=Float)
    out: dict[str, ColumnElement[Any]] = {column.name: imputed}
    if column.log:
        positive = case((imputed > 0, imputed), else_=_number(0.0))
        out[f"{column.name} (log)"] = func.ln(_number(1.0) + positive, type_=Float)
    if column.flag_missing:
        out[f"{column.name} missing"] = case((value.is_(None), _number(1.0)), else_=_number(0.0))
    return out


def _categorical(
    column: CategoricalColumn, source: ColumnElement[Any]
) -> dict[str, ColumnElement[Any]]:
    text = func.coalesce(cast(source, String), literal(MISSING, String()), type_=String)
    out: dict[str, ColumnElement[Any]] = {
        f"{column.name}={level}": case((text == level, _number(1.0)), else_=_number(0.0))
        for level in column.levels
    }
    if column.has_other:
        known = text.in_([column.reference, *column.levels])
        out[f"{column.name}={OTHER}"] = case((known, _number(0.0)), else_=_number(1.0))
    return out


def linear_predictor(model: FittedModel, features: Subquery) -> ColumnElement[float]:
    """``b0 + sum_j b_j (x_j - mean_j) / scale_j`` over the design's kept columns."""
    design = model.design
    raw = _raw_columns(model, features)
    eta: ColumnElement[Any] = _number(model.params[0])
    for name, mean, scale, beta in zip(
        design.names, design.means, design.scales, model.params[1:], strict=True
    ):
        eta = eta + (raw[name] - _number(mean)) / _number(scale) * _number(beta)
    return eta


def risk_expression(model: FittedModel, features: Subquery) -> ColumnElement[float]:
    """The churn probability of each row of ``features`` (see the module docstring)."""
    eta = linear_predictor(model, features)
    clamped = case(
        (eta > ETA_LIMIT, _number(ETA_LIMIT)),
        (eta < -ETA_LIMIT, _number(-ETA_LIMIT)),
        else_=eta,
    )
    risk = _number(1.0) / (_number(1.0) + func.exp(-clamped, type_=Float))
    low, high = PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR
    return case((risk < low, _number(low)), (risk > high, _number(high)), else_=risk)


def ensure_math_functions(connection: Connection) -> None:
    """Give a SQLite connection ``exp`` and ``ln`` when its build lacks the math functions."""
    if connection.dialect.name != "sqlite":
        return
    try:
        connection.exec_driver_sql("SELECT exp(0.0), ln(1.0)").all()
        return
    except OperationalError:  # "no such function" (a failed SELECT leaves SQLite's transaction)
        pass
    raw = connection.connection.driver_connection
    assert raw is not None
    raw.create_function("exp", 1, _exp, deterministic=True)
    raw.create_function("ln", 1, _ln, deterministic=True)


def _exp(x: float | None) -> float | None:
    return None if x is None else math.exp(x)


def _ln(x: float | None) -> float | None:
    return None if x is None or x <= 0 else math.log(x)
