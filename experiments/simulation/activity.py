"""Activity rows: daily product usage in the last 60 days, support tickets and milestones."""

from __future__ import annotations

import numpy as np

from experiments.simulation.columns import ActivityColumns, Bools, Ints, Objects, Strs
from experiments.simulation.lifecycle import DAY, Life

ACTIVITY_DAYS = 60


def _usage(rng: np.random.Generator, life: Life) -> tuple[Ints, Strs, Ints, Ints]:
    """``login`` and ``feature_use`` rows for the 60 full calendar days before as_of's date.

    Each customer has a weekly routine: ``workdays`` fixed weekdays (about 70 % of them also
    feature days) with a habitual number of logins (1–3) and feature uses (2–4) a day, sometimes
    one more. A routine day is kept with probability 96 %, cut to 15 % of that during a dip or a
    disengagement, to 10 % while paused and to 50 % before onboarding is completed. Routines keep
    two 14-day windows comparable, so "last 14 days below half the prior 14" mostly means a real
    fall in usage.
    """
    s, clock = life.s, life.clock
    today = (clock.as_of // DAY) * DAY - clock.as_of
    days = today - DAY * np.arange(ACTIVITY_DAYS, 0, -1)
    gone = np.minimum(life.churn, 0)
    who = np.flatnonzero((s.signup < today) & (gone > days[0]))
    m = len(who)
    # Activity happens between 09:00 and 23:00 UTC (working hours from Berlin to Los Angeles).
    lo = np.maximum(days[None, :] + 9 * 3600, s.signup[who, None])
    hi = np.minimum(days[None, :] + 23 * 3600, gone[who, None])
    span = np.clip(hi - lo, 0, None)
    mid = (lo + hi) // 2

    def inside(on: Ints, off: Ints) -> Bools:
        return (on[who, None] <= mid) & (mid < off[who, None])

    ranks = np.argsort(np.argsort(rng.random((m, 5)), axis=1), axis=1)
    routine = np.zeros((m, 7), bool)
    routine[:, :5] = ranks < s.workdays[who, None]
    feature_days = routine & (rng.random((m, 7)) < 0.7)
    weekday = ((clock.as_of + days) // DAY + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    keep = (
        0.96
        * np.where(inside(life.decl_on, life.decl_off), 0.15, 1.0)
        * np.where(inside(life.pause_from, life.pause_to), 0.10, 1.0)
        * np.where(s.onboarded[who, None] > mid, 0.5, 1.0)
        * np.minimum(span / (14 * 3600), 1.0)
    )
    u = rng.random((5, m, len(days)))
    login = routine[:, weekday] & (span >= 600) & (u[0] < keep)
    feature = login & feature_days[:, weekday]
    habit = np.stack([1 + rng.binomial(2, 0.5, m), 2 + rng.binomial(2, 0.5, m)])
    rows, cols = np.nonzero(login)
    frow, fcol = np.nonzero(feature)
    customer = np.concatenate([who[rows], who[frow]])
    at = np.concatenate(
        [
            lo[rows, cols] + (u[1][rows, cols] * span[rows, cols]).astype(np.int64),
            lo[frow, fcol] + (u[2][frow, fcol] * span[frow, fcol]).astype(np.int64),
        ]
    )
    quantity = np.concatenate(
        [
            habit[0, rows] + (u[3][rows, cols] < 0.2),
            habit[1, frow] + (u[4][frow, fcol] < 0.3),
        ]
    )
    kind = np.repeat(np.array(["login", "feature_use"]), [len(rows), len(frow)])
    return customer, kind, at, quantity


def _tickets(rng: np.random.Generator, life: Life) -> tuple[Ints, Objects, Ints, Ints]:
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


def activity_columns(rng: np.random.Generator, life: Life) -> ActivityColumns:
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
