"""The ``retain`` command line."""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from flows import cli_import

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
app.command("import")(cli_import.import_command)
app.add_typer(cli_import.sync_app, name="sync")

console = Console()
if not console.is_terminal:  # piped or captured: do not squeeze the tables into 80 columns
    console.width = 130
errors = Console(stderr=True, soft_wrap=True)

AsOf = Annotated[
    datetime | None,
    typer.Option(
        "--as-of",
        help="Act as if it were this UTC time (ISO 8601); default: now.",
        formats=["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"],
    ),
]


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _quiet_prefect(verbose: bool) -> None:
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "WARNING")


def _fail(message: str) -> NoReturn:
    errors.print(f"[red]error[/red] {message}", highlight=False)
    raise typer.Exit(code=2)


def _validate_or_exit(paths: list[Path]) -> None:
    from experiments.loader import SpecError, load_specs
    from messaging.render import template_exists

    try:
        load_specs(paths, template_exists)
    except SpecError as error:
        for problem in error.problems:
            errors.print(f"[red]error[/red] {problem}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None


@app.command()
def validate(
    paths: Annotated[list[Path], typer.Argument(help="Experiment YAML files.")],
) -> None:
    """Check experiment files: fields, segment rules, metrics, templates. Exit code 2 on errors,
    with one line per problem (file:line: what is wrong and how to fix it)."""
    _validate_or_exit(paths)
    console.print(f"[green]ok[/green] {len(paths)} experiment file(s) valid")


@app.command()
def fields() -> None:
    """List the customer fields a segment rule can use, with their types."""
    from experiments.rules import describe_fields

    console.print(describe_fields(), highlight=False)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the schema (Alembic migrations; recorded data is kept)."""
    from models.db import database_url, engine_for, redact
    from models.migrate import current_revision, upgrade

    engine = engine_for()
    upgrade(engine)
    console.print(f"{redact(database_url())} is at revision {current_revision(engine)}")


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
    from flows.pipeline import run_experiment
    from models.db import engine_for
    from models.experiments import ExperimentChangeError
    from models.migrate import upgrade

    upgrade(engine_for())
    for path in paths:
        try:
            summary = run_experiment(str(path), as_of=_utc(as_of))
        except ExperimentChangeError as error:
            _fail(str(error))
        console.print(
            f"{summary.experiment}: {summary.segment_size:,} in segment, "
            f"{summary.newly_assigned:,} newly assigned {summary.by_arm}, "
            f"{summary.messages_scheduled:,} messages scheduled"
        )


@app.command()
def dispatch(
    outbox: Annotated[Path, typer.Option(help="Folder the local outbox channel writes to.")] = Path(
        "outbox"
    ),
    as_of: AsOf = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs.")] = False,
) -> None:
    """Send every due message once, respecting consent, suppressions, quiet hours and caps."""
    _quiet_prefect(verbose)
    from flows.pipeline import dispatch_messages

    summary = dispatch_messages(str(outbox), as_of=_utc(as_of))
    console.print(
        f"sent {summary.sent}, skipped {summary.skipped}, deferred {summary.deferred}, "
        f"failed {summary.failed}"
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
    from flows.pipeline import evaluate_experiment
    from flows.tables import report_table

    try:
        report = evaluate_experiment(key, str(out / key), as_of=_utc(as_of))
    except KeyError as error:
        _fail(str(error.args[0]))

    console.print(report_table(report))
    console.print(f"report written to {out / key}")


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
    run the three example experiments, send their messages to the local outbox, simulate 90 days
    of outcomes, evaluate, and print each estimate with its 95% CI next to the planted effect."""
    _quiet_prefect(verbose)
    from flows.demo import DemoConfig, run_demo
    from flows.tables import report_table
    from models.seed import SeedError

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
                log=lambda line: console.print(f"[dim]{line}[/dim]", highlight=False),
            )
        except SeedError as error:
            _fail(f"{error}; give the demo an empty database, or leave out --database-url")
    for key, report in result.reports.items():
        console.print(report_table(report))
        console.print(f"  report: {result.report_dirs[key]}/report.html\n", highlight=False)
    console.print(
        f"demo finished in {time.monotonic() - started:.0f} s; outbox files in {out / 'outbox'}",
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
    from models.db import engine_for
    from models.migrate import upgrade

    spec = load_spec(path).spec
    engine = engine_for()
    upgrade(engine)
    try:
        result = plan_experiment(engine, spec, _utc(as_of) or datetime.now(UTC), mde)
    except ValueError as error:
        _fail(str(error))

    def fmt(value: float) -> str:
        return f"{value * 100:.2f} pp" if result.kind == "binary" else f"{value:,.2f}"

    facts = result.facts
    table = Table(title=f"[bold]{spec.key}[/bold]: plan for {result.metric}", title_justify="left")
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
        _fail(f"--correction must be holm, bh or none, not {correction!r}")
    try:
        metrics = [parse_metric_option(m) for m in metric]
        weights = {}
        for item in weight or []:
            arm, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--weight takes ARM=WEIGHT, e.g. control=1, not {item!r}")
            weights[arm.strip()] = float(value)
        started = time.monotonic()
        loaded, report = analyze_csv(
            data, arm_column, baseline, metrics, out, weights, alpha, correction
        )
    except (CsvDataError, ValueError) as error:
        _fail(str(error))
    console.print(report_table(report))
    console.print(
        f"{loaded.rows:,} rows, {len(loaded.arms)} arms analysed in {time.monotonic() - started:.1f} s; "
        f"report written to {out}",
        highlight=False,
    )


def main() -> None:  # pragma: no cover
    sys.exit(app())
