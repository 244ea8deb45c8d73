"""Experiments as scheduled deployments on a real ``prefect server``: ``retain deploy`` registers and
serves them, a triggered run enrols, sends and evaluates for real, and ``status: paused`` in the YAML
leaves no active schedule after a re-deploy."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from experiments.loader import load_spec
from flows.artifacts import artifact_key, summary_markdown, table_rows
from flows.deploy import plan_deployments
from models.records import Assignment, Message
from tests.dbdata import T0, add_customers

pytestmark = [pytest.mark.slow, pytest.mark.prefect]

KEY = "deploy-reminder"
SPEC = f"""\
key: {KEY}
hypothesis: Reminders help.
segment: {{where: card_expires_in_days <= 30 and subscription.status == "active"}}
arms:
  - {{name: control, weight: 1}}
  - name: email
    weight: 1
    steps: [{{at: 0d, channel: email, template: card_expiry}}]
metrics: {{primary: card_updated_14d, secondary: [retained_30d]}}
schedule: {{cron: "0 9 * * *", timezone: Europe/Stockholm, dispatch: "*/30 * * * *"}}
"""
RETAIN = str(Path(sys.executable).with_name("retain"))
PREFECT = str(Path(sys.executable).with_name("prefect"))


def test_each_file_plans_enrol_dispatch_and_evaluate(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(SPEC)
    planned = plan_deployments(load_spec(path), path, tmp_path / "r", tmp_path / "o")
    assert [(p.full_name, p.cron, p.timezone, p.active) for p in planned] == [
        (f"run-experiment/{KEY}", "0 9 * * *", "Europe/Stockholm", True),
        (f"dispatch-messages/{KEY}", "*/30 * * * *", "Europe/Stockholm", True),
        (f"evaluate-experiment/{KEY}", "0 6 * * *", "Europe/Stockholm", True),
    ]
    assert planned[0].parameters == {"spec_path": str(path.resolve())}
    assert planned[2].parameters == {"key": KEY, "out_dir": str((tmp_path / "r" / KEY).resolve())}
    assert all("database" not in str(p.parameters) for p in planned)  # no secret as a parameter

    path.write_text(SPEC + "status: paused\n")
    paused = plan_deployments(load_spec(path), path, tmp_path / "r", tmp_path / "o")
    assert [p.active for p in paused] == [False, False, False]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(predicate, what: str, timeout: float = 120.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A real ``prefect server`` on 127.0.0.1 with its own PREFECT_HOME and database; yields the
    environment a client needs to talk to it."""
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait(healthy, "prefect server to start", timeout=90)
        yield env
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _api(env: dict[str, str], method: str, path: str, **kwargs: object) -> object:
    """One call to the Prefect REST API, retried on 503 as Prefect's own client does (its SQLite
    database answers 503 while locked)."""
    for attempt in range(20):
        response = httpx.request(method, env["PREFECT_API_URL"] + path, timeout=10, **kwargs)  # type: ignore[arg-type]
        if response.status_code not in (429, 503) or attempt == 19:
            break
        time.sleep(0.5)
    response.raise_for_status()
    return response.json()


def _deployment(env: dict[str, str], flow: str) -> dict[str, object] | None:
    try:
        return _api(env, "GET", f"/deployments/name/{flow}/{KEY}")  # type: ignore[return-value]
    except httpx.HTTPStatusError:
        return None


def _run_and_wait(
    env: dict[str, str], flow: str, parameters: dict[str, object]
) -> dict[str, object]:
    deployment = _deployment(env, flow)
    assert deployment is not None
    run = _api(
        env,
        "POST",
        f"/deployments/{deployment['id']}/create_flow_run",
        json={"parameters": parameters},
    )
    run_id = run["id"]  # type: ignore[index]

    def finished() -> dict[str, object] | None:
        state = _api(env, "GET", f"/flow_runs/{run_id}")["state"]  # type: ignore[index]
        return state if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    state = _wait(finished, f"{flow} run to finish", timeout=180)
    assert state["type"] == "COMPLETED", state
    return state  # type: ignore[no-any-return]


