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

import numpy as np
import numpy.typing as npt

