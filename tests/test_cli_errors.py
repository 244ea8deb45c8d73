"""The command line's one error path (issue 11): unwritable output folders, database problems,
``--as-of`` and user text that looks like rich markup each give one line and a non-zero exit,
never a traceback."""

from __future__ import annotations

import io
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer
from rich.console import Console
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from experiments.loader import parse_spec
from flows.cli import app
from flows.cli_checks import parse_as_of
from flows.console import safe
from models.db import dispose_engine
from models.experiments import register_experiment
from models.records import Experiment
from tests.dbdata import T0

runner = CliRunner()
CSV = "arm,converted\nA,1\nA,0\nB,1\nB,0\nA,1\nB,1\n"
SPEC = """\
key: cli-errors
hypothesis: Reminders help.
segment: {where: card_expires_in_days <= 30}
arms:
  - {name: control, weight: 1}
  - name: email
    steps: [{at: 0d, channel: email, template: card_expiry}]
metrics: {primary: card_updated_14d}
"""


def one_error_line(result: object, code: int = 2) -> str:
    assert result.exit_code == code, result.output  # type: ignore[attr-defined]
    output: str = result.output  # type: ignore[attr-defined]
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error "), output
    return lines[0]


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.csv"
    path.write_text(CSV)
    return path


def analyze(csv_file: Path, out: Path | str) -> object:
    args = ["analyze", str(csv_file), "--arm-column", "arm", "--baseline", "A"]
    return runner.invoke(app, [*args, "--metric", "converted:binary", "--out", str(out)])


def test_analyze_out_that_is_a_file(csv_file: Path, tmp_path: Path) -> None:
    existing = tmp_path / "existing"
    existing.write_text("x")
    line = one_error_line(analyze(csv_file, existing))
    assert (
        line
        == f"error --out {existing}: a file is in the way (it is not a folder); give a folder path, or remove the file"
    )
    line = one_error_line(analyze(csv_file, existing / "sub"))
    assert "part of the path is a file, not a folder" in line
    assert existing.read_text() == "x"


def test_analyze_out_under_proc(csv_file: Path) -> None:
    line = one_error_line(analyze(csv_file, "/proc/retain-cannot-write-here"))
    assert line.startswith("error --out /proc/retain-cannot-write-here: cannot write there (")
    assert line.endswith("give a folder you can write to")


def test_evaluate_out_under_a_file(
    tmp_path: Path, engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETAIN_DATABASE_URL", database_url)
    register_experiment(engine, parse_spec(SPEC, "cli-errors.yaml"), T0)
    blocker = tmp_path / "reports"
    blocker.write_text("x")
    line = one_error_line(runner.invoke(app, ["evaluate", "cli-errors", "--out", str(blocker)]))
    assert "part of the path is a file, not a folder" in line


def db_upgrade(url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("RETAIN_DATABASE_URL", url)
    try:
        return one_error_line(runner.invoke(app, ["db", "upgrade"]))
    finally:
        dispose_engine(url)


def test_db_upgrade_file_that_is_not_a_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 10)
    line = db_upgrade(f"sqlite:///{path}", monkeypatch)
    assert "the file is not a SQLite database" in line
    assert path.read_text().startswith("these are my notes")


def test_db_upgrade_tables_without_alembic_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "foreign.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE customers (id INTEGER)")
    connection.close()
    line = db_upgrade(f"sqlite:///{path}", monkeypatch)
    assert "it already holds tables (customers) but no Retain schema version" in line
    assert "Use an empty database" in line


def test_db_upgrade_unknown_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "newer.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32))")
        connection.execute("INSERT INTO alembic_version VALUES ('9999_from_the_future')")
    connection.close()
    line = db_upgrade(f"sqlite:///{path}", monkeypatch)
    assert "its schema version is unknown to this Retain" in line
    assert "9999_from_the_future" in line


def test_db_upgrade_server_down_and_bad_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    line = db_upgrade("postgresql+psycopg://postgres@127.0.0.1:1/retain", monkeypatch)
    assert line.startswith("error database postgresql+psycopg://postgres@127.0.0.1:1/retain: ")
    assert "cannot open or connect" in line and "server is running" in line
    line = db_upgrade("not a url", monkeypatch)
    assert line == (
        "error RETAIN_DATABASE_URL: 'not a url' is not a database URL; write it like "
        "sqlite:///retain.db or postgresql+psycopg://user@host:5432/db"
    )
    assert "cannot use postgres://" in db_upgrade("postgres://u@127.0.0.1:1/db", monkeypatch)
    password = db_upgrade("postgresql+psycopg://u:hunter2@127.0.0.1:1/db", monkeypatch)
    assert "hunter2" not in password and "***" in password


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2027-01-31T10:00:00+00:00", datetime(2027, 1, 31, 10, tzinfo=UTC)),  # report.json's
        ("2027-01-31T12:00:00+02:00", datetime(2027, 1, 31, 10, tzinfo=UTC)),
        ("2027-01-31T10:00:00Z", datetime(2027, 1, 31, 10, tzinfo=UTC)),
        ("2027-01-31T10:00:00", datetime(2027, 1, 31, 10, tzinfo=UTC)),  # naive means UTC
        ("2027-01-31 10:00", datetime(2027, 1, 31, 10, tzinfo=UTC)),
        ("2027-01-31", datetime(2027, 1, 31, tzinfo=UTC)),
    ],
)
def test_as_of_accepts_iso_8601_with_or_without_offset(text: str, expected: datetime) -> None:
    parsed = parse_as_of(text)
    assert parsed == expected and parsed.utcoffset() is not None


