"""The churn-risk model on Retain's own customer data: training rows from history, training,
scoring and evaluation on held-out months. The model itself is pure (:mod:`experiments.risk`).

Training rows. A *snapshot* at a moment ``t`` holds every customer with a live subscription at
``t`` (started at or before ``t``, not canceled by then), their :data:`FEATURES` computed in SQL
as of ``t`` (:func:`models.segments.customer_features`: only data from before ``t``), and the
label "churned within the next ``horizon`` days": no live subscription any more at
``t + horizon``. Snapshots are taken every 30 days going back from ``as_of - horizon`` (so every
label is complete by ``as_of``) as far as the history goes, at most ``max_snapshots``; the most
recent ``holdout`` snapshots are held out for evaluation and never trained on. When the
snapshots hold more than ``max_rows`` rows, each keeps the same deterministic share of
customers (by a hash of the id, in SQL), so training stays bounded however long the history.

No look-ahead. Features read only what happened before ``t``; fields that the tables store only
as their *current* value (``subscription.status``, ``paused``, ``contract_ends_in_days``,
``subscription.days_to_renewal``) would leak whether the customer later churned and are left
out. ``subscription.plan``, ``billing_interval`` and ``mrr`` are current values too but change
rarely; ``downgraded_90d`` and ``billing_interval_shortened`` see only the last plan change.

Scores. :func:`score_customers` stores, for every customer live at ``as_of``, the churn
probability and its decile among those scored (10 = riskiest) in ``risk_scores``, with the
model's id, in one ``INSERT ... SELECT`` (the model is a SQL expression: :mod:`models.risk_sql`); the rule fields ``churn_risk`` and ``churn_risk_decile`` read the latest score at or
before a rule's ``as_of``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import Integer, and_, delete, exists, func, insert, literal, or_, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import ColumnElement, Select

from experiments.risk.evaluation import DecileRow, auc, calibration_by_decile, top_decile_lift
from experiments.risk.model import Coefficient, FittedModel, RiskModelError, fit
from experiments.rules import FIELDS
from models.bulk import table
from models.customer_data import ActivityEvent, Customer, Subscription
from models.features import customer_features
from models.risk_sql import ensure_math_functions, risk_expression
from models.risk_tables import RiskModel, RiskScore

FEATURES: tuple[str, ...] = (
    "tenure_days",
    "customer.country",
    "email_consent",
    "sms_consent",
    "has_phone",
    "subscription.plan",
    "subscription.billing_interval",
    "subscription.mrr",
    "card_expires_in_days",
    "failed_invoices",
    "failed_payments_30d",
    "days_past_due",
    "downgraded_90d",
    "billing_interval_shortened",
    "usage_last_14d",
    "usage_prior_14d",
    "usage_trend",
    "days_since_last_active",
    "onboarding_completed",
    "milestones_completed",
    "support_tickets_30d",
)
SNAPSHOT_STEP_DAYS = 30
STALE_DAYS = 7  # training refuses an as_of this long after the newest recorded event
_HASH = 2654435761  # Knuth's multiplicative hash: a deterministic sample by customer id


@dataclass(frozen=True)
class Snapshots:
    training: tuple[datetime, ...]
    holdout: tuple[datetime, ...]


@dataclass(frozen=True)
class HoldoutEvaluation:
    n: int
    churn_rate: float
    auc: float | None
    calibration: tuple[DecileRow, ...]
    top_decile_lift: float | None


@dataclass(frozen=True)
class TrainedModel:
    id: int
    version: str
    model: FittedModel
    snapshots: Snapshots
    n_train: int
    holdout: HoldoutEvaluation | None


def plan_snapshots(
    engine: Engine, as_of: datetime, horizon: int, holdout: int, max_snapshots: int
) -> Snapshots:
    """Snapshot moments, newest first cut into held-out and training ones (see the module)."""
    s, a = table(Subscription), table(ActivityEvent)
    with engine.connect() as connection:
        first = connection.scalar(select(func.min(s.c.started_at)))
        newest = [
            connection.scalar(select(func.max(column)))
            for column in (s.c.started_at, s.c.canceled_at, a.c.occurred_at)
        ]
    if first is None:
        raise RiskModelError("there are no subscriptions to learn from; load customer data first")
    first = _aware(first)
    latest = max(_aware(moment) for moment in newest if moment is not None)
    if latest < as_of - timedelta(days=STALE_DAYS):
        raise RiskModelError(
            f"the newest data are from {latest:%Y-%m-%d %H:%M}, long before {as_of:%Y-%m-%d}: "
            "churn after that is not recorded, so the labels would be wrong; pass "
            f"--as-of {latest:%Y-%m-%dT%H:%M:%S} (the moment the data describe)"
        )
    moments: list[datetime] = []
    t = as_of - timedelta(days=horizon)
    while t > first + timedelta(days=SNAPSHOT_STEP_DAYS) and len(moments) < max_snapshots:
        moments.append(t)
        t -= timedelta(days=SNAPSHOT_STEP_DAYS)
    if len(moments) <= holdout:
        raise RiskModelError(
            f"the history ({(as_of - first).days} days before {as_of:%Y-%m-%d}) holds "
            f"{len(moments)} monthly snapshot(s) with a complete {horizon}-day label; training "
            f"needs more than the {holdout} held out: use --holdout 0, a shorter --horizon or "
            "more history"
        )
    return Snapshots(training=tuple(moments[holdout:]), holdout=tuple(moments[:holdout]))


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _live(at: ColumnElement[Any] | datetime, customer_id: ColumnElement[Any]) -> Any:
    s = table(Subscription)
    moment = at if isinstance(at, ColumnElement) else literal(at, s.c.started_at.type)
    return exists().where(
        s.c.customer_id == customer_id,
        s.c.started_at <= moment,
        or_(s.c.canceled_at.is_(None), s.c.canceled_at > moment),
    )


def snapshot_query(t: datetime, horizon: int, per_mille: int = 1000) -> Select[Any]:
    """Customers live at ``t`` (a ``per_mille`` share of them), their features as of ``t`` and
    ``churned``: 1 when no subscription is live any more at ``t + horizon``."""

    def sample(customer_id: ColumnElement[Any]) -> ColumnElement[bool]:
        return (customer_id * literal(_HASH)) % 1000 < per_mille

    chosen = sample if per_mille < 1000 else None
    features = customer_features(t, fields=FEATURES, sample=chosen).subquery("features")
    cid = features.c.customer_id
    later = literal(t + timedelta(days=horizon), table(Subscription).c.started_at.type)
    churned = (~_live(later, cid)).cast(Integer).label("churned")
    query = select(features, churned).where(_live(t, cid))
    return query.order_by(cid)


def _frame(connection: Connection, query: Select[Any]) -> pd.DataFrame:
    result = connection.execute(query)
    frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    return typed_features(frame)


def typed_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers and true/false as float (NaN: missing), text as object: what the design expects."""
    out = frame.copy()
    for name in FEATURES:
        if name not in out:
            continue
        if FIELDS[name].type == "string":
            out[name] = out[name].astype(object)
        else:
            out[name] = pd.to_numeric(out[name].astype(object), errors="coerce").astype(float)
    return out


