"""The churn-risk model on the database (SQLite and PostgreSQL): snapshot rows without
look-ahead, training on a synthetic business's history, held-out evaluation, stored scores and
the churn_risk / churn_risk_decile rule fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from experiments.risk.model import RiskModelError
from experiments.rules import parse_rule
from experiments.simulation.business import BusinessConfig, generate_business
from models.bulk import table
from models.customer_data import ActivityEvent, Customer, Invoice, Subscription
from models.features import customer_features
from models.risk import (
    FEATURES,
    _live,
    evaluate_stored,
    latest_model,
    score_customers,
    snapshot_query,
    train_model,
    typed_features,
)
from models.risk_tables import RiskScore
from models.seed import seed_business
from models.segments import select_segment

T = datetime(2026, 6, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)


def test_snapshot_rows_have_complete_labels_and_no_look_ahead(engine: Engine) -> None:
    start = T - 100 * DAY
    subs = {  # customer: [(started, canceled)]
        1: [(start, T + 10 * DAY)],  # churns within 30 days
        2: [(start, T + 40 * DAY)],  # churns later: stays within the horizon
        3: [(start, T - 5 * DAY)],  # gone before T: not in the snapshot
        4: [(T + DAY, None)],  # not yet a subscriber at T
        5: [(start, T + 10 * DAY), (T + 20 * DAY, None)],  # came back within the horizon
        6: [(start, T + 30 * DAY)],  # canceled exactly at the horizon: churned
        7: [(start, None)],
    }
    with Session(engine) as session:
        for cid in subs:
            session.add(Customer(id=cid, external_id=f"c{cid}", name=f"C{cid}", created_at=start))
        session.flush()
        for cid, periods in subs.items():
            for started, canceled in periods:
                session.add(
                    Subscription(
                        customer_id=cid,
                        plan="basic",
                        billing_interval="month",
                        mrr_cents=1900,
                        status="canceled" if canceled else "active",
                        started_at=started,
                        current_period_end=started + 30 * DAY,
                        canceled_at=canceled,
                    )
                )
        # what happens after T must not show in the features as of T
        session.add(ActivityEvent(customer_id=1, kind="support_ticket", occurred_at=T + DAY))
        session.add(ActivityEvent(customer_id=1, kind="support_ticket", occurred_at=T - DAY))
        session.add(Invoice(customer_id=1, amount_cents=1900, status="failed", due_at=T + 2 * DAY))
        session.commit()
    with engine.connect() as connection:
        result = connection.execute(snapshot_query(T, 30))
        rows = {r["customer_id"]: r for r in result.mappings()}
    assert sorted(rows) == [1, 2, 5, 6, 7]
    assert {cid: r["churned"] for cid, r in rows.items()} == {1: 1, 2: 0, 5: 0, 6: 1, 7: 0}
    assert rows[1]["support_tickets_30d"] == 1 and rows[1]["failed_payments_30d"] == 0
    assert set(FEATURES) <= set(rows[1])
    # a sample (by a hash of the id, applied inside every subquery) keeps the same values
    with engine.connect() as connection:
        sampled = {
            r["customer_id"]: r for r in connection.execute(snapshot_query(T, 30, 500)).mappings()
        }
    assert sorted(sampled) == [c for c in rows if c * 2654435761 % 1000 < 500]
    assert 0 < len(sampled) < len(rows)
    assert all(dict(sampled[c]) == dict(rows[c]) for c in sampled)


def test_typed_features_make_numbers_bools_and_text() -> None:
    import pandas as pd

    frame = typed_features(
        pd.DataFrame(
            {"tenure_days": [1, None], "has_phone": [True, None], "customer.country": ["SE", None]}
        )
    )
    assert frame["tenure_days"].dtype == float and np.isnan(frame["tenure_days"][1])
    assert frame["has_phone"].tolist()[0] == 1.0 and np.isnan(frame["has_phone"][1])
    assert frame["customer.country"].dtype == object


def test_training_needs_history(engine: Engine) -> None:
    with pytest.raises(RiskModelError, match="no subscriptions"):
        train_model(engine, T)
    with Session(engine) as session:
        session.add(Customer(id=1, external_id="c1", name="C", created_at=T - 40 * DAY))
        session.flush()
        session.add(Subscription(customer_id=1, plan="basic", billing_interval="month",
                                 mrr_cents=1, status="active", started_at=T - 40 * DAY,
                                 current_period_end=T))  # fmt: skip
        session.add(ActivityEvent(customer_id=1, kind="login", occurred_at=T - DAY))
        session.commit()
    with pytest.raises(RiskModelError, match="snapshot"):
        train_model(engine, T)
    with pytest.raises(RiskModelError, match="pass --as-of 2026-05-31T12:00:00"):
        train_model(engine, T + 30 * DAY)  # nothing recorded in the last month: stale


@pytest.mark.slow
def test_train_evaluate_score_and_rule_fields(engine: Engine) -> None:
    """On the synthetic business (whose churn hazard follows the early-warning signals) the
    model ranks held-out months' churners above stayers, its stored scores cover every live
    customer in ten equal deciles, and rules select on them."""
    business = generate_business(BusinessConfig(customers=2_500, seed=11))
    seed_business(engine, business)
    as_of = business.config.as_of
    trained = train_model(engine, as_of, horizon=30, holdout=2, max_rows=20_000)
    assert len(trained.snapshots.holdout) == 2 and len(trained.snapshots.training) >= 6
    assert max(trained.snapshots.training) < min(trained.snapshots.holdout)
    assert max(trained.snapshots.holdout) + 30 * DAY <= as_of  # every label complete
    assert trained.n_train <= 22_000  # sampled to about max_rows
    assert trained.holdout is not None and trained.holdout.auc is not None
    assert trained.holdout.auc > 0.65, trained.holdout
    assert sum(r.n for r in trained.holdout.calibration) == trained.holdout.n
    again = train_model(engine, as_of, horizon=30, holdout=2, max_rows=20_000)
    assert (again.id, again.version) == (trained.id, trained.version)  # deterministic
    version, _, evaluation, coefficients = evaluate_stored(engine)
    assert version == trained.version and evaluation.auc == pytest.approx(trained.holdout.auc)
    assert coefficients[0].name == "(intercept)"

    version, scored = score_customers(engine, as_of)
    scores = table(RiskScore)
    with engine.connect() as connection:
        live = connection.scalar(
            select(func.count())
            .select_from(table(Subscription))
            .where(
                table(Subscription).c.started_at <= as_of,
                table(Subscription).c.canceled_at.is_(None)
                | (table(Subscription).c.canceled_at > as_of),
            )
        )
        deciles = dict(
            connection.execute(
                select(scores.c.decile, func.count()).group_by(scores.c.decile)
            ).all()
        )
        top = sorted(connection.scalars(select(scores.c.customer_id).where(scores.c.decile == 10)))
        lowest_top = connection.scalar(
            select(func.min(scores.c.churn_risk)).where(scores.c.decile == 10)
        )
        highest_rest = connection.scalar(
            select(func.max(scores.c.churn_risk)).where(scores.c.decile < 10)
        )
    assert scored == live
    _assert_sql_scores_equal_python(engine, as_of)
    assert sorted(deciles) == list(range(1, 11))
    assert max(deciles.values()) - min(deciles.values()) <= 1
    assert lowest_top >= highest_rest
    assert select_segment(engine, parse_rule("churn_risk_decile == 10"), as_of) == top
    risky = select_segment(engine, parse_rule(f"churn_risk >= {lowest_top}"), as_of)
    assert set(top) <= set(risky)
    assert select_segment(engine, parse_rule("churn_risk is not null"), as_of - DAY) == []
    score_customers(engine, as_of)  # re-scoring replaces, never duplicates
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(scores)) == scored


def _assert_sql_scores_equal_python(engine: Engine, as_of: datetime) -> None:
    """The scores stored by the SQL expression are the Python model's predictions (to 1e-9),
    and the deciles are ranks by risk cut in ten as numpy would cut them."""
    _, _, model, _ = latest_model(engine)
    features = customer_features(as_of, fields=FEATURES).subquery("features")
    query = select(features).where(_live(as_of, features.c.customer_id))
    scores = table(RiskScore)
    with engine.connect() as connection:
        frame = typed_features(pd.DataFrame(connection.execute(query).mappings().all()))
        stored = pd.DataFrame(
            connection.execute(
                select(scores.c.customer_id, scores.c.churn_risk, scores.c.decile).where(
                    scores.c.as_of == as_of
                )
            ).all(),
            columns=["customer_id", "churn_risk", "decile"],
        )
    merged = frame.merge(stored, on="customer_id", validate="one_to_one")
    assert len(merged) == len(frame) == len(stored) > 1000
    expected = model.predict(merged[list(FEATURES)])
    assert np.max(np.abs(merged["churn_risk"].to_numpy() - expected)) < 1e-9
    ordered = merged.sort_values(["churn_risk", "customer_id"], kind="stable")
    ranks = np.arange(len(ordered))
    assert (ordered["decile"].to_numpy() == ranks * 10 // len(ordered) + 1).all()
