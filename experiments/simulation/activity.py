"""Activity rows: a year of product usage (daily for 60 days, weekly before), support tickets and
milestones."""

from __future__ import annotations

import numpy as np

from experiments.simulation.columns import ActivityColumns, Bools, Ints, Objects, Strs
from experiments.simulation.lifecycle import DAY, Life

ACTIVITY_DAYS = 60  # days before as_of's date with one row per customer, kind and day
_SLAB = 28  # days simulated at once (bounded memory); whole weeks in the weekly part


def _inside(episodes: tuple[Ints, Ints, Ints], position: Ints, mids: Ints, m: int) -> Bools:
    """(m, days) mask: the customer (row ``position[customer]``) is inside an episode at mid-day."""
    customer, on, off = episodes
    row = position[customer]
    keep = row >= 0
    row, on, off = row[keep], on[keep], off[keep]
    diff = np.zeros((m, len(mids) + 1), np.int32)
    np.add.at(diff, (row, np.searchsorted(mids, on, side="left")), 1)
    np.add.at(diff, (row, np.searchsorted(mids, off, side="left")), -1)
    return np.cumsum(diff[:, :-1], axis=1) > 0


def _usage(rng: np.random.Generator, life: Life) -> tuple[Ints, Strs, Objects, Ints, Ints]:
    """``login`` and ``feature_use`` rows over the history window, up to as_of's date.

    Each customer has a weekly routine: ``workdays`` fixed weekdays (about 70 % of them also
    feature days) with a habitual number of logins (1–3) and feature uses (2–4) a day, sometimes
    one more. A routine day is kept with probability 96 %, cut to 15 % of that during a dip or a
    disengagement, to 10 % while paused and to 50 % before onboarding is completed. Routines keep
    two 14-day windows comparable, so "last 14 days below half the prior 14" mostly means a real
    fall in usage. The last 60 days give one row per customer, kind and day; older days are
    summed per customer, kind and week (rows named ``"week"``, at the week's last event), which
    keeps a year of history small while 14- and 28-day windows stay measurable to within days.
    Days are simulated in slabs of four weeks, so memory stays bounded by the customers times 28.
    """
    s, clock = life.s, life.clock
    n = len(s.signup)
    today = (clock.as_of // DAY) * DAY - clock.as_of
    ranks = np.argsort(np.argsort(rng.random((n, 5)), axis=1), axis=1)
    routine = np.zeros((n, 7), bool)
    routine[:, :5] = ranks < s.workdays[:, None]
    feature_days = routine & (rng.random((n, 7)) < 0.7)
    habit = np.stack([1 + rng.binomial(2, 0.5, n), 2 + rng.binomial(2, 0.5, n)])
    lows, pauses = life.episodes("low"), life.episodes("pause")
    gone = np.minimum(life.churn, 0)
    history = int(clock.history // DAY)
    daily = min(ACTIVITY_DAYS, history)
    slabs = [np.arange(b, max(b - _SLAB, daily), -1) for b in range(history, daily, -_SLAB)]
    slabs += [np.arange(b, max(b - _SLAB, 0), -1) for b in range(daily, 0, -_SLAB)]
    parts = []
    for back in slabs:
        days = today - DAY * back
        who = np.flatnonzero((s.signup < days[-1] + DAY) & (gone > days[0]))
        m = len(who)
        if m == 0:
            continue
        position = np.full(n, -1)
        position[who] = np.arange(m)
        # Activity happens between 09:00 and 23:00 UTC (working hours from Berlin to Los Angeles).
        lo = np.maximum(days[None, :] + 9 * 3600, s.signup[who, None])
        hi = np.minimum(days[None, :] + 23 * 3600, gone[who, None])
        span = np.clip(hi - lo, 0, None)
        mids = days + 16 * 3600
        weekday = ((clock.as_of + days) // DAY + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        keep = (
            0.96
            * np.where(_inside(lows, position, mids, m), 0.15, 1.0)
            * np.where(_inside(pauses, position, mids, m), 0.10, 1.0)
            * np.where(s.onboarded[who, None] > mids[None, :], 0.5, 1.0)
            * np.minimum(span / (14 * 3600), 1.0)
        )
        u = rng.random((5, m, len(days)))
        login = routine[who][:, weekday] & (span >= 600) & (u[0] < keep)
        feature = login & feature_days[who][:, weekday]
        weekly = back[0] > daily
        for k, (mask, extra) in enumerate(((login, 0.2), (feature, 0.3))):
            rows, cols = np.nonzero(mask)
            at = lo[rows, cols] + (u[1 + k][rows, cols] * span[rows, cols]).astype(np.int64)
            quantity = habit[k, who[rows]] + (u[3 + k][rows, cols] < extra)
            if weekly and len(rows):
                week = (back[cols] - daily - 1) // 7
                starts = np.flatnonzero(
                    np.append(True, (rows[1:] != rows[:-1]) | (week[1:] != week[:-1]))
                )
                rows = rows[starts]
                at = np.maximum.reduceat(at, starts)
                quantity = np.add.reduceat(quantity, starts)
            name = np.full(len(rows), "week" if weekly else None, dtype=object)
            kind = np.full(len(rows), ("login", "feature_use")[k])
            parts.append((who[rows], kind, name, at, quantity.astype(np.int64)))
    if not parts:
        empty = np.zeros(0, np.int64)
        return empty, np.zeros(0, "<U11"), np.zeros(0, object), empty, empty
    customer, kind, name, at, quantity = (np.concatenate(c) for c in zip(*parts, strict=True))
    return customer, kind, name, at, quantity


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
    customer, kind, names, at, quantity = _usage(rng, life)
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
    code = np.zeros(len(k), np.int8)  # the kinds in alphabetical order, sorted as integers
    for i, name in enumerate(("login", "milestone", "support_ticket"), start=1):
        code[k == name] = i
    order = np.lexsort((code, t, c))
    return ActivityColumns(
        customer=c[order].astype(np.int64),
        kind=k[order],
        name=nm[order],
        occurred_at=life.clock.times(t[order]),
        quantity=q[order].astype(np.int64),
    )