def _per_mille(connection: Connection, moments: tuple[datetime, ...], max_rows: int) -> int:
    c = table(Customer)
    total = sum(
        int(connection.scalar(select(func.count()).select_from(c).where(_live(t, c.c.id))) or 0)
        for t in moments
    )
    return 1000 if total <= max_rows else max(1, int(1000 * max_rows / total))


def load_snapshots(
    engine: Engine, moments: tuple[datetime, ...], horizon: int, max_rows: int
) -> pd.DataFrame:
    """The rows of the given snapshots (with a ``snapshot`` column), sampled to ``max_rows``."""
    frames = []
    with engine.connect() as connection:
        share = _per_mille(connection, moments, max_rows)
        for t in moments:
            frame = _frame(connection, snapshot_query(t, horizon, share))
            frame["snapshot"] = t
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def evaluate_frame(model: FittedModel, frame: pd.DataFrame) -> HoldoutEvaluation:
    labels = frame["churned"].to_numpy(dtype=float)
    predicted = model.predict(frame[list(FEATURES)])
    return HoldoutEvaluation(
        n=int(labels.size),
        churn_rate=float(labels.mean()) if labels.size else 0.0,
        auc=auc(predicted, labels),
        calibration=tuple(calibration_by_decile(predicted, labels)) if labels.size else (),
        top_decile_lift=top_decile_lift(predicted, labels) if labels.size else None,
    )


