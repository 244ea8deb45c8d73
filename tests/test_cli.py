"""The command line: bad experiment files give one clear line each, exit code 2, and write nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from flows.cli import app
from models.records import Experiment

DEFINITIONS = Path(__file__).resolve().parent.parent / "experiments" / "definitions"
runner = CliRunner()

BAD = {
    "bad_yaml.yaml": ("key: x\nhypothesis: [unclosed\n", 3, "opened on line 2"),
    "bad_weight.yaml": (
        (DEFINITIONS / "onboarding-checkin.yaml")
        .read_text()
        .replace("weight: 1\n    steps", "weight: -2\n    steps"),
        14,
        "weight must be a positive number",
    ),
    "bad_rule.yaml": (
        (DEFINITIONS / "onboarding-checkin.yaml")
        .read_text()
        .replace("tenure_days >= 5", "tenure >= 5"),
        8,
        "unknown field 'tenure'",
    ),
    "bad_template.yaml": (
        (DEFINITIONS / "onboarding-checkin.yaml")
        .read_text()
        .replace("template: onboarding_checkin}", "template: nope}"),
        16,
        "unknown email template 'nope'",
    ),
    "bad_metric.yaml": (
        (DEFINITIONS / "onboarding-checkin.yaml")
        .read_text()
        .replace("primary: onboarding_completed_14d", "primary: happiness"),
        18,
        "unknown metric 'happiness'",
    ),
}


def test_shipped_definitions_validate() -> None:
    result = runner.invoke(app, ["validate", *map(str, sorted(DEFINITIONS.glob("*.yaml")))])
    assert result.exit_code == 0, result.output
    assert "4 experiment file(s) valid" in result.output
    assert "warning" not in result.output  # the shipped SMS fit their segment budgets


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_file_is_one_line_with_file_and_line(name: str, tmp_path: Path) -> None:
    text, line, fragment = BAD[name]
    path = tmp_path / name
    path.write_text(text)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    # one line per problem; a rule's problem is followed by the rule with a caret (indented)
    assert len([ln for ln in lines if not ln.startswith("    ")]) == 1, result.output
    assert len(lines) == (3 if name == "bad_rule.yaml" else 1), result.output
    assert lines[0].startswith(f"error {path}:{line}: ")
    assert fragment in lines[0]
    assert "Traceback" not in result.output


def test_run_with_a_bad_file_writes_nothing(
    tmp_path: Path, engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETAIN_DATABASE_URL", database_url)
    good = DEFINITIONS / "onboarding-checkin.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD["bad_rule.yaml"][0])
    result = runner.invoke(app, ["run", str(good), str(bad)])
    assert result.exit_code == 2
    assert "unknown field 'tenure'" in result.output
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(Experiment)).scalar_one() == 0


def test_help_explains_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "validate", "run", "dispatch", "evaluate", "fields", "db"):
        assert command in result.output
