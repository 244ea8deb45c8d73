"""Select and assign in set-based SQL: no customer id passes through Python.

:func:`assign_segment` fills a temporary table with the segment's members at ``as_of`` (one
``INSERT ... SELECT`` over the rule's features), decides in a few ``UPDATE`` statements who is
excluded and why, gives everyone else an arm, and writes assignments, strata and exclusions with
``INSERT ... SELECT``. The arm is the salted hash of :mod:`experiments.assignment` computed in SQL:
PostgreSQL's ``sha256``, and on SQLite a deterministic SQL function registered on the connection
(``retain_bucket``) running :func:`experiments.assignment.hash_bucket`'s arithmetic; both give
bit-identical buckets (checked against the golden cases).

Exclusion reasons, first match wins: ``in_other_experiment`` (when the segment excludes customers
of other experiments), ``in_other_layer_experiment`` / ``outside_layer_share`` (the customer's
position in the layer hash is not in this experiment's range), ``no_consent`` (neither email nor
SMS may reach them: address, consent and no suppression), ``holdout`` (in the global holdout: the
customer gets the ``holdout`` arm, which is never messaged), then, once arms are given,
``arm_stopped`` (the arm their hash gives is stopped: :mod:`experiments.autostop`). Stratified
experiments get their arm by position in their stratum (see :mod:`experiments.assignment`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    and_,
    case,
    cast,
    exists,
    func,
    literal,
    not_,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import ColumnElement

from experiments.assignment import (
    HOLDOUT_ARM,
    allocate_share,
    arm_block,
    bucket_ranges,
    hash_bucket,
)
from experiments.autostop import ARM_STOPPED
from experiments.holdout import HoldoutSettings
from experiments.rules import FIELDS, parse_rule, rule_fields
from experiments.spec import ExperimentSpec
from models.arm_decisions import stopped_now
from models.assign_records import AssignmentExclusion, AssignmentStratum, LayerAllocation
from models.bulk import table
from models.customer_data import Customer
from models.experiments import ExperimentChangeError
from models.records import Assignment, Suppression
from models.segments import compile_rule, customer_features

ALREADY = "already_assigned"


class AssignmentError(ExperimentChangeError):
    """The experiment cannot be assigned as configured (e.g. its layer has no room); nothing was
    written."""


@dataclass(frozen=True)
class AssignmentRun:
    segment_size: int
    already_assigned: int
    new: int
    by_arm: dict[str, int]  # newly assigned per arm (the holdout included when it has any)
    excluded: dict[str, int]  # segment members not treated, per reason


def assign_segment(
    engine: Engine,
    experiment_id: int,
    spec: ExperimentSpec,
    as_of: datetime,
    now: datetime,
    holdout: HoldoutSettings | None = None,
) -> AssignmentRun:
    """Select the segment at ``as_of`` and assign its new members, all in SQL, in one transaction."""
    holdout = holdout or HoldoutSettings()
    with engine.begin() as connection:
        bucket = _bucket_function(connection)
        own_range = _layer_range(connection, experiment_id, spec, now)
        candidates = _candidates_table(connection)
        _select_members(connection, candidates, experiment_id, spec, as_of, bucket)
        _exclude(connection, candidates, experiment_id, spec, own_range, holdout, bucket)
        stopped = stopped_now(connection, experiment_id, spec)
        if spec.assignment.stratify_by:
            _stratified_arms(connection, candidates, experiment_id, spec, bucket, stopped)
        else:
            _hashed_arms(connection, candidates, spec)
        _not_into_stopped_arms(connection, candidates, stopped)
        _write(connection, candidates, experiment_id, spec, now)
        rows = connection.execute(
            select(candidates.c.arm, candidates.c.reason, func.count()).group_by(
                candidates.c.arm, candidates.c.reason
            )
        ).all()
        candidates.drop(connection)
    by_arm: dict[str, int] = {arm.name: 0 for arm in spec.arms}
    excluded: dict[str, int] = {}
    already = total = 0
    for arm, reason, count in rows:
        total += count
        if reason == ALREADY:
            already += count
            continue
        if arm is not None:
            by_arm[arm] = by_arm.get(arm, 0) + count
        if reason is not None:
            excluded[reason] = excluded.get(reason, 0) + count
    return AssignmentRun(total, already, sum(by_arm.values()), by_arm, excluded)


# --- The hash in SQL ---------------------------------------------------------------------------


def _bucket_of_text(text: str) -> float:
    salt, _, unit = text.partition(":")
    return hash_bucket(salt, unit)  # sha256(salt + ":" + unit): the same bytes as ``text``


def _bucket_function(connection: Connection) -> Any:
    """``f(text) -> float``: the bucket of ``sha256(text)``, as :func:`hash_bucket` computes it."""
    if connection.dialect.name == "sqlite":
        raw: Any = connection.connection.dbapi_connection
        raw.create_function("retain_bucket", 1, _bucket_of_text, deterministic=True)
        return lambda text: func.retain_bucket(text, type_=Float)

    def pg_bucket(text: ColumnElement[str]) -> ColumnElement[float]:
        digest = func.sha256(func.convert_to(text, literal("UTF8")))

        def word(start: int) -> ColumnElement[int]:
            hexed = literal("x") + func.encode(func.substr(digest, start, 4), literal("hex"))
            return cast(cast(hexed, postgresql.BIT(32)), BigInteger)

        # hi * 2^-32 and lo * 2^-64 are exact; their sum rounds once, as Python's int / 2^64.
        return cast(word(1), Float) * literal(2.0**-32) + cast(word(5), Float) * literal(2.0**-64)

    return pg_bucket


# --- Steps -------------------------------------------------------------------------------------


def _candidates_table(connection: Connection) -> Table:
    candidates = Table(
        "retain_assign_candidates",
        MetaData(),
        Column("customer_id", Integer, primary_key=True),
        Column("unit", String(64), nullable=False),
        Column("stratum", String(500), nullable=False),
        Column("bucket", Float),
        Column("layer_bucket", Float),
        Column("reason", String(32)),
        Column("arm", String(64)),
        Column("position", Integer),
        prefixes=["TEMPORARY"],
    )
    candidates.drop(connection, checkfirst=True)
    candidates.create(connection)
    return candidates


def _layer_range(
    connection: Connection, experiment_id: int, spec: ExperimentSpec, now: datetime
) -> tuple[float, float] | None:
    """This experiment's range of its layer, given on first use (checked before any write)."""
    layer, share = spec.assignment.layer, spec.assignment.share
    if layer is None or share is None:
        return None
    allocations = table(LayerAllocation)
    rows = (
        connection.execute(select(allocations).where(allocations.c.layer == layer)).mappings().all()
    )
    for row in rows:
        if row["experiment_id"] == experiment_id:
            if abs(row["share"] - share) > 1e-12:
                raise AssignmentError(
                    f"experiment {spec.key!r} already holds {row['share']:g} of layer {layer!r};"
                    f" changing it to {share:g} would move customers between experiments. Start"
                    " a new experiment with a new key instead"
                )
            return float(row["start"]), float(row["end"])
    try:
        start, end = allocate_share([(r["start"], r["end"]) for r in rows], share)
    except ValueError as error:
        raise AssignmentError(f"experiment {spec.key!r}, layer {layer!r}: {error}") from None
    connection.execute(
        allocations.insert().values(
            layer=layer,
            experiment_id=experiment_id,
            share=share,
            start=start,
            end=end,
            created_at=now,
        )
    )
    return start, end