@pytest.mark.parametrize(
    "text", ["yesterday", "2027-13-01", "[/bold]", "0001-01-01T00:00:00+01:00"]
)
def test_as_of_refuses_other_text(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_as_of(text)


def test_as_of_from_report_json_reaches_the_command(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETAIN_DATABASE_URL", database_url)
    result = runner.invoke(app, ["evaluate", "nope", "--as-of", "2027-01-31T10:00:00+00:00"])
    assert "error experiment 'nope': not in the database" in one_error_line(result)
    result = runner.invoke(app, ["evaluate", "nope", "--as-of", "soon"])
    assert result.exit_code == 2 and "not an ISO 8601 time" in result.output
    assert "UTC" in runner.invoke(app, ["evaluate", "--help"]).output


def test_safe_keeps_markup_literal_and_makes_no_hyperlinks() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200, color_system="truecolor")
    for text in ("[/bold]", "[link=file:///etc/passwd]x", "'^[a-z0-9][a-z0-9_-]{0,62}$'", "a\\"):
        out.truncate(0)
        out.seek(0)
        console.print(f"[red]error[/red] {safe(text)}[dim]|[/dim]", highlight=False)
        shown = out.getvalue()
        assert "\x1b]8;" not in shown  # the OSC 8 hyperlink sequence
        assert _strip_ansi(shown).strip() == f"error {text}|"
    assert safe("x\x1b[2Jy") == "x\\x1b[2Jy"


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


@pytest.mark.parametrize(
    ("old", "new", "shown"),
    [
        ("    steps:", '    "[/bold]": 1\n    steps:', "unknown field '[/bold]'"),
        (
            "    steps:",
            '    "[link=file:///etc/passwd]x": 1\n    steps:',
            "'[link=file:///etc/passwd]x'",
        ),
        ("key: cli-errors", "key: Bad Key", "'^[a-z0-9][a-z0-9_-]{0,62}$'"),
    ],
)
def test_validate_shows_user_text_literally(tmp_path: Path, old: str, new: str, shown: str) -> None:
    folder = tmp_path / "[/red]"  # a folder "[" holding "red]"
    folder.mkdir(parents=True)
    path = folder / "exp.yaml"
    path.write_text(SPEC.replace(old, new))
    line = one_error_line(runner.invoke(app, ["validate", str(path)]))
    assert line.startswith(f"error {path}:")
    assert shown in line


def test_analyze_arm_and_column_named_like_markup(tmp_path: Path) -> None:
    path = tmp_path / "[red]data.csv"
    path.write_text(CSV.replace("A,", "[/bold],").replace("converted", "[/bold]"))
    args = ["analyze", str(path), "--arm-column", "arm", "--baseline", "[/bold]"]
    result = runner.invoke(app, [*args, "--metric", "[/bold]:binary", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "[red]data" in result.output and "baseline: [/bold]" in result.output
    result = runner.invoke(app, [*args, "--metric", "[/x]:binary", "--out", str(tmp_path / "o")])
    line = one_error_line(result)
    assert "no column named '[/x]'" in line


def test_run_refuses_a_weight_change_before_any_flow(
    tmp_path: Path, engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refusal comes from the check before the flow, so no Prefect run (and no ERROR log)
    is started: this test has no Prefect API at all."""
    monkeypatch.setenv("RETAIN_DATABASE_URL", database_url)
    from models.experiments import assign_customers
    from tests.dbdata import add_customers

    loaded = parse_spec(SPEC, "cli-errors.yaml")
    registration = register_experiment(engine, loaded, T0)
    assign_customers(engine, registration.experiment_id, loaded.spec, add_customers(engine, 4), T0)
    path = tmp_path / "cli-errors.yaml"
    path.write_text(SPEC.replace("{name: control, weight: 1}", "{name: control, weight: 3}"))
    line = one_error_line(runner.invoke(app, ["run", str(path)]))
    assert "already has 4 assigned customers" in line and "would move them between arms" in line
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(Experiment)).scalar_one() == 1


@pytest.mark.slow
@pytest.mark.prefect
def test_run_records_nothing_when_the_segment_cannot_run(
    prefect_api: None,
    tmp_path: Path,
    engine: Engine,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rule that parses but that the database (or the SQL compiler) cannot run: 4,900 ``+``
    terms. Whether ``validate`` refuses it or the run's segment step does, the experiment must
    not be recorded."""
    from tests.dbdata import add_customers

    monkeypatch.setenv("RETAIN_DATABASE_URL", database_url)
    add_customers(engine, 3)
    rule = "tenure_days > " + "+".join(["1"] * 4900)
    path = tmp_path / "cli-errors.yaml"
    path.write_text(SPEC.replace("card_expires_in_days <= 30", rule))
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    [line] = [ln for ln in result.output.splitlines() if ln.startswith("error ")]
    assert str(path) in line
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(Experiment)).scalar_one() == 0


@pytest.mark.parametrize("weight", ["abc", "nan", "1e400", "-1", "0"])
def test_analyze_bad_weight_is_one_line(csv_file: Path, tmp_path: Path, weight: str) -> None:
    args = ["analyze", str(csv_file), "--arm-column", "arm", "--baseline", "A"]
    args += [
        "--metric",
        "converted:binary",
        "--weight",
        f"A={weight}",
        "--out",
        str(tmp_path / "o"),
    ]
    line = one_error_line(runner.invoke(app, args))
    assert (
        line == f"error --weight A={weight}: the weight must be a positive number, e.g. control=1"
    )


def test_analyze_a_device_is_refused_not_read_forever(tmp_path: Path) -> None:
    args = ["analyze", "/dev/zero", "--arm-column", "arm", "--baseline", "A"]
    result = runner.invoke(app, [*args, "--metric", "y:binary", "--out", str(tmp_path / "o")])
    assert one_error_line(result) == "error /dev/zero: is not a regular file. Give the CSV file."
