"""Experiments in the database: registration with spec snapshots, sticky assignment and the
scheduling of each arm's messages into the outbox.

Every write goes through a unique key, so a flow that is re-run or crashed half-way resumes without
re-randomising anyone and without scheduling any message twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from experiments.assignment import assign
from experiments.loader import LoadedSpec, parse_spec
from experiments.rules import parse_rule
from experiments.spec import ExperimentSpec
from models.bulk import insert_ignoring_conflicts, table
from models.customer_data import Customer
from models.records import Assignment, Experiment, ExperimentSnapshot
from models.segments import segment_query

CHUNK = 5_000


class ExperimentChangeError(Exception):
    """A change to a running experiment that would move customers between arms."""


class SegmentError(Exception):
    """The segment rule of a valid experiment file cannot run on this database; nothing has been
    recorded for the experiment."""


def segment_problem(loaded: LoadedSpec, error: BaseException) -> SegmentError:
    """The one-line :class:`SegmentError` for ``error`` raised while selecting the segment."""
    reason = " ".join(str(getattr(error, "orig", None) or error).split())
    reason = reason.split("[SQL:", 1)[0].strip()[:200] or type(error).__name__
    return SegmentError(
        f"{loaded.path}: experiment {loaded.spec.key!r}: segment.where cannot run on this "
        f"database ({reason}); simplify the rule. Nothing was recorded."
    )


SEGMENT_ERRORS = (SQLAlchemyError, RecursionError, OverflowError)
"""What compiling or running a segment's SQL raises when the database cannot run the rule."""


def check_segment(engine: Engine, loaded: LoadedSpec, as_of: datetime) -> None:
    """Have the database prepare the segment's query without reading a row (``LIMIT 0``): SQL
    that cannot be compiled, is too deep or binds too many parameters fails here, before a flow
    starts or anything is recorded. Raises :class:`SegmentError`."""
    segment = loaded.spec.segment
    try:
        query = segment_query(
            parse_rule(segment.where),
            as_of,
            exclude_assigned_except=experiment_id_for(engine, loaded.spec.key),
            exclude_assigned=segment.exclude_if_in_other_experiments,
        ).limit(0)
        with engine.connect() as connection:
            connection.execute(query).all()
    except SEGMENT_ERRORS as error:
        raise segment_problem(loaded, error) from None


@dataclass(frozen=True)
class Registration:
    experiment_id: int
    created: bool
    new_snapshot: bool


@dataclass(frozen=True)
class AssignmentSummary:
    new: int
    already_assigned: int
    by_arm: dict[str, int]


def _randomisation(spec: ExperimentSpec) -> tuple[object, ...]:
    """What decides a customer's arm: frozen once customers are assigned."""
    settings = spec.assignment
    return (
        spec.salt,
        [(arm.name, arm.weight) for arm in spec.arms],
        settings.stratify_by,
        settings.layer,
        settings.share,
    )


def register_experiment(engine: Engine, loaded: LoadedSpec, now: datetime) -> Registration:
    """Create the experiment or record a new snapshot of its YAML.

    Raises :class:`ExperimentChangeError` if customers are already assigned and the new spec
    changes the salt, the arms or their weights (that would re-randomise people).
    """
    spec = loaded.spec
    with Session(engine) as session:
        experiment = session.exec(select(Experiment).where(Experiment.key == spec.key)).first()
        created = experiment is None
        if experiment is None:
            experiment = Experiment(
                key=spec.key,
                hypothesis=spec.hypothesis,
                spec_hash=loaded.sha256,
                created_at=now,
                updated_at=now,
            )
            session.add(experiment)
            session.flush()
        elif experiment.spec_hash != loaded.sha256:
            _refuse_moving_customers(session, experiment, loaded)
            experiment.spec_hash = loaded.sha256
            experiment.hypothesis = spec.hypothesis
            experiment.updated_at = now
        assert experiment.id is not None
        snapshot_exists = session.exec(
            select(ExperimentSnapshot.id).where(
                ExperimentSnapshot.experiment_id == experiment.id,
                ExperimentSnapshot.spec_hash == loaded.sha256,
            )
        ).first()
        if snapshot_exists is None:
            session.add(
                ExperimentSnapshot(
                    experiment_id=experiment.id,
                    spec_hash=loaded.sha256,
                    spec_yaml=loaded.text,
                    source_path=loaded.path,
                    created_at=now,
                )
            )
        session.commit()
        return Registration(experiment.id, created, snapshot_exists is None)


