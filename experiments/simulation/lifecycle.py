"""The month-by-month life of every customer: signups, billing, payments, usage and churn.

The model and its numbers are described in :mod:`experiments.simulation.business`. Time here is
integer seconds relative to ``as_of`` (negative = the past); ``NEVER`` stands for "no such time".
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from experiments.simulation.columns import Bools, Floats, Ints, Times

PLANS = ("starter", "team", "business")
MONTHLY_PRICE_CENTS = (1900, 4900, 9900)
YEARLY_PRICE_CENTS = tuple(price * 12 * 85 // 100 for price in MONTHLY_PRICE_CENTS)
BASE_MONTHLY_HAZARD = 0.007
HAZARD_RATIOS = MappingProxyType(
    {
        "failed_payment_90d": 2.0,
        "usage_dip": 1.3,
        "disengaged": 8.0,
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
CANCEL_REASONS = (
    "payment_failed",
    "not_using",
    "too_expensive",
    "missing_features",
    "switched_to_competitor",
    "other",
)

_MONTHLY = np.array(MONTHLY_PRICE_CENTS)
_YEARLY = np.array(YEARLY_PRICE_CENTS)
DAY = 86_400
MONTH = 30.4375 * DAY
NEVER = 2**60  # "no such time" in the simulation's seconds-relative-to-as_of clock
_TRIAL = 14 * DAY
_GRACE = 27 * DAY  # unpaid this long after the due date: canceled (shorter than any month)
_RETRY = 4 * DAY


def invoice_cents(plan: Ints, yearly: Bools) -> Ints:
    """The amount of one invoice: a month, or a year at 15 % off."""
    return np.where(yearly, _YEARLY[plan], _MONTHLY[plan])


def mrr_cents(plan: Ints, yearly: Bools) -> Ints:
    """Monthly recurring revenue: a yearly price counts as a twelfth per month."""
    return np.where(yearly, np.round(_YEARLY / 12).astype(np.int64)[plan], _MONTHLY[plan])


@dataclass(frozen=True)
class Clock:
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
class Start:
    """Who the customers are when they sign up (drawn before the history is stepped through)."""

    signup: Ints
    old: Bools  # signed up before the history window (survivors at its start)
    anchor: Ints  # first invoice: signup, or the end of the trial
    plan: Ints
    yearly: Bools
    decline_rate: Floats
    onboarded: Ints  # time onboarding was completed, NEVER if it never is
    workdays: Ints  # weekdays on which the customer usually works in the product (1-3)


def draw_signups(rng: np.random.Generator, clock: Clock, n: int) -> Start:
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
    return Start(
        signup=signup,
        old=old,
        anchor=signup + np.where(trial, _TRIAL, 0),
        plan=plan,
        yearly=yearly,
        decline_rate=rng.beta(2.0, 14.0, n),
        onboarded=np.where(completes, signup + delay, NEVER),
        workdays=1 + rng.binomial(2, rng.beta(2.0, 3.0, n)),
    )


class Life:
    """Steps every customer through their billing months up to ``as_of`` (mutable, internal)."""

    def __init__(self, rng: np.random.Generator, clock: Clock, start: Start) -> None:
        n = len(start.signup)
        self.rng, self.clock, self.s = rng, clock, start
        self.plan, self.yearly = start.plan.copy(), start.yearly.copy()
        self.alive = np.ones(n, bool)
        self.churn = np.full(n, NEVER)
        self.reason = np.full(n, -1)
        self.prev_plan = np.full(n, -1)
        self.prev_yearly = np.zeros(n, bool)
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
        # Earlier (closed) pauses and low-usage episodes, kept for a year of activity.
        self.past_pauses: list[tuple[Ints, Ints, Ints]] = []
        self.past_lows: list[tuple[Ints, Ints, Ints]] = []
        self.disengaged = np.zeros(n, bool)  # the latest low-usage episode is not a passing dip
        self.owing = np.zeros(n, bool)  # latest invoice unpaid
        self.last_k = np.full(n, -1)
        anchor_month = clock.month_of(start.anchor)
        into = start.anchor - clock.month_start(anchor_month)
        self.anchor_month = anchor_month
        self.anchor_offset = np.minimum(into // DAY, 27) * DAY + into % DAY  # bill by the 28th
        self.card_exp = np.zeros(n, np.int64)
        self.card_created = np.zeros(n, np.int64)
        self.card_renew_at = np.full(n, NEVER)  # planned replacement before expiry (NEVER: none)
        self.cards: list[tuple[Ints, Ints, Ints]] = []
        self.invoices: list[tuple[Ints, ...]] = []
        self.tickets: list[tuple[Ints, Ints, Bools]] = []
        self._add_cards(np.ones(n, bool), start.signup)

    def due(self, k: Ints | int) -> Ints:
        """Start of billing month ``k`` (0 = the anchor) for every customer."""
        d = self.clock.month_start(self.anchor_month + k) + self.anchor_offset
        return np.where(np.asarray(k) == 0, self.s.anchor, d)

    def _add_cards(self, who: Bools, when: Ints) -> None:
        """Customers ``who`` add a card at ``when``; an 11 % reissue wave expires in as_of's month.

        60 % of cards are replaced before they expire, at a time uniform in the 20 days before
        the end of the expiry month (never before the card itself was added).
        """
        u = self.rng.random((4, len(who)))
        idx = np.flatnonzero(who)
        when = when[idx]  # a copy: ``when`` may be one of the arrays updated below
        created = self.clock.month_of(when)
        wave_month = self.clock.month_of(np.zeros(1, np.int64))[0]
        wave = (u[0, idx] < 0.11) & (wave_month >= created + 2) & (wave_month <= created + 48)
        expiry = np.where(wave, wave_month, created + 2 + (u[1, idx] * 47).astype(np.int64))
        expired_at = self.clock.month_start(expiry + 1)
        early = np.maximum(expired_at - (u[3, idx] * 20 * DAY).astype(np.int64), when + DAY)
        self.card_exp[idx], self.card_created[idx] = expiry, when
        self.card_renew_at[idx] = np.where(u[2, idx] < 0.60, early, NEVER)
        self.cards.append((idx, when, expiry))

    def signals(self, t: Ints) -> dict[str, Bools]:
        """The early-warning signals (keys of HAZARD_RATIOS) of every customer at time ``t``."""
        tenure = t - self.s.signup
        dip, gone = self.low_usage(t)
        return {
            "failed_payment_90d": self.last_fail >= t - 90 * DAY,
            "usage_dip": dip,
            "disengaged": gone,
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
        self._renew_cards(act, end)
        billed = act & ~self.paused & (~self.yearly | (k % 12 == 0))
        failed, paid_at, pay_attempts, lost, new_card = self._charge(billed, start, u)
        turn, factor = self._usage_turns(act, start, end, u)
        self._churn(act, start, end, lost, turn, factor, u)
        stop = np.minimum(np.minimum(end, 0), self.churn)  # end of the month as lived
        paid = billed & ((paid_at < stop) | ~failed)
        attempts = np.where(paid, pay_attempts, 1 + (start + _RETRY < stop))
        price = invoice_cents(self.plan, self.yearly)
        idx = np.flatnonzero(billed)
        paid_at = np.where(paid, paid_at, NEVER)
        self.invoices.append((idx, price[idx], start[idx], paid_at[idx], attempts[idx]))
        self.owing[idx] = ~paid[idx]
        self._add_cards(new_card & paid, paid_at)
        self._tickets(act, start, stop, failed)

    def _pause_and_plan(self, k: int, act: Bools, start: Ints, u: Floats) -> None:
        resume = act & self.paused & (k >= self.pause_until)
        self.paused[resume] = False
        self.pause_to[resume] = start[resume]
        self.paused_at[resume] = -NEVER
        monthly = act & ~self.yearly & (k >= 1)
        pause = monthly & ~self.paused & (u[0] < 0.025)
        ended = pause & (self.pause_from < NEVER)
        self.past_pauses.append(
            (np.flatnonzero(ended), self.pause_from[ended], self.pause_to[ended])
        )
        self.paused[pause] = True
        self.paused_at[pause] = start[pause] - (u[1][pause] * 5 * DAY).astype(np.int64)
        self.pause_from[pause], self.pause_to[pause] = self.paused_at[pause], NEVER
        self.pause_until[pause] = k + 1 + (u[2][pause] * 3).astype(np.int64)
        change = monthly & ~self.paused
        down = change & (self.plan > 0) & (u[3] < 0.012)
        up = change & ~down & (self.plan < 2) & (u[3] > 1 - 0.008)
        moved = down | up
        self.prev_plan[moved], self.prev_yearly[moved] = self.plan[moved], False
        self.changed[moved] = start[moved] - (u[4][moved] * 10 * DAY).astype(np.int64)
        self.plan += up.astype(np.int64) - down.astype(np.int64)
        switch = act & self.yearly & (k >= 12) & (k % 12 == 0) & (u[5] < 0.12)
        self.prev_plan[switch], self.prev_yearly[switch] = self.plan[switch], True
        self.yearly[switch] = False
        self.switched[switch] = self.changed[switch] = start[switch]

    def _renew_cards(self, act: Bools, end: Ints) -> None:
        """Replace the cards planned to be replaced before this month (and as_of) ends.

        A replacement inside the month leaves the charge at its start unchanged: the old card is
        still valid then (it is replaced before it expires).
        """
        now = act & (self.card_renew_at < np.minimum(end, 0))
        self._add_cards(now, self.card_renew_at)

    def _charge(
        self, billed: Bools, start: Ints, u: Floats
    ) -> tuple[Bools, Ints, Ints, Bools, Bools]:
        """Charge the invoice due at ``start``: (failed first, paid at, attempts, lost, new card).

        A charge on an expired card fails, as one on a valid card does with the customer's decline
        rate. 25 % of declined charges succeed on the retry on day 4; of the rest (and of the
        expired), 88 % fix their payment details within the 27-day grace period (later rather than
        sooner) and pay at once. Before the history window everyone pays (those customers are
        known to be alive at its start).
        """
        hard = billed & (self.clock.month_start(self.card_exp + 1) <= start)
        failed = billed & (hard | (u[8] < self.s.decline_rate))
        self.last_fail[failed] = start[failed]
        retry = failed & ~hard & (u[9] < 0.25)
        fix = failed & ~retry & ((u[10] < 0.88) | (start < -self.clock.history))
        fix_at = start + DAY + (np.sqrt(u[11]) * (_GRACE - 2 * DAY)).astype(np.int64)
        paid_at = np.select(
            [~failed, retry, fix],
            [start, start + _RETRY, fix_at],
            NEVER,
        )
        attempts = np.select([~failed, retry], [1, 2], 2 + (fix_at > start + _RETRY))
        new_card = fix & (hard | (u[17] < 0.5))
        return failed, paid_at, attempts, failed & ~retry & ~fix, new_card

    def episodes(self, kind: str) -> tuple[Ints, Ints, Ints]:
        """Every pause (``kind="pause"``) or low-usage episode (``"low"``) as (customer, on, off)."""
        past = self.past_pauses if kind == "pause" else self.past_lows
        on, off = (
            (self.pause_from, self.pause_to) if kind == "pause" else (self.decl_on, self.decl_off)
        )
        current = on < NEVER
        parts = [*past, (np.flatnonzero(current), on[current], off[current])]
        customer, start, stop = (np.concatenate(c) for c in zip(*parts, strict=True))
        return customer.astype(np.int64), start.astype(np.int64), stop.astype(np.int64)

    def low_usage(self, t: Ints) -> tuple[Bools, Bools]:
        """(in a usage dip, disengaged) at time ``t``."""
        low = (self.decl_on <= t) & (t < self.decl_off)
        return low & ~self.disengaged, low & self.disengaged

    def _usage_turns(self, act: Bools, start: Ints, end: Ints, u: Floats) -> tuple[Ints, Floats]:
        """Usage falls (a dip or a disengagement) or recovers; the hazard turns with it.

        Returns when the hazard changes within the month (NEVER if it does not) and the factor.
        """
        dip, gone = self.low_usage(start)
        when = start + 1 + (u[15] * (end - start - 1)).astype(np.int64)
        recover = act & gone & (self.decl_off == NEVER) & (u[16] < 0.60)
        self.decl_off[recover] = np.maximum(when, self.decl_on + 28 * DAY)[recover]
        normal = act & ~dip & ~gone
        new_dip = normal & (u[16] < 0.18)
        new_gone = normal & (u[16] >= 0.18) & (u[16] < 0.36)
        onset = new_dip | new_gone
        closed = onset & (self.decl_on < NEVER)
        self.past_lows.append((np.flatnonzero(closed), self.decl_on[closed], self.decl_off[closed]))
        self.disengaged[onset] = new_gone[onset]
        self.decl_on[onset] = when[onset]
        dip_length = (21 + u[17] * 21) * DAY
        self.decl_off[onset] = np.where(new_dip, when + dip_length.astype(np.int64), NEVER)[onset]
        dip_ratio, gone_ratio = HAZARD_RATIOS["usage_dip"], HAZARD_RATIOS["disengaged"]
        ends = act & (dip | gone) & (self.decl_off < end)  # low at start, so decl_off > start
        turn = np.select([onset, ends], [when, self.decl_off], NEVER)
        factor = np.select(
            [new_dip, new_gone, ends & dip, ends],
            [dip_ratio, gone_ratio, 1 / dip_ratio, 1 / gone_ratio],
            1.0,
        )
        return turn, factor

    def _churn(
        self, act: Bools, start: Ints, end: Ints, lost: Bools, turn: Ints, factor: Floats, u: Floats
    ) -> None:
        """Voluntary churn with the monthly hazard; involuntary at the end of the grace period.

        The hazard is constant within the month except at a usage turn, where it is multiplied by
        ``factor``; the churn time is drawn exactly from that piecewise-constant hazard.
        """
        lo, hi = np.maximum(start, -self.clock.history), np.minimum(end, 0)
        hi = np.maximum(hi, lo)
        pivot = np.clip(turn, lo, hi)
        signals = self.signals(start)
        rate = self.hazard(start) / MONTH  # per second
        first = rate * (pivot - lo)
        total = first + rate * factor * (hi - pivot)
        chance = -np.expm1(-total)
        drawn = -np.log1p(-u[13] * chance)  # cumulative hazard at the churn time, within [0, total]
        at = np.where(
            drawn < first, lo + drawn / rate, pivot + (drawn - first) / (rate * factor)
        ).astype(np.int64)
        voluntary = np.where(act & (u[12] < chance), np.clip(at, lo, hi - 1), NEVER)
        cutoff = start + _GRACE
        involuntary = np.where(lost & (cutoff < 0) & (start >= -self.clock.history), cutoff, NEVER)
        when = np.minimum(voluntary, involuntary)
        gone = when < NEVER
        disengaged = (
            signals["usage_dip"]
            | signals["disengaged"]
            | signals["onboarding_stalled"]
            | (turn < when)
        )
        other = 2 + (u[14] * 4).astype(np.int64)
        reason = np.where(involuntary <= voluntary, 0, np.where(disengaged, 1, other))
        self.churn[gone], self.reason[gone], self.alive[gone] = when[gone], reason[gone], False

    def _tickets(self, act: Bools, start: Ints, stop: Ints, failed: Bools) -> None:
        """Support tickets: Poisson, more while usage declines and after a failed payment."""
        declining = (self.decl_on <= start) & (start < self.decl_off)
        lived = np.clip(stop - start, 0, None)
        rate = (0.05 + 0.25 * declining + 0.6 * failed) * lived / MONTH
        count = self.rng.poisson(np.where(act, rate, 0.0))
        who = np.repeat(np.arange(len(act)), count)
        at = start[who] + (self.rng.random(len(who)) * lived[who]).astype(np.int64)
        np.maximum.at(self.last_ticket, who, at)
        self.tickets.append((who, at, failed[who]))
