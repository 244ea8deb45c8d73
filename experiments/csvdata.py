"""Read an experiment run elsewhere from a CSV file (one row per unit) into per-arm sufficient
statistics, the data side of ``retain analyze``.

The file format, as accepted:

- A header row naming the columns is required (blank lines before it are skipped). Header names,
  arm labels and metric values are compared with surrounding whitespace removed.
- UTF-8, with or without a byte-order mark; lines end in ``\\n``, ``\\r\\n`` or ``\\r`` (mixed is
  fine); blank lines are skipped. Fields are quoted the usual (RFC 4180 / Excel) way: a field that
  holds the delimiter, a quote or a line break is wrapped in double quotes, with inner quotes
  doubled. Malformed quoting is an error, not a guess.
- The delimiter is sniffed from the header line: whichever of comma, semicolon and tab splits it
  into the most columns (comma on a tie). Decimal commas are not supported.
- Binary metric values: ``1``/``0``, ``true``/``false``, ``yes``/``no`` in any case, and
  ``1.0``/``0.0``. Continuous metric values: finite decimal numbers (``12``, ``-0.5``, ``1e3``).
  A missing, NaN or infinite value is an error: decide what a missing outcome means (often 0)
  before the analysis, not inside it.

Every problem raises :class:`CsvDataError` naming the file, the line (physical line in the file,
1-based, the header being line 1; a quoted field spanning lines is reported at the line where its
row starts), the column, the bad value and the fix.

Speed. Nothing is built per row in Python: a first pass with the C ``csv`` reader only counts the
fields of each row (``Counter(map(len, reader))``), so every row is checked for shape with the
stdlib's exact quoting rules; then pandas' C parser reads just the needed columns as strings, and
each column is parsed vectorised (``pandas.factorize`` for arms and binary spellings, whose
distinct values are few; ``pandas.to_numeric`` for numbers, which rounds exactly like ``float``).
Line numbers are only worked out (by a second ``csv`` pass) once an error is found. About 1.3 s for
1,000,000 rows on this machine; see ``bench/analyze_csv.py``. pandas comes with statsmodels.

Accuracy. Binary sums are exact integer counts. Continuous sums are float64 sums per arm with
numpy's pairwise summation (relative error about ``log2(n) * 2**-53``); sums of squares are taken
around the arm's mean (``SampleStats.shift``), so the variance keeps its precision whatever the
values' common offset (values around 1e9 that differ by 0 or 1 give the same variance, and the
same p-values, as the values 0 and 1).
"""

from __future__ import annotations

import csv
import difflib
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from experiments.metrics import MetricKind
from experiments.stats import SampleStats

_DELIMITERS = (",", ";", "\t")
_DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab"}
_BINARY = {
    **dict.fromkeys(("1", "1.0", "true", "yes"), 1),
    **dict.fromkeys(("0", "0.0", "false", "no"), 0),
}
_BINARY_SPELLINGS = "1/0, true/false or yes/no (any case)"
_MAX_EXAMPLES = 3


@dataclass(frozen=True)
class MetricSpec:
    """A metric column to read and how to read it."""

    name: str
    kind: MetricKind


@dataclass(frozen=True)
class CsvExperiment:
    """Per-arm sufficient statistics read from a CSV.

    ``arms`` lists the baseline first, then the other arms in the order they first appear in the
    file; ``stats`` maps metric name -> arm -> :class:`SampleStats`, in that arm order.
    """

    path: str
    arm_column: str
    arms: tuple[str, ...]
    rows: int
    stats: dict[str, dict[str, SampleStats]]


