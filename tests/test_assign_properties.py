"""Properties of assignment (hypothesis): the plain salted hash is deterministic, independent of
input order and sticky when customers are added; in the database, for any holdout share and
salt and any arm weights, the SQL gives the pure reference's arms, the holdout is its own arm and
never messaged, and nobody moves when more customers arrive (SQLite, and PostgreSQL via the
fixture)."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from experiments.assignment import HOLDOUT_ARM, assign, hash_bucket
from experiments.holdout import HoldoutSettings
from models.assign import assign_segment
from models.assign_schedule import schedule_messages_sql
from models.bulk import table
from models.records import Assignment, Message
from tests.test_assign_sql import T0, add_customers, assigned, register, spec_text

ARMS = st.lists(st.integers(1, 5), min_size=2, max_size=4).map(
    lambda ws: [(f"arm{i}", float(w)) for i, w in enumerate(ws)]
)
UNITS = st.lists(st.integers(0, 10**7).map(lambda i: f"cus_{i:08d}"), unique=True, max_size=60)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(units=UNITS, more=UNITS, arms=ARMS, salt=st.text(min_size=1, max_size=12), seed=st.randoms())
def test_hash_assignment_is_deterministic_order_free_and_sticky(
    units: list[str], more: list[str], arms: list[tuple[str, float]], salt: str, seed: object
) -> None:
    first = dict(zip(units, assign(salt, units, arms), strict=True))
    assert dict(zip(units, assign(salt, units, arms), strict=True)) == first  # deterministic
    shuffled = list(units)
    seed.shuffle(shuffled)  # type: ignore[attr-defined]
    assert dict(zip(shuffled, assign(salt, shuffled, arms), strict=True)) == first
    grown = units + [u for u in more if u not in first]
    after = dict(zip(grown, assign(salt, grown, arms), strict=True))
    assert all(after[u] == first[u] for u in units)  # sticky when customers are added


_counter = itertools.count()


@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    share=st.sampled_from([0.0, 0.05, 0.2, 0.45]),
    salt=st.text(alphabet="abcxyz-0123", min_size=1, max_size=8),
    email_weight=st.integers(1, 3),
    wave=st.integers(20, 60),
)
def test_sql_assignment_matches_the_reference_never_messages_the_holdout_and_is_sticky(
    engine: Engine, share: float, salt: str, email_weight: int, wave: int
) -> None:
    """Each example is a new experiment on one database whose population keeps growing."""
    n = next(_counter)
    start = 1000 * n
    add_customers(engine, start, wave)
    eid, spec = register(engine, spec_text(f"p{n}", f"{{salt: '{salt}'}}", exclude=False,
                                           email_weight=email_weight))  # fmt: skip
    holdout = HoldoutSettings(share=share, salt=f"h-{salt}")
    assign_segment(engine, eid, spec, T0, T0, holdout)
    schedule_messages_sql(engine, eid, spec, T0)
    first = assigned(engine, eid)
    add_customers(engine, start + wave, wave)
    assign_segment(engine, eid, spec, T0, T0, holdout)
    schedule_messages_sql(engine, eid, spec, T0)
    after = assigned(engine, eid)
    assert all(after[u] == first[u] for u in first)  # nobody moves
    weights = [(arm.name, arm.weight) for arm in spec.arms]
    for unit, (arm, _) in after.items():
        held = share > 0 and hash_bucket(holdout.salt, unit) < share
        assert (arm == HOLDOUT_ARM) == held, unit
        if not held:
            assert arm == assign(spec.salt, [unit], weights)[0][0], unit
    m, a = table(Message), table(Assignment)
    with engine.connect() as connection:
        messaged_holdout = connection.execute(
            select(func.count())
            .select_from(m.join(a, a.c.customer_id == m.c.customer_id))
            .where(a.c.experiment_id == eid, m.c.experiment_id == eid, a.c.arm == HOLDOUT_ARM)
        ).scalar_one()
    assert messaged_holdout == 0