def _stratum_label(features: Any, names: Sequence[str]) -> ColumnElement[str]:
    if not names:
        return literal("")
    parts: list[ColumnElement[str]] = []
    for name in names:
        column = features.c[name]
        if FIELDS[name].type == "bool":
            text: ColumnElement[str] = case((column, "true"), (not_(column), "false"))
        else:
            text = cast(column, String)
        parts.append(literal(f"{name}=") + func.coalesce(text, "null"))
    label = parts[0]
    for part in parts[1:]:
        label = label + literal("|") + part
    return label


def _select_members(
    connection: Connection,
    candidates: Table,
    experiment_id: int,
    spec: ExperimentSpec,
    as_of: datetime,
    bucket: Any,
) -> None:
    rule = parse_rule(spec.segment.where)
    names = spec.assignment.stratify_by
    fields = set(rule_fields(rule)) | set(names)
    features = customer_features(as_of, fields=fields).subquery("features")
    customers, assignments = table(Customer), table(Assignment)
    unit = customers.c.external_id
    layer = spec.assignment.layer
    assigned_here = exists().where(
        assignments.c.customer_id == features.c.customer_id,
        assignments.c.experiment_id == experiment_id,
    )
    members = (
        select(
            features.c.customer_id,
            unit,
            _stratum_label(features, names),
            bucket(literal(f"{spec.salt}:") + unit),
            bucket(literal(f"layer:{layer}:") + unit) if layer else literal(None, Float),
            case((assigned_here, ALREADY), else_=None),
        )
        .select_from(features.join(customers, customers.c.id == features.c.customer_id))
        .where(compile_rule(rule, features))
    )
    columns = ["customer_id", "unit", "stratum", "bucket", "layer_bucket", "reason"]
    connection.execute(candidates.insert().from_select(columns, members))


