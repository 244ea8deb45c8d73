"""Auto-stop end to end, with real Prefect flows over the real database: simulated outcomes cross
the always-valid boundary, the evaluation records the stop with its numbers, and afterwards a
stopped arm gets no new customer, no scheduled message and no sent one; the YAML overrides it."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from experiments.assignment import assign
from experiments.report.models import Report
from models.evaluation import evaluate
from models.experiments import registered_spec
from tests.autostop_world import (
    arms_of,
    assigned_units,
    decisions,
    exclusions,
    messages_by,
    plant,
)
from tests.dbdata import T0, add_customers

SPEC = """\
key: autostop-flow
hypothesis: An email and an SMS get more cards updated than an email alone.
segment: {where: card_expires_in_days <= 30 and subscription.status == "active"}
assignment: {salt: autostop-2026}
arms:
  - {name: control}
  - name: email
    steps:
      - {at: 0d, channel: email, template: card_expiry}
      - {at: 20d, channel: email, template: card_expiry}
  - name: email_sms
    steps:
      - {at: 0d, channel: email, template: card_expiry}
      - {at: 20d, channel: sms, template: card_expiry_sms}
metrics: {primary: card_updated_14d, guardrails: [unsubscribed_30d]}
analysis: {sequential_tuning_n: 200}
auto_stop: {on_winner: true, min_n_per_arm: 50}
"""
ARMS = [("control", 1.0), ("email", 1.0), ("email_sms", 1.0)]


def hashed(units: list[str]) -> dict[str, str]:
    """The arm each unit's hash gives, computed independently of the SQL assignment."""
    return {u: arm for u, (arm, _) in zip(units, assign("autostop-2026", units, ARMS), strict=True)}


def units(start: int, count: int) -> list[str]:
    return [f"cus_{i:06d}" for i in range(start, start + count)]


