"""Column tables of the synthetic business: one frozen dataclass of numpy arrays per table.

Rows refer to customers by their 0-based index. Timestamps are ``datetime64[s]`` in UTC with
``NaT`` for NULL, dates ``datetime64[D]``, nullable strings ``object`` arrays holding ``None``.
The arrays are read-only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
Strs = npt.NDArray[np.str_]
Objects = npt.NDArray[np.object_]
Times = npt.NDArray[np.datetime64]


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
    previous_plan: Objects  # before the last plan or interval change, else None
    previous_mrr_cents: Objects  # int or None
    previous_billing_interval: Objects  # str or None
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
    """``activity_events``: one row per customer, kind and day, with the day's ``quantity``.

    Usage older than 60 days is kept as weekly totals: one ``login`` / ``feature_use`` row per
    customer, kind and week, named ``"week"``, at the week's last event.
    """

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

    engagement: Floats  # chance of being active on a given day, before declines and pauses
    payment_decline_rate: Floats  # chance that a charge on a valid card fails
    declining: Bools  # usage fallen at as_of (a passing dip or a disengagement)
    disengaged: Bools  # usage fallen for good (until a rare recovery), the strong churn signal
    monthly_hazard: Floats  # voluntary churn hazard at as_of (NaN once canceled)
