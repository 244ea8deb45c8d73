"""Customer features and segment rules in SQL, checked against a Python recount of hand-built data
and a small reference evaluator of the rule AST (runs on SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, inspect, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session

from experiments.rules import (
    FIELDS,
    parse_rule,
)
from models import features as features_module
from models.customer_data import Customer
from models.records import Assignment, Experiment
from models.segments import customer_features, feature_rows, segment_query, select_segment
from tests.segment_data import (
    AS_OF,
    DAY,
    Data,
    build_data,
    insert,
    recount,
    ref_holds,
)


@pytest.fixture
def data(engine: Engine) -> Data:
    """The data inserted, as a second, detached copy for the recount (ids are explicit where the
    recount needs them: customers, subscriptions, cards)."""
    insert(engine, build_data())
    return build_data()


# --- Tests -----------------------------------------------------------------------------------------


def test_features_equal_a_python_recount(engine: Engine, data: Data) -> None:
    expected = recount(data, AS_OF)
    rows = feature_rows(engine, AS_OF)
    assert [r["customer_id"] for r in rows] == sorted(expected) == [1, 2, 3, 4, 5, 7]
    for row in rows:
        want = expected[row["customer_id"]]  # type: ignore[index]
        assert set(row) == {"customer_id", *FIELDS}
        for name, info in FIELDS.items():
            got = row[name]
            if info.type == "bool":
                assert got is want[name], (row["customer_id"], name)
            elif isinstance(want[name], float):
                assert got == pytest.approx(want[name], abs=1e-6), (row["customer_id"], name)
            else:
                assert got == want[name], (row["customer_id"], name, got)


def test_features_of_note(engine: Engine, data: Data) -> None:
    """Hand-checked values at the boundaries the recount is meant to cover."""
    rows = {r["customer_id"]: r for r in feature_rows(engine, AS_OF)}
    assert rows[1]["subscription.status"] == "active"  # newest of two subscriptions
    assert rows[4]["subscription.status"] == "paused"  # same started_at: highest id wins
    assert rows[5]["subscription.status"] == "trialing"  # later subscription not started yet
    assert rows[5]["subscription.days_since_plan_change"] is None  # change is after AS_OF
    assert rows[1]["subscription.days_since_plan_change"] == pytest.approx(3.0)
    assert rows[1]["usage_last_14d"] == 5 and rows[1]["usage_prior_14d"] == 5
    assert rows[2]["usage_last_14d"] == 0 and rows[2]["usage_prior_14d"] == 7
    assert rows[1]["support_tickets_30d"] == 1 and rows[2]["support_tickets_30d"] == 2
    assert rows[2]["failed_invoices"] == 3 and rows[4]["failed_invoices"] == 0
    assert rows[1]["card_expires_in_days"] == pytest.approx(28.5)
    assert rows[2]["card_expires_in_days"] == pytest.approx(8.5)  # the later card is not yet there
    assert rows[4]["card_expires_in_days"] == pytest.approx(-29.5)  # expired; newest default card
    assert rows[5]["card_expires_in_days"] is None  # no default card
    assert rows[7]["card_expires_in_days"] == pytest.approx(29.5)  # default then, replaced since
    assert rows[1]["days_since_last_active"] == pytest.approx(1.0)
    assert rows[7]["days_since_last_active"] is None  # only activity after AS_OF
    assert rows[1]["onboarding_completed"] is True and rows[2]["onboarding_completed"] is False
    assert rows[7]["tenure_days"] == 0
    assert rows[3]["has_phone"] is False and rows[3]["subscription.mrr"] is None
    assert rows[2]["subscription.mrr"] == pytest.approx(29.5)
    # the early-warning catalogue
    assert [rows[i]["failed_payments_30d"] for i in (1, 2, 3, 4)] == [1, 2, 0, 0]
    assert rows[2]["days_past_due"] == pytest.approx(10.0) and rows[2]["in_grace_period"] is True
    assert rows[3]["days_past_due"] == pytest.approx(40.0) and rows[3]["in_grace_period"] is False
    assert rows[3]["invoice_past_due"] is True and rows[1]["days_past_due"] is None
    assert rows[4]["paused"] is True and rows[1]["paused"] is False and rows[3]["paused"] is False
    assert [rows[i]["downgraded_90d"] for i in (1, 2, 7)] == [False, False, True]
    assert [rows[i]["billing_interval_shortened"] for i in (1, 2, 7)] == [False, True, True]
    assert rows[4]["contract_ends_in_days"] == pytest.approx(319.5)  # yearly, paused
    assert rows[1]["contract_ends_in_days"] is None  # monthly
    assert rows[1]["milestones_completed"] == 2 and rows[4]["milestones_completed"] == 1
    assert rows[1]["usage_trend"] == pytest.approx(1.0) and rows[2]["usage_trend"] == 0
    assert rows[5]["usage_trend"] is None  # no prior usage
    assert (rows[1]["churn_risk"], rows[1]["churn_risk_decile"]) == (0.3, 7)
    assert (rows[2]["churn_risk"], rows[2]["churn_risk_decile"]) == (0.07, 2)
    assert rows[4]["churn_risk_decile"] == 9 and rows[3]["churn_risk"] is None


def test_feature_rows_for_some_customers(engine: Engine, data: Data) -> None:
    everyone = {r["customer_id"]: r for r in feature_rows(engine, AS_OF)}
    some = feature_rows(engine, AS_OF, customer_ids=[4, 1, 6])
    assert [r["customer_id"] for r in some] == [1, 4]  # 6 does not exist yet at AS_OF
    assert some == [everyone[1], everyone[4]]


def test_feature_rows_in_chunks(
    engine: Engine, data: Data, monkeypatch: pytest.MonkeyPatch
) -> None:
    everyone = feature_rows(engine, AS_OF)
    monkeypatch.setattr(features_module, "_CHUNK", 2)
    assert feature_rows(engine, AS_OF, customer_ids=[7, 1, 4, 2, 3, 6, 5, 4]) == everyone
    monkeypatch.setattr(features_module, "_CHUNK", 1000)
    many = [*range(-40_000, 0), 3, 5]  # more ids than SQLite allows parameters in one query
    assert feature_rows(engine, AS_OF, customer_ids=many) == [everyone[2], everyone[4]]


def test_features_move_with_as_of(engine: Engine, data: Data) -> None:
    later = AS_OF + 3 * DAY
    expected = recount(data, later)
    rows = feature_rows(engine, later)
    assert [r["customer_id"] for r in rows] == [1, 2, 3, 4, 5, 6, 7]
    for row in rows:
        want = expected[row["customer_id"]]  # type: ignore[index]
        for name in ("subscription.status", "usage_last_14d", "failed_invoices"):
            assert row[name] == want[name], (row["customer_id"], name)
    assert {r["customer_id"]: r["subscription.status"] for r in rows}[5] == "active"


RULES = [
    'card_expires_in_days <= 30 and subscription.status == "active"',
    "usage_last_14d < 0.5 * usage_prior_14d and usage_prior_14d >= 4"
    ' and subscription.status in ["active", "past_due"]',
    "tenure_days <= 21 and not onboarding_completed",
    "card_expires_in_days == null",
    "card_expires_in_days != null",
    "not (card_expires_in_days <= 30)",
    "not (card_expires_in_days < 0) and not (subscription.status == null)",
    'subscription.status not in ["active", "trialing"]',
    'not (subscription.status not in ["active"])',
    "usage_last_14d / usage_prior_14d == 0.5",
    "usage_last_14d / usage_prior_14d < 0.8",
    "not (usage_last_14d / usage_prior_14d < 0.8)",
    "days_since_last_active > 2 or days_since_last_active == null",
    "has_phone and sms_consent",
    "email_consent == true and not sms_consent",
    "subscription.mrr >= 29.5",
    "failed_invoices > 0 or support_tickets_30d >= 2",
    'customer.country == "SE" or customer.locale != "en"',
    "subscription.days_since_plan_change < 10",
    "not (subscription.days_since_plan_change < 10)",
    "-tenure_days < -100",
    "true",
    "not true",
    'subscription.plan in ["pro"] and subscription.billing_interval == "year"',
    "subscription.days_to_renewal < 10 and subscription.days_to_renewal > 0",
    "usage_last_14d + usage_prior_14d * 2 - 1 >= 10",
    '1 + 1 == 2 and customer.country in ["US"]',
    "not not has_phone",
    'not (customer.country == "US" and not (failed_invoices > 0))',
    "onboarding_completed == false or email_consent != true",
    "failed_payments_30d >= 1 and invoice_past_due",
    "days_past_due between 5d and 30d or in_grace_period",
    "paused or downgraded_90d or billing_interval_shortened",
    "contract_ends_in_days <= 60d and contract_ends_in_days is not null",
    "milestones_completed < 2 and tenure_days not between 1 and 30",
    "usage_trend < 0.5 or usage_trend is null",
    "churn_risk >= 0.1 or churn_risk_decile in [9, 10]",
    "churn_risk is null",
    "days_since_last_active > 14d or days_since_last_active is null",
    "tenure_days * 1e15 > 1e15 * 100 and usage_last_14d * 1000000 * 1000000 >= 0",
    "(tenure_days - 1000000000000000) * 1000000000000000 < 0",
    "tenure_days / 0 is null and -usage_last_14d - 1 < 0",
]


@pytest.mark.parametrize("text", RULES)
def test_rule_selects_what_the_reference_evaluator_selects(
    engine: Engine, data: Data, text: str
) -> None:
    rule = parse_rule(text)
    features = recount(data, AS_OF)
    expected = [cid for cid, row in sorted(features.items()) if ref_holds(rule, row)]
    assert select_segment(engine, rule, AS_OF) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('card_expires_in_days <= 30 and subscription.status == "active"', [1, 7]),
        (RULES[1], [2]),
        ("tenure_days <= 21 and not onboarding_completed", [7]),
        ("not (card_expires_in_days <= 30)", [3, 5]),  # no card: the comparison is false
        ("usage_last_14d / usage_prior_14d == 0.5", [4]),  # 1 / 2, not integer division
        ('subscription.status not in ["active", "trialing"]', [2, 4]),  # null status: false
    ],
)
def test_rules_select_hand_checked_customers(
    engine: Engine, data: Data, text: str, expected: list[int]
) -> None:
    assert select_segment(engine, parse_rule(text), AS_OF) == expected


def test_exclude_assigned_drops_customers_of_other_experiments(engine: Engine, data: Data) -> None:
    with Session(engine) as session:
        for eid in (1, 2):
            session.add(Experiment(id=eid, key=f"e{eid}", hypothesis="h", spec_hash="x" * 64,
                                   created_at=AS_OF, updated_at=AS_OF))  # fmt: skip
        session.flush()
        for eid, cid in ((1, 1), (2, 2)):
            session.add(Assignment(experiment_id=eid, customer_id=cid, arm="control",
                                   bucket=0.5, assigned_at=AS_OF))  # fmt: skip
        session.commit()
    everyone = parse_rule("true")
    assert select_segment(engine, everyone, AS_OF) == [1, 2, 3, 4, 5, 7]
    assert select_segment(engine, everyone, AS_OF, experiment_id=1) == [1, 2, 3, 4, 5, 7]
    assert select_segment(engine, everyone, AS_OF, experiment_id=1, exclude_assigned=True) == [
        1, 3, 4, 5, 7,
    ]  # fmt: skip
    assert select_segment(engine, everyone, AS_OF, experiment_id=2, exclude_assigned=True) == [
        2, 3, 4, 5, 7,
    ]  # fmt: skip
    assert select_segment(engine, everyone, AS_OF, exclude_assigned=True) == [3, 4, 5, 7]


def test_injection_looking_strings_are_bound_parameters(engine: Engine, data: Data) -> None:
    texts = [
        'customer.country == "x\'; DROP TABLE customers; --"',
        'customer.country in ["US", "\'); DELETE FROM customers; --"] and true',
        "customer.locale != 'en\\' OR 1=1 --'",
    ]
    for text in texts:
        rule = parse_rule(text)
        for dialect in (sqlite.dialect(), postgresql.dialect()):
            sql = str(segment_query(rule, AS_OF).compile(dialect=dialect))
            assert "DROP" not in sql and "DELETE" not in sql and "OR 1=1" not in sql
        features = recount(data, AS_OF)
        expected = [cid for cid, row in sorted(features.items()) if ref_holds(rule, row)]
        assert select_segment(engine, rule, AS_OF) == expected
    assert inspect(engine).has_table("customers")
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(Customer)) == 7


def test_only_the_needed_subqueries_are_joined() -> None:
    sql = str(segment_query(parse_rule("tenure_days > 1"), AS_OF).compile(dialect=sqlite.dialect()))
    assert "subscriptions" not in sql and "activity_events" not in sql
    sql = str(
        segment_query(parse_rule('subscription.status == "active"'), AS_OF).compile(
            dialect=sqlite.dialect()
        )
    )
    assert "subscriptions" in sql and "activity_events" not in sql


def test_naive_as_of_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        customer_features(datetime(2026, 3, 1))


def _rewind_data() -> Data:
    d = Data()
    for cid in (1, 2, 3, 4, 5):
        d.customer(cid, T0)
    # 1: failed on day 40, recovered on day 45 (status paid today), active now
    d.subscription(11, 1, T0)
    d.invoice(1, "paid", T0 + 40 * DAY, paid_at=T0 + 45 * DAY, attempts=3)
    # 2: failed on day 40, never paid, canceled at the end of the grace period (day 67)
    d.subscription(12, 2, T0, status="canceled", canceled_at=T0 + 67 * DAY)
    d.invoice(2, "failed", T0 + 40 * DAY, attempts=2)
    # 3: paused on day 50
    d.subscription(13, 3, T0, status="paused", paused_at=T0 + 50 * DAY)
    # 4: an invoice paid an hour late without a failed charge is owed, never past due
    d.subscription(14, 4, T0)
    d.invoice(4, "paid", T0 + 40 * DAY, paid_at=T0 + 40 * DAY + HOUR)
    # 5: imported without its invoices; the source said "past due" on day 50
    d.subscription(15, 5, T0, status="past_due", updated_at=T0 + 50 * DAY)
    return d


T0 = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def test_status_and_unpaid_invoices_are_rewound_to_as_of(engine: Engine) -> None:
    """A payment recovered after ``as_of`` was owed then, and its subscription past due; a
    subscription canceled or paused after ``as_of`` was live then (the replay of `retain plan`);
    the status an import wrote holds from then on, even without the invoices behind it."""
    insert(engine, _rewind_data())
    d = _rewind_data()
    expected = {
        30: {1: "active", 2: "active", 3: "active", 4: "active", 5: "active"},
        42: {1: "past_due", 2: "past_due", 3: "active", 4: "active", 5: "active"},
        55: {1: "active", 2: "past_due", 3: "paused", 4: "active", 5: "past_due"},
        70: {1: "active", 2: "canceled", 3: "paused", 4: "active", 5: "past_due"},
    }
    for day, statuses in expected.items():
        as_of = T0 + day * DAY
        rows = {r["customer_id"]: r for r in feature_rows(engine, as_of)}
        assert {c: r["subscription.status"] for c, r in rows.items()} == statuses, day
        assert rows[1]["failed_invoices"] == (1 if day == 42 else 0), day
        assert rows[2]["failed_invoices"] == (1 if day >= 42 else 0), day
        assert rows[3]["paused"] is (day >= 55), day
        recounted = recount(d, as_of)
        for cid, row in rows.items():
            for name in ("subscription.status", "failed_invoices", "paused", "invoice_past_due"):
                assert row[name] == recounted[cid][name], (day, cid, name)  # type: ignore[index]
    at_41 = {r["customer_id"]: r for r in feature_rows(engine, T0 + 40 * DAY + HOUR / 2)}
    assert at_41[4]["invoice_past_due"] is True and at_41[4]["subscription.status"] == "active"
