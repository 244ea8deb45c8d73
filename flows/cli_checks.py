"""Checks the command line makes before any work starts, each failing with one line that says what
is wrong and what to do (:class:`CliProblem`): the output folder, the database and ``--as-of``.

Nothing here imports Prefect: a command fails these checks before a flow could log a traceback.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # SQLAlchemy is imported by the checks that use it: `validate` needs none
    from sqlalchemy.engine import Engine

AS_OF_HELP = (
    "Act as if it were this time, ISO 8601 with or without an offset (2027-01-31, "
    "2027-01-31T10:00:00, 2027-01-31T10:00:00+00:00, ...Z); without an offset it is UTC. "
    "Default: now."
)


class CliProblem(Exception):
    """Something the user can fix; ``str()`` is the whole one-line message after ``error``."""


def parse_as_of(text: str) -> datetime:
    """An ``--as-of`` value as an aware UTC datetime (naive input is UTC); typer.BadParameter
    (exit 2, one line) for anything that is not ISO 8601."""
    value = text.strip()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 time; write e.g. 2027-01-31 or 2027-01-31T10:00:00+00:00"
        ) from None
    try:
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before the first UTC instant
        raise typer.BadParameter(
            f"{value!r} is out of range; give a time in years 1-9999"
        ) from None


AsOf = Annotated[
    datetime | None,
    typer.Option("--as-of", help=AS_OF_HELP, parser=parse_as_of, metavar="TIME"),
]
"""The ``--as-of`` option every command shares."""


def writable_folder(path: Path, option: str = "--out") -> Path:
    """Create ``path`` if needed and prove a file can be written in it, before any work starts."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".retain-check-"):
            pass
    except FileExistsError:
        raise CliProblem(
            f"{option} {path}: a file is in the way (it is not a folder); "
            "give a folder path, or remove the file"
        ) from None
    except NotADirectoryError:
        raise CliProblem(
            f"{option} {path}: part of the path is a file, not a folder; give a folder path"
        ) from None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise CliProblem(
            f"{option} {path}: cannot write there ({reason}); give a folder you can write to"
        ) from None
    return path


def open_database(url: str | None = None) -> Engine:
    """The engine of ``url`` (default: RETAIN_DATABASE_URL), upgraded to the newest schema; a
    :class:`CliProblem` names the database and the fix when it cannot be."""
    from sqlalchemy.exc import ArgumentError

    from models.db import database_url, engine_for, redact
    from models.migrate import upgrade

    url = url or database_url()
    try:
        shown = redact(url)
    except (ArgumentError, ValueError):
        raise CliProblem(
            f"RETAIN_DATABASE_URL: {url!r} is not a database URL; write it like "
            "sqlite:///retain.db or postgresql+psycopg://user@host:5432/db"
        ) from None
    try:
        engine = engine_for(url)
        _refuse_foreign_tables(engine, shown)
        upgrade(engine)
    except CliProblem:
        raise
    except Exception as error:
        raise CliProblem(database_problem(error, shown)) from None
    return engine


def _refuse_foreign_tables(engine: Engine, shown: str) -> None:
    from sqlalchemy import inspect

    from models.migrate import current_revision

    if current_revision(engine) is not None:
        return
    tables = sorted(set(inspect(engine).get_table_names()) - {"alembic_version"})
    if tables:
        listed = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        raise CliProblem(
            f"database {shown}: it already holds tables ({listed}) but no Retain schema version "
            "(alembic_version); it was not made by 'retain db upgrade'. Use an empty database, "
            "or drop those tables"
        )


def database_problem(error: BaseException, shown: str) -> str:
    """One line for a failure to open or upgrade the database ``shown``."""
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError, SQLAlchemyError

    text = " ".join(str(getattr(error, "orig", None) or error).split())
    if isinstance(error, CommandError) and "Can't locate revision" in text:
        return (
            f"database {shown}: its schema version is unknown to this Retain ({text}); it was "
            "made by another Retain version: use that version, or a new database"
        )
    if isinstance(error, ArgumentError):
        return (
            f"RETAIN_DATABASE_URL: cannot use {shown} ({text}); write it like "
            "sqlite:///retain.db or postgresql+psycopg://user@host:5432/db"
        )
    if isinstance(error, ImportError):
        return f"database {shown}: its driver is not installed ({text}); use SQLite or PostgreSQL"
    if "file is not a database" in text or "not a database" in text:
        return (
            f"database {shown}: the file is not a SQLite database; point RETAIN_DATABASE_URL "
            "at a Retain database or at a new file"
        )
    if isinstance(error, OperationalError):
        return (
            f"database {shown}: cannot open or connect ({_short(text)}); check that the server "
            "is running and RETAIN_DATABASE_URL is right"
        )
    if isinstance(error, DatabaseError | SQLAlchemyError):
        return (
            f"database {shown}: {_short(text)}; check RETAIN_DATABASE_URL, then run "
            "'retain db upgrade'"
        )
    if isinstance(error, OSError):
        return f"database {shown}: {error.strerror or text}; check the path and its permissions"
    return f"database {shown}: {type(error).__name__}: {_short(text)}; check RETAIN_DATABASE_URL"


def _short(text: str, limit: int = 200) -> str:
    text = text.split("[SQL:", 1)[0].split("(Background on this error", 1)[0].strip()
    return text if len(text) <= limit else text[:limit] + "..."
