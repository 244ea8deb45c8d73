"""The report's facts from the stored records, against independent recounts (SQLite, and
PostgreSQL via the fixture): the lift over time from the stored daily aggregates, the per-stratum
sample-ratio checks of the last assignment run, the data's freshness and the treated customers
against the global holdout."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from experiments.assignment import HOLDOUT_ARM
from experiments.holdout import HoldoutSettings
from experiments.loader import parse_spec
from experiments.report.holdout import programme
from experiments.report.index import IndexEntry, render_index
from experiments.report.numbers import fmt_lift_text
from experiments.report.render import render_markdown
from experiments.stats import SampleStats
from experiments.stats.sequential import SequentialSettings, sequential_test
from models.assign import assign_segment
from models.assign_checks import run_checks
from models.customer_data import Customer, Invoice, PaymentMethod, Subscription
from models.evaluation import evaluate
from models.experiments import register_experiment
from models.imports.tables import ImportRun, StripeEvent
from models.lift_series import stored_series
from models.metric_sql import metric_values
from models.records import Assignment
from models.report_data import data_freshness, stratum_srm
from tests.dbdata import T0, add_customers
from tests.report_fixture import AS_OF, COMPUTED_AT, SPEC, seed_experiment

METRIC = "card_updated_14d"


def recount(values: dict[int, tuple[str, float]], members: set[int]) -> dict[str, SampleStats]:
    """Per arm, the sufficient statistics of ``members``' values, added up in Python."""
    out: dict[str, list[float]] = defaultdict(list)
    for customer, (arm, value) in values.items():
        if customer in members:
            out[arm].append(value)
    return {arm: SampleStats(len(v), sum(v), sum(x * x for x in v)) for arm, v in out.items()}


def close(got: SampleStats, want: SampleStats) -> bool:
    return (
        got.n == want.n
        and got.mean == pytest.approx(want.mean, abs=1e-9)
        and got.variance == pytest.approx(want.variance, abs=1e-9)
    )


def test_lift_over_time_comes_from_the_stored_daily_aggregates(engine: Engine) -> None:
    seeded = seed_experiment(engine)
    eid = seeded.experiment_id
    spec = parse_spec(SPEC).spec
    # A cut-off while the last cohort (day 2, 11:00) is counted but not final yet.
    as_of = T0 + timedelta(days=16, hours=3)
    report = evaluate(engine, eid, spec, as_of, COMPUTED_AT)
    series = stored_series(engine, eid, METRIC, as_of)
    values = metric_values(engine, eid, METRIC, as_of)
    start = min(at for _, at in seeded.assigned_at.values()).date()
    cohorts = sorted({at.date() for _, at in seeded.assigned_at.values()})
    # Python recount: the customers assigned up to each final cohort day, on the day it is read.
    final = [d for d in cohorts if d < (as_of - timedelta(days=14, minutes=1)).date()]
    assert [day for day, _ in series.points] == [(d - start).days + 1 + 14 for d in final]
    assert len(final) == 2 and len(cohorts) == 3
    for (_, stats), cohort in zip(series.points, final, strict=True):
        members = {c for c, (_, at) in seeded.assigned_at.items() if at.date() <= cohort}
        expected = recount(values, members)
        assert set(stats) == set(expected)
        assert all(close(stats[arm], expected[arm]) for arm in expected)
    # The report's chart: the stored points, then its own numbers (every counted customer).
    timeline = report.lift_over_time
    assert timeline is not None and timeline.started_at is not None
    points = timeline.arms[0].points
    assert [p.day for p in points] == [15, 16]  # day 16: the stored cohort 1 and the tail
    everyone = recount(values, set(values))
    last = sequential_test(
        "binary", everyone["email"], everyone["control"], SequentialSettings(200)
    )
    assert (points[-1].n, points[-1].n_baseline) == (everyone["email"].n, everyone["control"].n)
    assert points[-1].abs_lift == pytest.approx(last.abs_lift, abs=1e-9)
    assert points[-1].ci == pytest.approx(last.abs_ci, abs=1e-9)
    widths = [p.ci[1] - p.ci[0] for p in points if p.ci]
    assert len(widths) == 2 and widths[-1] < widths[0]  # narrows as data comes in
    # A later evaluation stores more days; a report for the earlier cut-off does not see them.
    evaluate(engine, eid, spec, AS_OF, COMPUTED_AT)
    assert len(stored_series(engine, eid, METRIC, AS_OF).points) == 3
    assert stored_series(engine, eid, METRIC, as_of).points == series.points


