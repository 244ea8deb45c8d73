"""One import: a source's batches converted, staged, checked and merged in one transaction, the
rejects written to a file, and the run recorded in ``import_runs``.

A structurally wrong source (see :class:`~models.imports.readers.StructuralError`) imports nothing;
any failure half-way rolls the whole file back, so the database is exactly as before.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import insert
from sqlalchemy.engine import Connection, Engine

from models.bulk import analyze, sqlite_cache, table
from models.imports.convert import Converted, Reject, convert_batch
from models.imports.mapping import Mapping
from models.imports.merge import (
    MergeCounts,
    create_stage,
    merge,
    reject_duplicates,
    write_stage,
)
from models.imports.readers import (
    BATCH_ROWS,
    Batch,
    StructuralError,
    file_sha256,
    read_file,
    read_only_engine,
    read_sql,
)
from models.imports.settings import ImportSettings
from models.imports.tables import ImportRun


@dataclass(frozen=True)
class ImportSummary:
    """What one import did. ``status`` is ``applied`` or ``rejected`` (structurally wrong: nothing
    imported); ``rejects`` lists every row left out and why."""

    source: str
    entity: str
    status: str
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    suppressions: int = 0
    rejects: list[Reject] = field(default_factory=list)
    problems: list[tuple[int | None, str]] = field(default_factory=list)
    reject_file: Path | None = None

    @property
    def rejected(self) -> int:
        return len({r.line for r in self.rejects})

    @property
    def changed_nothing(self) -> bool:
        return self.status == "applied" and self.inserted == 0 and self.updated == 0


def import_file(
    engine: Engine,
    path: Path,
    mapping: Mapping,
    *,
    reject_file: Path | None = None,
    now: datetime | None = None,
    batch_rows: int = BATCH_ROWS,
) -> ImportSummary:
    """Import a CSV or Parquet file per ``mapping``; rejects go to ``reject_file`` (default
    ``<file>.rejects.csv``) when there are any."""
    reject_file = reject_file or path.with_name(path.name + ".rejects.csv")
    sha = file_sha256(path)
    return import_batches(
        engine, read_file(path, mapping, batch_rows), mapping, str(path), sha, reject_file, now
    )


def import_query(
    engine: Engine,
    source_url: str,
    query: str,
    mapping: Mapping,
    *,
    reject_file: Path,
    label: str,
    now: datetime | None = None,
    chunk_rows: int = 50_000,
) -> ImportSummary:
    """Import the rows of a SQL query on another database, read read-only in chunks."""
    source = read_only_engine(source_url)
    try:
        return import_batches(
            engine,
            read_sql(source, query, mapping, chunk_rows),
            mapping,
            label,
            None,
            reject_file,
            now,
        )
    finally:
        source.dispose()


# A bulk change this large refreshes the table's planner statistics (``ANALYZE``) afterwards.
ANALYZE_AFTER_ROWS = 10_000


def import_batches(
    engine: Engine,
    batches: Iterable[Batch],
    mapping: Mapping,
    source: str,
    sha256: str | None,
    reject_file: Path | None,
    now: datetime | None = None,
    version: datetime | Sequence[datetime] | None = None,
    on_commit: Callable[[Connection], None] | None = None,
) -> ImportSummary:
    """Convert, stage and merge ``batches`` in one transaction; record the run. ``on_commit``
    runs last inside that transaction (a sync stores its cursor there, atomically with the data)."""
    now = now or datetime.now(UTC)
    try:
        with engine.begin() as connection:
            counts, rejects = stage_and_merge(connection, batches, mapping, now, version)
            summary = ImportSummary(
                source,
                mapping.entity,
                "applied",
                rows=counts.rows + len({r.line for r in rejects}),
                inserted=counts.inserted,
                updated=counts.updated,
                unchanged=counts.unchanged,
                suppressions=counts.suppressions,
                rejects=rejects,
            )
            _record(connection, summary, sha256, now)
            if on_commit is not None:
                on_commit(connection)
        if summary.inserted + summary.updated >= ANALYZE_AFTER_ROWS:
            analyze(engine, [mapping.target.name])  # fresh planner statistics for what changed
    except StructuralError as error:
        summary = ImportSummary(source, mapping.entity, "rejected", problems=error.problems)
        with engine.begin() as connection:
            _record(connection, summary, sha256, now)
    if reject_file is not None and (summary.rejects or summary.problems):
        write_rejects(reject_file, source, summary)
        summary = replace(summary, reject_file=reject_file)
    return summary


def stage_and_merge(
    connection: Connection,
    batches: Iterable[Batch],
    mapping: Mapping,
    now: datetime,
    version: datetime | Sequence[datetime] | None = None,
) -> tuple[MergeCounts, list[Reject]]:
    """Convert, stage, check and merge ``batches`` on ``connection`` (the caller's transaction).

    ``version`` is the source's time of these rows (a Stripe event's ``created``), one for all or
    one per row of a single batch; a stored row with a newer version is left alone, so events
    applied out of order end in the newest state.
    """
    with sqlite_cache(connection, CACHE_MEGABYTES):
        return _stage_and_merge(connection, batches, mapping, now, version)


# SQLite's page cache while importing (default 2 MB): the target's indexes and the parents' ids
# stay in memory instead of being re-read from the file for every row.
CACHE_MEGABYTES = 256


def _stage_and_merge(
    connection: Connection,
    batches: Iterable[Batch],
    mapping: Mapping,
    now: datetime,
    version: datetime | Sequence[datetime] | None,
) -> tuple[MergeCounts, list[Reject]]:
    entity = mapping.target
    settings = ImportSettings()
    extra = ("source_updated_at",) if version is not None else ()
    stage = create_stage(connection, entity, extra)
    stamps = _stamps(version)
    rejects: list[Reject] = []
    ids: list[pa.Array] = []
    for batch, converted in _converted(batches, mapping, settings.default_phone_region):
        rejects.extend(converted.rejects)
        staged = converted.table
        if stamps is not None:
            positions = pc.subtract(staged.column("line"), batch.first_line)
            per_row = (
                stamps if len(stamps) > 1 else pa.array([stamps[0].as_py()] * batch.table.num_rows)
            )
            staged = staged.append_column("source_updated_at", per_row.take(positions))
        write_stage(connection, stage, staged)
        ids.append(staged.column("external_id"))
    if _has_duplicates(ids):
        rejects.extend(reject_duplicates(connection, stage))
    counts, unknown = merge(connection, stage, entity, now, set(mapping.columns))
    rejects.extend(unknown)
    stage.drop(connection)
    rejects.sort(key=lambda r: r.line)
    return counts, rejects


def _converted(
    batches: Iterable[Batch], mapping: Mapping, region: str | None
) -> Iterator[tuple[Batch, Converted]]:
    """The batches, converted. A file's or query's next batch is read and converted in a worker
    thread (pyarrow runs without the GIL) while the caller writes the current one to the stage;
    at most one batch is read ahead, and an error in the worker is raised here."""
    if isinstance(batches, list):  # a webhook's or sync chunk's rows: nothing to overlap
        for batch in batches:
            yield batch, convert_batch(batch.table, mapping, batch.first_line, region)
        return
    source = iter(batches)

    def step() -> tuple[Batch, Converted] | None:
        batch = next(source, None)
        if batch is None:
            return None
        return batch, convert_batch(batch.table, mapping, batch.first_line, region)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="retain-import") as worker:
        pending = worker.submit(step)
        while (item := pending.result()) is not None:
            pending = worker.submit(step)
            yield item


def _has_duplicates(ids: list[pa.Array]) -> bool:
    """Whether an id repeats (one hash pass in Arrow: cheaper than a GROUP BY over the stage)."""
    present = [chunk for chunk in ids if len(chunk)]
    if not present:
        return False
    values = pa.chunked_array(present)
    return bool(pc.count_distinct(values).as_py() < len(values) - values.null_count)


def _stamps(version: datetime | Sequence[datetime] | None) -> pa.Array | None:
    if version is None:
        return None
    versions = [version] if isinstance(version, datetime) else list(version)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return pa.array([(v - epoch) // timedelta(microseconds=1) for v in versions], pa.int64())


def _record(
    connection: Connection, summary: ImportSummary, sha256: str | None, now: datetime
) -> None:
    connection.execute(
        insert(table(ImportRun)).values(
            source=summary.source[:500],
            entity=summary.entity,
            sha256=sha256,
            status=summary.status,
            rows=summary.rows,
            inserted=summary.inserted,
            updated=summary.updated,
            unchanged=summary.unchanged,
            rejected=summary.rejected,
            started_at=now,
            finished_at=datetime.now(UTC),
        )
    )


def write_rejects(path: Path, source: str, summary: ImportSummary) -> None:
    """The reject file: one row per bad value (file, line, column, value, reason)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "line", "column", "value", "reason"])
        for line, message in summary.problems:
            writer.writerow([source, line or "", "", "", message])
        for reject in summary.rejects:
            writer.writerow([source, reject.line, reject.column, reject.value, reject.reason])