class CsvDataError(ValueError):
    """A problem with the data file, naming the file, line, column and value, and the fix."""

    def __init__(
        self,
        path: Path | str,
        problem: str,
        fix: str,
        *,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        self.path = str(path)
        self.line = line
        self.column = column
        self.problem = problem
        self.fix = fix
        where = self.path
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {problem}. {fix[:1].upper()}{fix[1:]}.")


def parse_metric_option(text: str) -> MetricSpec:
    """Parse ``NAME:binary`` or ``NAME:continuous`` (the kind in any case; NAME may contain ':')."""
    name, sep, kind = text.rpartition(":")
    name, kind = name.strip(), kind.strip().lower()
    if not sep or not name:
        raise ValueError(
            f"metric {text!r} must look like NAME:binary or NAME:continuous, "
            f"e.g. converted:binary or revenue:continuous"
        )
    if kind not in ("binary", "continuous"):
        close = difflib.get_close_matches(kind, ["binary", "continuous"], n=1, cutoff=0.4)
        hint = f" (did you mean {name}:{close[0]}?)" if close else ""
        raise ValueError(
            f"metric {text!r} has unknown kind {kind!r}{hint}; "
            f"use NAME:binary (0/1, true/false, yes/no) or NAME:continuous (numbers)"
        )
    return MetricSpec(name, "binary" if kind == "binary" else "continuous")


def read_experiment_csv(
    path: Path | str, arm_column: str, baseline: str, metrics: Sequence[MetricSpec]
) -> CsvExperiment:
    """Read a one-row-per-unit CSV into per-arm :class:`SampleStats` for each metric.

    Raises :class:`CsvDataError` for any problem with the file (see the module docstring for the
    accepted format) and ValueError for contradictory arguments (no metrics, a metric named twice
    or named like the arm column).
    """
    path = Path(path)
    _check_arguments(arm_column, metrics)
    delimiter = _sniff_delimiter(path)
    header, header_line, rows = _scan_shape(path, delimiter)
    names = [h.strip() for h in header]
    wanted = [arm_column, *(m.name for m in metrics)]
    positions = _column_positions(path, names, header_line, wanted)
    frame = _read_columns(path, delimiter, sorted(set(positions.values())), rows)
    columns = {name: frame[positions[name]] for name in wanted}

    table = _LineTable(path, delimiter)
    codes, arms = _arm_codes(path, table, arm_column, columns[arm_column], baseline)
    counts = np.bincount(codes, minlength=len(arms))
    stats: dict[str, dict[str, SampleStats]] = {}
    for metric in metrics:
        values = columns[metric.name]
        if metric.kind == "binary":
            ones = _parse_binary(table, metric.name, values)
            sums = np.bincount(codes[ones == 1], minlength=len(arms))
            stats[metric.name] = {
                arm: SampleStats(int(counts[a]), float(sums[a]), float(sums[a]))
                for a, arm in enumerate(arms)
            }
        else:
            numbers = _parse_continuous(table, metric.name, values)
            stats[metric.name] = _continuous_stats(path, metric.name, numbers, codes, arms, counts)
    return CsvExperiment(str(path), arm_column, arms, rows, stats)


def _check_arguments(arm_column: str, metrics: Sequence[MetricSpec]) -> None:
    if not metrics:
        raise ValueError("give at least one metric to analyse, e.g. converted:binary")
    seen: set[str] = set()
    for m in metrics:
        if m.name == arm_column:
            raise ValueError(f"metric {m.name!r} is also the arm column; pick a different column")
        if m.name in seen:
            raise ValueError(f"metric {m.name!r} is given twice; give each metric once")
        seen.add(m.name)


def _is_blank(record: list[str]) -> bool:
    # What pandas' parser skips as a blank line: nothing, or only spaces.
    return not record or (len(record) == 1 and record[0] != "" and not record[0].strip())


def _open(path: Path) -> TextIO:
    try:
        if path.exists() and not path.is_dir() and not path.is_file():
            # a device or a pipe (/dev/zero, /dev/stdin) may never end: only files are read
            raise CsvDataError(path, "is not a regular file", "give the CSV file")
        return path.open(newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise CsvDataError(path, "no such file", "check the path") from None
    except IsADirectoryError:
        raise CsvDataError(path, "is a directory, not a file", "give the CSV file") from None
    except PermissionError:
        raise CsvDataError(
            path, "cannot be read (permission denied)", "check its permissions"
        ) from None


def _sniff_delimiter(path: Path) -> str:
    try:
        with _open(path) as f:
            first = next((line for line in f if line.strip()), None)
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc) from None
    if first is None:
        raise CsvDataError(
            path,
            "the file is empty",
            "it needs a header row naming the columns, then one row per unit",
        )
    widths = {d: len(next(csv.reader([first], delimiter=d))) for d in _DELIMITERS}
    return max(_DELIMITERS, key=lambda d: widths[d])  # max keeps the first (comma) on a tie


def _not_utf8(path: Path, exc: UnicodeDecodeError) -> CsvDataError:
    data = path.read_bytes()[: exc.start]
    line = data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n") + 1
    return CsvDataError(
        path,
        f"byte 0x{exc.object[exc.start]:02x} is not valid UTF-8",
        "save the file as UTF-8 (in Excel: 'CSV UTF-8')",
        line=line,
    )


def _scan_shape(path: Path, delimiter: str) -> tuple[list[str], int, int]:
    """The header, its line and the number of data rows, checking every row's number of fields."""
    header: list[str] = []
    header_line = 1
    widths: Counter[int] = Counter()
    try:
        with _open(path) as f:
            reader = csv.reader(f, delimiter=delimiter, strict=True)
            header = next(r for r in reader if not _is_blank(r))  # the sniffer saw a non-blank line
            header_line = reader.line_num
            widths = Counter(map(len, reader))
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc) from None
    except csv.Error:
        widths = Counter({-1: 1})  # _diagnose_shape finds the line and says what is wrong
    if set(widths) - {len(header), 0} or not widths[len(header)]:
        return header, header_line, _diagnose_shape(path, delimiter, len(header))
    return header, header_line, widths[len(header)]


