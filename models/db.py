"""Engine and sessions. The database comes from ``RETAIN_DATABASE_URL``; by default a SQLite file
``retain.db`` in the working directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, create_engine

DEFAULT_DATABASE_URL = "sqlite:///retain.db"


def database_url() -> str:
    """The configured database URL (``RETAIN_DATABASE_URL``), or the default SQLite file."""
    return os.environ.get("RETAIN_DATABASE_URL") or DEFAULT_DATABASE_URL


@contextmanager
def using_database(url: str) -> Iterator[None]:
    """``RETAIN_DATABASE_URL`` set to ``url`` for the block (in-process flow runs: the demo)."""
    before = os.environ.get("RETAIN_DATABASE_URL")
    os.environ["RETAIN_DATABASE_URL"] = url
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("RETAIN_DATABASE_URL", None)
        else:
            os.environ["RETAIN_DATABASE_URL"] = before


def redact(url: str) -> str:
    """The URL with any password hidden, for logs and messages."""
    return make_url(url).render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url: str | None = None) -> Engine:
    """An engine for ``url`` (default: :func:`database_url`), with SQLite set up for concurrent use."""
    url = url or database_url()
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # Sessions in UTC, so dates compare with timestamps the same way on every server.
    return create_engine(url, pool_pre_ping=True, connect_args={"options": "-c timezone=utc"})


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


_ENGINES: dict[str, Engine] = {}


def engine_for(url: str | None = None) -> Engine:
    """One shared engine per URL for the life of the process. Flows and tasks call it without a
    URL: the database comes from the environment, never from a flow parameter, so a password
    in it is never stored in Prefect's flow-run records."""
    url = url or database_url()
    if url not in _ENGINES:
        _ENGINES[url] = make_engine(url)
    return _ENGINES[url]


def dispose_engine(url: str) -> None:
    """Close the shared engine of ``url`` and its pooled connections, if there is one."""
    engine = _ENGINES.pop(url, None)
    if engine is not None:
        engine.dispose()
