"""Sources of rows for an import, read in batches with pyarrow: CSV files, Parquet files and SQL
queries (read-only). Each yields :class:`Batch` es of the mapping's source columns.

A source whose shape is wrong (a mapped column missing, a row with the wrong number of fields, a
file cut off inside a quoted field, bytes that are not UTF-8) raises :class:`StructuralError`
before anything is written: such a file imports nothing.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url

from models.imports.mapping import Mapping, closest

BATCH_ROWS = 200_000


@dataclass(frozen=True)
class Batch:
    table: pa.Table | pa.RecordBatch
    first_line: int  # line (CSV) or row number (Parquet, SQL) of the batch's first row


class StructuralError(Exception):
    """The source does not have the shape its mapping describes; nothing was imported.

    ``problems`` are ``(line, message)`` pairs (line None when it concerns the whole file)."""

    def __init__(self, problems: list[tuple[int | None, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(message for _, message in problems))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_file(path: Path, mapping: Mapping, batch_rows: int = BATCH_ROWS) -> Iterator[Batch]:
    """Batches of a CSV or Parquet file (by the mapping's ``format`` or the file's extension)."""
    kind = mapping.format or ("parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv")
    if kind == "parquet":
        yield from _read_parquet(path, mapping, batch_rows)
    else:
        yield from _read_csv(path, mapping)


def _check_columns(found: list[str], mapping: Mapping) -> None:
    twice = [name for name in mapping.source_columns() if found.count(name) > 1]
    if twice:
        raise StructuralError(
            [
                (
                    1,
                    f"column {name!r} appears {found.count(name)} times in the header; "
                    "rename the copies so the mapping reads one",
                )
                for name in twice
            ]
        )
    missing = [name for name in mapping.source_columns() if name not in found]
    if missing:
        raise StructuralError(
            [
                (
                    1,
                    f"column {name!r} of the mapping is not in the file{closest(name, found)}; "
                    "fix the mapping or export that column",
                )
                for name in missing
            ]
        )


def _read_csv(path: Path, mapping: Mapping) -> Iterator[Batch]:
    with path.open("rb") as handle:
        first = handle.readline(1 << 20)  # the header line only: a bad byte below is not its fault
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise StructuralError([(1, f"the header is not UTF-8 text ({error.reason})")]) from None
    header = next(csv.reader([text.rstrip("\r\n")], delimiter=mapping.delimiter), None)
    if not header:
        raise StructuralError([(1, "the file is empty; it needs a header row")])
    _check_columns(header, mapping)
    wanted = mapping.source_columns()
    invalid: list[tuple[int | None, str]] = []

    def on_invalid_row(row: Any) -> str:
        invalid.append(
            (
                row.number or _line_of_text(path, row.text),
                f"has {row.actual_columns} fields, the header {row.expected_columns} "
                "(a truncated file or an unquoted delimiter)",
            )
        )
        return "skip"

    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=8 << 20),
            parse_options=pacsv.ParseOptions(
                delimiter=mapping.delimiter,
                newlines_in_values=True,
                invalid_row_handler=on_invalid_row,
            ),
            convert_options=pacsv.ConvertOptions(
                include_columns=wanted,
                column_types=dict.fromkeys(wanted, pa.string()),
                strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as error:
        raise StructuralError([(None, _unreadable(error))]) from None
    return _csv_batches(reader, invalid)


def _unreadable(error: Exception) -> str:
    message = str(error).split("\n")[0]
    if "UTF8" in message or isinstance(error, UnicodeDecodeError):
        return f"the file is not UTF-8 text ({message}); export it as UTF-8"
    return f"the file cannot be read as CSV ({message}); is it truncated?"


def _line_of_text(path: Path, text: str) -> int | None:
    """The line a malformed row starts on (pyarrow gives no numbers when values hold newlines)."""
    data = path.read_bytes()
    at = data.find(text.encode("utf-8"))
    return data.count(b"\n", 0, at) + 1 if at >= 0 else None


def _csv_batches(
    reader: pacsv.CSVStreamingReader, invalid: list[tuple[int | None, str]]
) -> Iterator[Batch]:
    line = 2
    try:
        for batch in reader:
            # Stop at the first malformed row: the caller's transaction rolls back, nothing is kept.
            if invalid:
                break
            yield Batch(batch, line)
            line += batch.num_rows
    except (pa.ArrowInvalid, UnicodeDecodeError) as error:
        raise StructuralError([(None, _unreadable(error))]) from None
    if invalid:
        raise StructuralError(invalid)


def _read_parquet(path: Path, mapping: Mapping, batch_rows: int) -> Iterator[Batch]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise StructuralError([(None, f"not a readable Parquet file ({error})")]) from None
    _check_columns(parquet.schema_arrow.names, mapping)
    schema = parquet.schema_arrow
    nested = [
        (name, schema.field(name).type)
        for name in mapping.source_columns()
        if pa.types.is_nested(schema.field(name).type)
    ]
    if nested:
        raise StructuralError(
            [
                (
                    None,
                    f"column {name!r} holds {kind} values; map a column of text, numbers, "
                    "booleans, dates or times",
                )
                for name, kind in nested
            ]
        )
    row = 1
    try:
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=mapping.source_columns()):
            yield Batch(batch, row)
            row += batch.num_rows
    except (pa.ArrowInvalid, OSError) as error:
        raise StructuralError([(None, f"the Parquet file is damaged ({error})")]) from None


def read_only_engine(url: str) -> Engine:
    """An engine that cannot write: a read-only session on PostgreSQL, ``query_only`` on SQLite."""
    backend = make_url(url).get_backend_name()
    if backend == "postgresql":
        return create_engine(url, connect_args={"options": "-c default_transaction_read_only=on"})
    if backend == "sqlite":
        engine = create_engine(url)

        def query_only(connection: Any, _record: Any) -> None:
            connection.execute("PRAGMA query_only = ON")

        event.listen(engine, "connect", query_only)
        return engine
    raise StructuralError(
        [(None, f"--from-sql supports PostgreSQL and SQLite sources, not {backend}")]
    )


def read_sql(engine: Engine, query: str, mapping: Mapping, chunk_rows: int) -> Iterator[Batch]:
    """Batches of a query's result, ``chunk_rows`` at a time, server-side cursor where possible."""
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SET TRANSACTION READ ONLY")
        result = connection.execution_options(stream_results=True, yield_per=chunk_rows).execute(
            text(query)
        )
        names = list(result.keys())
        _check_columns(names, mapping)
        wanted = mapping.source_columns()
        positions = [names.index(name) for name in wanted]
        row = 1
        for rows in result.partitions(chunk_rows):
            columns = {
                name: pa.array([_text(r[i]) for r in rows], pa.string())
                for name, i in zip(wanted, positions, strict=True)
            }
            yield Batch(pa.table(columns), row)
            row += len(rows)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)