def _records(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """Each non-blank record (the header first) with the line it starts on."""
    with _open(path) as f:
        reader = csv.reader(f, delimiter=delimiter, strict=True)
        while True:
            start = reader.line_num + 1
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise CsvDataError(
                    path,
                    f"the row starting here is not valid CSV ({exc})",
                    "check its quotes: a field holding the delimiter, a quote or a line break "
                    'is wrapped in double quotes, and quotes inside it are doubled ("")',
                    line=start,
                ) from None
            if not _is_blank(record):
                yield start, record


def _diagnose_shape(path: Path, delimiter: str, width: int) -> int:
    """The slow, exact pass: raise for the first malformed row, else return the row count."""
    records = _records(path, delimiter)
    next(records)  # the header
    rows = 0
    for line, record in records:
        if len(record) != width:
            name = _DELIMITER_NAMES[delimiter]
            raise CsvDataError(
                path,
                f"this row has {len(record)} fields but the header has {width}",
                f"give every row one {name}-separated value per header column "
                f"(quote values that contain a {name})",
                line=line,
            )
        rows += 1
    if rows == 0:
        raise CsvDataError(path, "there are no data rows after the header", "add one row per unit")
    return rows


def _column_positions(
    path: Path, names: list[str], header_line: int, wanted: list[str]
) -> dict[str, int]:
    positions: dict[str, int] = {}
    present = ", ".join(repr(n) for n in names)
    for name in wanted:
        found = [i for i, n in enumerate(names) if n == name]
        if len(found) > 1:
            raise CsvDataError(
                path,
                f"the header names column {name!r} {len(found)} times "
                f"(columns {', '.join(str(i + 1) for i in found)})",
                "rename the columns so each name is used once",
                line=header_line,
            )
        if not found:
            fix = f"use one of those names{_close_match(name, names)}"
            if len(names) == 1:
                fix = (
                    "the header was read as a single column: separate the columns with commas, "
                    "semicolons or tabs"
                )
            raise CsvDataError(
                path,
                f"no column named {name!r}; the header has {present}",
                fix,
                line=header_line,
                column=name,
            )
        positions[name] = found[0]
    return positions


def _close_match(name: str, options: Sequence[str]) -> str:
    lowered = {o.lower(): o for o in options}
    if name.lower() in lowered:
        return f" (did you mean {lowered[name.lower()]!r}?)"
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _read_columns(
    path: Path, delimiter: str, positions: list[int], rows: int
) -> dict[int, np.ndarray]:
    """The raw strings of the columns at ``positions`` (pandas' C parser, no type guessing)."""
    try:
        frame = pd.read_csv(
            path,
            sep=delimiter,
            header=0,
            usecols=positions,
            dtype=object,
            na_filter=False,
            index_col=False,
            encoding="utf-8-sig",
            engine="c",
        )
    except (pd.errors.ParserError, ValueError) as exc:
        raise CsvDataError(
            path, f"could not be read ({exc})", "check that it is a CSV file"
        ) from None
    if len(frame) != rows:
        raise CsvDataError(
            path,
            f"the rows could not be split consistently ({rows} by the csv module, "
            f"{len(frame)} by pandas)",
            "check for stray quote characters or lines holding only quotes",
        )
    return {pos: frame.iloc[:, i].to_numpy(dtype=object) for i, pos in enumerate(positions)}


class _LineTable:
    """Maps data-row indices (0-based, blank lines skipped) to physical line numbers, lazily:
    only an error needs a line number, so the file is only re-read then."""

    def __init__(self, path: Path, delimiter: str) -> None:
        self.path = path
        self.delimiter = delimiter

    def line_of(self, row: int) -> int:
        """The line data row ``row`` starts on (re-reads the file: call only for an error)."""
        line, _ = next(islice(_records(self.path, self.delimiter), row + 1, None))
        return line

    def error(
        self, column: str, bad: np.ndarray, values: np.ndarray, problem: str, fix: str
    ) -> CsvDataError:
        """An error at the first row where ``bad`` holds, counting the bad rows and showing a few
        distinct bad values."""
        first = int(np.argmax(bad))
        count = int(bad.sum())
        examples = list(dict.fromkeys(values[bad][:1000].tolist()))[:_MAX_EXAMPLES]
        if count > 1:
            others = ", ".join(repr(v) for v in examples[1:])
            problem += f"; {count} rows are bad in all" + (
                f" (other values: {others})" if others else ""
            )
        return CsvDataError(self.path, problem, fix, line=self.line_of(first), column=column)


def _arm_codes(
    path: Path, table: _LineTable, column: str, values: np.ndarray, baseline: str
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer arm codes per row (baseline = 0, then order of first appearance) and arm names."""
    raw_codes, uniques = pd.factorize(values, sort=False)
    labels = [str(u).strip() for u in uniques]
    order = list(dict.fromkeys(labels))  # first appearance, with " a" and "a" merged
    if "" in order:
        empty = np.asarray([lab == "" for lab in labels])[raw_codes]
        raise table.error(
            column,
            empty,
            values,
            "the arm is empty",
            "give every row the name of the arm the unit was assigned to, or drop the row",
        )
    if baseline not in order:
        listed = ", ".join(repr(a) for a in order)
        raise CsvDataError(
            path,
            f"baseline arm {baseline!r} does not appear; the arms in the file are {listed}",
            f"name one of those as the baseline{_close_match(baseline, order)}",
            column=column,
        )
    if len(order) < 2:
        raise CsvDataError(
            path,
            f"every row is in arm {order[0]!r}; a comparison needs at least two arms",
            "check the arm column, or include the rows of the other arms",
            column=column,
        )
    arms = (baseline, *(a for a in order if a != baseline))
    index = {a: i for i, a in enumerate(arms)}
    remap = np.asarray([index[lab] for lab in labels], dtype=np.intp)
    return remap[raw_codes], arms


def _parse_binary(table: _LineTable, column: str, values: np.ndarray) -> np.ndarray:
    """0/1 per row as int8; any other spelling is an error."""
    raw_codes, uniques = pd.factorize(values, sort=False)
    lookup = np.asarray([_BINARY.get(str(u).strip().lower(), -1) for u in uniques], dtype=np.int8)
    parsed = lookup[raw_codes]
    bad = parsed < 0
    if bad.any():
        value = values[int(np.argmax(bad))]
        raise table.error(
            column,
            bad,
            values,
            f"{value!r} is not a binary value" if value.strip() else "the value is empty",
            f"use {_BINARY_SPELLINGS}, or read the column as NAME:continuous",
        )
    return parsed


_DECIMAL_COMMA = re.compile(r"^\s*[-+]?\d*,\d+\s*$")


def _parse_continuous(table: _LineTable, column: str, values: np.ndarray) -> np.ndarray:
    """float64 per row; empty, non-numeric, NaN and infinite values are errors."""
    numbers = pd.to_numeric(pd.Series(values, copy=False), errors="coerce").to_numpy(
        dtype=np.float64
    )
    bad = ~np.isfinite(numbers)
    if bad.any():
        value = str(values[int(np.argmax(bad))])
        if not value.strip():
            problem = "the value is empty"
        elif value.strip().lower().lstrip("+-") in ("nan", "inf", "infinity"):
            problem = f"{value!r} is not a finite number"
        elif np.isinf(numbers[int(np.argmax(bad))]):
            problem = f"{value!r} is too large for a float64"
        else:
            problem = f"{value!r} is not a number"
        fix = "give every row a finite number (decide what a missing outcome means, often 0)"
        if _DECIMAL_COMMA.match(value):
            fix = "write decimals with a dot (1.5, not 1,5)"
        raise table.error(column, bad, values, problem, fix)
    return numbers


def _continuous_stats(
    path: Path,
    column: str,
    numbers: np.ndarray,
    codes: np.ndarray,
    arms: tuple[str, ...],
    counts: np.ndarray,
) -> dict[str, SampleStats]:
    # Group rows by arm with one stable sort, then sum each arm's slice pairwise. Squares are taken
    # around the arm's own mean (two passes), so a large common offset loses no spread.
    grouped = numbers[np.argsort(codes, kind="stable")]
    stats: dict[str, SampleStats] = {}
    for arm, chunk in zip(arms, np.split(grouped, np.cumsum(counts)[:-1]), strict=True):
        with np.errstate(over="ignore", invalid="ignore"):
            total = float(chunk.sum())
            shift = total / len(chunk) if len(chunk) else 0.0
            squares = float(np.square(chunk - shift).sum())
        if not (np.isfinite(total) and np.isfinite(squares) and np.isfinite(shift)):
            raise CsvDataError(
                path,
                f"the values of arm {arm!r} are too large to sum in float64",
                "rescale the column (e.g. cents to thousands)",
                column=column,
            )
        stats[arm] = SampleStats(len(chunk), total, squares, shift)
    return stats
