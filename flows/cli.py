"""The ``retain`` command line."""

from __future__ import annotations

import atexit
import math
import os
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from flows import cli_deploy, cli_import, cli_report
from flows.cli_checks import (
    AsOf,
    CliProblem,
    open_database,
    writable_folder,
)
from flows.cli_messaging_b import (
    preview,
    sms_budget_warnings,
    webhooks_app,
)
from flows.console import console, fail, fail_all, safe, warning

# Prefect settings must be in the environment before prefect is imported (flows import it lazily).
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

app = typer.Typer(
    help=(
        "Retain: retention experiments defined in YAML, run as Prefect flows.\n\n"
        "The database is RETAIN_DATABASE_URL (default: sqlite:///retain.db in this folder)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.command("deploy")(cli_deploy.deploy)
app.command("status")(cli_deploy.status)
app.add_typer(cli_deploy.server_app, name="server")
app.command("report")(cli_report.report)
app.add_typer(webhooks_app, name="webhooks")
app.command()(preview)
app.command("import")(cli_import.import_command)
app.add_typer(cli_import.sync_app, name="sync")

T = TypeVar("T")


def _quiet_prefect(verbose: bool) -> None:
    """Prepare a one-shot flow command: quiet logs, a running local server when there is one
    (`retain server start`), and no flow heartbeat (it only detects crashed long-running runs and
    costs each flow run about a second)."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    from flows.server import use_local_server

    if use_local_server() is None:
        # Prefect's ephemeral API stops with this command; recording task runs into it only
        # races its shutdown (tracebacks on exit, INTEGRATIONS.md).
        os.environ.setdefault("PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED", "false")
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    _FLOW_SETTINGS.enter_context(temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}))


# Settings for this process's flow runs, kept until the command exits.
_FLOW_SETTINGS = ExitStack()
atexit.register(_FLOW_SETTINGS.close)


def _checked(check: Callable[[], T]) -> T:
    """``check()``, or its :class:`CliProblem` as the one error line."""
    try:
        return check()
    except CliProblem as problem:
        fail(problem)


def _validate_or_exit(paths: list[Path]) -> None:
    from experiments.loader import SpecError, load_specs
    from messaging.render import template_exists, template_variables

    try:
        load_specs(paths, template_exists, template_variables)
    except SpecError as error:
        fail_all(error.problems)


@app.command()
def validate(
    paths: Annotated[list[Path], typer.Argument(help="Experiment YAML files.")],
) -> None:
    """Check experiment files: fields, segment rules, metrics, templates. Exit code 2 on errors,
    with one line per problem (file:line: what is wrong and how to fix it)."""
    _validate_or_exit(paths)
    for text in sms_budget_warnings(paths):
        warning(text)
    console.print(f"[green]ok[/green] {len(paths)} experiment file(s) valid")


@app.command()
def fields() -> None:
    """List the customer fields a segment rule can use, with their types."""
    from experiments.rules import describe_fields

    console.print(describe_fields(), highlight=False)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the schema (Alembic migrations; recorded data is kept)."""
    from models.db import database_url, redact
    from models.migrate import current_revision

    engine = _checked(open_database)
    console.print(
        f"{safe(redact(database_url()))} is at revision {current_revision(engine)}", highlight=False
    )


@app.command()
def run(
    paths: Annotated[list[Path], typer.Argument(help="Experiment YAML files.")],
    as_of: AsOf = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs.")] = False,
) -> None:
    """Run experiments once: select each segment, assign new customers to arms (sticky: nobody
    already assigned moves) and schedule their messages in the outbox."""
    _validate_or_exit(paths)
    _quiet_prefect(verbose)
    from experiments.loader import load_spec
    from models.experiments import (
        ExperimentChangeError,
        SegmentError,
        check_change,
        check_segment,
    )

    engine = _checked(open_database)
    for path in paths:
        # Before any flow starts: a refused change or a segment the database cannot run is one
        # line, not a failed flow run with Prefect's tracebacks, and nothing is recorded.
        loaded = load_spec(path)
        try:
            check_change(engine, loaded)
            check_segment(engine, loaded, as_of or datetime.now(UTC))
        except (ExperimentChangeError, SegmentError) as error:
            fail(error)
    from flows.pipeline import run_experiment

    for path in paths:
        try:
            summary = run_experiment(str(path), as_of=as_of)
        except (ExperimentChangeError, SegmentError) as error:
            fail(error)
        console.print(
            f"{safe(summary.experiment)}: {summary.segment_size:,} in segment, "
            f"{summary.newly_assigned:,} newly assigned {safe(summary.by_arm)}, "
            f"{summary.messages_scheduled:,} messages scheduled",
            highlight=False,
        )


@app.command()
def evaluate(
    key: Annotated[str, typer.Argument(help="Experiment key (as in its YAML).")],
    out: Annotated[Path, typer.Option(help="Folder for report.json/.md/.html.")] = Path("reports"),
    as_of: AsOf = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs.")] = False,
) -> None:
    """Aggregate an experiment's metrics per arm in SQL, run the tests and write its report."""
    _quiet_prefect(verbose)
    from models.experiments import experiment_id_for

    engine = _checked(open_database)
    if experiment_id_for(engine, key) is None:
        fail(f"experiment {key!r}: not in the database; run it first (retain run PATH)")
    _checked(lambda: writable_folder(out / key))
    from flows.pipeline import evaluate_experiment
    from flows.tables import report_table

    report = evaluate_experiment(key, str(out / key), as_of=as_of)
    console.print(report_table(report))
    console.print(f"report written to {safe(out / key)}", highlight=False)


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option(help="Output folder (reports, outbox, demo database).")
    ] = Path("demo-output"),
    customers: Annotated[
        int, typer.Option(min=200, help="Size of the synthetic business.")
    ] = 20_000,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic business and responses.")] = 7,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="Use this (empty) database instead of a fresh SQLite file in the output folder."
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs.")] = False,
) -> None:
    """Run the whole path on a synthetic subscription business with known true effects: seed,
    run the four example experiments, send their messages to the local outbox, simulate 90 days
    of outcomes, evaluate, and print each estimate with its 95% CI next to the planted effect."""
    _quiet_prefect(verbose)
    from flows.demo import DemoConfig, run_demo
    from flows.tables import report_table
    from models.seed import SeedError

    _checked(lambda: writable_folder(out))
    started = time.monotonic()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"seeding {stage}", total=total)
            bar.update(tasks[stage], completed=done)

        try:
            result = run_demo(
                DemoConfig(out_dir=out, customers=customers, seed=seed, database_url=database_url),
                progress=progress,
                log=lambda line: console.print(f"[dim]{safe(line)}[/dim]", highlight=False),
            )
        except SeedError as error:
            fail(f"{error}; give the demo an empty database, or leave out --database-url")
    for key, report in result.reports.items():
        console.print(report_table(report))
        console.print(f"  report: {safe(result.report_dirs[key])}/report.html\n", highlight=False)
    console.print(
        f"demo finished in {time.monotonic() - started:.0f} s; "
        f"outbox files in {safe(out / 'outbox')}",
        highlight=False,
    )