HOLDOUT_SPEC = """\
key: holdout-check
hypothesis: Reminders help, and the programme beats doing nothing.
segment:
  where: card_expires_in_days <= 30
assignment: {salt: hold-2026, stratify_by: [subscription.plan]}
arms:
  - {name: control, weight: 1}
  - name: email
    steps: [{at: 0d, channel: email, template: card_expiry}]
metrics:
  primary: card_updated_14d
"""
RATES = {"control": 0.25, "email": 0.45, HOLDOUT_ARM: 0.2}


def holdout_world(engine: Engine) -> tuple[int, dict[int, str]]:
    """400 customers on three plans, a stratified experiment with a 20 % global holdout, card
    updates drawn per arm; returns the experiment id and each customer's arm."""
    ids = add_customers(engine, 400, card_days=20)
    plans = ("starter", "team", "business")
    with Session(engine) as session:
        for i, customer in enumerate(ids):
            session.execute(
                update(Subscription)
                .where(Subscription.customer_id == customer)  # type: ignore[arg-type]
                .values(plan=plans[i % 3])
            )
        session.commit()
    loaded = parse_spec(HOLDOUT_SPEC, "holdout.yaml")
    eid = register_experiment(engine, loaded, T0).experiment_id
    assign_segment(engine, eid, loaded.spec, T0, T0, HoldoutSettings(share=0.2, salt="h"))
    run_checks(engine, eid, loaded.spec, T0)
    rng = random.Random(5)
    arms: dict[int, str] = {}
    with Session(engine) as session:
        for a in session.exec(select(Assignment).where(Assignment.experiment_id == eid)).all():
            arms[a.customer_id] = a.arm
            if rng.random() < RATES[a.arm]:
                when = T0 + timedelta(days=rng.randint(0, 12), hours=2)
                session.add(
                    PaymentMethod(
                        customer_id=a.customer_id,
                        last4="4242",
                        exp_month=12,
                        exp_year=2030,
                        expires_on=date(2030, 12, 31),
                        created_at=when,
                    )
                )
                session.add(
                    Invoice(
                        customer_id=a.customer_id,
                        amount_cents=4900,
                        status="paid",
                        due_at=when,
                        paid_at=when,
                    )
                )
        session.commit()
    return eid, arms


def test_holdout_is_compared_with_every_treated_customer(engine: Engine) -> None:
    eid, arms = holdout_world(engine)
    spec = parse_spec(HOLDOUT_SPEC).spec
    report = evaluate(engine, eid, spec, AS_OF, COMPUTED_AT)
    h = report.holdout
    assert h is not None and h.treated_arms == ["email"] and h.method == "sequential"
    assert [m.name for m in h.metrics] == [METRIC, "retained_30d", "retained_90d"]
    values = metric_values(engine, eid, METRIC, AS_OF)
    counted = recount(values, set(values))
    card = h.metrics[0]
    assert card.holdout.n == sum(1 for arm in arms.values() if arm == HOLDOUT_ARM) > 40
    assert card.treated.n == counted["email"].n and card.treated.sum == counted["email"].sum
    assert card.holdout.sum == counted[HOLDOUT_ARM].sum
    settings = SequentialSettings(report.analysis.sequential_tuning_n if report.analysis else 0)
    want = sequential_test("binary", counted["email"], counted[HOLDOUT_ARM], settings)
    assert card.abs_lift == pytest.approx(want.abs_lift, abs=1e-9)
    assert card.ci == pytest.approx(want.abs_ci, abs=1e-9)
    assert card.significant == (want.p_value is not None and want.p_value < report.alpha)
    # The experiment's own arms exclude the holdout; retained_90d has not matured at 40 days.
    assert {a.name for a in report.arms} == {"control", "email"}
    assert report.trust is not None and report.trust.not_yet_counted[METRIC] == 0
    assert report.trust.assigned == sum(1 for arm in arms.values() if arm != HOLDOUT_ARM)
    assert h.metrics[2].treated.n == 0 and h.metrics[2].status == "n_too_small"
    # The programme view pools experiments: twice the same report doubles every count.
    pooled = programme([report, report])
    assert pooled is not None and pooled.experiments == ["holdout-check", "holdout-check"]
    both = pooled.metrics[0]
    assert (both.treated.n, both.holdout.n) == (2 * card.treated.n, 2 * card.holdout.n)
    assert both.abs_lift == pytest.approx(card.abs_lift, abs=1e-12)
    assert programme([]) is None
    # Both renderings show it: the report's section and the index's programme table.
    text = render_markdown(report)
    lift = fmt_lift_text(card.abs_lift, card.ci, "binary")
    assert "## Programme effect: treated vs global holdout" in text
    assert f"| {METRIC} | {100 * card.treated.mean:.1f}% (n {card.treated.n}) |" in text
    assert lift in text and "Sample ratio per stratum (last assignment run, " in text
    page = render_index([IndexEntry("holdout-check", "running", "h")], "now", pooled, "EUR")
    assert 'id="programme"' in page and "2 experiments with a global holdout" in page
    assert fmt_lift_text(both.abs_lift, both.ci, "binary") in page
    # Per-stratum sample ratio: the last assignment run's checks, one per plan.
    assert report.trust is not None
    assert sorted(s.stratum for s in report.trust.srm_strata) == [
        f"subscription.plan={p}" for p in ("business", "starter", "team")
    ]
    badge = next(c for c in report.trust.checks if c.check == "srm_stratum")
    assert badge.status == "green"


