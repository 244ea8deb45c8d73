"""The deterministic synthetic subscription business behind ``retain demo``.

A SaaS with three plans — starter ($19/mo), team ($49/mo), business ($99/mo) — billed monthly or
yearly (12 × the monthly price, minus 15 %). :func:`generate_business` returns its customer data as
of ``config.as_of``, column by column, ready for :func:`models.seed.seed_business`. The same config
always gives byte-identical output (one seeded ``numpy`` Generator, a fixed order of draws).

How the history is made
-----------------------
Customers sign up over the last ``history_days`` with a steadily growing flow (a further quarter
signed up one to three years earlier and are alive when the history starts). A quarter of signups
start with a 14-day trial. Each customer's life is then stepped through month by month from the
billing anchor (signup, or trial end); in every month, in this order:

1. *Pause* (monthly plans): 1.5 % pause for 1–3 months (no invoices while paused).
2. *Plan change* (monthly plans): 1.2 % downgrade a tier, 0.8 % upgrade; at a yearly renewal 12 %
   switch to monthly billing (the invoices show the shortened interval).
3. *Invoice* at the period start. The first attempt fails when the card has expired (45 % of
   customers replace an expiring card in time) or, at random, with a per-customer decline rate
   (Beta(1.2, 30), mean 4 %). A declined payment succeeds on retry 2 (day 3, 45 %) or retry 3
   (day 7, 40 % of the rest); after an expired card 60 % of customers add a new card within a week
   and pay at once. An invoice still unpaid 21 days after it was due ends the subscription
   (``cancel_reason = 'payment_failed'``): involuntary churn. At ``as_of`` the customers inside
   that grace period are ``past_due``.
4. *Voluntary churn* during the month with the monthly hazard below (time uniform in the month).
5. *Usage*: a non-declining customer starts a usage decline with probability 20 %; a declining one
   recovers with probability 60 %. A decline cuts daily activity to 15 % of the customer's level.
6. *Support tickets*: Poisson, rate 0.05 + 0.25·declining + 0.6·failed payment this month.

Voluntary churn hazard (per month, applied only inside the history window)::

    h = 0.011 × Π HAZARD_RATIOS[signal] for each signal present at the start of the month

with the signals: a failed first payment attempt within 90 days (×2.0), usage declining (×3.0),
onboarding not completed 14+ days after signup (×2.5), paused (×2.5), a downgrade within 90 days
(×1.8), billing interval shortened within 180 days (×1.8), a support ticket within 30 days (×1.3),
first three months (×1.5), tenure of a year or more (×0.7), yearly billing (×0.3), starter plan
(×1.15), business plan (×0.85). The signals take effect from the month after they appear, so they
are early warnings a churn-risk model can learn from the recorded history. Together with
involuntary churn this gives roughly 3 % churn a month.

What the data look like at ``as_of`` (20,000 customers, default seed): ~13 % of live customers
signed up within 30 days, ~45 % of those have not completed onboarding, ~12 % of live customers'
default card expires within 30 days (a card-reissue wave: 9 % of cards are issued to expire in the
``as_of`` month), ~5 % have an unpaid failed invoice, ~15 % show declining usage (activity in the
last 14 days below half of the prior 14 days, which was at least 4), ~3 % are paused.

Activity rows (``login`` and ``feature_use``, one row per customer, kind and calendar day with a
``quantity``) cover the 60 full days before ``as_of``; ``milestone`` rows (``onboarding_completed``)
and ``support_ticket`` rows cover the customer's life and the history window respectively. About
2 % of customers carry an email ``unsubscribe`` suppression (their consent flag is left as it was:
the suppression must win).

All times are UTC; columns hold ``datetime64[s]`` (``NaT`` for NULL), dates ``datetime64[D]``,
nullable strings as ``object`` arrays with ``None``. Rows refer to customers by their 0-based index.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
Strs = npt.NDArray[np.str_]
Objects = npt.NDArray[np.object_]
Times = npt.NDArray[np.datetime64]

PLANS = ("starter", "team", "business")
MONTHLY_PRICE_CENTS = (1900, 4900, 9900)
YEARLY_PRICE_CENTS = tuple(price * 12 * 85 // 100 for price in MONTHLY_PRICE_CENTS)
BASE_MONTHLY_HAZARD = 0.011
HAZARD_RATIOS = MappingProxyType(
    {
        "failed_payment_90d": 2.0,
        "declining_usage": 3.0,
        "onboarding_stalled": 2.5,
        "paused": 2.5,
        "downgraded_90d": 1.8,
        "interval_shortened_180d": 1.8,
        "support_ticket_30d": 1.3,
        "first_three_months": 1.5,
        "tenure_year_plus": 0.7,
        "yearly_billing": 0.3,
        "starter_plan": 1.15,
        "business_plan": 0.85,
    }
)
_MONTHLY = np.array(MONTHLY_PRICE_CENTS)
_YEARLY = np.array(YEARLY_PRICE_CENTS)
CANCEL_REASONS = (
    "payment_failed",
    "not_using",
    "too_expensive",
    "missing_features",
    "switched_to_competitor",
    "other",
)

DAY = 86_400
MONTH = 30.4375 * DAY
NEVER = 2**60  # "no such time" in the simulation's seconds-relative-to-as_of clock
_TRIAL = 14 * DAY
_GRACE = 27 * DAY  # unpaid this long after the due date: canceled (shorter than any month)
_RETRY = 4 * DAY
_ACTIVITY_DAYS = 60


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
        if self.history_days < _ACTIVITY_DAYS:
            raise ValueError(
                f"BusinessConfig.history_days must be at least {_ACTIVITY_DAYS} (the activity"
                f" window), got {self.history_days}"
            )


class _Columns:
    """Shared behaviour of the column tables: length, and arrays made read-only."""

    def __post_init__(self) -> None:
        for value in vars(self).values():
            if isinstance(value, np.ndarray):
                value.flags.writeable = False

    def __len__(self) -> int:
        return len(next(iter(vars(self).values())))


@dataclass(frozen=True, eq=False)
class CustomerColumns(_Columns):
    """``customers``; row i is customer index i, ``external_id`` ``"cus_%06d" % i``."""

    external_id: Strs
    name: Strs
    email: Strs
    phone: Objects  # E.164 str or None
    locale: Strs
    timezone: Strs
    country: Strs
    email_consent: Bools
    sms_consent: Bools
    created_at: Times


@dataclass(frozen=True, eq=False)
class SubscriptionColumns(_Columns):
    """``subscriptions``: exactly one per customer, in customer order."""

    customer: Ints
    plan: Strs
    billing_interval: Strs  # "month" | "year"
    mrr_cents: Ints  # the plan's monthly value; for canceled ones the MRR lost
    status: Strs
    started_at: Times
    current_period_end: Times
    paused_at: Times
    canceled_at: Times
    cancel_reason: Objects
    previous_plan: Objects
    plan_changed_at: Times


@dataclass(frozen=True, eq=False)
class InvoiceColumns(_Columns):
    """``invoices`` (each belongs to its customer's one subscription), by customer and due date."""

    customer: Ints
    amount_cents: Ints
    status: Strs  # "paid" | "failed"
    attempts: Ints
    due_at: Times
    paid_at: Times


@dataclass(frozen=True, eq=False)
class PaymentMethodColumns(_Columns):
    """``payment_methods``: every card a customer added; the newest is the default."""

    customer: Ints
    brand: Strs
    last4: Strs
    exp_month: Ints
    exp_year: Ints
    expires_on: npt.NDArray[np.datetime64]  # datetime64[D], last day of the expiry month
    is_default: Bools
    created_at: Times


@dataclass(frozen=True, eq=False)
class ActivityColumns(_Columns):
    """``activity_events``: one row per customer, kind and day, with the day's ``quantity``."""

    customer: Ints
    kind: Strs
    name: Objects
    occurred_at: Times
    quantity: Ints


@dataclass(frozen=True, eq=False)
class SuppressionColumns(_Columns):
    """``suppressions`` seeded before ``as_of`` (email unsubscribes)."""

    customer: Ints
    channel: Strs
    reason: Strs
    source: Strs
    created_at: Times


@dataclass(frozen=True, eq=False)
class LatentColumns(_Columns):
    """What the data only hint at, per customer, for the response model and for checks."""

    engagement: Floats  # probability of being active on a given day, before declines and pauses
    payment_decline_rate: Floats  # chance that a charge on a valid card fails
    declining: Bools  # inside a usage decline at as_of
    monthly_hazard: Floats  # voluntary churn hazard at as_of (NaN once canceled)


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


@dataclass(frozen=True)
class _Clock:
    """Simulation time: integer seconds relative to ``as_of`` (negative = in the past)."""

    as_of: int  # seconds since the Unix epoch
    history: int  # seconds of history before as_of

    def month_of(self, t: Ints) -> Ints:
        """Calendar month index (months since 1970-01) of each time."""
        days = ((t + self.as_of) // DAY).astype("datetime64[D]")
        return days.astype("datetime64[M]").astype(np.int64)

    def month_start(self, month: Ints) -> Ints:
        days = np.asarray(month).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
        return days * DAY - self.as_of

    def times(self, t: Ints) -> Times:
        """``datetime64[s]`` for each time; ``NaT`` where the time is ±NEVER."""
        missing = np.abs(t) >= NEVER
        out = (np.where(missing, 0, t) + self.as_of).astype("datetime64[s]")
        out[missing] = np.datetime64("NaT")
        return out


@dataclass(frozen=True)
class _Start:
    """Who the customers are when they sign up (drawn before the history is stepped through)."""

    signup: Ints
    old: Bools  # signed up before the history window (survivors at its start)
    anchor: Ints  # first invoice: signup, or the end of the trial
    plan: Ints
    yearly: Bools
    decline_rate: Floats
    onboarded: Ints  # time onboarding was completed, NEVER if it never is
    workdays: Ints  # weekdays on which the customer usually works in the product (1-4)


def _signups(rng: np.random.Generator, clock: _Clock, n: int) -> _Start:
    """Signup times (growing flow over the history, plus an older cohort), plans and traits."""
    span = clock.history / DAY
    growth = 0.0045  # per day: the flow roughly doubles every five months
    u = rng.random(n)
    old = rng.random(n) < 0.25
    floor = np.exp(-growth * span)
    recent = np.log(u * (1 - floor) + floor) / growth  # days, exponential density on [-span, 0]
    earlier = -span - u * 730
    signup = np.minimum((np.where(old, earlier, recent) * DAY).astype(np.int64), -60)
    trial = rng.random(n) < 0.25
    plan = np.searchsorted(np.array([0.5, 0.85]), rng.random(n), side="right").astype(np.int64)
    yearly = rng.random(n) < np.array([0.14, 0.22, 0.35])[plan]
    completes = rng.random(n) < np.where(old, 0.95, 0.78)
    delay = (rng.exponential(8.0, n) * DAY).astype(np.int64) + 3600
    return _Start(
        signup=signup,
        old=old,
        anchor=signup + np.where(trial, _TRIAL, 0),
        plan=plan,
        yearly=yearly,
        decline_rate=rng.beta(1.5, 20.0, n),
        onboarded=np.where(completes, signup + delay, NEVER),
        workdays=1 + rng.binomial(3, rng.beta(3.0, 4.0, n)),
    )


class _Life:
    """Steps every customer through their billing months up to ``as_of`` (mutable, internal)."""

    def __init__(self, rng: np.random.Generator, clock: _Clock, start: _Start) -> None:
        n = len(start.signup)
        self.rng, self.clock, self.s = rng, clock, start
        self.plan, self.yearly = start.plan.copy(), start.yearly.copy()
        self.alive = np.ones(n, bool)
        self.churn = np.full(n, NEVER)
        self.reason = np.full(n, -1)
        self.prev_plan = np.full(n, -1)
        self.changed = np.full(n, -NEVER)
        self.switched = np.full(n, -NEVER)
        self.last_fail = np.full(n, -NEVER)
        self.last_ticket = np.full(n, -NEVER)
        self.paused = np.zeros(n, bool)
        self.paused_at = np.full(n, -NEVER)
        self.pause_until = np.zeros(n, np.int64)
        self.pause_from = np.full(n, NEVER)  # latest pause, for the activity
        self.pause_to = np.full(n, NEVER)
        self.decl_on = np.full(n, NEVER)
        self.decl_off = np.full(n, NEVER)
        self.owing = np.zeros(n, bool)  # latest invoice unpaid
        self.last_k = np.full(n, -1)
        anchor_month = clock.month_of(start.anchor)
        into = start.anchor - clock.month_start(anchor_month)
        self.anchor_month = anchor_month
        self.anchor_offset = np.minimum(into // DAY, 27) * DAY + into % DAY  # bill by the 28th
        self.card_exp = np.zeros(n, np.int64)
        self.card_created = np.zeros(n, np.int64)
        self.cards: list[tuple[Ints, Ints, Ints]] = []
        self.invoices: list[tuple[Ints, ...]] = []
        self.tickets: list[tuple[Ints, Ints, Bools]] = []
        self._add_cards(np.ones(n, bool), start.signup)

    def due(self, k: Ints | int) -> Ints:
        """Start of billing month ``k`` (0 = the anchor) for every customer."""
        d = self.clock.month_start(self.anchor_month + k) + self.anchor_offset
        return np.where(np.asarray(k) == 0, self.s.anchor, d)

    def _add_cards(self, who: Bools, when: Ints) -> None:
        """Customers ``who`` add a card at ``when``; a 9 % reissue wave expires in as_of's month."""
        u = self.rng.random((2, len(who)))
        idx = np.flatnonzero(who)
        created = self.clock.month_of(when[idx])
        wave_month = self.clock.month_of(np.zeros(1, np.int64))[0]
        wave = (u[0, idx] < 0.09) & (wave_month >= created + 2) & (wave_month <= created + 48)
        expiry = np.where(wave, wave_month, created + 2 + (u[1, idx] * 47).astype(np.int64))
        self.card_exp[idx], self.card_created[idx] = expiry, when[idx]
        self.cards.append((idx, when[idx], expiry))

    def signals(self, t: Ints) -> dict[str, Bools]:
        """The early-warning signals (keys of HAZARD_RATIOS) of every customer at time ``t``."""
        tenure = t - self.s.signup
        return {
            "failed_payment_90d": self.last_fail >= t - 90 * DAY,
            "declining_usage": (self.decl_on <= t) & (t < self.decl_off),
            "onboarding_stalled": (self.s.onboarded > t) & (tenure >= 14 * DAY),
            "paused": self.paused.copy(),
            "downgraded_90d": (self.prev_plan > self.plan) & (self.changed >= t - 90 * DAY),
            "interval_shortened_180d": self.switched >= t - 180 * DAY,
            "support_ticket_30d": self.last_ticket >= t - 30 * DAY,
            "first_three_months": tenure < 3 * MONTH,
            "tenure_year_plus": tenure >= 365 * DAY,
            "yearly_billing": self.yearly.copy(),
            "starter_plan": self.plan == 0,
            "business_plan": self.plan == 2,
        }

    def hazard(self, t: Ints) -> Floats:
        """Monthly voluntary churn hazard at ``t`` (see the module docstring)."""
        log_h = np.full(len(self.alive), np.log(BASE_MONTHLY_HAZARD))
        for name, present in self.signals(t).items():
            log_h += np.log(HAZARD_RATIOS[name]) * present
        return np.exp(log_h)

    def run(self) -> None:
        last = self.clock.month_of(np.zeros(1, np.int64))[0] - self.anchor_month.min() + 1
        for k in range(int(last) + 1):
            self.step(k)

    def step(self, k: int) -> None:
        start, end = self.due(k), self.due(k + 1)
        act = self.alive & (start < 0)
        if not act.any():
            return
        u = self.rng.random((18, len(act)))
        self.last_k[act] = k
        self._pause_and_plan(k, act, start, u)
        billed = act & ~self.paused & (~self.yearly | (k % 12 == 0))
        failed, paid_at, pay_attempts, lost, new_card = self._charge(billed, start, u)
        self._churn(act, start, end, lost, u)
        stop = np.minimum(np.minimum(end, 0), self.churn)  # end of the month as lived
        paid = billed & ((paid_at < stop) | ~failed)
        attempts = np.where(paid, pay_attempts, 1 + (start + _RETRY < stop))
        price = np.where(self.yearly, _YEARLY[self.plan], _MONTHLY[self.plan])
        idx = np.flatnonzero(billed)
        paid_at = np.where(paid, paid_at, NEVER)
        self.invoices.append((idx, price[idx], start[idx], paid_at[idx], attempts[idx]))
        self.owing[idx] = ~paid[idx]
        self._add_cards(new_card & paid, paid_at)
        self._usage_and_tickets(act, start, end, stop, failed, u)

    def _pause_and_plan(self, k: int, act: Bools, start: Ints, u: Floats) -> None:
        resume = act & self.paused & (k >= self.pause_until)
        self.paused[resume] = False
        self.pause_to[resume] = start[resume]
        self.paused_at[resume] = -NEVER
        monthly = act & ~self.yearly & (k >= 1)
        pause = monthly & ~self.paused & (u[0] < 0.015)
        self.paused[pause] = True
        self.paused_at[pause] = start[pause] - (u[1][pause] * 5 * DAY).astype(np.int64)
        self.pause_from[pause], self.pause_to[pause] = self.paused_at[pause], NEVER
        self.pause_until[pause] = k + 1 + (u[2][pause] * 3).astype(np.int64)
        change = monthly & ~self.paused
        down = change & (self.plan > 0) & (u[3] < 0.012)
        up = change & ~down & (self.plan < 2) & (u[3] > 1 - 0.008)
        moved = down | up
        self.prev_plan[moved] = self.plan[moved]
        self.changed[moved] = start[moved] - (u[4][moved] * 10 * DAY).astype(np.int64)
        self.plan += up.astype(np.int64) - down.astype(np.int64)
        switch = act & self.yearly & (k >= 12) & (k % 12 == 0) & (u[5] < 0.12)
        self.yearly[switch] = False
        self.switched[switch] = start[switch]

    def _charge(
        self, billed: Bools, start: Ints, u: Floats
    ) -> tuple[Bools, Ints, Ints, Bools, Bools]:
        """Charge the invoice due at ``start``: (failed first, paid at, attempts, lost, new card).

        An expired card is replaced in time by 45 %; otherwise the charge fails, as it does at
        random with the customer's decline rate. A declined charge succeeds on the retry on day 4
        for 35 %; of the rest (and of the expired), 70 % fix their payment details at a uniform
        time within the 27-day grace period and pay at once. Before the history window everyone
        pays (those customers are known to be alive at its start).
        """
        expired = billed & (self.clock.month_start(self.card_exp + 1) <= start)
        in_time = expired & (u[6] < 0.45)
        replaced_at = self.clock.month_start(self.card_exp + 1) - (u[7] * 20 * DAY).astype(np.int64)
        self._add_cards(in_time, np.maximum(replaced_at, self.card_created + DAY))
        hard = expired & ~in_time
        failed = billed & (hard | (u[8] < self.s.decline_rate))
        self.last_fail[failed] = start[failed]
        retry = failed & ~hard & (u[9] < 0.35)
        fix = failed & ~retry & ((u[10] < 0.70) | (start < -self.clock.history))
        fix_at = start + DAY + (u[11] * (_GRACE - 2 * DAY)).astype(np.int64)
        paid_at = np.select(
            [~failed, retry, fix],
            [start, start + _RETRY, fix_at],
            NEVER,
        )
        attempts = np.select([~failed, retry], [1, 2], 2 + (fix_at > start + _RETRY))
        new_card = fix & (hard | (u[17] < 0.5))
        return failed, paid_at, attempts, failed & ~retry & ~fix, new_card

    def _churn(self, act: Bools, start: Ints, end: Ints, lost: Bools, u: Floats) -> None:
        """Voluntary churn with the monthly hazard; involuntary at the end of the grace period."""
        lo, hi = np.maximum(start, -self.clock.history), np.minimum(end, 0)
        exposure = np.clip(hi - lo, 0, None)
        signals = self.signals(start)
        chance = 1 - np.exp(-self.hazard(start) * exposure / MONTH)
        voluntary = np.where(
            act & (u[12] < chance), lo + (u[13] * exposure).astype(np.int64), NEVER
        )
        cutoff = start + _GRACE
        involuntary = np.where(lost & (cutoff < 0) & (start >= -self.clock.history), cutoff, NEVER)
        when = np.minimum(voluntary, involuntary)
        gone = when < NEVER
        disengaged = signals["declining_usage"] | signals["onboarding_stalled"]
        other = 2 + (u[14] * 4).astype(np.int64)
        reason = np.where(involuntary <= voluntary, 0, np.where(disengaged, 1, other))
        self.churn[gone], self.reason[gone], self.alive[gone] = when[gone], reason[gone], False

    def _usage_and_tickets(
        self, act: Bools, start: Ints, end: Ints, stop: Ints, failed: Bools, u: Floats
    ) -> None:
        """Usage declines start (20 %) or end (60 %) within the month; support tickets arrive."""
        declining = (self.decl_on <= start) & (start < self.decl_off)
        when = start + (u[15] * (end - start)).astype(np.int64)
        recover = act & declining & (u[16] < 0.60)
        onset = act & ~declining & (u[16] < 0.20)
        self.decl_off[recover] = when[recover]
        self.decl_on[onset], self.decl_off[onset] = when[onset], NEVER
        lived = np.clip(stop - start, 0, None)
        rate = (0.05 + 0.25 * declining + 0.6 * failed) * lived / MONTH
        count = self.rng.poisson(np.where(act, rate, 0.0))
        who = np.repeat(np.arange(len(act)), count)
        at = start[who] + (self.rng.random(len(who)) * lived[who]).astype(np.int64)
        np.maximum.at(self.last_ticket, who, at)
        self.tickets.append((who, at, failed[who]))


_COUNTRIES = ("US", "GB", "SE", "DE")
_COUNTRY_SHARE = np.array([0.45, 0.20, 0.20, 0.15])
_LOCALES = np.array(["en", "en", "sv", "de"])
_TIMEZONES = np.array(["Europe/London", "Europe/Stockholm", "Europe/Berlin"])
_PHONE_PREFIX = ("+1", "+447", "+467", "+4915")  # US area code or mobile prefix follows
_US_AREAS = np.array(["212", "305", "312", "415", "512", "617", "646", "718"])
_FIRST = (
    "James Mary Robert Patricia Michael Linda David Emily Daniel Ava".split(),
    "Oliver Amelia George Isla Harry Olivia Jack Sophie Noah Grace".split(),
    "Erik Anna Lars Maria Karl Åsa Johan Sofia Björn Elin".split(),
    "Lukas Hannah Jonas Lea Felix Marie Jürgen Lena Paul Sophie".split(),
)
_LAST = (
    "Smith Johnson Brown Miller Davis Garcia Wilson Moore Clark Lee".split(),
    "Taylor Evans Walker Wright Hughes Green Hall Wood Patel Khan".split(),
    "Andersson Johansson Karlsson Nilsson Eriksson Larsson Öberg Lindqvist Berg Ström".split(),
    "Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann".split(),
)
_ASCII = str.maketrans({"å": "a", "ä": "a", "ö": "o", "ü": "u", "ß": "ss", "é": "e"})


def _customers(rng: np.random.Generator, clock: _Clock, start: _Start) -> CustomerColumns:
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
    index = np.arange(n, dtype=np.int64)
    digits = np.array([7, 9, 8, 8])[country]  # after the prefix
    # i -> i * 7919993 mod 10^d is a bijection (7919993 is prime to 10): numbers never repeat.
    subscriber = (index * 7_919_993 + 1_234_567) % (10**digits)
    names, emails, phones = [], [], []
    for i in range(n):
        c = int(country[i])
        given, family = _FIRST[c][first[i]], _LAST[c][last[i]]
        names.append(f"{given} {family}")
        emails.append(f"{given}.{family}.{i}@example.com".lower().translate(_ASCII))
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
        external_id=np.array([f"cus_{i:06d}" for i in range(n)]),
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


def _subscriptions(life: _Life) -> SubscriptionColumns:
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
    mrr = np.where(
        life.yearly, np.round(_YEARLY / 12).astype(np.int64)[life.plan], _MONTHLY[life.plan]
    )
    plans = np.array(PLANS)
    return SubscriptionColumns(
        customer=np.arange(n, dtype=np.int64),
        plan=plans[life.plan],
        billing_interval=np.where(life.yearly, "year", "month"),
        mrr_cents=mrr,
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
        plan_changed_at=clock.times(life.changed),
    )


def _invoices(life: _Life) -> InvoiceColumns:
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


def _payment_methods(rng: np.random.Generator, life: _Life) -> PaymentMethodColumns:
    customer, created, expiry = (np.concatenate(c) for c in zip(*life.cards, strict=True))
    order = np.lexsort((created, customer))
    customer, created, expiry = customer[order], created[order], expiry[order]
    newest = np.append(customer[1:] != customer[:-1], True)
    m = len(customer)
    brand = np.array(["visa", "mastercard", "amex"])[
        np.searchsorted([0.55, 0.9], rng.random(m), side="right")
    ]
    last_day = (expiry + 1).astype("datetime64[M]").astype("datetime64[D]") - np.timedelta64(1, "D")
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


def _usage(rng: np.random.Generator, life: _Life) -> tuple[Ints, Strs, Ints, Ints]:
    """``login`` and ``feature_use`` rows for the 60 full calendar days before as_of's date.

    A customer works on their own ``workdays`` weekdays, each with probability 80 %, scaled down
    to 15 % inside a usage decline, to 10 % while paused and to 50 % before onboarding is
    completed (weekly routines keep two 14-day windows comparable).
    """
    s, clock = life.s, life.clock
    today = (clock.as_of // DAY) * DAY - clock.as_of
    days = today - DAY * np.arange(_ACTIVITY_DAYS, 0, -1)
    gone = np.minimum(life.churn, 0)
    who = np.flatnonzero((s.signup < today) & (gone > days[0]))
    lo = np.maximum(days[None, :], s.signup[who, None])
    hi = np.minimum(days[None, :] + DAY, gone[who, None])
    span = np.clip(hi - lo, 0, None)
    mid = (lo + hi) // 2

    def inside(on: Ints, off: Ints) -> Bools:
        return (on[who, None] <= mid) & (mid < off[who, None])

    ranks = np.argsort(np.argsort(rng.random((len(who), 5)), axis=1), axis=1)
    routine = np.zeros((len(who), 7), bool)
    routine[:, :5] = ranks < s.workdays[who, None]
    weekday = ((clock.as_of + days) // DAY + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    rate = (
        0.8
        * routine[:, weekday]
        * np.where(inside(life.decl_on, life.decl_off), 0.15, 1.0)
        * np.where(inside(life.pause_from, life.pause_to), 0.10, 1.0)
        * np.where(s.onboarded[who, None] > mid, 0.5, 1.0)
    )
    u = rng.random((4, *span.shape))
    login = (span >= 600) & (u[0] < rate * span / DAY)
    feature = login & (u[1] < 0.6)
    rows, cols = np.nonzero(login)
    frow, fcol = np.nonzero(feature)
    customer = np.concatenate([who[rows], who[frow]])
    at = np.concatenate(
        [
            lo[rows, cols] + (u[2][rows, cols] * span[rows, cols]).astype(np.int64),
            lo[frow, fcol] + (u[3][frow, fcol] * span[frow, fcol]).astype(np.int64),
        ]
    )
    quantity = np.concatenate(
        [1 + rng.binomial(2, 0.3, len(rows)), 2 + rng.binomial(4, 0.5, len(frow))]
    )
    kind = np.repeat(np.array(["login", "feature_use"]), [len(rows), len(frow)])
    return customer, kind, at, quantity


def _tickets(rng: np.random.Generator, life: _Life) -> tuple[Ints, Objects, Ints, Ints]:
    """Support tickets in the history window, one row per customer and day with the count."""
    customer, at, billing = (np.concatenate(c) for c in zip(*life.tickets, strict=True))
    keep = at >= -life.clock.history
    customer, at, billing = customer[keep], at[keep], billing[keep]
    topics = np.array(["bug", "how_to", "feature_request"])[(rng.random(len(at)) * 3).astype(int)]
    topic = np.where(billing & (rng.random(len(at)) < 0.7), "billing", topics)
    day = (at + life.clock.as_of) // DAY
    order = np.lexsort((at, day, customer))
    customer, at, day, topic = customer[order], at[order], day[order], topic[order]
    first = np.ones(len(at), bool)
    first[1:] = (customer[1:] != customer[:-1]) | (day[1:] != day[:-1])
    starts = np.flatnonzero(first)
    quantity = np.diff(np.append(starts, len(at)))
    return customer[starts], topic[starts].astype(object), at[starts], quantity


def _activity(rng: np.random.Generator, life: _Life) -> ActivityColumns:
    customer, kind, at, quantity = _usage(rng, life)
    names: Objects = np.full(len(at), None, dtype=object)
    t_customer, t_name, t_at, t_quantity = _tickets(rng, life)
    done = life.s.onboarded < np.minimum(life.churn, 0)
    m_customer = np.flatnonzero(done)
    parts = [
        (customer, kind, names, at, quantity),
        (t_customer, np.full(len(t_at), "support_ticket"), t_name, t_at, t_quantity),
        (
            m_customer,
            np.full(len(m_customer), "milestone"),
            np.full(len(m_customer), "onboarding_completed", dtype=object),
            life.s.onboarded[m_customer],
            np.ones(len(m_customer), np.int64),
        ),
    ]
    c, k, nm, t, q = (np.concatenate(col) for col in zip(*parts, strict=True))
    order = np.lexsort((k, t, c))
    return ActivityColumns(
        customer=c[order].astype(np.int64),
        kind=k[order],
        name=nm[order],
        occurred_at=life.clock.times(t[order]),
        quantity=q[order].astype(np.int64),
    )


def _suppressions(
    rng: np.random.Generator, life: _Life, email_consent: Bools
) -> SuppressionColumns:
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


def generate_business(config: BusinessConfig) -> SyntheticBusiness:
    """The synthetic business described in the module docstring; same config, same bytes."""
    rng = np.random.default_rng(config.seed)
    clock = _Clock(as_of=int(config.as_of.timestamp()), history=config.history_days * DAY)
    start = _signups(rng, clock, config.customers)
    customers = _customers(rng, clock, start)
    life = _Life(rng, clock, start)
    life.run()
    now = np.zeros(config.customers, np.int64)
    latent = LatentColumns(
        engagement=start.workdays * 0.8 / 7,
        payment_decline_rate=start.decline_rate,
        declining=life.alive & life.signals(now)["declining_usage"],
        monthly_hazard=np.where(life.alive, life.hazard(now), np.nan),
    )
    return SyntheticBusiness(
        config=config,
        customers=customers,
        subscriptions=_subscriptions(life),
        invoices=_invoices(life),
        payment_methods=_payment_methods(rng, life),
        activity=_activity(rng, life),
        suppressions=_suppressions(rng, life, customers.email_consent),
        latent=latent,
    )
