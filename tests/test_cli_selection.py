"""`retain segment`, `retain risk` and `retain fields` through the real command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session
from typer.testing import CliRunner

from experiments.rules import FIELDS
from flows.cli import app
from models.records import Assignment, Experiment
from tests.segment_data import AS_OF, build_data, insert

runner = CliRunner()


def churn_csv(tmp_path: Path, n: int = 400) -> Path:
    rng = np.random.default_rng(5)
    usage = rng.normal(0, 1, n)
    plan = rng.choice(["basic", "pro"], n)
    churned = rng.random(n) < 1 / (1 + np.exp(1 + 1.5 * usage))
    lines = ["id,usage,plan,churned"]
    for i in range(n):
        value = "" if i % 17 == 0 else f"{usage[i]:.3f}"
        lines.append(f"u{i},{value},{plan[i]},{'yes' if churned[i] else 'no'}")
    path = tmp_path / "customers.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_risk_evaluate_csv_json_has_exactly_the_documented_keys(tmp_path: Path) -> None:
    path = churn_csv(tmp_path)
    result = runner.invoke(
        app,
        [
            "risk",
            "evaluate",
            "--csv",
            str(path),
            "--label",
            "churned",
            "--id",
            "id",
            "--folds",
            "4",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert list(document) == ["auc_cv_mean", "auc_cv_std", "calibration", "top_decile_lift"]
    assert [row["decile"] for row in document["calibration"]] == list(range(1, 11))
    assert set(document["calibration"][0]) == {"decile", "predicted", "observed", "n"}
    assert sum(row["n"] for row in document["calibration"]) == 400
    assert 0.7 < document["auc_cv_mean"] <= 1 and document["auc_cv_std"] > 0
    text = runner.invoke(app, ["risk", "evaluate", "--csv", str(path), "--label", "churned"])
    assert text.exit_code == 0 and "cross-validated AUC" in text.output and "usage" in text.output


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--label", "nope"], "no column 'nope' for --label"),
        ([], "--csv needs --label"),
        (["--label", "plan"], "label column 'plan' holds 'basic'"),
    ],
)
def test_risk_evaluate_csv_errors_are_one_line(
    tmp_path: Path, args: list[str], fragment: str
) -> None:
    result = runner.invoke(app, ["risk", "evaluate", "--csv", str(churn_csv(tmp_path)), *args])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error ") and fragment in lines[0], result.output


def test_risk_commands_without_a_model_or_history(
    engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETAIN_DATABASE_URL", database_url)
    for command, fragment in (
        (["risk", "evaluate"], "run `retain risk train` first"),
        (["risk", "score"], "run `retain risk train` first"),
        (["risk", "train", "--as-of", "2026-03-01"], "no subscriptions to learn from"),
    ):
        result = runner.invoke(app, command)
        assert result.exit_code == 2 and fragment in result.output, result.output
        assert "Traceback" not in result.output


def test_segment_preview(
    engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = build_data()
    data.customers[0].name = "[/red][link=file:///etc/passwd]x"  # customer 1: user text, escaped
    insert(engine, data)
    with Session(engine) as session:
        session.add(Experiment(id=1, key="other", hypothesis="h", spec_hash="x" * 64,
                               created_at=AS_OF, updated_at=AS_OF))  # fmt: skip
        session.flush()
        session.add(Assignment(experiment_id=1, customer_id=2, arm="control", bucket=0.1,
                               assigned_at=AS_OF))  # fmt: skip
        session.commit()
    path = tmp_path / "preview.yaml"
    path.write_text(
        "key: preview\nhypothesis: h\nsegment:\n"
        "  where: subscription.status is not null and tenure_days between 0 and 400d\n"
        "arms:\n  - {name: control}\n  - {name: treated}\nmetrics: {primary: retained_30d}\n"
    )
    monkeypatch.setenv("RETAIN_DATABASE_URL", database_url)
    result = runner.invoke(app, ["segment", str(path), "--as-of", "2026-03-01T12:00:00"])
    assert result.exit_code == 0, result.output
    # customers 1, 2, 5, 7 have a subscription at AS_OF and at most 400 days of tenure
    assert "4 customers in the segment" in result.output
    assert "entering per day" in result.output and "by churn-risk decile" in result.output
    assert "other" in result.output  # customer 2 is in a running experiment
    assert "[/red][link=file:///etc/passwd]x" in result.output  # shown literally
    bad = tmp_path / "bad.yaml"
    bad.write_text(path.read_text().replace("tenure_days between", "tenure_dys between"))
    result = runner.invoke(app, ["segment", str(bad)])
    assert result.exit_code == 2 and "did you mean 'tenure_days'" in result.output
    assert "^" in result.output  # the caret under the mistake


def test_fields_lists_the_catalogue_with_units() -> None:
    result = runner.invoke(app, ["fields"])
    assert result.exit_code == 0
    for name in FIELDS:
        assert name in result.output
    assert "number (days)" in result.output and "RETAIN_GRACE_PERIOD_DAYS" in result.output


def _experiment(where: str) -> str:
    return (
        "key: limits\nhypothesis: h\nsegment:\n"
        f"  where: '{where}'\n"
        "arms:\n  - {name: control}\n  - {name: treated}\nmetrics: {primary: retained_30d}\n"
    )


@pytest.mark.parametrize(
    ("where", "fragment"),
    [
        (" or ".join(f"tenure_days == {i}" for i in range(1001)), "too many conditions"),
        ("tenure_days" + " + 1" * 1000 + " > 3", "too many arithmetic operators"),
        ("(" * 3000 + "has_phone" + ")" * 3000, "nested too deeply"),
        # 100,000 values would pass the file's size limit first (experiments.limits).
        ("tenure_days in [" + ", ".join(map(str, range(10_001))) + "]", "too many values"),
        ("tenure_days" + " * 1e15" * 20 + " > 0", "could leave the range"),
        ("tenure_days > \uff13", "not a plain digit"),
    ],
)
def test_validate_rejects_what_run_cannot_do(tmp_path: Path, where: str, fragment: str) -> None:
    """Issue 11: these were accepted by `validate` and then failed in `run`."""
    path = tmp_path / "limits.yaml"
    path.write_text(_experiment(where), encoding="utf-8")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    problems = [line for line in result.output.splitlines() if line.startswith("error ")]
    assert len(problems) == 1 and f"{path}:4:" in problems[0] and fragment in problems[0]
    pointer = [line for line in result.output.splitlines() if line.startswith("    ")]
    assert len(pointer) == 2 and pointer[1].strip() == "^"
    assert max(map(len, pointer)) < 100  # a window of a long rule, not the whole of it


def test_rule_problems_with_markup_like_text_print_literally(tmp_path: Path) -> None:
    path = tmp_path / "markup.yaml"
    path.write_text(_experiment('tenure_days == "[/red][link=file:///etc/passwd]x"'))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.count("[/red][link=file:///etc/passwd]x") == 2  # message and pointer