def _exclude(
    connection: Connection,
    candidates: Table,
    experiment_id: int,
    spec: ExperimentSpec,
    own_range: tuple[float, float] | None,
    holdout: HoldoutSettings,
    bucket: Any,
) -> None:
    c = candidates.c

    def mark(reason: str, condition: ColumnElement[bool], **values: Any) -> None:
        connection.execute(
            update(candidates).where(c.reason.is_(None), condition).values(reason=reason, **values)
        )

    if spec.segment.exclude_if_in_other_experiments:
        a = table(Assignment)
        mark(
            "in_other_experiment",
            exists().where(a.c.customer_id == c.customer_id, a.c.experiment_id != experiment_id),
        )
    if own_range is not None:
        la = table(LayerAllocation)
        outside = not_(and_(c.layer_bucket >= own_range[0], c.layer_bucket < own_range[1]))
        taken = exists().where(
            la.c.layer == spec.assignment.layer,
            la.c.experiment_id != experiment_id,
            c.layer_bucket >= la.c.start,
            c.layer_bucket < la.c.end,
        )
        mark("in_other_layer_experiment", and_(outside, taken))
        mark("outside_layer_share", outside)
    mark("no_consent", not_(_reachable(c.customer_id)))
    if holdout.share > 0:
        held = bucket(literal(f"{holdout.salt}:") + c.unit)
        mark("holdout", held < holdout.share, arm=HOLDOUT_ARM, bucket=held)


def _reachable(customer_id: ColumnElement[int]) -> ColumnElement[bool]:
    """Some channel may reach the customer: an address, consent and no suppression."""
    customers, suppressions = table(Customer), table(Suppression)

    def free(channel: str) -> ColumnElement[bool]:
        return not_(
            exists().where(
                suppressions.c.customer_id == customers.c.id, suppressions.c.channel == channel
            )
        )

    email = and_(
        customers.c.email_consent.is_(true()),
        customers.c.email.is_not(None),
        customers.c.email != "",
        free("email"),
    )
    sms = and_(
        customers.c.sms_consent.is_(true()),
        customers.c.phone.is_not(None),
        customers.c.phone != "",
        free("sms"),
    )
    return exists().where(customers.c.id == customer_id, or_(email, sms))


def _hashed_arms(connection: Connection, candidates: Table, spec: ExperimentSpec) -> None:
    ranges = bucket_ranges([(arm.name, arm.weight) for arm in spec.arms])
    c = candidates.c
    arm = case(
        *((c.bucket < literal(r.end), literal(r.arm)) for r in ranges[:-1]),
        else_=literal(ranges[-1].arm),
    )
    connection.execute(update(candidates).where(c.reason.is_(None)).values(arm=arm))


def _not_into_stopped_arms(
    connection: Connection, candidates: Table, stopped: frozenset[str]
) -> None:
    """Customers whose arm is stopped are not enrolled (an exclusion ``arm_stopped``); everyone
    keeps the arm their hash gives, so nobody else moves."""
    if stopped:
        c = candidates.c
        connection.execute(
            update(candidates)
            .where(c.reason.is_(None), c.arm.in_(sorted(stopped)))
            .values(reason=ARM_STOPPED, arm=None)
        )