@app.command()
def plan(
    path: Annotated[Path, typer.Argument(help="Experiment YAML file.")],
    mde: Annotated[
        float | None,
        typer.Option(help="Minimum detectable effect, absolute (default: analysis.mde)."),
    ] = None,
    as_of: AsOf = None,
) -> None:
    """Plan an experiment from the data: the segment's size and daily inflow, the primary metric's
    baseline, the sample size per arm for the MDE, alpha and power, the expected duration, and the
    MDE reachable in 14, 28 and 56 days."""
    _validate_or_exit([path])
    from experiments.loader import load_spec
    from flows.plan import plan_experiment

    spec = load_spec(path).spec
    engine = _checked(open_database)
    try:
        result = plan_experiment(engine, spec, as_of or datetime.now(UTC), mde)
    except ValueError as error:
        fail(str(error))

    def fmt(value: float) -> str:
        return f"{value * 100:.2f} pp" if result.kind == "binary" else f"{value:,.2f}"

    facts = result.facts
    table = Table(
        title=f"[bold]{safe(spec.key)}[/bold]: plan for {safe(result.metric)}", title_justify="left"
    )
    table.add_column("")
    table.add_column("", justify="right")
    base = (
        f"{facts.baseline.mean * 100:.2f}%" if result.kind == "binary" else fmt(facts.baseline.mean)
    )
    table.add_row("customers in the segment now", f"{facts.segment_size:,}")
    table.add_row("entering the segment per day (last 7 days)", f"{facts.daily_inflow:,.1f}")
    table.add_row(
        f"baseline {result.metric} (replayed from {facts.baseline_as_of:%Y-%m-%d})",
        f"{base} (n={facts.baseline.n:,})",
    )
    table.add_row("alpha / power", f"{spec.analysis.alpha:g} / {spec.analysis.power:g}")
    if result.plan is not None and result.mde is not None:
        table.add_row("minimum detectable effect", fmt(result.mde))
        table.add_row("sample size per arm", f"{result.plan.n_per_arm:,}")
        table.add_row("customers needed in all", f"{result.plan.total:,}")
        table.add_row(
            "days of inflow needed after today's segment",
            "–" if result.days_after_current is None else f"{result.days_after_current:,.1f}",
        )
    else:
        table.add_row("minimum detectable effect", "not set (analysis.mde or --mde)")
    if result.mde_now is not None:
        table.add_row("MDE with today's segment alone", fmt(result.mde_now))
    for days, value in result.mde_in_days.items():
        table.add_row(f"MDE after {days} days of inflow", fmt(value))
    console.print(table)


