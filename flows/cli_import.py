"""``retain import`` and ``retain sync stripe``: a team's own customers from files, a SQL database
or the Stripe API. No Prefect here: the commands call the import code directly (the scheduled sync
is the flow in ``flows/sync.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.console import console, error, fail, fail_all, safe

sync_app = typer.Typer(help="Pull a billing system's data into Retain.", no_args_is_help=True)


def import_command(
    files: Annotated[
        list[Path] | None, typer.Argument(help="CSV or Parquet files (one entity, one mapping).")
    ] = None,
    mapping: Annotated[
        str,
        typer.Option(
            help="Mapping YAML file, or a shipped one: stripe-customers, stripe-subscriptions, "
            "stripe-invoices, stripe-payment-methods, product-events."
        ),
    ] = "",
    from_sql: Annotated[
        str | None,
        typer.Option("--from-sql", help="SQLAlchemy URL of a database to read (read-only)."),
    ] = None,
    query: Annotated[
        Path | None, typer.Option(help="File with the SQL query to run with --from-sql.")
    ] = None,
    rejects: Annotated[
        Path | None,
        typer.Option(help="Reject file (default: <file>.rejects.csv, or rejects.csv for SQL)."),
    ] = None,
    chunk_rows: Annotated[
        int, typer.Option(min=100, help="Rows per chunk with --from-sql.")
    ] = 50_000,
) -> None:
    """Import customers, subscriptions, invoices, payment methods or activity events, upserting by
    the source's id: re-importing a file changes nothing; a newer export updates what changed.
    Bad rows go to a reject file (file, line, column, value, reason); a file whose columns do not
    match its mapping, or that is truncated, imports nothing. Exit code 1 when rows were
    rejected, 2 when a file or the mapping could not be used."""
    from models.db import engine_for, redact
    from models.imports.mapping import MappingError, load_mapping
    from models.imports.run import ImportSummary, import_file, import_query
    from models.migrate import upgrade

    if not mapping:
        fail("import: no --mapping; give a mapping YAML file or a shipped mapping's name")
    if bool(files) == bool(from_sql):
        fail("import: give either files or --from-sql URL --query FILE.sql")
    if rejects is not None and files and len(files) > 1:
        fail("import: --rejects names one file's reject file; import the files one at a time")
    try:
        loaded = load_mapping(mapping)
    except MappingError as error:
        fail_all(error.problems)
    settings_problem = _settings_problem()
    if settings_problem:
        fail(f"import: {settings_problem}")
    engine = engine_for()
    upgrade(engine)
    summaries: list[ImportSummary] = []
    if from_sql:
        if query is None or not query.is_file():
            fail(f"import: --query {query}: not a file; write the SELECT into a .sql file")
        summaries.append(
            import_query(
                engine,
                from_sql,
                query.read_text(encoding="utf-8"),
                loaded,
                reject_file=rejects or Path("rejects.csv"),
                label=f"{redact(from_sql)} {query.name}",
                chunk_rows=chunk_rows,
            )
        )
    for path in files or []:
        if not path.is_file():
            fail(f"import {path}: no such file; check the path")
        summaries.append(import_file(engine, path, loaded, reject_file=rejects))
    for summary in summaries:
        _report(summary)
    if any(s.status != "applied" for s in summaries):
        raise typer.Exit(code=2)
    if any(s.rejects for s in summaries):
        raise typer.Exit(code=1)


def _settings_problem() -> str | None:
    """One line about a malformed RETAIN_* setting, or None (the values are never echoed)."""
    from pydantic import ValidationError

    from models.imports.settings import ImportSettings

    try:
        ImportSettings()
    except ValidationError as error:
        first = error.errors()[0]
        name = "RETAIN_" + str(first["loc"][0]).upper() if first["loc"] else "a RETAIN_ setting"
        return f"{name} is not valid ({first['msg']}); fix or unset it"
    return None


def _report(summary: object) -> None:
    from models.imports.run import ImportSummary

    assert isinstance(summary, ImportSummary)
    source = safe(summary.source)
    if summary.status != "applied":
        for line, message in summary.problems:
            where = f"{summary.source}:{line}" if line else summary.source
            error(f"{where}: {message}; nothing was imported")
        return
    note = " (no change)" if summary.changed_nothing and not summary.rejects else ""
    console.print(
        f"{source} → {summary.entity}: {summary.rows:,} rows, {summary.inserted:,} inserted, "
        f"{summary.updated:,} updated, {summary.unchanged:,} unchanged, "
        f"{summary.rejected:,} rejected{note}",
        highlight=False,
    )
    if summary.suppressions:
        console.print(f"  {summary.suppressions:,} unsubscribes recorded as suppressions")
    if summary.reject_file is not None:
        console.print(f"  rejected rows and why: {safe(str(summary.reject_file))}", highlight=False)


@sync_app.command("stripe")
def sync_stripe_command() -> None:
    """Pull customers, subscriptions, invoices and cards from Stripe: everything the first time,
    then only objects created since the last sync plus the changes Stripe's events report. The
    key is RETAIN_STRIPE_API_KEY (a restricted, read-only key) or the Prefect Secret block named
    by RETAIN_STRIPE_SECRET_BLOCK; it is never printed."""
    from models.db import engine_for
    from models.imports.settings import ImportSettings
    from models.imports.stripe_api import StripeApiError
    from models.imports.stripe_sync import StripeKeyMissing, sync_stripe
    from models.migrate import upgrade

    settings_problem = _settings_problem()
    if settings_problem:
        fail(f"sync stripe: {settings_problem}")
    engine = engine_for()
    upgrade(engine)
    try:
        summary = sync_stripe(engine, ImportSettings())
    except (StripeApiError, StripeKeyMissing) as error:
        fail(f"sync stripe: {error}")
    for item in summary.imports:
        _report(item)
    console.print(
        f"stripe: {summary.events:,} change events applied; cursors "
        + ", ".join(f"{name}={value}" for name, value in sorted(summary.cursors.items())),
        highlight=False,
    )