def _stratified_arms(
    connection: Connection,
    candidates: Table,
    experiment_id: int,
    spec: ExperimentSpec,
    bucket: Any,
    stopped: frozenset[str] = frozenset(),
) -> None:
    """Positions continue each stratum's count; the arm is the slot's in the rotated block."""
    c = candidates.c
    if stopped:
        # A position is drawn afresh each run: one who drew a stopped arm stays out while arms
        # are stopped, rather than drawing again.
        x = table(AssignmentExclusion)
        before = exists().where(
            x.c.experiment_id == experiment_id,
            x.c.customer_id == c.customer_id,
            x.c.reason == ARM_STOPPED,
        )
        connection.execute(
            update(candidates).where(c.reason.is_(None), before).values(reason=ARM_STOPPED)
        )
    strata = table(AssignmentStratum)
    prior = (
        select(strata.c.stratum, func.count(strata.c.position).label("n"))
        .where(strata.c.experiment_id == experiment_id)
        .group_by(strata.c.stratum)
        .subquery("prior")
    )
    rank = func.row_number().over(partition_by=c.stratum, order_by=(c.bucket, c.unit))
    positions = Table(
        "retain_assign_positions",
        MetaData(),
        Column("customer_id", Integer, primary_key=True),
        Column("position", Integer, nullable=False),
        prefixes=["TEMPORARY"],
    )
    positions.drop(connection, checkfirst=True)
    positions.create(connection)
    connection.execute(
        positions.insert().from_select(
            ["customer_id", "position"],
            select(c.customer_id, func.coalesce(prior.c.n, 0) + rank)
            .select_from(candidates.outerjoin(prior, prior.c.stratum == c.stratum))
            .where(c.reason.is_(None)),
        )
    )
    mine = select(positions.c.position).where(positions.c.customer_id == c.customer_id)
    connection.execute(
        update(candidates).where(c.reason.is_(None)).values(position=mine.scalar_subquery())
    )
    positions.drop(connection)
    block = arm_block([(arm.name, arm.weight) for arm in spec.arms])
    size = len(block)
    zero_based = c.position - 1
    number = cast(zero_based // size, String)  # floor division on both databases
    rotation_bucket = bucket(literal(f"{spec.salt}:block:") + c.stratum + literal(":") + number)
    # floor, then integer: PostgreSQL's CAST rounds to nearest where SQLite's truncates
    rotation = cast(func.floor(rotation_bucket * size), Integer)
    slot = (zero_based % size + rotation) % size
    arm = case(*((slot == i, literal(name)) for i, name in enumerate(block)))
    connection.execute(update(candidates).where(c.reason.is_(None)).values(arm=arm))


def _insert_from(connection: Connection, target: Table, columns: list[str], query: Any) -> None:
    """``INSERT ... SELECT`` skipping rows that collide on the table's unique key."""
    module: Any = postgresql if connection.dialect.name == "postgresql" else sqlite
    unique = next(
        list(u.columns.keys()) for u in target.constraints if isinstance(u, UniqueConstraint)
    )
    statement = module.insert(target).from_select(columns, query)
    connection.execute(statement.on_conflict_do_nothing(index_elements=unique))


def _write(
    connection: Connection,
    candidates: Table,
    experiment_id: int,
    spec: ExperimentSpec,
    now: datetime,
) -> None:
    c = candidates.c
    assigned = c.arm.is_not(None)
    eid = literal(experiment_id, Integer)
    _insert_from(
        connection,
        table(Assignment),
        ["experiment_id", "customer_id", "arm", "bucket", "assigned_at"],
        select(
            eid, c.customer_id, c.arm, c.bucket, literal(now, table(Assignment).c.assigned_at.type)
        ).where(assigned),
    )
    if spec.assignment.stratify_by:
        _insert_from(
            connection,
            table(AssignmentStratum),
            ["experiment_id", "customer_id", "stratum", "position"],
            select(eid, c.customer_id, c.stratum, c.position).where(assigned),
        )
    exclusions = table(AssignmentExclusion)
    _insert_from(
        connection,
        exclusions,
        ["experiment_id", "customer_id", "reason", "decided_at"],
        select(eid, c.customer_id, c.reason, literal(now, exclusions.c.decided_at.type)).where(
            c.reason.is_not(None), c.reason != ALREADY
        ),
    )
    now_assigned = select(c.customer_id).where(assigned, c.reason.is_(None))
    connection.execute(
        exclusions.delete().where(
            exclusions.c.experiment_id == experiment_id,
            exclusions.c.customer_id.in_(now_assigned),
        )
    )
