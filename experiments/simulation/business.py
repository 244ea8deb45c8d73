"""The deterministic synthetic subscription business behind ``retain demo``.

A SaaS with three plans — starter ($19/mo), team ($49/mo), business ($99/mo) — billed monthly or
yearly (12 × the monthly price, minus 15 %). :func:`generate_business` returns its customer data as
of ``config.as_of``, one column table per database table (see :mod:`.columns`), ready for
:func:`models.seed.seed_business`. The same config always gives byte-identical output: one seeded
``numpy`` Generator, a fixed order of draws, no wall clock.

How the history is made (:mod:`.lifecycle`)
-------------------------------------------
Customers sign up over the last ``history_days`` in a growing flow (it doubles about every five
months); a quarter signed up one to three years before that and are, by construction, alive when
the history starts. Plans are 50/35/15 % starter/team/business, billed yearly by 14/22/35 %; a
quarter start with a 14-day trial. 78 % complete onboarding (95 % of the older cohort), after an
exponential delay of mean 8 days. Each customer's life is then stepped through month by month
from the billing anchor (signup or trial end; invoices fall on the same day of every month, at
the latest the 28th). In every month, in this order:

1. *Pause* (monthly plans): 2.5 % pause for 1–3 months, without invoices.
2. *Plan change* (monthly plans): 1.2 % downgrade a tier, 0.8 % upgrade. At a yearly renewal
   12 % switch to monthly billing (the invoices then show the shortened interval).
3. *Cards*: every card added expires 2–48 months later — 11 % of them in the ``as_of`` month,
   a reissue wave — and 60 % of customers replace an expiring card before it is charged.
4. *Invoice* at the period start. The charge fails on an expired card, and on a valid one with
   the customer's decline rate (Beta(2, 14), mean 12.5 %). 25 % of declined charges pass on the
   retry on day 4 (attempt 2); of the rest, 88 % fix their payment details within the 27-day
   grace period (later rather than sooner) and pay at once (attempt 2 or 3). An invoice still
   unpaid after 27 days ends the subscription: involuntary churn, ``cancel_reason
   'payment_failed'``. Customers inside the grace period at ``as_of`` are ``past_due``.
5. *Usage*: a customer with normal usage starts a passing *dip* (3–6 weeks) with probability
   18 %, or *disengages* with probability 18 % (after at least four weeks recovering with
   probability 60 % a month). Either cuts daily activity to 15 %.
6. *Voluntary churn* with the monthly hazard below; a usage turn changes it mid-month and the
   churn time is drawn exactly from the piecewise-constant hazard.
7. *Support tickets*: Poisson, 0.05 a month, + 0.25 with low usage, + 0.6 after a failed charge.

Voluntary churn hazard (per month; only inside the history window)::

    h = BASE_MONTHLY_HAZARD (0.007) × Π HAZARD_RATIOS[signal] over the signals present

failed first charge within 90 days ×2.0, usage dip ×1.3, disengaged ×8.0, onboarding not done
14+ days after signup ×2.5, paused ×2.5, downgrade within 90 days ×1.8, billing interval
shortened within 180 days ×1.8, support ticket within 30 days ×1.3, first three months ×1.5,
tenure of a year or more ×0.7, yearly billing ×0.3, starter plan ×1.15, business plan ×0.85.
Signals other than usage are read at the start of the month, so they precede the churn they
cause: they are early warnings a churn-risk model can learn from the recorded history. Together
with involuntary churn (about a quarter of it) churn runs at about 3.3 % a month.

What the data look like (20,000 customers, default config)
---------------------------------------------------------
Of the customers alive at ``as_of``: ~14 % signed up within 30 days (~43 % of whom have not
completed onboarding), ~11 % have a default card expiring within 30 days (~2.5 % already
expired, mostly yearly plans not yet renewed), ~4.5 % have an unpaid failed invoice, ~14 % show
declining usage (the last 14 days below half of the prior 14, which were at least 4; summing
``quantity`` of ``login`` and ``feature_use``), ~2.7 % are paused, ~1.5 % are trialing.

Activity (:mod:`.activity`): ``login`` and ``feature_use`` rows, one per customer, kind and day
with a ``quantity``, cover the 60 full days before ``as_of``'s date, between 09:00 and 23:00 UTC;
``milestone`` rows (``onboarding_completed``) cover the customer's life, ``support_ticket`` rows
(named by topic) the history window. About 2 % of customers carry an email ``unsubscribe``
suppression; their consent flag is left as it was (the suppression must win).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from experiments.simulation.activity import ACTIVITY_DAYS, activity_columns
from experiments.simulation.columns import (
    ActivityColumns,
    Bools,
    CustomerColumns,
    InvoiceColumns,
    LatentColumns,
    PaymentMethodColumns,
    SubscriptionColumns,
    SuppressionColumns,
)
from experiments.simulation.lifecycle import (
    CANCEL_REASONS,
    DAY,
    NEVER,
    PLANS,
    Clock,
    Life,
    Start,
    draw_signups,
    mrr_cents,
)

__all__ = [
    "ActivityColumns",
    "BusinessConfig",
    "CustomerColumns",
    "InvoiceColumns",
    "LatentColumns",
    "PaymentMethodColumns",
    "SubscriptionColumns",
    "SuppressionColumns",
    "SyntheticBusiness",
    "business_blocks",
    "generate_business",
]


@dataclass(frozen=True)
class BusinessConfig:
    """What to generate: how many customers, the seed, the moment the data describe, history length."""

    customers: int = 20_000
    seed: int = 7
    as_of: datetime = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    history_days: int = 365

    def __post_init__(self) -> None:
        if self.customers < 1:
            raise ValueError(f"BusinessConfig.customers must be at least 1, got {self.customers}")
        if self.seed < 0:
            raise ValueError(f"BusinessConfig.seed must be a non-negative integer, got {self.seed}")
        if self.as_of.utcoffset() is None:
            raise ValueError(
                f"BusinessConfig.as_of must be timezone-aware, got naive {self.as_of.isoformat()};"
                " use e.g. datetime(2026, 11, 2, 9, tzinfo=UTC)"
            )
        if self.history_days < ACTIVITY_DAYS:
            raise ValueError(
                f"BusinessConfig.history_days must be at least {ACTIVITY_DAYS} (the activity"
                f" window), got {self.history_days}"
            )


@dataclass(frozen=True, eq=False)
class SyntheticBusiness:
    """The whole business at ``config.as_of``, one column table per database table."""

    config: BusinessConfig
    customers: CustomerColumns
    subscriptions: SubscriptionColumns
    invoices: InvoiceColumns
    payment_methods: PaymentMethodColumns
    activity: ActivityColumns
    suppressions: SuppressionColumns
    latent: LatentColumns


_COUNTRIES = ("US", "GB", "SE", "DE")
_COUNTRY_SHARE = np.array([0.45, 0.20, 0.20, 0.15])
_LOCALES = np.array(["en", "en", "sv", "de"])
_TIMEZONES = np.array(["Europe/London", "Europe/Stockholm", "Europe/Berlin"])
_PHONE_PREFIX = ("+1", "+447", "+467", "+4915")  # US area code or mobile prefix follows
_US_AREAS = np.array(["212", "305", "312", "415", "512", "617", "646", "718"])
_FIRST = (
    ["James", "Mary", "Robert", "Patricia", "Michael", "Linda", "David", "Emily", "Daniel", "Ava"],
    ["Oliver", "Amelia", "George", "Isla", "Harry", "Olivia", "Jack", "Sophie", "Noah", "Grace"],
    ["Erik", "Anna", "Lars", "Maria", "Karl", "Åsa", "Johan", "Sofia", "Björn", "Elin"],
    ["Lukas", "Hannah", "Jonas", "Lea", "Felix", "Marie", "Jürgen", "Lena", "Paul", "Sophie"],
)
_LAST = (
    ["Smith", "Johnson", "Brown", "Miller", "Davis", "Garcia", "Wilson", "Moore", "Clark", "Lee"],
    ["Taylor", "Evans", "Walker", "Wright", "Hughes", "Green", "Hall", "Wood", "Patel", "Khan"],
    [
        "Andersson",
        "Johansson",
        "Karlsson",
        "Nilsson",
        "Eriksson",
        "Larsson",
        "Öberg",
        "Lindqvist",
        "Berg",
        "Ström",
    ],
    [
        "Müller",
        "Schmidt",
        "Schneider",
        "Fischer",
        "Weber",
        "Meyer",
        "Wagner",
        "Becker",
        "Schulz",
        "Hoffmann",
    ],
)
_ASCII = str.maketrans({"å": "a", "ä": "a", "ö": "o", "ü": "u", "ß": "ss", "é": "e"})


def _customers(
    rng: np.random.Generator, clock: Clock, start: Start, offset: int
) -> CustomerColumns:
    """Names, contact details and consent; phones are unique E.164 numbers for ~70 %."""
    n = len(start.signup)
    country = np.searchsorted(np.cumsum(_COUNTRY_SHARE)[:-1], rng.random(n), side="right")
    first = (rng.random(n) * 10).astype(np.int64)
    last = (rng.random(n) * 10).astype(np.int64)
    has_phone = rng.random(n) < 0.70
    west = rng.random(n) < 0.4
    area = _US_AREAS[(rng.random(n) * len(_US_AREAS)).astype(np.int64)]
    email_consent = rng.random(n) < 0.90
    sms_consent = has_phone & (rng.random(n) < 0.55)
    index = np.arange(offset, offset + n, dtype=np.int64)
    digits = np.array([7, 9, 8, 8])[country]  # after the prefix
    # i -> i * 7919993 mod 10^d is a bijection (7919993 is prime to 10): numbers never repeat.
    subscriber = (index * 7_919_993 + 1_234_567) % (10**digits)
    names: list[str] = []
    emails: list[str] = []
    phones: list[str | None] = []
    for i in range(n):
        c = int(country[i])
        given, family = _FIRST[c][first[i]], _LAST[c][last[i]]
        names.append(f"{given} {family}")
        emails.append(f"{given}.{family}.{offset + i}@example.com".lower().translate(_ASCII))
        if not has_phone[i]:
            phones.append(None)
        else:
            prefix = _PHONE_PREFIX[c] + (area[i] if c == 0 else "")
            phones.append(f"{prefix}{subscriber[i]:0{digits[i]}d}")
    timezone = np.where(
        country == 0,
        np.where(west, "America/Los_Angeles", "America/New_York"),
        _TIMEZONES[np.maximum(country - 1, 0)],
    )
    return CustomerColumns(
        external_id=np.array([f"cus_{i:06d}" for i in range(offset, offset + n)]),
        name=np.array(names),
        email=np.array(emails),
        phone=np.array(phones, dtype=object),
        locale=_LOCALES[country],
        timezone=timezone,
        country=np.array(_COUNTRIES)[country],
        email_consent=email_consent,
        sms_consent=sms_consent,
        created_at=clock.times(start.signup),
    )


def _subscriptions(life: Life) -> SubscriptionColumns:
    """Each customer's subscription as it stands at as_of."""
    s, clock = life.s, life.clock
    n = len(s.signup)
    k_next = np.where(life.yearly, (life.last_k // 12 + 1) * 12, life.last_k + 1)
    period_end = np.where(life.last_k < 0, s.anchor, life.due(k_next))
    past_due = life.alive & life.owing & ~life.paused
    status = np.select(
        [~life.alive, life.paused, past_due, s.anchor >= 0],
        ["canceled", "paused", "past_due", "trialing"],
        "active",
    )
    plans = np.array(PLANS)
    changed = life.prev_plan >= 0
    previous_mrr = mrr_cents(np.maximum(life.prev_plan, 0), life.prev_yearly)
    return SubscriptionColumns(
        customer=np.arange(n, dtype=np.int64),
        plan=plans[life.plan],
        billing_interval=np.where(life.yearly, "year", "month"),
        mrr_cents=mrr_cents(life.plan, life.yearly),
        status=status,
        started_at=clock.times(s.signup),
        current_period_end=clock.times(period_end),
        paused_at=clock.times(life.paused_at),
        canceled_at=clock.times(life.churn),
        cancel_reason=np.array(
            [CANCEL_REASONS[r] if r >= 0 else None for r in life.reason.tolist()], dtype=object
        ),
        previous_plan=np.array(
            [PLANS[p] if p >= 0 else None for p in life.prev_plan.tolist()], dtype=object
        ),
        previous_mrr_cents=np.array(
            [
                m if c else None
                for m, c in zip(previous_mrr.tolist(), changed.tolist(), strict=True)
            ],
            dtype=object,
        ),
        previous_billing_interval=np.array(
            [
                ("year" if y else "month") if c else None
                for y, c in zip(life.prev_yearly.tolist(), changed.tolist(), strict=True)
            ],
            dtype=object,
        ),
        plan_changed_at=clock.times(life.changed),
    )


def _invoices(life: Life) -> InvoiceColumns:
    customer, amount, due, paid, attempts = (
        np.concatenate(c) for c in zip(*life.invoices, strict=True)
    )
    order = np.lexsort((due, customer))
    return InvoiceColumns(
        customer=customer[order],
        amount_cents=amount[order],
        status=np.where(paid[order] < NEVER, "paid", "failed"),
        attempts=attempts[order],
        due_at=life.clock.times(due[order]),
        paid_at=life.clock.times(paid[order]),
    )


def _payment_methods(rng: np.random.Generator, life: Life) -> PaymentMethodColumns:
    customer, created, expiry = (np.concatenate(c) for c in zip(*life.cards, strict=True))
    order = np.lexsort((created, customer))
    customer, created, expiry = customer[order], created[order], expiry[order]
    newest = np.append(customer[1:] != customer[:-1], True)
    m = len(customer)
    brand = np.array(["visa", "mastercard", "amex"])[
        np.searchsorted([0.55, 0.9], rng.random(m), side="right")
    ]
    next_month = (expiry + 1).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    last_day = (next_month - 1).astype("datetime64[D]")
    return PaymentMethodColumns(
        customer=customer,
        brand=brand,
        last4=np.char.zfill((rng.random(m) * 10_000).astype(np.int64).astype(str), 4),
        exp_month=expiry % 12 + 1,
        exp_year=1970 + expiry // 12,
        expires_on=last_day,
        is_default=newest,
        created_at=life.clock.times(created),
    )


def _suppressions(rng: np.random.Generator, life: Life, email_consent: Bools) -> SuppressionColumns:
    """~2 % of customers unsubscribed from email at a uniform time between signup and as_of."""
    u = rng.random((2, len(email_consent)))
    who = np.flatnonzero(email_consent & (u[0] < 0.022))
    signup = life.s.signup[who]
    at = signup + (u[1, who] * -signup).astype(np.int64)
    m = len(who)
    return SuppressionColumns(
        customer=who.astype(np.int64),
        channel=np.full(m, "email"),
        reason=np.full(m, "unsubscribe"),
        source=np.full(m, "email_link"),
        created_at=life.clock.times(at),
    )


BLOCK = 25_000
"""Customers simulated together, each block with its own generator seeded by (seed, block):
memory stays bounded whatever the number of customers, and the output does not depend on how a
caller streams it."""


def business_blocks(config: BusinessConfig) -> Iterator[SyntheticBusiness]:
    """The business of :func:`generate_business` in blocks of :data:`BLOCK` customers, in order.

    Each block's rows refer to customers by their global index; its ``config.customers`` is the
    whole business's count.
    """
    for offset in range(0, config.customers, BLOCK):
        yield _block(config, offset, min(BLOCK, config.customers - offset))


def _block(config: BusinessConfig, offset: int, n: int) -> SyntheticBusiness:
    rng = np.random.default_rng([config.seed, offset // BLOCK])
    clock = Clock(as_of=int(config.as_of.timestamp()), history=config.history_days * DAY)
    start = draw_signups(rng, clock, n)
    customers = _customers(rng, clock, start, offset)
    life = Life(rng, clock, start)
    life.run()
    now = np.zeros(n, np.int64)
    latent = LatentColumns(
        engagement=start.workdays * 0.96 / 7,
        payment_decline_rate=start.decline_rate,
        declining=life.alive & np.logical_or(*life.low_usage(now)),
        disengaged=life.alive & life.low_usage(now)[1],
        monthly_hazard=np.where(life.alive, life.hazard(now), np.nan),
    )
    block = SyntheticBusiness(
        config=config,
        customers=customers,
        subscriptions=_subscriptions(life),
        invoices=_invoices(life),
        payment_methods=_payment_methods(rng, life),
        activity=activity_columns(rng, life),
        suppressions=_suppressions(rng, life, customers.email_consent),
        latent=latent,
    )
    return _shifted(block, offset) if offset else block


_TABLES = ("subscriptions", "invoices", "payment_methods", "activity", "suppressions")


def _shifted(block: SyntheticBusiness, offset: int) -> SyntheticBusiness:
    """The block with its rows' customer indices moved from block-local to global."""
    moved = {
        name: replace(getattr(block, name), customer=getattr(block, name).customer + offset)
        for name in _TABLES
    }
    return replace(block, **moved)


def generate_business(config: BusinessConfig) -> SyntheticBusiness:
    """The synthetic business described in the module docstring; same config, same bytes.

    Holds every row in memory: stream large businesses with :func:`business_blocks` instead.
    """
    blocks = list(business_blocks(config))
    if len(blocks) == 1:
        return blocks[0]

    def joined(name: str) -> Any:
        parts = [getattr(b, name) for b in blocks]
        kind = type(parts[0])
        return kind(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(kind)}
        )

    return SyntheticBusiness(
        config=config,
        **{name: joined(name) for name in ("customers", *_TABLES, "latent")},
    )
