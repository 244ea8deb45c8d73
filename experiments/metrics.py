"""The metric catalogue: what an experiment file may name under ``metrics``.

Each metric is measured per assigned customer over a window that starts at assignment. ``models``
holds the SQL for each one (``models/metric_sql.py``); a test checks the two stay in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MetricKind = Literal["binary", "continuous"]
MetricRole = Literal["primary", "secondary", "guardrail"]


@dataclass(frozen=True)
class MetricDefinition:
    name: str
    kind: MetricKind
    window_days: int
    description: str
    unit: str = ""
    higher_is_better: bool = True
    """The metric's good direction: False for guardrails such as unsubscribes, where an increase
    is harm."""


CATALOGUE: dict[str, MetricDefinition] = {
    m.name: m
    for m in [
        MetricDefinition(
            "card_updated_14d",
            "binary",
            14,
            "added a new payment method within 14 days of assignment",
        ),
        MetricDefinition(
            "onboarding_completed_14d",
            "binary",
            14,
            "reached the 'onboarding_completed' milestone within 14 days",
        ),
        MetricDefinition(
            "offer_accepted_14d", "binary", 14, "accepted the arm's offer within 14 days"
        ),
        MetricDefinition(
            "payment_recovered_14d",
            "binary",
            14,
            "had an unpaid (failed or past-due) invoice at assignment and paid it, or a later "
            "invoice, within 14 days",
        ),
        MetricDefinition(
            "retained_30d", "binary", 30, "subscription not canceled 30 days after assignment"
        ),
        MetricDefinition(
            "retained_60d", "binary", 60, "subscription not canceled 60 days after assignment"
        ),
        MetricDefinition(
            "retained_90d", "binary", 90, "subscription not canceled 90 days after assignment"
        ),
        MetricDefinition(
            "revenue_90d",
            "continuous",
            90,
            "revenue from invoices paid within 90 days of assignment",
            unit="USD",
        ),
        MetricDefinition(
            "net_revenue_90d",
            "continuous",
            90,
            "revenue within 90 days minus the experiment's message and offer costs",
            unit="USD",
        ),
        MetricDefinition(
            "unsubscribed_30d",
            "binary",
            30,
            "unsubscribed or opted out of any channel within 30 days",
            higher_is_better=False,
        ),
    ]
}


def metric(name: str) -> MetricDefinition:
    """The catalogue entry for ``name``; KeyError lists the known names."""
    try:
        return CATALOGUE[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(sorted(CATALOGUE))}") from None