@app.command()
def analyze(
    data: Annotated[Path, typer.Argument(help="CSV file, one row per unit, with a header row.")],
    arm_column: Annotated[str, typer.Option(help="Column holding each unit's arm.")],
    baseline: Annotated[str, typer.Option(help="The control arm's name.")],
    metric: Annotated[
        list[str],
        typer.Option(
            help="NAME:binary or NAME:continuous, once per metric column; the first is primary. "
            "Binary values: 0/1, true/false or yes/no in any case."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder for report.json/.md/.html.")] = Path(
        "analysis-output"
    ),
    weight: Annotated[
        list[str] | None,
        typer.Option(help="ARM=WEIGHT planned share for the sample-ratio check (default equal)."),
    ] = None,
    alpha: Annotated[float, typer.Option(min=0.001, max=0.2)] = 0.05,
    correction: Annotated[str, typer.Option(help="holm, bh or none.")] = "holm",
) -> None:
    """Analyse an experiment that ran elsewhere, from a CSV of one row per unit, and write the
    same report.json/md/html as a Retain experiment. The experiment is finished, so the headline
    p-values and CIs are fixed-horizon ones."""
    from experiments.csvdata import CsvDataError, parse_metric_option
    from flows.analyze import analyze_csv
    from flows.tables import report_table

    if correction not in ("holm", "bh", "none"):
        fail(f"--correction must be holm, bh or none, not {correction!r}")
    _checked(lambda: writable_folder(out))
    try:
        metrics = [parse_metric_option(m) for m in metric]
        weights = {}
        for item in weight or []:
            arm, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--weight takes ARM=WEIGHT, e.g. control=1, not {item!r}")
            try:
                share = float(value)
            except ValueError:
                share = math.nan
            if not (math.isfinite(share) and share > 0):
                raise ValueError(
                    f"--weight {item}: the weight must be a positive number, e.g. control=1"
                )
            weights[arm.strip()] = share
        started = time.monotonic()
        loaded, report = analyze_csv(
            data, arm_column, baseline, metrics, out, weights, alpha, correction
        )
    except (CsvDataError, ValueError) as error:
        fail(error)
    except OSError as error:  # the folder was checked; this is a write failing part-way
        fail(f"--out {out}: cannot write the report ({error.strerror or error})")
    console.print(report_table(report))
    console.print(
        f"{loaded.rows:,} rows, {len(loaded.arms)} arms analysed in {time.monotonic() - started:.1f} s; "
        f"report written to {safe(out)}",
        highlight=False,
    )


from flows import cli_messaging  # noqa: E402  (dispatch, channels, outbox)

app.command()(cli_messaging.dispatch)
app.command()(cli_messaging.channels)
app.add_typer(cli_messaging.outbox_app, name="outbox")

from flows.cli_selection import risk_app, segment  # noqa: E402  (needs the helpers above)

app.add_typer(risk_app, name="risk")
app.command()(segment)


def main() -> None:  # pragma: no cover
    sys.exit(app())