def report_json(out: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((out / "report.json").read_text())
    return data


@pytest.mark.slow
@pytest.mark.prefect
def test_a_winner_stops_the_other_arms_and_the_yaml_resumes_one(
    prefect_api: None, engine: Engine, database_url: str, tmp_path: Path
) -> None:
    from flows.pipeline import dispatch_messages, evaluate_experiment, run_experiment

    path, outbox = tmp_path / "autostop-flow.yaml", str(tmp_path / "outbox")
    path.write_text(SPEC)
    add_customers(engine, 450)
    first = run_experiment(str(path), as_of=T0)
    assert first.newly_assigned == 450
    dispatch_messages(outbox, as_of=T0)
    # email_sms gets 60% of its customers to update their card; email 12%, control 10%.
    plant(
        engine,
        {"control": 0.10, "email": 0.12, "email_sms": 0.60},
        T0 + timedelta(days=2),
        seed=8,
        kind="card",
    )

    out = tmp_path / "report"
    evaluate_experiment("autostop-flow", str(out), as_of=T0 + timedelta(days=15))
    assert decisions(engine) == [
        ("control", "winner", "email_sms"),
        ("email", "winner", "email_sms"),
    ]
    data = report_json(out)
    trust = data["trust"]
    assert isinstance(trust, dict)
    stops = trust["auto_stops"]
    assert [(s["arm"], s["kind"], s["in_effect"]) for s in stops] == [
        ("control", "winner", True),
        ("email", "winner", True),
    ]
    stop = stops[0]
    assert stop["metric"] == "card_updated_14d" and stop["compared_arm"] == "email_sms"
    assert stop["abs_lift"] > 0.3 and stop["ci"][0] > 0 and stop["p_value"] < 0.05
    assert stop["method"] == "sequential (always-valid), holm correction"
    badge = next(c for c in trust["checks"] if c["check"] == "auto_stop")
    assert badge["status"] == "amber"
    assert (
        "latest: stopped control, email (email_sms beats control on card_updated_14d: +"
        in (badge["detail"])
    )
    assert "always-valid CI" in badge["detail"] and "p < 0.001" in badge["detail"]
    html = (out / "report.html").read_text()
    assert "Automatic stops" in html and "email_sms beats control on card_updated_14d" in html

    # Re-evaluating records nothing new.
    evaluate_experiment("autostop-flow", str(out), as_of=T0 + timedelta(days=16))
    assert len(decisions(engine)) == 2

    # New customers: only those whose hash gives email_sms are enrolled; nobody else moves.
    before = assigned_units(engine)
    add_customers(engine, 150, start=1000, card_days=40)
    second = run_experiment(str(path), as_of=T0 + timedelta(days=16))
    new = hashed(units(1000, 150))
    to_winner = {u for u, arm in new.items() if arm == "email_sms"}
    assert second.by_arm == {"control": 0, "email": 0, "email_sms": len(to_winner)}
    assert second.excluded == {"arm_stopped": 150 - len(to_winner)}
    assert exclusions(engine, "arm_stopped") == set(new) - to_winner
    after = assigned_units(engine)
    assert {u: after[u] for u in before} == before
    assert {u for u in after if u not in before} == to_winner
    scheduled = messages_by(engine)
    assert scheduled["email_sms"] == 2 * (first.by_arm["email_sms"] + len(to_winner))
    assert scheduled["email"] == 2 * first.by_arm["email"]  # nothing new for stopped arms

    # Day 21: the stopped arms' due messages are skipped, the winner's go out.
    sent = dispatch_messages(outbox, as_of=T0 + timedelta(days=21))
    n = first.by_arm
    assert sent.skipped.get("arm_stopped") == n["email"] + 2 * n["control"]
    assert sent.sent == n["email_sms"] + len(to_winner)
    skipped = messages_by(engine, status="skipped", reason="arm_stopped")
    assert skipped == {"email": n["email"], "control": 2 * n["control"]}
    assert messages_by(engine, status="sent")["email"] == n["email"]  # only the day-0 emails

    # A person resumes email and stops email_sms in the YAML: the file wins.
    path.write_text(
        SPEC.replace("  - name: email\n", "  - name: email\n    status: running\n").replace(
            "  - name: email_sms\n", "  - name: email_sms\n    status: stopped\n"
        )
    )
    third = run_experiment(str(path), as_of=T0 + timedelta(days=22))
    # Those excluded for email before are enrolled now, in the arm their hash always gave.
    back = {u for u, arm in new.items() if arm == "email"}
    assert third.by_arm == {"control": 0, "email": len(back), "email_sms": 0}
    assert {u: a for u, a in assigned_units(engine).items() if u in back} == dict.fromkeys(
        back, "email"
    )
    assert exclusions(engine, "arm_stopped") == {u for u, arm in new.items() if arm == "control"}
    later = dispatch_messages(outbox, as_of=T0 + timedelta(days=22, hours=1))
    assert later.sent == len(back) and not later.skipped  # day-0 emails of the resumed arm
    evaluate_experiment("autostop-flow", str(out), as_of=T0 + timedelta(days=22))
    shown = report_json(out)["trust"]["auto_stops"]  # type: ignore[index]
    assert [(s["arm"], s["in_effect"]) for s in shown] == [("control", True), ("email", False)]
    assert len(decisions(engine)) == 2


@pytest.mark.slow
@pytest.mark.prefect
def test_guardrail_harm_stops_that_arm_at_once(
    prefect_api: None, engine: Engine, database_url: str, tmp_path: Path
) -> None:
    from flows.pipeline import evaluate_experiment, run_experiment

    path = tmp_path / "autostop-flow.yaml"
    # Default auto_stop: harm acts, a winner does not; no min_days for harm.
    path.write_text(
        SPEC.replace(
            "auto_stop: {on_winner: true, min_n_per_arm: 50}\n", "auto_stop: {min_n_per_arm: 50}\n"
        )
    )
    add_customers(engine, 450)
    first = run_experiment(str(path), as_of=T0)
    plant(
        engine,
        {"control": 0.02, "email": 0.03, "email_sms": 0.35},
        T0 + timedelta(days=1),
        seed=3,
        kind="unsubscribe",
    )
    out = tmp_path / "report"
    report = evaluate_experiment("autostop-flow", str(out), as_of=T0 + timedelta(days=31))
    assert decisions(engine) == [("email_sms", "guardrail_harm", "email_sms")]
    assert report.trust is not None
    (stop,) = report.trust.auto_stops
    assert stop.metric == "unsubscribed_30d" and stop.reason == "guardrail harm on unsubscribed_30d"
    assert (
        stop.abs_lift is not None and stop.abs_lift > 0.2 and stop.ci is not None and stop.ci[0] > 0
    )
    assert report.verdict is not None and report.verdict.stop_arms == ["email_sms"]

    add_customers(engine, 90, start=1000, card_days=40)
    second = run_experiment(str(path), as_of=T0 + timedelta(days=31))
    new = hashed(units(1000, 90))
    assert second.by_arm["email_sms"] == 0
    assert second.excluded == {"arm_stopped": sum(1 for a in new.values() if a == "email_sms")}
    assert messages_by(engine)["email_sms"] == 2 * first.by_arm["email_sms"]
    assert second.checks.srm_flagged is False  # the ratio among the arms still enrolling


def _evaluate(engine: Engine, day: int) -> Report:
    experiment_id, loaded = registered_spec(engine, "autostop-flow")
    at = T0 + timedelta(days=day)
    return evaluate(engine, experiment_id, loaded.spec, at, at)


def test_aa_data_stops_nothing(engine: Engine) -> None:
    from experiments.loader import parse_spec
    from models.assign import assign_segment
    from models.experiments import register_experiment

    loaded = parse_spec(SPEC, "autostop-flow.yaml")
    add_customers(engine, 450)
    experiment_id = register_experiment(engine, loaded, T0).experiment_id
    assign_segment(engine, experiment_id, loaded.spec, T0, T0)
    # The same 20% card-update rate in every arm, and the same unsubscribe rate.
    plant(
        engine,
        {"control": 0.2, "email": 0.2, "email_sms": 0.2},
        T0 + timedelta(days=2),
        seed=5,
        kind="card",
    )
    plant(
        engine,
        {"control": 0.05, "email": 0.05, "email_sms": 0.05},
        T0 + timedelta(days=2),
        seed=6,
        kind="unsubscribe",
    )
    assert len(set(arms_of(engine).values())) == 3
    for day in (15, 31, 32):
        report = _evaluate(engine, day)
        assert report.trust is not None and report.trust.auto_stops == []
    assert decisions(engine) == []
    badge = next(c for c in report.trust.checks if c.check == "auto_stop")
    assert badge.status == "green"


def test_stratified_draws_of_a_stopped_arm_stay_out_until_it_resumes(engine: Engine) -> None:
    from models.assign import assign_segment
    from tests.test_assign_sql import add_customers as add_planned
    from tests.test_assign_sql import register, spec_text

    text = spec_text(assignment="{salt: s9, stratify_by: [subscription.plan]}")
    stopped = text.replace("  - name: email\n", "  - name: email\n    status: stopped\n")
    add_planned(engine, 0, 90)
    eid, spec = register(engine, stopped)
    first = assign_segment(engine, eid, spec, T0, T0)
    out = first.excluded["arm_stopped"]
    assert first.by_arm["email"] == 0 and out > 0 and first.new == 90 - out
    # A position is drawn afresh each run, so without care they would draw again: they do not.
    again = assign_segment(engine, eid, spec, T0, T0 + timedelta(days=1))
    assert again.new == 0 and again.excluded == {"arm_stopped": out}
    eid, resumed = register(
        engine, text.replace("  - name: email\n", "  - name: email\n    status: running\n")
    )
    back = assign_segment(engine, eid, resumed, T0, T0 + timedelta(days=2))
    assert back.new == out and back.excluded == {} and exclusions(engine, "arm_stopped") == set()
