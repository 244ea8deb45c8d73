"""Set-based assignment in the database (SQLite, and PostgreSQL via the fixture): the SQL gives the
same arms and buckets as the pure reference, strata stay balanced and sticky as customers arrive,
the holdout is never messaged, layers never share a customer, exclusions carry their reason, the
checks are stored; bad input is one clear error before anything is written."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from experiments.assignment import HOLDOUT_ARM, assign, stratified_assign
from experiments.holdout import HoldoutSettings
from experiments.loader import SpecError, load_specs, parse_spec
from experiments.spec import ExperimentSpec
from flows.cli import app
from models.assign import AssignmentError, assign_segment
from models.assign_checks import run_checks
from models.assign_records import (
    AssignmentCheck,
    AssignmentExclusion,
    AssignmentStratum,
    LayerAllocation,
)
from models.assign_schedule import schedule_messages_sql
from models.bulk import table
from models.customer_data import Customer, Subscription
from models.experiments import register_experiment
from models.records import Assignment, Message, Suppression

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
PLANS = ("starter", "team", "business")
SPEC = """\
key: {key}
hypothesis: Reminders help.
segment:
  where: {where}
  exclude_if_in_other_experiments: {exclude}
assignment: {assignment}
arms:
  - {{name: control, weight: 1}}
  - name: email
    weight: {email_weight}
    steps: [{{at: 0d, channel: email, template: card_expiry}}]
  - name: email_sms
    weight: 1
    steps:
      - {{at: 0d, channel: email, template: card_expiry}}
      - {{at: 3d, channel: sms, template: card_expiry_sms}}
