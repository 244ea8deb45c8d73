"""The demo's response model: how synthetic customers react to an experiment's messages and
offers, and the planted true effect of every arm on every metric.

Each experiment has one *response* R per customer, chosen by its primary metric: the card is
updated (``card_updated_14d``), onboarding is completed (``onboarding_completed_14d``), a failed
payment is recovered (``payment_recovered_14d``: the customer updates the card and the invoice they
owed is paid) or an offer is accepted (any arm with an ``offer``). R happens within 14 days of assignment:

* without any message with probability ``b = base + engagement_slope * e`` (``e`` in [0, 1] is the
  customer's engagement: usage over the last 28 days / 40, capped at 1), on a day uniform in [0, 14);
* each step of the arm that is actually delivered (the demo reads the outbox) converts a customer
  who would not otherwise respond with probability ``lift[channel]`` (or the offer's lift), on a day
  uniform in [at, 14). Steps apply in time order, so for steps that reach the customer
  ``pi = 1 - (1 - b) * prod_k (1 - lift_k)``. Only someone who got an offer can accept it.

R then drives everything downstream over 90 days:

* churn: the subscription is canceled with probability ``Q1`` (R happened) or ``Q0`` (it did not),
  at a time uniform on (0, 90) days, so ``P(canceled before day t) = Q * t / 90``;
* revenue: every renewal in the 90 days (the first at ``subscription.days_to_renewal``, then every
  billing interval) is paid if the customer has not churned by then; after an accepted discount the
  renewals within its months pay ``100 - percent`` %, after an accepted pause they are skipped;
  a recovered payment also pays what the customer owed at assignment (``owed_cents``);
* unsubscribes: every delivered email unsubscribes with probability 0.015 and every SMS opts out
  (STOP) with probability 0.03, independently of R.

**Planted true effect** of an arm on a metric: the average, over the experiment's assigned customers
(all arms), of ``E[metric | arm] - E[metric | baseline arm]`` under this model, given each customer's
features and which channels can reach them (address, consent, suppressions). It is the quantity
the difference in means estimates. :mod:`experiments.simulation.realise` draws outcomes from the
same model; ``tests/test_response.py`` checks that the two agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from experiments.spec import Arm, ExperimentSpec

WINDOW_DAYS = 14.0
HORIZON_DAYS = 90.0
UNSUBSCRIBE = {"email": 0.015, "sms": 0.03}
INTERVAL_DAYS = {"month": 30.0, "quarter": 91.0, "year": 365.0}
INTERVAL_MONTHS = {"month": 1, "quarter": 3, "year": 12}


@dataclass(frozen=True)
class Family:
    """The planted parameters of one kind of intervention."""

    response: str  # the metric that is R
    condition: str  # the step condition (``unless``) that is true once R has happened
    base: float
    engagement_slope: float
    lift: dict[str, float]
    churn_if_response: float
    churn_otherwise: float
    offer_lift: dict[str, float] = field(default_factory=dict)
    offer_churn: dict[str, float] = field(default_factory=dict)
    pays_owed: bool = False  # R settles what the customer owed at assignment


FAMILIES: dict[str, Family] = {
    "card_updated_14d": Family(
        "card_updated_14d",
        "payment_method_updated",
        0.20,
        0.20,
        {"email": 0.25, "sms": 0.30},
        0.06,
        0.30,
    ),
    "onboarding_completed_14d": Family(
        "onboarding_completed_14d",
        "onboarding_completed",
        0.15,
        0.25,
        {"email": 0.20, "sms": 0.25},
        0.08,
        0.30,
    ),
    # Dunning: many customers fix a failed payment on their own (the bank's retry, a new card);
    # a kind, direct reminder with the update link converts a quarter of the rest, an SMS more.
    # Who never pays is canceled when the grace period ends.
    "payment_recovered_14d": Family(
        "payment_recovered_14d",
        "invoice_paid",
        0.30,
        0.20,
        {"email": 0.22, "sms": 0.30},
        0.05,
        0.80,
        pays_owed=True,
    ),
    "offer_accepted_14d": Family(
        "offer_accepted_14d",
        "offer_accepted",
        0.0,
        0.0,
        {},
        0.12,
        0.35,
        offer_lift={"discount": 0.25, "pause": 0.18},
        offer_churn={"discount": 0.12, "pause": 0.15},
    ),
}


def family_for(spec: ExperimentSpec) -> Family:
    """The response family of an experiment: the offer family if any arm makes an offer, otherwise
    the one named by its primary metric."""
    if any(arm.offer is not None for arm in spec.arms):
        return FAMILIES["offer_accepted_14d"]
    try:
        return FAMILIES[spec.metrics.primary]
    except KeyError:
        raise ValueError(
            f"the demo has no response model for primary metric {spec.metrics.primary!r}; "
            f"use one of {sorted(FAMILIES)}"
        ) from None


@dataclass(frozen=True)
class Population:
    """The experiment's customers as the response model sees them (arrays of equal length)."""

    customer_ids: np.ndarray  # int
    engagement: np.ndarray  # float in [0, 1]
    reach_email: np.ndarray  # bool: address, consent and no suppression
    reach_sms: np.ndarray  # bool
    mrr_cents: np.ndarray  # int
    billing_interval: tuple[str, ...]
    days_to_renewal: np.ndarray  # float, >= 0
    owed_cents: np.ndarray | None = None  # int: unpaid invoices at assignment (dunning)

    def __len__(self) -> int:
        return len(self.customer_ids)

    def reach(self, channel: str) -> np.ndarray:
        return self.reach_email if channel == "email" else self.reach_sms


