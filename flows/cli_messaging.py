"""``retain dispatch``, ``retain channels`` and ``retain outbox status|recover``.

Only ``dispatch`` runs a flow (and imports Prefect); the others talk to the database and, for
``recover``, to the providers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flows.cli_checks import AsOf
from flows.console import console, fail, safe

outbox_app = typer.Typer(help="Inspect and repair the message outbox.", no_args_is_help=True)


OutboxDir = Annotated[
    Path, typer.Option("--outbox", help="Folder the local outbox channel writes to.")
]


def dispatch(
    outbox: OutboxDir = Path("outbox"),
    as_of: AsOf = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs.")] = False,
) -> None:
    """Send every due message once, judging consent, suppressions, quiet hours, caps and stop
    conditions when each message is sent. Exit code 2 if the dispatch could not finish."""
    from flows.cli import _checked, _quiet_prefect
    from flows.cli_checks import open_database, writable_folder
    from flows.cli_messaging_b import warn_default_link_secret
    from messaging.settings import SettingsError, build_channels, load_settings

    try:
        build_channels(load_settings(), outbox)  # fail fast, before any flow starts
    except (SettingsError, ValueError) as error:
        fail("channels", str(error))
    _checked(open_database)
    _checked(lambda: writable_folder(outbox, "--outbox"))
    warn_default_link_secret()
    _quiet_prefect(verbose)
    from flows.pipeline import dispatch_messages

    summary = dispatch_messages(str(outbox), as_of=as_of)
    console.print(
        f"sent {summary.sent}, withheld (control) {summary.withheld}, skipped {summary.skipped}, "
        f"deferred {summary.deferred}, failed {summary.failed}, retried {summary.retried}, "
        f"outcome unknown {summary.unknown}, reconciled {summary.reconciled}",
        highlight=False,
    )
    if summary.error:
        fail(
            "dispatch",
            f"the dispatch did not finish: {summary.error}; fix the cause and run "
            "`retain dispatch` again (nothing is sent twice)",
        )


def channels() -> None:
    """Show which channel each kind of message will use and whether its settings are complete.
    Secrets are never printed, only whether they are set."""
    from messaging.settings import channel_plans, load_settings

    try:
        settings = load_settings()
    except ValueError as error:
        fail("settings", " ".join(str(error).split()))
    table = Table(title="Channels", title_justify="left")
    for column in ("messages", "channel", "settings", "details"):
        table.add_column(column)
    incomplete = False
    for plan in channel_plans(settings):
        state = "complete" if plan.complete else "missing " + ", ".join(plan.missing)
        incomplete |= not plan.complete
        details = "; ".join(f"{name}: {value}" for name, value in plan.details)
        table.add_row(plan.kind, plan.provider, safe(state), safe(details))
    console.print(table)
    if incomplete:
        raise typer.Exit(code=2)


@outbox_app.command("status")
def outbox_status() -> None:
    """Messages per state; 'sending' split into claimed, in flight and reconciling, with how
    many of those hold an expired lease (a dispatcher died: `retain outbox recover`)."""
    from models.db import engine_for
    from models.migrate import upgrade
    from models.outbox_recovery import status_counts

    engine = engine_for()
    upgrade(engine)
    table = Table(title="Outbox", title_justify="left")
    table.add_column("state")
    table.add_column("messages", justify="right")
    table.add_column("lease expired", justify="right")
    for row in status_counts(engine, datetime.now(UTC)):
        name = f"{row.status} ({row.detail})" if row.detail else row.status
        table.add_row(safe(name), f"{row.count:,}", f"{row.expired:,}" if row.expired else "")
    console.print(table)


@outbox_app.command("recover")
def outbox_recover(
    outbox: OutboxDir = Path("outbox"),
    force: Annotated[
        bool,
        typer.Option(
            help="End every lease now, even unexpired ones. Only when no dispatcher is running."
        ),
    ] = False,
) -> None:
    """Put expired claims back and reconcile messages left in flight: each is looked up at its
    provider and marked sent (found) or pending again (not found, safe to send)."""
    from messaging.dispatcher import default_worker_id
    from messaging.recovery import reconcile_expired
    from messaging.settings import SettingsError, build_channels, load_settings
    from models.db import engine_for
    from models.migrate import upgrade
    from models.outbox_recovery import expire_leases, release_expired_claims, status_counts

    try:
        settings = load_settings()
        configured = build_channels(settings, outbox)
    except (SettingsError, ValueError) as error:
        fail("channels", str(error))
    engine = engine_for()
    upgrade(engine)
    now = datetime.now(UTC)
    if force:
        expire_leases(engine, now)
        now += timedelta(microseconds=1)
    released = release_expired_claims(engine, now)
    settled = reconcile_expired(
        engine, now, default_worker_id(), configured, timedelta(seconds=settings.lease_seconds)
    )
    left = sum(r.count for r in status_counts(engine, now) if r.status == "sending")
    console.print(
        f"released {released} expired claim(s), reconciled {settled} message(s) in flight; "
        f"{left} still sending",
        highlight=False,
    )
