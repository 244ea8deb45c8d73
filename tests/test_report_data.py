"""The report's facts from the database (funnel, currency, provenance) and
``retain report``, on the seeded experiment of :mod:`tests.report_fixture`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import webbrowser
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from experiments.loader import parse_spec
from flows.cli import app
from models.funnel import funnel_counts, sent_statistics
from models.metric_sql import metric_values
from models.report_data import currency_of, spec_as_run
from tests.report_fixture import AS_OF, SPEC, seed_experiment


def test_funnel_counts_every_stage_per_arm(engine: Engine) -> None:
    seeded = seed_experiment(engine)
    counts = funnel_counts(engine, seeded.experiment_id)
    assert set(counts) == {"control", "email"}
    control, email = counts["control"], counts["email"]
    # The control arm's "would have sent" records fill its stages up to sent; nothing is delivered.
    assert control.assigned == seeded.assigned["control"]
    assert control.sent == seeded.sent["control"] == control.eligible
    assert control.sent + seeded.skipped["control"] == seeded.assigned["control"]
    assert (control.delivered, control.engaged) == (0, 0)
    # One message per email customer: sent ones are eligible, consent skips are not.
    assert email.assigned == seeded.assigned["email"]
    assert email.sent == seeded.sent["email"] == email.eligible
    assert email.sent + seeded.skipped["email"] == seeded.assigned["email"]
    assert email.delivered == seeded.delivered["email"]
    assert email.engaged == seeded.opened["email"]


def test_per_protocol_counts_only_customers_sent_a_message(engine: Engine) -> None:
    seeded = seed_experiment(engine)
    values = metric_values(engine, seeded.experiment_id, "card_updated_14d", AS_OF)
    per_protocol = sent_statistics(engine, seeded.experiment_id, "card_updated_14d", AS_OF)
    assert "control" not in per_protocol
    everyone = [v for arm, v in values.values() if arm == "email"]
    assert per_protocol["email"].n == seeded.sent["email"] < len(everyone)
    assert 0 < per_protocol["email"].sum <= sum(everyone)


def test_currency_and_the_spec_as_run(engine: Engine) -> None:
    seeded = seed_experiment(engine)
    assert currency_of(engine, seeded.experiment_id) == "EUR"  # 270 in euros, 30 in pounds
    yaml_text, spec_hash = spec_as_run(engine, seeded.experiment_id)
    assert yaml_text == SPEC and spec_hash == parse_spec(SPEC).sha256


@pytest.fixture
def database_env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("RETAIN_DATABASE_URL", database_url)
    return database_url


def test_retain_report_regenerates_one_and_all(
    engine: Engine, database_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_experiment(engine)
    runner = CliRunner()
    as_of = ["--as-of", AS_OF.strftime("%Y-%m-%dT%H:%M:%S")]
    done = runner.invoke(app, ["report", "card-reminder-golden", "--out", str(tmp_path), *as_of])
    assert done.exit_code == 0, done.output
    assert "Ship email: +22.6 pp" in done.output
    data = json.loads((tmp_path / "card-reminder-golden" / "report.json").read_text())
    assert data["verdict"]["decision"] == "ship" and data["as_of"].startswith("2026-12-12T09:00")
    # --all: every experiment and the index, linking the reports; --open opens the index.
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(0o755)
    monkeypatch.setenv("BROWSER", f"{browser} %s")
    monkeypatch.setattr(webbrowser, "_tryorder", None)
    monkeypatch.setattr(webbrowser, "_browsers", {})
    out = tmp_path / "all"
    done = runner.invoke(app, ["report", "--all", "--out", str(out), "--open", *as_of])
    assert done.exit_code == 0, done.output
    index = (out / "index.html").read_text()
    assert 'href="card-reminder-golden/report.html"' in index
    assert "running" in index and "Ship email" in index
    assert (out / "card-reminder-golden" / "report.html").exists()
    for _ in range(100):  # the browser command runs in the background
        if opened.exists() and opened.read_text().strip():
            break
        time.sleep(0.05)
    assert opened.read_text().strip() == (out / "index.html").resolve().as_uri()


def test_retain_report_errors_are_one_line(database_env: str, tmp_path: Path) -> None:
    runner = CliRunner()
    done = runner.invoke(app, ["report", "nope", "--out", str(tmp_path)])
    assert done.exit_code == 2
    assert done.output.strip().splitlines() == [
        "error report nope: no experiment 'nope' in the database; run it first (retain run PATH)"
    ]
    done = runner.invoke(app, ["report"])
    assert done.exit_code == 2 and "give one experiment KEY or --all" in done.output


def test_retain_report_does_not_import_prefect(
    engine: Engine, database_env: str, tmp_path: Path
) -> None:
    seed_experiment(engine)
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from flows.cli import app\n"
        f"r = CliRunner().invoke(app, ['report', '--all', '--out', {str(tmp_path)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "index.html").exists()


def test_segment_inflow_counts_customers_who_entered_in_the_last_week(engine: Engine) -> None:
    from sqlalchemy import update
    from sqlmodel import Session

    from experiments.rules import parse_rule
    from models.customer_data import PaymentMethod
    from models.report_data import segment_inflow
    from models.segments import select_segment
    from tests.dbdata import T0, add_customers

    ids = add_customers(engine, 17, card_days=20)  # in the segment now and a week before
    later = (T0 + timedelta(days=40)).date()  # 28 days left at T0 + 12 d, 35 a week before
    with Session(engine) as session:
        session.execute(
            update(PaymentMethod)
            .where(PaymentMethod.customer_id.in_(ids[10:]))  # type: ignore[attr-defined]
            .values(expires_on=later, exp_month=later.month, exp_year=later.year)
        )
        session.commit()
    spec = parse_spec(SPEC).spec
    as_of = T0 + timedelta(days=12)
    rule = parse_rule(spec.segment.where)
    entered = set(select_segment(engine, rule, as_of)) - set(
        select_segment(engine, rule, as_of - timedelta(days=7))
    )
    assert len(entered) == 7
    assert segment_inflow(engine, spec, as_of) == pytest.approx(7 / 7)
