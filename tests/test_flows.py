"""Real Prefect flow runs (local ephemeral API) over the real database: the path is idempotent."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from models.records import Assignment, Message, Result
from tests.dbdata import T0, add_customers

pytestmark = [pytest.mark.slow, pytest.mark.prefect]

SPEC = """\
key: flow-reminder
hypothesis: Reminders help.
segment: {where: card_expires_in_days <= 30 and subscription.status == "active"}
arms:
  - {name: control, weight: 1}
  - name: email_sms
    weight: 1
    steps:
      - {at: 0d, channel: email, template: card_expiry}
      - {at: 3d, channel: sms, template: card_expiry_sms, unless: payment_method_updated}
metrics: {primary: card_updated_14d, secondary: [retained_30d, revenue_90d]}
"""


def scalar(engine: Engine, query: object) -> int:
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())  # type: ignore[call-overload]


def test_run_dispatch_evaluate_is_idempotent(
    prefect_api: None, engine: Engine, database_url: str, tmp_path: Path
) -> None:
    from flows.pipeline import dispatch_messages, evaluate_experiment, run_experiment

    add_customers(engine, 30, card_days=20)
    spec_path = tmp_path / "flow-reminder.yaml"
    spec_path.write_text(SPEC)
    outbox = tmp_path / "outbox"

    first = run_experiment(str(spec_path), as_of=T0)
    assert first.segment_size == 30 and first.newly_assigned == 30
    second = run_experiment(str(spec_path), as_of=T0 + timedelta(hours=1))
    assert second.newly_assigned == 0 and second.messages_scheduled == 0
    treated = first.by_arm["email_sms"]
    control = first.by_arm["control"]
    assert scalar(engine, select(func.count()).select_from(Message)) == 2 * 30

    # 09:00 UTC is 10:00 in Stockholm: outside quiet hours, so every email goes now.
    sent = dispatch_messages(str(outbox), as_of=T0)
    assert sent.sent == treated and sent.complete
    assert sent.withheld == control  # the control's would-be emails: eligible, never sent
    again = dispatch_messages(str(outbox), as_of=T0 + timedelta(minutes=5))
    assert again.sent == 0
    files = sorted((outbox / "flow-reminder" / "email").glob("*.txt"))
    assert len(files) == treated
    assert "Subject:" in files[0].read_text()

    later = dispatch_messages(str(outbox), as_of=T0 + timedelta(days=3))
    assert later.sent == treated  # nobody updated a card, so every SMS goes
    assert later.withheld == control
    assert (
        scalar(engine, select(func.count()).select_from(Message).where(Message.status == "sent"))
        == 2 * treated
    )

    out = tmp_path / "report"
    report = evaluate_experiment("flow-reminder", str(out), as_of=T0 + timedelta(days=31))
    data = json.loads((out / "report.json").read_text())
    assert data["experiment"] == "flow-reminder" and set(data) >= {"computed_at", "srm", "metrics"}
    names = [m["name"] for m in data["metrics"]]
    assert names == ["card_updated_14d", "retained_30d", "revenue_90d"]
    assert sum(a["n"] for a in data["metrics"][0]["arms"]) == 30
    # The 90-day revenue window has not ended on day 31: nobody counts yet.
    assert sum(a["n"] for a in data["metrics"][2]["arms"]) == 0
    assert data["metrics"][2]["comparisons"][0]["status"] == "n_too_small"
    assert report.metrics[0].arms[0].mean == 0.0  # no card was updated in this test
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert scalar(engine, select(func.count()).select_from(Result)) == 1
    assert scalar(engine, select(func.count()).select_from(Assignment)) == 30


def test_cli_errors_are_one_line_without_traceback(
    prefect_api: None,
    engine: Engine,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    monkeypatch.setenv("RETAIN_DATABASE_URL", database_url)
    runner = CliRunner()
    result = runner.invoke(app, ["evaluate", "no-such-experiment", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "experiment 'no-such-experiment': not in the database" in result.output
    assert "Traceback" not in result.output

    add_customers(engine, 8)
    spec_path = tmp_path / "flow-reminder.yaml"
    spec_path.write_text(SPEC)
    assert runner.invoke(app, ["run", str(spec_path)]).exit_code == 0
    spec_path.write_text(SPEC.replace("{name: control, weight: 1}", "{name: control, weight: 2}"))
    result = runner.invoke(app, ["run", str(spec_path)])
    assert result.exit_code == 2
    assert "would move them between arms" in result.output and "Traceback" not in result.output
