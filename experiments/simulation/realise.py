"""Draw the demo's outcomes from the response model (:mod:`experiments.simulation.response`),
stage by stage as simulated time advances.

The demo creates one :class:`ResponseRun` per experiment after assignment, tells it which messages
were really delivered (read from the outbox) with :meth:`ResponseRun.deliver`, and writes the events
it returns. Events are released in time order (:meth:`ResponseRun.events_until`), so that when the
dispatcher checks a step's ``unless`` condition on day 3, the database holds exactly the responses
of days 0-2. :meth:`ResponseRun.finish` then draws churn and renewals over the 90 days.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from experiments.simulation.response import (
    HORIZON_DAYS,
    UNSUBSCRIBE,
    WINDOW_DAYS,
    Population,
    base_rate,
    churn_rates,
    family_for,
    renewal_factor,
    renewals,
    step_day,
    step_lift,
)
from experiments.spec import ExperimentSpec


@dataclass(frozen=True)
class Response:
    """R happened: the card was updated, onboarding completed or the offer accepted."""

    customer_id: int
    at: datetime


@dataclass(frozen=True)
class Unsubscribe:
    customer_id: int
    channel: str
    at: datetime


@dataclass(frozen=True)
class Cancellation:
    customer_id: int
    at: datetime


@dataclass(frozen=True)
class Renewal:
    customer_id: int
    at: datetime
    amount_cents: int


@dataclass(frozen=True)
class OfferMade:
    customer_id: int
    kind: str
    percent: int | None
    months: int
    at: datetime


@dataclass(frozen=True)
class Events:
    responses: list[Response]
    unsubscribes: list[Unsubscribe]
    offers: list[OfferMade]


@dataclass(frozen=True)
class FinalOutcomes:
    cancellations: list[Cancellation]
    renewals: list[Renewal]


class ResponseRun:
    """The stochastic outcomes of one experiment's customers (seeded, so reproducible)."""

    def __init__(
        self,
        spec: ExperimentSpec,
        pop: Population,
        arms: Sequence[str],
        assigned_at: datetime,
        seed: int,
    ) -> None:
        self.spec, self.pop, self.assigned_at = spec, pop, assigned_at
        self.family = family_for(spec)
        self.arms = np.asarray(arms)
        self.rng = np.random.default_rng(seed)
        n = len(pop)
        base = base_rate(self.family, pop)
        self.responded = self.rng.random(n) < base
        self.response_day = np.where(self.responded, self.rng.uniform(0.0, WINDOW_DAYS, n), np.nan)
        self.unsubscribed: list[Unsubscribe] = []
        self.offers: list[OfferMade] = []
        self.released_until = assigned_at
        self.index = {int(c): i for i, c in enumerate(pop.customer_ids)}

    def deliver(self, arm_name: str, step_index: int, sent_at: Mapping[int, datetime]) -> None:
        """Apply step ``step_index`` of ``arm_name`` to the customers it was delivered to."""
        arm = self.spec.arm(arm_name)
        step, day = arm.steps[step_index], step_day(arm, step_index)
        rows = np.array([self.index[c] for c in sorted(sent_at)], dtype=int)
        if len(rows) == 0:
            return
        if day < WINDOW_DAYS:
            lift = step_lift(self.family, arm, step.channel)
            convert = ~self.responded[rows] & (self.rng.random(len(rows)) < lift)
            converted = rows[convert]
            self.responded[converted] = True
            self.response_day[converted] = self.rng.uniform(day, WINDOW_DAYS, len(converted))
        if arm.offer is not None:
            self.offers.extend(
                OfferMade(c, arm.offer.kind, arm.offer.percent, arm.offer.months, sent_at[c])
                for c in sorted(sent_at)
            )
        quits = self.rng.random(len(rows)) < UNSUBSCRIBE[step.channel]
        delays = self.rng.uniform(0.0, 2.0, len(rows))
        for row, quit_, delay in zip(rows, quits, delays, strict=True):
            if quit_:
                customer = int(self.pop.customer_ids[row])
                self.unsubscribed.append(
                    Unsubscribe(customer, step.channel, sent_at[customer] + timedelta(days=delay))
                )

    def events_until(self, until: datetime) -> Events:
        """Events in [the previous call's ``until``, ``until``), to write before the next stage."""
        start, self.released_until = self.released_until, until

        def due(at: datetime) -> bool:
            return start <= at < until

        responses = [
            Response(int(self.pop.customer_ids[i]), self._at(self.response_day[i]))
            for i in np.flatnonzero(self.responded)
        ]
        return Events(
            responses=sorted(
                (r for r in responses if due(r.at)), key=lambda r: (r.at, r.customer_id)
            ),
            unsubscribes=[u for u in self.unsubscribed if due(u.at)],
            offers=[o for o in self.offers if due(o.at)],
        )

    def finish(self) -> FinalOutcomes:
        """Churn and renewals over the 90-day horizon, given who responded."""
        n = len(self.pop)
        churn_day = np.full(n, np.inf)
        renew_days, amount = renewals(self.pop)
        paid = np.zeros_like(renew_days)
        for arm in self.spec.arms:
            rows = np.flatnonzero(self.arms == arm.name)
            q1, q0 = churn_rates(self.family, arm)
            q = np.where(self.responded[rows], q1, q0)
            churns = self.rng.random(len(rows)) < q
            churn_day[rows] = np.where(
                churns, self.rng.uniform(0.0, HORIZON_DAYS, len(rows)), np.inf
            )
            factor = np.where(
                self.responded[rows, None], renewal_factor(arm, renew_days[rows]), 1.0
            )
            paid[rows] = factor * amount[rows, None]
        alive = renew_days < churn_day[:, None]  # NaN compares False: no renewal
        cancellations = [
            Cancellation(int(self.pop.customer_ids[i]), self._at(churn_day[i]))
            for i in np.flatnonzero(np.isfinite(churn_day))
        ]
        renewals_out = [
            Renewal(int(self.pop.customer_ids[i]), self._at(renew_days[i, k]), round(paid[i, k]))
            for i, k in zip(*np.nonzero(alive & (paid > 0)), strict=True)
        ]
        return FinalOutcomes(cancellations, renewals_out)

    def _at(self, day: float) -> datetime:
        return self.assigned_at + timedelta(days=float(day))