def _count(engine: Engine, model: type) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(model)).scalar_one())


def test_deploy_serve_trigger_then_pause(
    prefect_server: dict[str, str], engine: Engine, database_url: str, tmp_path: Path
) -> None:
    add_customers(engine, 24, card_days=20)
    spec_path = tmp_path / f"{KEY}.yaml"
    spec_path.write_text(SPEC)
    env = {**prefect_server, "RETAIN_DATABASE_URL": database_url}
    reports, outbox = tmp_path / "reports", tmp_path / "outbox"
    args = [str(spec_path), "--reports", str(reports), "--outbox", str(outbox)]

    serve_log = (tmp_path / "serve.log").open("w")
    serving = subprocess.Popen(
        [RETAIN, "deploy", *args],
        env=env,
        stdout=serve_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        enrol = _wait(lambda: _deployment(env, "run-experiment"), "deployments", timeout=120)
        assert enrol["paused"] is False
        [schedule] = enrol["schedules"]  # type: ignore[misc]
        assert schedule["active"] is True
        assert schedule["schedule"]["cron"] == "0 9 * * *"
        assert schedule["schedule"]["timezone"] == "Europe/Stockholm"
        assert "database_url" not in enrol["parameters"]  # type: ignore[operator]

        as_of = T0.isoformat()
        _run_and_wait(env, "run-experiment", {"as_of": as_of})
        assert _count(engine, Assignment) == 24
        with engine.connect() as connection:
            treated = connection.execute(
                select(func.count()).select_from(Message).where(Message.shadow.is_(False))  # type: ignore[attr-defined]
            ).scalar_one()
        assert 0 < treated < 24
        _run_and_wait(env, "dispatch-messages", {"as_of": as_of})
        assert len(list((outbox / KEY / "email").glob("*.txt"))) == treated
        _run_and_wait(env, "evaluate-experiment", {"as_of": (T0.replace(year=2027)).isoformat()})
        assert (reports / KEY / "report.html").stat().st_size > 1000
        artifacts = _api(env, "POST", "/artifacts/filter", json={"limit": 50})
        keys = {a["key"] for a in artifacts}  # type: ignore[union-attr, index]
        assert {artifact_key(KEY, k) for k in ("summary", "table", "report")} <= keys
        link = next(a for a in artifacts if a["key"] == artifact_key(KEY, "report"))  # type: ignore[union-attr, index]
        assert (reports / KEY / "report.html").resolve().as_uri() in link["data"]
    finally:
        os.killpg(serving.pid, signal.SIGTERM)
        serving.wait(timeout=60)
        serve_log.close()

    # An edited cron takes effect on re-deploy; `status: paused` leaves no active schedule.
    spec_path.write_text(SPEC.replace('cron: "0 9 * * *"', 'cron: "30 7 * * 1-5"'))
    done = subprocess.run([RETAIN, "deploy", "--no-serve", *args], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr
    enrol = _deployment(env, "run-experiment")
    assert enrol is not None and enrol["paused"] is False
    assert [s["schedule"]["cron"] for s in enrol["schedules"]] == ["30 7 * * 1-5"]  # type: ignore[attr-defined, index]

    spec_path.write_text(SPEC + "status: paused\n")
    done = subprocess.run([RETAIN, "deploy", "--no-serve", *args], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr
    for flow in ("run-experiment", "dispatch-messages", "evaluate-experiment"):
        deployment = _deployment(env, flow)
        assert deployment is not None and deployment["paused"] is True
        assert [s["active"] for s in deployment["schedules"]] == [False]  # type: ignore[attr-defined, index]

    status = subprocess.run([RETAIN, "status"], env=env, capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    assert KEY in status.stdout and "enrol paused" in status.stdout


def test_artifact_tables_follow_the_report(
    prefect_api: None, engine: Engine, database_url: str, tmp_path: Path
) -> None:
    from flows.pipeline import dispatch_messages, evaluate_experiment, run_experiment

    add_customers(engine, 40, card_days=20)
    spec_path = tmp_path / f"{KEY}.yaml"
    spec_path.write_text(SPEC)
    run_experiment(str(spec_path), as_of=T0)
    dispatch_messages(str(tmp_path / "o"), as_of=T0)
    report = evaluate_experiment(KEY, str(tmp_path / "r"), as_of=T0.replace(year=2027))
    rows = table_rows(report)
    assert {(r["metric"], r["arm"]) for r in rows} == {
        (m, a) for m in ("card_updated_14d", "retained_30d") for a in ("control", "email")
    }
    primary = {r["arm"]: r for r in rows if r["metric"] == "card_updated_14d"}
    assert primary["control"]["abs_lift"] is None
    assert primary["control"]["n"] + primary["email"]["n"] == 40
    markdown = summary_markdown(report)
    assert markdown.startswith(f"# {KEY}: card_updated_14d")
    assert f"| email | {primary['email']['n']:,} |" in markdown


def test_committed_prefect_yaml_matches_the_example_it_deploys() -> None:
    """prefect.yaml (the work-pool way) deploys card-expiry-reminder exactly as `retain deploy`
    plans it: same flows, cadences, time zone and parameter names."""
    from ruamel.yaml import YAML

    root = Path(__file__).resolve().parent.parent
    document = YAML(typ="safe").load((root / "prefect.yaml").read_text())
    path = root / "experiments" / "definitions" / "card-expiry-reminder.yaml"
    planned = plan_deployments(load_spec(path), path, root / "reports", root / "outbox")
    entrypoints = {
        "flows/pipeline.py:run_experiment": "run-experiment",
        "flows/pipeline.py:dispatch_messages": "dispatch-messages",
        "flows/pipeline.py:evaluate_experiment": "evaluate-experiment",
    }
    committed = {
        (entrypoints[d["entrypoint"]], d["name"], s["cron"], s["timezone"], tuple(d["parameters"]))
        for d in document["deployments"]
        for s in d["schedules"]
    }
    expected = {(p.flow_name, p.name, p.cron, p.timezone, tuple(p.parameters)) for p in planned}
    assert committed == expected
    assert {d["work_pool"]["name"] for d in document["deployments"]} == {"retain"}


def test_bad_cron_zone_or_status_is_reported_with_its_line(tmp_path: Path) -> None:
    from experiments.loader import SpecError

    path = tmp_path / "bad.yaml"
    path.write_text(
        SPEC.replace('cron: "0 9 * * *"', 'cron: "0 25 * * *"').replace(
            "Europe/Stockholm", "Mars/Olympus"
        )
        + "status: sleeping\n"
    )
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    problems = [str(p) for p in caught.value.problems]
    assert any("bad.yaml:10:" in p and "schedule.cron" in p and "Bad hour" in p for p in problems)
    assert any("bad.yaml:10:" in p and "Mars/Olympus" in p for p in problems)
    assert any("bad.yaml:11:" in p and "status" in p for p in problems)


def test_no_flow_takes_the_database_url_as_a_parameter() -> None:
    """Flow parameters are stored in Prefect's flow-run records: a password in a database URL
    must never become one (flows read RETAIN_DATABASE_URL from the environment)."""
    import inspect

    from flows.pipeline import dispatch_messages, evaluate_experiment, run_experiment
    from flows.sync import sync_customers

    for flow in (run_experiment, dispatch_messages, evaluate_experiment, sync_customers):
        names = set(inspect.signature(flow.fn).parameters)
        secretive = ("url", "secret", "password", "token", "api_key")
        assert not {n for n in names if any(word in n for word in secretive)}, names