def train_model(
    engine: Engine,
    as_of: datetime,
    *,
    horizon: int = 30,
    holdout: int = 2,
    max_snapshots: int = 12,
    max_rows: int = 200_000,
) -> TrainedModel:
    """Fit on the training snapshots, evaluate on the held-out ones, store the model."""
    snapshots = plan_snapshots(engine, as_of, horizon, holdout, max_snapshots)
    train = load_snapshots(engine, snapshots.training, horizon, max_rows)
    model = fit(train[list(FEATURES)], train["churned"].to_numpy(dtype=float))
    evaluation = None
    if snapshots.holdout:
        held = load_snapshots(engine, snapshots.holdout, horizon, max_rows)
        evaluation = evaluate_frame(model, held)
    payload = model.to_json()
    version = f"logit-{as_of:%Y%m%d}-{hashlib.sha256(payload.encode()).hexdigest()[:8]}"
    row = {
        "version": version,
        "horizon_days": horizon,
        "train_start": min(snapshots.training),
        "train_end": max(snapshots.training),
        "holdout_start": min(snapshots.holdout) if snapshots.holdout else None,
        "holdout_end": max(snapshots.holdout) if snapshots.holdout else None,
        "n_train": model.n,
        "n_holdout": evaluation.n if evaluation else 0,
        "auc_holdout": evaluation.auc if evaluation else None,
        "trained_at": datetime.now(UTC),
        "model_json": payload,
    }
    with engine.begin() as connection:
        models = table(RiskModel)
        existing = connection.scalar(select(models.c.id).where(models.c.version == version))
        if existing is None:  # the same version is the same fit of the same data: keep it
            inserted = connection.execute(insert(models).values(**row)).inserted_primary_key
            existing = inserted[0] if inserted else None
    assert existing is not None, "the model row was not stored"
    return TrainedModel(int(existing), version, model, snapshots, model.n, evaluation)


def latest_model(
    engine: Engine, model_id: int | None = None
) -> tuple[int, str, FittedModel, dict[str, Any]]:
    """The stored model (default: the newest): id, version, the model and its stored facts."""
    models = table(RiskModel)
    query = select(models)
    query = query.where(models.c.id == model_id) if model_id else query.order_by(models.c.id.desc())
    with engine.connect() as connection:
        row = connection.execute(query.limit(1)).mappings().first()
    if row is None:
        raise RiskModelError("no churn-risk model is stored; run `retain risk train` first")
    facts = dict(row)
    return int(row["id"]), str(row["version"]), FittedModel.from_json(row["model_json"]), facts


def evaluate_stored(
    engine: Engine, model_id: int | None = None, max_rows: int = 200_000
) -> tuple[str, dict[str, Any], HoldoutEvaluation, tuple[Coefficient, ...]]:
    """Recompute the stored model's held-out snapshots and evaluate it on them."""
    _, version, model, facts = latest_model(engine, model_id)
    start, end = facts["holdout_start"], facts["holdout_end"]
    if start is None or end is None:
        raise RiskModelError(f"model {version} was trained without held-out months (--holdout 0)")
    moments = []
    t = end if end.tzinfo else end.replace(tzinfo=UTC)
    first = start if start.tzinfo else start.replace(tzinfo=UTC)
    while t >= first - timedelta(seconds=1):
        moments.append(t)
        t -= timedelta(days=SNAPSHOT_STEP_DAYS)
    held = load_snapshots(engine, tuple(moments), int(facts["horizon_days"]), max_rows)
    return version, facts, evaluate_frame(model, held), model.coefficients


def score_customers(
    engine: Engine, as_of: datetime, model_id: int | None = None
) -> tuple[str, int]:
    """Score every customer live at ``as_of`` with the stored model; replaces that model's
    scores at ``as_of``. Returns the model version and the number scored.

    One ``INSERT ... SELECT``: the feature query, the model's prediction as a SQL expression
    (:mod:`models.risk_sql`) and the decile by a window over the scored rows,
    ``(rank - 1) * 10 // n + 1`` with ranks by risk, ties in customer id order (10: riskiest)."""
    mid, version, model, _ = latest_model(engine, model_id)
    features = customer_features(as_of, fields=FEATURES).subquery("features")
    scored = (
        select(
            features.c.customer_id.label("customer_id"),
            risk_expression(model, features).label("churn_risk"),
        )
        .where(_live(as_of, features.c.customer_id))
        .subquery("scored")
    )
    rank = func.row_number().over(order_by=(scored.c.churn_risk, scored.c.customer_id))
    decile = (rank - 1) * 10 // func.count().over() + 1
    scores = table(RiskScore)
    rows = select(
        literal(mid, Integer()),
        scored.c.customer_id,
        literal(as_of, scores.c.as_of.type),
        scored.c.churn_risk,
        decile,
    )
    columns = ["model_id", "customer_id", "as_of", "churn_risk", "decile"]
    with engine.begin() as connection:
        ensure_math_functions(connection)
        connection.execute(
            delete(scores).where(and_(scores.c.model_id == mid, scores.c.as_of == as_of))
        )
        connection.execute(scores.insert().from_select(columns, rows))
        # counted, not the cursor's rowcount: drivers report -1 for some INSERT ... SELECT
        inserted = connection.scalar(
            select(func.count()).where(scores.c.model_id == mid, scores.c.as_of == as_of)
        )
    return version, int(inserted or 0)