metrics: {{primary: card_updated_14d}}
"""


def spec_text(
    key: str = "exp",
    assignment: str = "{salt: s1}",
    where: str = 'subscription.status == "active"',
    exclude: bool = True,
    email_weight: int = 1,
) -> str:
    return SPEC.format(
        key=key,
        assignment=assignment,
        where=where,
        exclude=str(exclude).lower(),
        email_weight=email_weight,
    )


def add_customers(engine: Engine, start: int, count: int, *, consent: bool = True) -> None:
    """Active customers ``cus_{start:06d}`` on, with plans in turn."""
    customers, subscriptions = table(Customer), table(Subscription)
    created = T0 - timedelta(days=100)
    with engine.begin() as connection:
        for i in range(start, start + count):
            key = connection.execute(
                customers.insert().values(
                    external_id=f"cus_{i:06d}",
                    name=f"C {i}",
                    email=f"c{i}@example.com",
                    phone=None,
                    email_consent=consent,
                    sms_consent=False,
                    created_at=created,
                )
            ).inserted_primary_key
            assert key is not None
            id_ = key[0]
            connection.execute(
                subscriptions.insert().values(
                    customer_id=id_,
                    plan=PLANS[i % 3],
                    billing_interval="month",
                    mrr_cents=4900,
                    status="active",
                    started_at=created,
                    current_period_end=T0 + timedelta(days=9),
                )
            )


def register(engine: Engine, text: str) -> tuple[int, ExperimentSpec]:
    loaded = parse_spec(text, "exp.yaml")
    return register_experiment(engine, loaded, T0).experiment_id, loaded.spec


def assigned(engine: Engine, experiment_id: int) -> dict[str, tuple[str, float]]:
    a, c = table(Assignment), table(Customer)
    with engine.connect() as connection:
        rows = connection.execute(
            select(c.c.external_id, a.c.arm, a.c.bucket)
            .join(c, c.c.id == a.c.customer_id)
            .where(a.c.experiment_id == experiment_id)
        ).all()
    return {unit: (arm, bucket) for unit, arm, bucket in rows}


def count(engine: Engine, model: type, **where: object) -> int:
    t = table(model)
    query = select(func.count()).select_from(t)
    for name, value in where.items():
        query = query.where(t.c[name] == value)
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def test_sql_hash_equals_the_pure_reference_bit_for_bit(engine: Engine) -> None:
    add_customers(engine, 0, 300)
    eid, spec = register(engine, spec_text(email_weight=2))
    run = assign_segment(engine, eid, spec, T0, T0)
    got = assigned(engine, eid)
    units = sorted(got)
    expected = dict(
        zip(units, assign("s1", units, [(a.name, a.weight) for a in spec.arms]), strict=True)
    )
    assert got == expected  # same arm and exactly the same float bucket
    assert run.new == 300 and run.segment_size == 300 and sum(run.by_arm.values()) == 300


def test_stratified_assignment_matches_the_reference_balances_and_stays_sticky(
    engine: Engine,
) -> None:
    add_customers(engine, 0, 200)
    eid, spec = register(
        engine, spec_text(assignment="{salt: s2, stratify_by: [subscription.plan]}")
    )
    assign_segment(engine, eid, spec, T0, T0)
    first = assigned(engine, eid)
    add_customers(engine, 200, 250)
    second_run = assign_segment(engine, eid, spec, T0, T0 + timedelta(days=1))
    assert second_run.already_assigned == 200 and second_run.new == 250
    final = assigned(engine, eid)
    assert all(final[u] == first[u] for u in first)  # nobody moved

    arms = [(a.name, a.weight) for a in spec.arms]
    label = {f"cus_{i:06d}": f"subscription.plan={PLANS[i % 3]}" for i in range(450)}
    ref1, counts = stratified_assign("s2", [(u, label[u]) for u in sorted(first)], arms, {})
    later = sorted(set(final) - set(first))
    ref2, _ = stratified_assign("s2", [(u, label[u]) for u in later], arms, counts)
    reference = dict(zip(sorted(first), ref1, strict=True)) | dict(zip(later, ref2, strict=True))
    assert final == reference
    for plan in PLANS:
        tally = Counter(final[u][0] for u in final if label[u].endswith(plan))
        assert max(tally.values()) - min(tally.values()) <= 1, (plan, tally)
    with engine.connect() as connection:
        strata = table(AssignmentStratum)
        positions = connection.execute(
            select(strata.c.stratum, func.max(strata.c.position), func.count())
            .where(strata.c.experiment_id == eid)
            .group_by(strata.c.stratum)
        ).all()
    assert {s: (m, n) for s, m, n in positions} == {
        f"subscription.plan={p}": (150, 150) for p in PLANS
    }


def test_holdout_is_its_own_arm_and_never_messaged(engine: Engine) -> None:
    add_customers(engine, 0, 400)
    eid, spec = register(engine, spec_text())
    holdout = HoldoutSettings(share=0.25, salt="h1")
    run = assign_segment(engine, eid, spec, T0, T0, holdout)
    scheduled = schedule_messages_sql(engine, eid, spec, T0)
    got = assigned(engine, eid)
    held = {u for u, (arm, _) in got.items() if arm == HOLDOUT_ARM}
    assert len(held) == run.by_arm[HOLDOUT_ARM] == run.excluded["holdout"]
    assert 60 < len(held) < 140  # 25 % of 400
    with engine.connect() as connection:
        m, a = table(Message), table(Assignment)
        messaged_holdout = connection.execute(
            select(func.count())
            .select_from(
                m.join(a, (a.c.customer_id == m.c.customer_id) & (a.c.experiment_id == eid))
            )
            .where(a.c.arm == HOLDOUT_ARM)
        ).scalar_one()
    assert messaged_holdout == 0
    treated = Counter(arm for arm, _ in got.values())
    # Control gets shadow ("would have sent") rows at the treatment arms' touch points; the
    # holdout, not an arm of the experiment, gets none.
    shadow = treated["control"] * len(spec.shadow_steps())
    assert scheduled == treated["email"] + 2 * treated["email_sms"] + shadow
    assert schedule_messages_sql(engine, eid, spec, T0) == 0  # idempotent
    assert count(engine, AssignmentExclusion, reason="holdout") == len(held)


def test_layers_never_share_a_customer_and_an_over_full_layer_writes_nothing(
    engine: Engine,
) -> None:
    add_customers(engine, 0, 400)
    a_id, a_spec = register(
        engine, spec_text("a", "{salt: a, layer: pricing, share: 0.5}", exclude=False)
    )
    b_id, b_spec = register(
        engine, spec_text("b", "{salt: b, layer: pricing, share: 0.4}", exclude=False)
    )
    run_a = assign_segment(engine, a_id, a_spec, T0, T0)
    run_b = assign_segment(engine, b_id, b_spec, T0, T0)
    in_a, in_b = set(assigned(engine, a_id)), set(assigned(engine, b_id))
    assert in_a and in_b and not in_a & in_b
    assert 150 < len(in_a) < 250 and 110 < len(in_b) < 210
    assert run_b.excluded["in_other_layer_experiment"] == len(in_a)
    assert run_a.excluded["outside_layer_share"] + len(in_a) == 400

    c_id, c_spec = register(
        engine, spec_text("c", "{salt: c, layer: pricing, share: 0.2}", exclude=False)
    )
    with pytest.raises(AssignmentError, match="layer 'pricing': the layer has no free range"):
        assign_segment(engine, c_id, c_spec, T0, T0)
    assert count(engine, Assignment, experiment_id=c_id) == 0
    assert count(engine, LayerAllocation, experiment_id=c_id) == 0
    assert count(engine, AssignmentExclusion, experiment_id=c_id) == 0


def test_exclusions_record_why(engine: Engine) -> None:
    add_customers(engine, 0, 30)
    add_customers(engine, 30, 10, consent=False)
    with engine.begin() as connection:  # customer 0 unsubscribed from email: unreachable
        connection.execute(
            table(Suppression)
            .insert()
            .values(customer_id=1, channel="email", reason="unsubscribe", created_at=T0)
        )
    team = 'subscription.plan == "team"'
    first_id, first = register(engine, spec_text("first", where=team))
    assign_segment(engine, first_id, first, T0, T0)
    second_id, second = register(engine, spec_text("second"))
    run = assign_segment(engine, second_id, second, T0, T0)
    # The first experiment took the 10 team customers among the 30 with consent; 10 customers
    # have no consent and customer cus_000000 is suppressed on email (and has no phone).
    assert run.excluded == {"in_other_experiment": 10, "no_consent": 11}
    assert run.new == 40 - 21
    assert count(engine, AssignmentExclusion, experiment_id=second_id) == sum(run.excluded.values())


def test_checks_are_stored_and_flag_a_broken_ratio(engine: Engine) -> None:
    add_customers(engine, 0, 600)
    eid, spec = register(
        engine, spec_text(assignment="{salt: s3, stratify_by: [subscription.plan]}")
    )
    assign_segment(engine, eid, spec, T0, T0)
    summary = run_checks(engine, eid, spec, T0)
    assert not summary.srm_flagged and summary.strata_checked == 3 and not summary.strata_flagged
    assert count(engine, AssignmentCheck, experiment_id=eid, check="srm") == 1
    assert count(engine, AssignmentCheck, experiment_id=eid, check="srm_stratum") == 3
    assert count(engine, AssignmentCheck, experiment_id=eid, check="balance") >= 3
    # Lose most of one arm (as a broken export would): the ratio check must flag it.
    a = table(Assignment)
    with engine.begin() as connection:
        doomed = (
            connection.execute(
                select(a.c.id).where(a.c.experiment_id == eid, a.c.arm == "control").limit(150)
            )
            .scalars()
            .all()
        )
        connection.execute(a.delete().where(a.c.id.in_(doomed)))
    broken = run_checks(engine, eid, spec, T0 + timedelta(hours=1))
    assert broken.srm_flagged and broken.srm_p_value < 0.001
    assert len(broken.strata_flagged) >= 1


# --- Bad input: one clear error with file and line, before anything is written ---------------------

runner = CliRunner()


@pytest.mark.parametrize(
    ("assignment", "arms_weight", "fragment", "line"),
    [
        (
            "{salt: x, stratify_by: [plan]}",
            1,
            "unknown stratum field 'plan'; did you mean 'subscription.plan'?",
            6,
        ),
        (
            "{salt: x, layer: l, share: 1.5}",
            1,
            "assignment.share: share is a fraction of the layer's customers above 0 and at most 1"
            " (0.3 takes 30%; the shares of one layer add up to at most 1), not 1.5",
            6,
        ),
        ("{salt: x, layer: l, share: 0}", 1, "above 0 and at most 1 (0.3 takes 30%;", 6),
        ("{salt: x, layer: l, share: yes}", 1, "at most 1), not 'yes'", 6),
        ("{salt: x, layer: l}", 1, "layer 'l' needs a share of it", 6),
        ("{salt: x}", 0, "weight must be a positive number", 10),
        ("{salt: x}", -1, "weight must be a positive number", 10),
    ],
)
def test_bad_assignment_settings_are_one_line_with_file_and_line(
    tmp_path: Path, assignment: str, arms_weight: int, fragment: str, line: int
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(spec_text(assignment=assignment, email_weight=arms_weight))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"error {path}:{line}: ")
    assert fragment in " ".join(result.output.split())


def test_layer_shares_above_one_name_every_file_before_anything_runs(
    tmp_path: Path, engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETAIN_DATABASE_URL", database_url)
    add_customers(engine, 0, 20)
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(spec_text("a", "{salt: a, layer: pricing, share: 0.7}"))
    b.write_text(spec_text("b", "{salt: b, layer: pricing, share: 0.6}"))
    with pytest.raises(SpecError) as caught:
        load_specs([a, b])
    assert [(p.path, p.line) for p in caught.value.problems] == [(str(a), 6), (str(b), 6)]
    result = runner.invoke(app, ["run", str(a), str(b)])
    assert result.exit_code == 2
    assert "layer 'pricing' is over-full: its shares add up to 1.3 > 1" in " ".join(
        result.output.split()
    )
    assert count(engine, Assignment) == 0 and count(engine, LayerAllocation) == 0


def test_evaluation_keeps_the_holdout_out_of_the_experiments_arms(engine: Engine) -> None:
    """The holdout arm must not switch off CUPED or the balance table of the experiment."""
    from models.evaluation import evaluate

    add_customers(engine, 0, 300)
    eid, spec = register(engine, spec_text())
    assign_segment(engine, eid, spec, T0, T0, HoldoutSettings(share=0.2, salt="h"))
    assert count(engine, Assignment, arm=HOLDOUT_ARM) > 30
    at = T0 + timedelta(days=40)
    report = evaluate(engine, eid, spec, at, at)
    assert [arm.name for arm in report.arms] == ["control", "email", "email_sms"]
    assert report.balance is not None and len(report.balance) >= 3
    assert sum(arm.n for arm in report.arms) == count(engine, Assignment) - count(
        engine, Assignment, arm=HOLDOUT_ARM
    )


def test_changing_the_strata_of_a_running_experiment_is_refused(engine: Engine) -> None:
    from models.experiments import ExperimentChangeError

    add_customers(engine, 0, 30)
    eid, spec = register(engine, spec_text())
    assign_segment(engine, eid, spec, T0, T0)
    changed = parse_spec(spec_text(assignment="{salt: s1, stratify_by: [subscription.plan]}"), "x")
    with pytest.raises(ExperimentChangeError, match="strata or layer share"):
        register_experiment(engine, changed, T0)