def engagement(usage_last_14d: np.ndarray, usage_prior_14d: np.ndarray) -> np.ndarray:
    return np.minimum(1.0, (usage_last_14d + usage_prior_14d) / 40.0)


def step_day(arm: Arm, index: int) -> float:
    return arm.steps[index].at.total_seconds() / 86400.0


def step_lift(family: Family, arm: Arm, channel: str) -> float:
    """The share of would-be non-responders a delivered step converts."""
    if arm.offer is not None:
        return family.offer_lift.get(arm.offer.kind, 0.0)
    return family.lift.get(channel, 0.0)


def base_rate(family: Family, pop: Population) -> np.ndarray:
    return family.base + family.engagement_slope * pop.engagement


def churn_rates(family: Family, arm: Arm) -> tuple[float, float]:
    """(Q if R happened, Q otherwise): the probability of canceling within 90 days."""
    if arm.offer is not None:
        q1 = family.offer_churn.get(arm.offer.kind, family.churn_if_response)
        return q1, family.churn_otherwise
    return family.churn_if_response, family.churn_otherwise


def renewals(pop: Population) -> tuple[np.ndarray, np.ndarray]:
    """Renewal days within the horizon (n x k, NaN where none) and each customer's renewal amount
    in cents."""
    interval = np.array([INTERVAL_DAYS.get(b, 30.0) for b in pop.billing_interval])
    months = np.array([INTERVAL_MONTHS.get(b, 1) for b in pop.billing_interval])
    k = np.arange(int(HORIZON_DAYS // min(INTERVAL_DAYS.values())) + 1)
    days = pop.days_to_renewal[:, None] + interval[:, None] * k[None, :]
    days = np.where(days < HORIZON_DAYS, days, np.nan)
    return days, pop.mrr_cents * months


def renewal_factor(arm: Arm, days: np.ndarray) -> np.ndarray:
    """Share of the renewal amount paid on each renewal day once the arm's offer is accepted."""
    if arm.offer is None:
        return np.ones_like(days)
    in_offer = days < arm.offer.months * 30.0
    keep = 0.0 if arm.offer.kind == "pause" else 1.0 - (arm.offer.percent or 0) / 100.0
    return np.where(in_offer, keep, 1.0)


def expected_metric(metric: str, spec: ExperimentSpec, arm: Arm, pop: Population) -> np.ndarray:
    """E[metric] per customer if assigned to ``arm``, under the model in the module docstring."""
    family = family_for(spec)
    pi = base_rate(family, pop)
    sources: list[tuple[np.ndarray, float]] = [(pi.copy(), 0.0)]  # (P(R from source), first day)
    responded_before: list[np.ndarray] = []
    order = sorted(range(len(arm.steps)), key=lambda i: arm.steps[i].at)
    for index in order:
        step, day = arm.steps[index], step_day(arm, index)
        responded_before.append(
            sum(
                (p * np.clip((day - s) / (WINDOW_DAYS - s), 0.0, 1.0) for p, s in sources),
                np.zeros(len(pop)),
            )
        )
        if day < WINDOW_DAYS:
            gain = (1.0 - pi) * step_lift(family, arm, step.channel) * pop.reach(step.channel)
            sources.append((gain, day))
            pi = pi + gain
    if metric == family.response:
        return pi
    q1, q0 = churn_rates(family, arm)
    if metric.startswith("retained_"):
        days = float(metric.removeprefix("retained_").removesuffix("d"))
        return 1.0 - (pi * q1 + (1.0 - pi) * q0) * days / HORIZON_DAYS
    if metric == "revenue_90d":
        renew_days, amount = renewals(pop)
        paid_if_r = np.nansum(
            (1.0 - q1 * renew_days / HORIZON_DAYS) * renewal_factor(arm, renew_days), axis=1
        )
        paid_otherwise = np.nansum(1.0 - q0 * renew_days / HORIZON_DAYS, axis=1)
        revenue = (pi * paid_if_r + (1.0 - pi) * paid_otherwise) * amount / 100.0
        if family.pays_owed and pop.owed_cents is not None:
            revenue = revenue + pi * pop.owed_cents / 100.0
        return revenue
    sent = [
        (
            arm.steps[index].channel,
            pop.reach(arm.steps[index].channel)
            * (1.0 - (before if arm.steps[index].unless == family.condition else 0.0)),
        )
        for index, before in zip(order, responded_before, strict=True)
    ]
    if metric == "unsubscribed_30d":
        stay = np.ones(len(pop))
        for channel, p_sent in sent:
            stay = stay * (1.0 - UNSUBSCRIBE[channel] * p_sent)
        return 1.0 - stay
    if metric == "net_revenue_90d":
        costs = spec.analysis.costs
        spent = sum(
            (
                p_sent * (costs.email if channel == "email" else costs.sms)
                for channel, p_sent in sent
            ),
            np.zeros(len(pop)),
        )
        if arm.offer is not None:
            spent = spent + pi * costs.offer.get(arm.offer.kind, 0.0)
        return expected_metric("revenue_90d", spec, arm, pop) - spent
    return np.zeros(len(pop))


def planted_effects(
    spec: ExperimentSpec, pop: Population, metrics: Sequence[str]
) -> dict[tuple[str, str], float]:
    """(metric, arm) -> the planted true absolute effect versus the baseline arm."""
    baseline = spec.arm(spec.baseline)
    out: dict[tuple[str, str], float] = {}
    for metric in metrics:
        reference = expected_metric(metric, spec, baseline, pop)
        for arm in spec.arms:
            if arm.name != baseline.name:
                diff = expected_metric(metric, spec, arm, pop) - reference
                out[(metric, arm.name)] = float(diff.mean()) if len(pop) else 0.0
    return out
