"""``retain deploy`` and ``retain status``: experiments as scheduled Prefect deployments."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flows.console import console, fail, fail_all, safe, warning


def deploy(
    paths: Annotated[list[Path], typer.Argument(help="Experiment YAML files.")],
    serve: Annotated[
        bool,
        typer.Option(
            "--serve/--no-serve",
            help="Keep running and execute the deployments' runs here (prefect.serve); "
            "--no-serve only registers or updates them, for a worker or another `retain deploy`.",
        ),
    ] = True,
    reports: Annotated[
        Path, typer.Option(help="Folder the evaluate deployments write reports to.")
    ] = Path("reports"),
    outbox: Annotated[
        Path, typer.Option(help="Folder the local outbox channel writes to (no provider set).")
    ] = Path("outbox"),
) -> None:
    """Turn experiment files into Prefect deployments on the server in PREFECT_API_URL: per file
    an enrol (schedule.cron), a dispatch (schedule.dispatch, default every 15 minutes) and an
    evaluate (schedule.evaluate, default 06:00) deployment, in schedule.timezone. Re-deploying
    after an edit updates the schedules; `status: paused` or `stopped` leaves none active."""
    from experiments.loader import SpecError, load_specs
    from messaging.render import template_exists

    try:
        loaded = load_specs(paths, template_exists)
    except SpecError as error:
        fail_all(error.problems)
    if not os.environ.get("PREFECT_API_URL"):
        warning(
            "PREFECT_API_URL is not set: the deployments live in a temporary local API and "
            "vanish when this command ends; start a server (`retain server start`, or "
            "`prefect server start`) and set PREFECT_API_URL to keep them."
        )
    from flows.deploy import apply_deployments, plan_deployments, serve_deployments

    planned = [
        item
        for path, spec in zip(paths, loaded, strict=True)
        for item in plan_deployments(spec, path, reports, outbox)
    ]
    table = Table(title="deployments", title_justify="left")
    for column in ("deployment", "cron", "timezone", "schedule"):
        table.add_column(column)
    for item in planned:
        table.add_row(
            safe(item.full_name),
            safe(item.cron),
            safe(item.timezone),
            "active" if item.active else "[yellow]paused[/yellow]",
        )
    if not serve:
        apply_deployments(planned)
        console.print(table)
        console.print(f"registered {len(planned)} deployments", highlight=False)
        return
    console.print(table)
    console.print("serving; stop with Ctrl+C (the deployments are paused on exit)")
    serve_deployments(planned)


def _when(value: datetime | None) -> str:
    return "–" if value is None else f"{value:%Y-%m-%d %H:%M} UTC"


def status() -> None:
    """List experiments: state, customers assigned, messages by state, latest evaluation and its
    primary-metric headline, and (with PREFECT_API_URL set) the next scheduled runs."""
    from flows.deployment_status import next_runs
    from models.db import engine_for
    from models.migrate import upgrade
    from models.overview import experiment_overview

    engine = engine_for()
    upgrade(engine)
    overview = experiment_overview(engine)
    upcoming = next_runs([item.key for item in overview]) if overview else {}
    table = Table(title="experiments", title_justify="left")
    for column in ("experiment", "state", "assigned", "messages", "evaluated", "headline", "next"):
        table.add_column(column)
    for item in overview:
        messages = ", ".join(f"{k} {v:,}" for k, v in sorted(item.messages.items())) or "–"
        runs = upcoming.get(item.key)
        table.add_row(
            safe(item.key),
            safe(item.status),
            f"{item.assigned:,}",
            safe(messages),
            _when(item.last_evaluated),
            safe(item.headline),
            safe(runs) if runs else "– (no schedule known)",
        )
    if not overview:
        console.print("no experiments yet: `retain run FILE.yaml` or `retain deploy FILE.yaml`")
        return
    console.print(table)


server_app = typer.Typer(
    help="A local Prefect server kept running, so flow commands start in about a second.",
    no_args_is_help=True,
)


@server_app.command("start")
def server_start(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port on 127.0.0.1.")] = 4200,
) -> None:
    """Start `prefect server start` on 127.0.0.1 in the background; flow commands use it while it
    runs (unless PREFECT_API_URL points elsewhere). Its UI is at the printed address."""
    from flows.server import start

    try:
        server = start(port)
    except RuntimeError as error:
        fail(str(error))
        return
    console.print(
        f"Prefect server running at {safe(server.url)} (pid {server.pid}); "
        "`retain server stop` stops it",
        highlight=False,
    )


@server_app.command("stop")
def server_stop() -> None:
    """Stop the server `retain server start` started."""
    from flows.server import stop

    console.print("stopped" if stop() else "no local server was running")


@server_app.command("status")
def server_status() -> None:
    """Whether the local server is up, and which Prefect API flow commands will use."""
    from flows.server import healthy, recorded

    if os.environ.get("PREFECT_API_URL"):
        console.print(f"PREFECT_API_URL={safe(os.environ['PREFECT_API_URL'])} is used")
        return
    server = recorded()
    if server is not None and healthy(server.url):
        console.print(f"local server up at {safe(server.url)} (pid {server.pid})")
    else:
        console.print("no local server: flow commands start Prefect's ephemeral API (8-10 s)")
