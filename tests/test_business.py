"""The synthetic business: deterministic, shaped as documented, consistent, and its churn really
follows the early-warning signals (checked with statsmodels on the recorded history only)."""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from dataclasses import fields
from datetime import datetime

import numpy as np
import numpy.typing as npt
import pytest
import statsmodels.api as sm

from experiments.simulation.business import (
    BusinessConfig,
    SyntheticBusiness,
    business_blocks,
    generate_business,
)
from experiments.simulation.lifecycle import PLANS, invoice_cents

AS_OF = np.datetime64("2026-11-02T09:00:00", "s")
DAY = np.timedelta64(86_400, "s")
TABLES = ("customers", "subscriptions", "invoices", "payment_methods", "activity", "suppressions")


@pytest.fixture(scope="module")
def business() -> SyntheticBusiness:
    return generate_business(BusinessConfig())


def live(b: SyntheticBusiness) -> npt.NDArray[np.bool_]:
    return b.subscriptions.status != "canceled"


def per_customer(b: SyntheticBusiness, index: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """A customer mask: True for the customers listed in ``index``."""
    mask = np.zeros(len(b.customers), bool)
    mask[index] = True
    return mask


def usage(b: SyntheticBusiness, lo: np.datetime64, hi: np.datetime64) -> npt.NDArray[np.float64]:
    """Sum of ``quantity`` of login and feature_use rows in ``[lo, hi)`` per customer (the
    definition of models/segments.py)."""
    a = b.activity
    rows = np.isin(a.kind, ["login", "feature_use"]) & (a.occurred_at >= lo) & (a.occurred_at < hi)
    totals = np.bincount(a.customer[rows], weights=a.quantity[rows], minlength=len(b.customers))
    return np.asarray(totals, dtype=np.float64)


def declining_at(b: SyntheticBusiness, t: np.datetime64) -> npt.NDArray[np.bool_]:
    last, prior = usage(b, t - 14 * DAY, t), usage(b, t - 28 * DAY, t - 14 * DAY)
    return (prior >= 4) & (last < 0.5 * prior)


def column_bytes(b: SyntheticBusiness) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in (*TABLES, "latent"):
        columns = getattr(b, name)
        for f in fields(columns):
            value = getattr(columns, f.name)
            key = f"{name}.{f.name}"
            out[key] = (
                value.tolist() if value.dtype == object else (str(value.dtype), value.tobytes())
            )
    return out


def test_same_config_gives_identical_bytes_and_another_seed_differs() -> None:
    first = column_bytes(generate_business(BusinessConfig(customers=3_000)))
    again = column_bytes(generate_business(BusinessConfig(customers=3_000)))
    other = column_bytes(generate_business(BusinessConfig(customers=3_000, seed=8)))
    assert first == again
    assert first["invoices.due_at"] != other["invoices.due_at"]
    assert first["customers.created_at"] != other["customers.created_at"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (lambda: BusinessConfig(customers=0), "customers must be at least 1"),
        (lambda: BusinessConfig(as_of=datetime(2026, 11, 2, 9)), "timezone-aware"),
        (lambda: BusinessConfig(history_days=30), "history_days must be at least 60"),
    ],
)
def test_bad_config_is_refused_with_a_clear_message(
    config: Callable[[], BusinessConfig], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        config()


def test_shares_at_as_of_match_the_documented_business(business: SyntheticBusiness) -> None:
    b, alive = business, live(business)
    c, s = b.customers, b.subscriptions
    new = c.created_at >= AS_OF - 30 * DAY
    assert 0.12 <= new[alive].mean() <= 0.16

    default = b.payment_methods.is_default
    expires = np.empty(len(c), "datetime64[D]")
    expires[b.payment_methods.customer[default]] = b.payment_methods.expires_on[default]
    today = AS_OF.astype("datetime64[D]")
    soon = (expires >= today) & (expires <= (AS_OF + 30 * DAY).astype("datetime64[D]"))
    assert 0.10 <= soon[alive].mean() <= 0.14
    assert 0.0 < (expires < today)[alive].mean() <= 0.04  # a few already expired

    i = b.invoices
    unpaid = per_customer(b, i.customer[(i.status == "failed") & (i.due_at < AS_OF)])
    assert 0.035 <= unpaid[alive].mean() <= 0.065
    assert 0.10 <= declining_at(b, AS_OF)[alive].mean() <= 0.19

    onboarded = per_customer(b, b.activity.customer[b.activity.name == "onboarding_completed"])
    assert 0.40 <= (~onboarded)[new].mean() <= 0.50
    assert onboarded[c.created_at < AS_OF - 365 * DAY].mean() >= 0.90

    has_phone = np.array([phone is not None for phone in c.phone.tolist()])
    assert 0.88 <= c.email_consent.mean() <= 0.92
    assert 0.67 <= has_phone.mean() <= 0.73
    assert 0.52 <= c.sms_consent[has_phone].mean() <= 0.58
    assert not c.sms_consent[~has_phone].any()

    assert 0.02 <= (s.status == "paused")[alive].mean() <= 0.04
    assert (s.status == "active")[alive].mean() >= 0.6
    assert 0.17 <= (s.billing_interval == "year").mean() <= 0.23
    assert 0.015 <= len(b.suppressions) / len(c) <= 0.025
    assert len(b.activity) < 900_000  # a year: daily rows for 60 days, weekly totals before


def test_monthly_churn_over_the_history_is_two_to_four_percent(business: SyntheticBusiness) -> None:
    c, s = business.customers, business.subscriptions
    start = AS_OF - 365 * DAY
    canceled = s.status == "canceled"
    end = np.where(canceled, s.canceled_at, AS_OF)
    exposure = np.clip(end - np.maximum(c.created_at, start), np.timedelta64(0, "s"), None)
    months = exposure.astype(np.int64).sum() / (30.4375 * 86_400)
    assert (s.canceled_at[canceled] >= start).all()  # all churn is inside the history
    assert 0.02 <= canceled.sum() / months <= 0.04
    involuntary = (s.cancel_reason == "payment_failed").sum() / canceled.sum()
    assert 0.15 <= involuntary <= 0.45


def history_panel(b: SyntheticBusiness) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Customer-months over the history: signals observable at the start of each 30-day window
    (only from rows dated before it) and whether the customer churned within the window."""
    c, s, i, a, p = b.customers, b.subscriptions, b.invoices, b.activity, b.payment_methods
    n = len(c)
    first_failed = (i.attempts > 1) | (i.status == "failed")
    tier = {plan: rank for rank, plan in enumerate(PLANS)}
    downgraded = np.array(
        [
            prev is not None and tier[prev] > tier[now]
            for prev, now in zip(s.previous_plan, s.plan, strict=True)
        ]
    )
    onboarded_at = np.full(n, np.datetime64("NaT"), "datetime64[s]")
    milestone = a.name == "onboarding_completed"
    onboarded_at[a.customer[milestone]] = a.occurred_at[milestone]
    tickets = a.kind == "support_ticket"
    xs, ys = [], []
    for months_back in range(1, 12):
        t = AS_OF - 30 * months_back * DAY
        at_risk = (c.created_at < t) & ~(s.canceled_at <= t)
        churned = (s.canceled_at > t) & (s.canceled_at <= t + 30 * DAY)
        due = (i.due_at >= t - 90 * DAY) & (i.due_at < t)
        failed = per_customer(b, i.customer[first_failed & due])
        card = np.full(n, -1)
        known = np.flatnonzero(p.created_at <= t)  # rows are by customer, then created_at
        card[p.customer[known]] = known
        expired = (card >= 0) & (p.expires_on[card] < t.astype("datetime64[D]"))
        tenure = (t - c.created_at).astype(np.int64) / 86_400
        stalled = (tenure >= 14) & (tenure < 90) & ~(onboarded_at < t)
        down = downgraded & (s.plan_changed_at >= t - 90 * DAY) & (s.plan_changed_at < t)
        ticket = per_customer(
            b, a.customer[tickets & (a.occurred_at >= t - 30 * DAY) & (a.occurred_at < t)]
        )
        yearly = s.billing_interval == "year"
        x = np.column_stack(
            [failed, expired, stalled, down, ticket, yearly, np.log1p(np.maximum(tenure, 0))]
        )
        xs.append(x[at_risk].astype(float))
        ys.append(churned[at_risk])
    return np.vstack(xs), np.concatenate(ys)


def test_historical_churn_follows_the_early_warning_signals(business: SyntheticBusiness) -> None:
    x, churned = history_panel(business)
    failed = x[:, 0] == 1
    assert churned[failed].mean() > 2.5 * churned[~failed].mean()

    fit = sm.Logit(churned.astype(float), sm.add_constant(x)).fit(disp=0)
    names = ["failed_90d", "card_expired", "stalled", "downgraded_90d", "ticket_30d", "yearly"]
    coef = dict(zip(["const", *names, "log_tenure"], fit.params, strict=True))
    pvalue = dict(zip(["const", *names, "log_tenure"], fit.pvalues, strict=True))
    for risk in ("failed_90d", "card_expired", "stalled", "downgraded_90d", "ticket_30d"):
        assert coef[risk] > 0, risk
    for protective in ("yearly", "log_tenure"):
        assert coef[protective] < 0, protective
    for strong in ("failed_90d", "card_expired", "stalled", "ticket_30d", "yearly", "log_tenure"):
        assert pvalue[strong] < 1e-4, strong


def test_falling_usage_precedes_churn(business: SyntheticBusiness) -> None:
    """Declining usage 30 days before as_of (the activity covers 60 days) predicts churn in the
    following 30 days, also next to failed payments, yearly billing and tenure."""
    b = business
    c, s, i = b.customers, b.subscriptions, b.invoices
    t = AS_OF - 30 * DAY
    at_risk = (c.created_at < t - 28 * DAY) & ~(s.canceled_at <= t)
    churned = s.canceled_at > t
    declining = declining_at(b, t)
    first_failed = (i.attempts > 1) | (i.status == "failed")
    failed = per_customer(b, i.customer[first_failed & (i.due_at >= t - 90 * DAY) & (i.due_at < t)])
    tenure = np.maximum((t - c.created_at).astype(np.int64) / 86_400, 0)
    x = np.column_stack([declining, failed, s.billing_interval == "year", np.log1p(tenure)])
    fit = sm.Logit(churned[at_risk].astype(float), sm.add_constant(x[at_risk].astype(float))).fit(
        disp=0
    )
    assert fit.params[1] > 0
    assert fit.pvalues[1] < 1e-3
    assert churned[at_risk & declining].mean() > 1.3 * churned[at_risk & ~declining].mean()


def test_rows_refer_to_valid_customers_and_one_subscription_each(
    business: SyntheticBusiness,
) -> None:
    n = len(business.customers)
    for name in TABLES[1:]:
        customer = getattr(business, name).customer
        assert customer.min() >= 0 and customer.max() < n, name
    assert np.array_equal(business.subscriptions.customer, np.arange(n))
    assert business.customers.external_id[12] == "cus_000012"


def test_contact_details_are_unique_and_well_formed(business: SyntheticBusiness) -> None:
    c = business.customers
    assert len(set(c.email.tolist())) == len(c)
    assert all(e.endswith("@example.com") and e.isascii() for e in c.email.tolist())
    phones = [p for p in c.phone.tolist() if p is not None]
    assert len(set(phones)) == len(phones)
    prefix = {"US": "+1", "GB": "+447", "SE": "+467", "DE": "+4915"}
    locale = {"US": "en", "GB": "en", "SE": "sv", "DE": "de"}
    zones = {
        "US": {"America/New_York", "America/Los_Angeles"},
        "GB": {"Europe/London"},
        "SE": {"Europe/Stockholm"},
        "DE": {"Europe/Berlin"},
    }
    for phone, country, loc, zone in zip(c.phone, c.country, c.locale, c.timezone, strict=True):
        assert phone is None or (
            re.fullmatch(r"\+[1-9]\d{7,14}", phone) and phone.startswith(prefix[country])
        )
        assert loc == locale[country] and zone in zones[country]


def test_cards_expire_at_month_end_and_the_newest_is_the_default(
    business: SyntheticBusiness,
) -> None:
    p = business.payment_methods
    assert ((p.exp_month >= 1) & (p.exp_month <= 12)).all()
    for month, year, expires_on in zip(
        p.exp_month[:2000], p.exp_year[:2000], p.expires_on[:2000], strict=True
    ):
        last = calendar.monthrange(int(year), int(month))[1]
        assert str(expires_on) == f"{year:04d}-{month:02d}-{last:02d}"
    assert np.array_equal(np.bincount(p.customer[p.is_default]), np.ones(len(business.customers)))
    same = p.customer[1:] == p.customer[:-1]
    assert (p.created_at[1:][same] >= p.created_at[:-1][same]).all()
    assert not p.is_default[:-1][same].any()  # an older card is never the default
    assert (p.created_at < AS_OF).all()
    assert 1.1 <= len(p) / len(business.customers) <= 1.6  # some have a replaced card


def test_invoices_are_consistent_with_subscriptions(business: SyntheticBusiness) -> None:
    i, s, c = business.invoices, business.subscriptions, business.customers
    paid = i.status == "paid"
    assert set(np.unique(i.status).tolist()) == {"paid", "failed"}
    assert (i.paid_at[paid] >= i.due_at[paid]).all() and (i.paid_at[paid] < AS_OF).all()
    assert np.isnat(i.paid_at[~paid]).all()
    assert set(np.unique(i.attempts[paid & (i.attempts > 1)]).tolist()) == {2, 3}
    assert (i.due_at < AS_OF).all() and (i.due_at >= c.created_at[i.customer]).all()
    plans, yearly = np.repeat(np.arange(3), 2), np.tile([False, True], 3)
    prices = set(invoice_cents(plans, yearly).tolist())
    assert set(np.unique(i.amount_cents).tolist()) <= prices

    canceled = s.status == "canceled"
    assert (s.canceled_at[canceled] <= AS_OF).all() and np.isnat(s.canceled_at[~canceled]).all()
    assert (i.due_at <= s.canceled_at[i.customer])[canceled[i.customer]].all()
    alive = ~canceled
    ahead = (s.current_period_end - AS_OF).astype(np.int64) / 86_400
    monthly = s.billing_interval == "month"
    assert (ahead[alive] > 0).all()
    assert (ahead[alive & monthly] <= 30).all() and (ahead[alive] <= 365).all()

    unpaid = per_customer(business, i.customer[~paid])
    assert np.array_equal(s.status == "past_due", alive & unpaid & (s.status != "paused"))
    trialing = s.status == "trialing"
    assert trialing.sum() > 0 and (c.created_at[trialing] >= AS_OF - 14 * DAY).all()
    assert not per_customer(business, i.customer)[trialing].any()
    assert np.array_equal(s.status == "paused", alive & ~np.isnat(s.paused_at))
    no_previous = np.array([plan is None for plan in s.previous_plan.tolist()])
    assert np.array_equal(np.isnat(s.plan_changed_at), no_previous)
    recent = s.plan_changed_at >= AS_OF - 60 * DAY
    assert recent.sum() > 0.005 * len(s)


def test_activity_stays_within_each_customer_life(business: SyntheticBusiness) -> None:
    a, s, c = business.activity, business.subscriptions, business.customers
    assert (a.occurred_at < AS_OF).all() and (a.occurred_at >= c.created_at[a.customer]).all()
    ends = s.canceled_at[a.customer]
    assert (a.occurred_at[~np.isnat(ends)] <= ends[~np.isnat(ends)]).all()
    usage_rows = np.isin(a.kind, ["login", "feature_use"])
    weekly = np.array([name == "week" for name in a.name.tolist()])
    assert (a.occurred_at[usage_rows] >= AS_OF - 366 * DAY).all()
    assert (a.occurred_at[usage_rows & ~weekly] >= AS_OF - 61 * DAY).all()
    assert (a.occurred_at[weekly] < AS_OF - 59 * DAY).all() and weekly[usage_rows].any()
    day = a.occurred_at.astype("datetime64[D]").astype(np.int64)
    kind = np.unique(a.kind, return_inverse=True)[1]
    assert len(np.unique(np.column_stack([a.customer, kind, day]), axis=0)) == len(a)
    assert (a.quantity >= 1).all()
    u = business.suppressions
    assert ((u.created_at >= c.created_at[u.customer]) & (u.created_at < AS_OF)).all()
    assert set(u.reason.tolist()) == {"unsubscribe"} and set(u.channel.tolist()) == {"email"}


def test_a_year_of_usage_with_weekly_totals_before_the_last_60_days(
    business: SyntheticBusiness,
) -> None:
    """Customers alive all year have usage in every quarter, and a week of the weekly totals
    holds about as much usage as a week of the daily rows."""
    c, s = business.customers, business.subscriptions
    whole_year = (c.created_at < AS_OF - 366 * DAY) & (s.status == "active")
    for quarter in range(4):
        lo = AS_OF - (quarter + 1) * 91 * DAY
        used = usage(business, lo, lo + 91 * DAY) > 0
        assert used[whole_year].mean() > 0.95, quarter
    old = usage(business, AS_OF - 360 * DAY, AS_OF - 80 * DAY)[whole_year].mean() / 40
    recent = usage(business, AS_OF - 56 * DAY, AS_OF)[whole_year].mean() / 8
    assert 0.8 < old / recent < 1.25


def test_cards_are_replaced_before_they_expire(business: SyntheticBusiness) -> None:
    """60 % of cards are planned to be replaced in the 20 days before they expire (fewer are:
    some were replaced earlier after a failed charge), so a replayed card segment sees updates
    right up to as_of."""
    p, s = business.payment_methods, business.subscriptions
    october = (p.expires_on == np.datetime64("2026-10-31")) & (s.status[p.customer] != "canceled")
    october &= p.created_at < AS_OF - 90 * DAY
    later = np.zeros(len(p), bool)
    same_customer = p.customer[1:] == p.customer[:-1]  # rows are by customer, then created_at
    replaced_at = np.where(same_customer, p.created_at[1:], np.datetime64("NaT"))
    later[:-1] = same_customer & (replaced_at >= np.datetime64("2026-10-11"))
    later[:-1] &= replaced_at <= np.datetime64("2026-11-01")
    assert october.sum() > 100
    assert 0.35 <= later[october].mean() <= 0.65
    recent = (p.created_at >= AS_OF - 15 * DAY) & (p.created_at < AS_OF)
    renewed = recent & (p.created_at > business.customers.created_at[p.customer] + DAY)
    assert renewed.sum() > 0.005 * len(business.customers)


def test_plan_and_interval_changes_keep_the_previous_price_and_interval(
    business: SyntheticBusiness,
) -> None:
    s = business.subscriptions
    changed = ~np.isnat(s.plan_changed_at)
    previous_mrr = np.array([m if m is not None else -1 for m in s.previous_mrr_cents.tolist()])
    previous_interval = np.array([v or "" for v in s.previous_billing_interval.tolist()])
    assert np.array_equal(previous_mrr >= 0, changed)
    assert np.array_equal(previous_interval != "", changed)
    tier = {plan: rank for rank, plan in enumerate(PLANS)}
    prev_tier = np.array([tier.get(p, -1) for p in s.previous_plan.tolist()])
    now_tier = np.array([tier[p] for p in s.plan.tolist()])
    down = changed & (prev_tier > now_tier)
    assert down.sum() > 0 and (previous_mrr[down] > s.mrr_cents[down]).all()
    shortened = changed & (previous_interval == "year") & (s.billing_interval == "month")
    assert shortened.sum() > 0 and (prev_tier[shortened] == now_tier[shortened]).all()
    yearly_price = invoice_cents(now_tier[shortened], np.ones(shortened.sum(), bool))
    assert (previous_mrr[shortened] == np.round(yearly_price / 12)).all()


def test_failed_payments_are_often_recovered_later(business: SyntheticBusiness) -> None:
    i = business.invoices
    recovered = (i.status == "paid") & (i.attempts > 1)
    assert recovered.sum() > 0.5 * (i.status == "failed").sum()
    assert (i.paid_at[recovered] > i.due_at[recovered]).all()


def test_blocks_do_not_depend_on_the_total() -> None:
    """Customer blocks have their own generators: a larger business starts with the same
    customers, and the streamed blocks concatenate to the whole."""
    small = generate_business(BusinessConfig(customers=2_000, seed=3))
    large = generate_business(BusinessConfig(customers=26_000, seed=3, history_days=120))
    assert small.customers.email[:10].tolist() != large.customers.email[:10].tolist()  # history
    again = generate_business(BusinessConfig(customers=2_500, seed=3))
    assert again.customers.email[:2_000].tolist() != [] and np.array_equal(
        again.customers.external_id[:2_000], small.customers.external_id
    )
    blocks = list(business_blocks(BusinessConfig(customers=26_000, seed=3, history_days=120)))
    assert [len(b.customers) for b in blocks] == [25_000, 1_000]
    assert np.array_equal(
        np.concatenate([b.activity.customer for b in blocks]), large.activity.customer
    )
    assert blocks[1].invoices.customer.min() >= 25_000
    assert len(set(large.customers.email.tolist())) == 26_000
