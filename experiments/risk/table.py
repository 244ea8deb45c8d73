"""Read a plain CSV of customers for ``retain risk evaluate --csv``: one row per customer, a
binary churn label column, an optional id column, and any number of feature columns.

UTF-8 (a byte-order mark is fine), a header row, comma-, semicolon- or tab-separated (sniffed
from the header, comma on a tie), fields quoted the usual way. Cells are compared with
surrounding whitespace removed; an empty or whitespace-only cell is a blank (missing value).
Label values: ``1``/``0``, ``true``/``false``, ``yes``/``no`` in any case. A feature column is
numeric when every non-blank cell is a finite number, otherwise categorical (its text values are
levels). Columns that are blank throughout are ignored. Problems raise :class:`RiskDataError`
with the file, the data row (1 = the first row after the header) or column, and the fix.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.risk.evaluation import Vector

_LABELS = {
    **dict.fromkeys(("1", "1.0", "true", "yes"), 1.0),
    **dict.fromkeys(("0", "0.0", "false", "no"), 0.0),
}
MIN_ROWS = 20


class RiskDataError(ValueError):
    """A problem with the CSV file: ``str()`` is one line with the file, what and the fix."""

    def __init__(self, path: Path | str, message: str) -> None:
        super().__init__(f"{path}: {message}")


@dataclass(frozen=True, eq=False)
class LabeledTable:
    features: pd.DataFrame  # numeric columns as float (NaN = blank), categorical as object
    labels: Vector
    ids: tuple[str, ...] | None
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]


def read_labeled_csv(path: Path | str, label: str, id_column: str | None = None) -> LabeledTable:
    """Read ``path``; raises :class:`RiskDataError`."""
    path = Path(path)
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as handle:
            header = handle.readline()
            delimiter = max((",", ";", "\t"), key=lambda d: (header.count(d), d == ","))
            names = [n.strip() for n in next(csv.reader([header], delimiter=delimiter), [])]
            handle.seek(0)
            frame = pd.read_csv(
                handle,
                sep=delimiter,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                skip_blank_lines=True,
                quoting=csv.QUOTE_MINIMAL,
            )
    except FileNotFoundError:
        raise RiskDataError(path, "file not found; check the path") from None
    except IsADirectoryError:
        raise RiskDataError(path, "is a folder, not a CSV file") from None
    except UnicodeDecodeError:
        raise RiskDataError(path, "is not UTF-8 text; save it as UTF-8 CSV") from None
    except pd.errors.EmptyDataError:
        raise RiskDataError(path, "is empty; it needs a header row and data rows") from None
    except (pd.errors.ParserError, csv.Error, OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RiskDataError(path, f"cannot be read as CSV ({first}); check its quoting") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    duplicated = sorted({c for c in names if names.count(c) > 1})
    if duplicated:
        raise RiskDataError(path, f"column {duplicated[0]!r} appears twice; rename one")
    for name, option in ((label, "--label"), (id_column, "--id")):
        if name is not None and name not in frame.columns:
            columns = ", ".join(repr(c) for c in list(frame.columns)[:12])
            raise RiskDataError(path, f"no column {name!r} for {option}; the columns are {columns}")
    cells = frame.apply(lambda column: column.str.strip())
    labels = _labels(path, cells[label], label)
    ids = tuple(cells[id_column]) if id_column else None
    features = cells.drop(columns=[c for c in (label, id_column) if c])
    numeric, categorical, typed = _typed_columns(features)
    if not numeric and not categorical:
        raise RiskDataError(path, "has no feature columns besides the label and id; add some")
    return LabeledTable(typed, labels, ids, tuple(numeric), tuple(categorical))


def _labels(path: Path, column: pd.Series, name: str) -> Vector:
    lowered = column.str.lower()
    mapped = lowered.map(_LABELS)
    bad = mapped.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        value = column.iloc[row]
        shown = "a blank" if value == "" else repr(value)
        raise RiskDataError(
            path,
            f"row {row + 1}: label column {name!r} holds {shown}; labels must be 1/0, "
            "true/false or yes/no (any case)",
        )
    labels = mapped.to_numpy(dtype=np.float64)
    if labels.size < MIN_ROWS:
        raise RiskDataError(
            path, f"has {labels.size} rows; a churn model needs at least {MIN_ROWS}"
        )
    if labels.min() == labels.max():
        kind = "churned" if labels[0] == 1 else "stayed"
        raise RiskDataError(
            path, f"every row of {name!r} says {kind}; a model needs both churners and stayers"
        )
    return labels


def _typed_columns(cells: pd.DataFrame) -> tuple[list[str], list[str], pd.DataFrame]:
    numeric: list[str] = []
    categorical: list[str] = []
    typed: dict[str, pd.Series] = {}
    for name in cells.columns:
        column = cells[name]
        blank = column == ""
        if blank.all():
            continue
        values = pd.to_numeric(column.where(~blank), errors="coerce")
        parsed = values.notna() | blank
        finite = values.dropna().map(math.isfinite).all()
        if parsed.all() and finite:
            typed[name] = values.astype(np.float64)
            numeric.append(name)
        else:
            typed[name] = column.where(~blank, None).astype(object)
            categorical.append(name)
    return numeric, categorical, pd.DataFrame(typed, index=cells.index)