def test_stratum_checks_come_from_the_latest_assignment_run(engine: Engine) -> None:
    eid, arms = holdout_world(engine)
    spec = parse_spec(HOLDOUT_SPEC).spec
    first, first_at = stratum_srm(engine, eid)
    assert first_at == T0 and len(first) == 3 and all(s.ok for s in first)
    # Break one stratum: move every control customer on the team plan to email, check again.
    with Session(engine) as session:
        on_team = session.exec(
            select(Subscription.customer_id).where(Subscription.plan == "team")
        ).all()
        team = [c for c in on_team if arms.get(c) == "control"]
        session.execute(
            update(Assignment)
            .where(Assignment.experiment_id == eid, Assignment.customer_id.in_(team))  # type: ignore[attr-defined]
            .values(arm="email")
        )
        session.commit()
    later = T0 + timedelta(hours=1)
    run_checks(engine, eid, spec, later)
    strata, at = stratum_srm(engine, eid)
    assert at == later and len(strata) == 3
    broken = {s.stratum: s for s in strata}["subscription.plan=team"]
    assert not broken.ok and broken.counts.get("control", 0) == 0 and len(team) > 10
    report = evaluate(engine, eid, spec, AS_OF, COMPUTED_AT)
    assert report.trust is not None
    badge = next(c for c in report.trust.checks if c.check == "srm_stratum")
    assert badge.status == "red" and "subscription.plan=team" in badge.detail


def test_freshness_from_imports_syncs_and_webhooks(engine: Engine) -> None:
    add_customers(engine, 3)
    with Session(engine) as session:
        session.execute(update(Customer).values(created_at=T0 - timedelta(days=2)))
        session.commit()
    seeded = data_freshness(engine)
    assert seeded.last_at is None and seeded.newest_customer == T0 - timedelta(days=2)
    with Session(engine) as session:
        for status, finished in (("applied", T0), ("rejected", T0 + timedelta(days=1))):
            session.add(
                ImportRun(
                    source="customers.csv",
                    entity="customers",
                    status=status,
                    started_at=finished - timedelta(minutes=1),
                    finished_at=finished,
                )
            )
        session.commit()
    imported = data_freshness(engine)
    assert (imported.last_at, imported.source) == (T0, "import (customers)")  # not the rejected
    with Session(engine) as session:
        session.add(
            StripeEvent(
                event_id="evt_1",
                type="invoice.paid",
                created_at=T0 + timedelta(hours=5),
                received_at=T0 + timedelta(hours=6),
                outcome="applied",
                payload="{}",
            )
        )
        session.commit()
    hooked = data_freshness(engine)
    assert (hooked.last_at, hooked.source) == (T0 + timedelta(hours=6), "Stripe webhook")
    assert hooked.last_at is not None and hooked.last_at.tzinfo is not None
    assert datetime(2026, 1, 1, tzinfo=UTC) < hooked.last_at