def check_change(engine: Engine, loaded: LoadedSpec) -> None:
    """Raise :class:`ExperimentChangeError` if registering ``loaded`` would be refused (its
    experiment has assigned customers and the salt, arms or weights changed); reads only, so a
    command can check before it starts any flow."""
    with Session(engine) as session:
        experiment = session.exec(
            select(Experiment).where(Experiment.key == loaded.spec.key)
        ).first()
        if experiment is not None and experiment.spec_hash != loaded.sha256:
            _refuse_moving_customers(session, experiment, loaded)


def _refuse_moving_customers(session: Session, experiment: Experiment, loaded: LoadedSpec) -> None:
    previous = current_spec(session, experiment)
    assigned = session.exec(
        select(func.count())
        .select_from(Assignment)
        .where(Assignment.experiment_id == experiment.id)
    ).one()
    if assigned and _randomisation(previous.spec) != _randomisation(loaded.spec):
        raise ExperimentChangeError(
            f"{loaded.path}: experiment {loaded.spec.key!r} already has {assigned} assigned "
            "customers; changing its salt, arms, weights, strata or layer share would move them "
            "between arms or unbalance them. "
            "Start a new experiment with a new key instead."
        )


def current_spec(session: Session, experiment: Experiment) -> LoadedSpec:
    """The experiment's current spec, parsed from its stored snapshot."""
    snapshot = session.exec(
        select(ExperimentSnapshot).where(
            ExperimentSnapshot.experiment_id == experiment.id,
            ExperimentSnapshot.spec_hash == experiment.spec_hash,
        )
    ).one()
    return parse_spec(snapshot.spec_yaml, snapshot.source_path or experiment.key)


def experiment_id_for(engine: Engine, key: str) -> int | None:
    with Session(engine) as session:
        return session.exec(select(Experiment.id).where(Experiment.key == key)).first()


def assign_customers(
    engine: Engine,
    experiment_id: int,
    spec: ExperimentSpec,
    customer_ids: Sequence[int],
    now: datetime,
) -> AssignmentSummary:
    """Assign customers not yet in the experiment; those already assigned keep their arm."""
    with engine.begin() as connection:
        existing = set(
            connection.execute(
                select(Assignment.customer_id).where(Assignment.experiment_id == experiment_id)
            ).scalars()
        )
        todo = sorted(set(customer_ids) - existing)
        external: dict[int, str] = {}
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start : start + CHUNK]
            external.update(
                (int(i), str(e))
                for i, e in connection.execute(
                    select(col(Customer.id), col(Customer.external_id)).where(
                        col(Customer.id).in_(chunk)
                    )
                ).all()
            )
        salt, arms = spec.salt, [(arm.name, arm.weight) for arm in spec.arms]
        choices = assign(salt, [external[c] for c in todo], arms)
        rows = [
            {
                "experiment_id": experiment_id,
                "customer_id": customer_id,
                "arm": arm,
                "bucket": bucket,
                "assigned_at": now,
            }
            for customer_id, (arm, bucket) in zip(todo, choices, strict=True)
        ]
        new = insert_ignoring_conflicts(
            connection, table(Assignment), rows, ["experiment_id", "customer_id"]
        )
    counts = Counter(arm for arm, _ in choices)
    return AssignmentSummary(
        new=new,
        already_assigned=len(set(customer_ids) & existing),
        by_arm={arm.name: counts[arm.name] for arm in spec.arms},
    )


def schedule_messages(
    engine: Engine, experiment_id: int, spec: ExperimentSpec, now: datetime
) -> int:
    """Create outbox rows for every step of every assigned customer's arm; returns rows added
    (set-based: :func:`models.assign_schedule.schedule_messages_sql`)."""
    from models.assign_schedule import schedule_messages_sql

    return schedule_messages_sql(engine, experiment_id, spec, now)


def registered_spec(engine: Engine, key: str) -> tuple[int, LoadedSpec]:
    """The experiment ``key`` as it was run: its id and its current stored spec snapshot."""
    with Session(engine) as session:
        experiment = session.exec(select(Experiment).where(Experiment.key == key)).first()
        if experiment is None or experiment.id is None:
            raise KeyError(f"no experiment {key!r} in the database; run it first (retain run PATH)")
        return experiment.id, current_spec(session, experiment)
