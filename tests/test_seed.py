"""Seeding the synthetic business: every row arrives, SQL recounts equal the numpy columns, and a
second seeding is refused without touching the data (SQLite, and PostgreSQL via the fixture)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Select, func, select
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from experiments.simulation.business import BusinessConfig, SyntheticBusiness, generate_business
from models.bulk import table
from models.customer_data import ActivityEvent, Customer, Invoice, PaymentMethod, Subscription
from models.records import Suppression
from models.seed import SeedError, SeedSummary, customer_ids_by_index, prefetched, seed_business

MODELS: dict[str, type[SQLModel]] = {
    "customers": Customer,
    "subscriptions": Subscription,
    "invoices": Invoice,
    "payment_methods": PaymentMethod,
    "activity_events": ActivityEvent,
    "suppressions": Suppression,
}


@pytest.fixture(scope="module")
def business() -> SyntheticBusiness:
    return generate_business(BusinessConfig(customers=1_500, seed=11))


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            name: connection.execute(select(func.count()).select_from(table(model))).scalar_one()
            for name, model in MODELS.items()
        }


def test_every_row_arrives_and_progress_reaches_each_total(
    engine: Engine, business: SyntheticBusiness
) -> None:
    calls: list[tuple[str, int, int]] = []
    summary = seed_business(engine, business, progress=lambda *call: calls.append(call))
    expected = SeedSummary(
        customers=len(business.customers),
        subscriptions=len(business.subscriptions),
        invoices=len(business.invoices),
        payment_methods=len(business.payment_methods),
        activity_events=len(business.activity),
        suppressions=len(business.suppressions),
    )
    assert summary == expected
    assert counts(engine) == vars(expected)
    assert calls[0] == ("customers", 0, 1_500)
    assert calls[-1] == ("customers", 1_500, 1_500)


def test_sql_recounts_equal_the_numpy_columns(engine: Engine, business: SyntheticBusiness) -> None:
    seed_business(engine, business)
    s, i, a, p = (
        business.subscriptions,
        business.invoices,
        business.activity,
        business.payment_methods,
    )
    subs, inv, act, cards = (
        table(Subscription),
        table(Invoice),
        table(ActivityEvent),
        table(PaymentMethod),
    )
    with engine.connect() as connection:

        def scalar(statement: Select[Any]) -> Any:
            return connection.execute(statement).scalar_one()

        active = scalar(select(func.count()).where(subs.c.status == "active"))
        assert active == int((s.status == "active").sum())
        assert scalar(select(func.sum(subs.c.mrr_cents))) == int(s.mrr_cents.sum())
        paid_cents = scalar(select(func.sum(inv.c.amount_cents)).where(inv.c.status == "paid"))
        assert paid_cents == int(i.amount_cents[i.status == "paid"].sum())
        assert scalar(select(func.sum(act.c.quantity))) == int(a.quantity.sum())
        logins = scalar(select(func.count()).where(act.c.kind == "login"))
        assert logins == int((a.kind == "login").sum())
        defaults = scalar(select(func.count()).where(cards.c.is_default.is_(True)))
        assert defaults == len(business.customers)
        unpaid = scalar(select(func.count()).where(inv.c.paid_at.is_(None)))
        assert unpaid == int(np.isnat(i.paid_at).sum())
        # Every invoice belongs to its own customer's subscription.
        mismatched = scalar(
            select(func.count())
            .select_from(inv.join(subs, inv.c.subscription_id == subs.c.id))
            .where(inv.c.customer_id != subs.c.customer_id)
        )
        assert mismatched == 0
        latest_due = scalar(select(func.max(inv.c.due_at)))
        first_card = connection.execute(
            select(cards.c.expires_on, cards.c.created_at).order_by(cards.c.id).limit(1)
        ).one()

    expected_due = i.due_at.max().astype("datetime64[us]").item().replace(tzinfo=UTC)
    assert latest_due == expected_due  # aware UTC on the way back, on both databases
    assert first_card.expires_on == p.expires_on[0].item()
    assert isinstance(first_card.expires_on, date)
    assert first_card.created_at == p.created_at[0].item().replace(tzinfo=UTC)


def test_ids_by_index_follow_the_external_ids(engine: Engine, business: SyntheticBusiness) -> None:
    seed_business(engine, business)
    ids = customer_ids_by_index(engine, business)
    customers = table(Customer)
    with engine.connect() as connection:
        emails = {
            id_: email
            for id_, email in connection.execute(select(customers.c.id, customers.c.email))
        }
        created = connection.execute(
            select(customers.c.created_at).where(customers.c.id == int(ids[7]))
        ).scalar_one()
    assert len(set(ids.tolist())) == len(business.customers)
    assert [emails[int(x)] for x in ids[:50]] == business.customers.email[:50].tolist()
    expected = business.customers.created_at[7].item().replace(tzinfo=UTC)
    assert created == expected


def test_seeding_twice_is_refused_and_changes_nothing(
    engine: Engine, business: SyntheticBusiness
) -> None:
    seed_business(engine, business)
    before = counts(engine)
    with pytest.raises(SeedError, match=r"customers table already holds 1,500 rows"):
        seed_business(engine, business)
    assert counts(engine) == before


def test_ids_of_an_unseeded_business_are_an_error(
    engine: Engine, business: SyntheticBusiness
) -> None:
    with pytest.raises(SeedError, match=r"not in the database \(first: cus_000000\)"):
        customer_ids_by_index(engine, business)


def test_prefetched_blocks_keep_order_and_raise_the_workers_error() -> None:
    assert list(prefetched(iter(range(50)))) == list(range(50))

    def failing() -> Iterator[int]:
        yield 1
        raise RuntimeError("generator broke")

    seen: list[int] = []
    with pytest.raises(RuntimeError, match="generator broke"):
        seen.extend(prefetched(failing()))
    assert seen == [1]
    stream = prefetched(iter(range(10)))
    assert next(stream) == 0
    stream.close()  # a consumer that stops early does not leave the worker hanging


def test_seeding_from_a_config_streams_the_same_rows(engine: Engine) -> None:
    config = BusinessConfig(customers=800, seed=11, history_days=90)
    summary = seed_business(engine, config)
    whole = generate_business(config)
    assert summary.activity_events == len(whole.activity)
    assert summary.invoices == len(whole.invoices)
    ids = customer_ids_by_index(engine, whole)
    assert ids.tolist() == list(range(1, 801))  # explicit ids: customer index + 1
