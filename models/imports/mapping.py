"""The mapping file: which source column fills which Retain field, and how its values read.

```yaml
entity: invoices            # customers | subscriptions | invoices | payment_methods | activity_events
amounts: units              # amount fields: cents (minor units) | units (decimals of the
                            # row's currency: JPY 0, EUR 2, KWD 3) | stripe (Stripe's unit)
currency: EUR               # currency of rows without a mapped currency column (default: USD)
timestamps: unix            # default of timestamp fields: unix | unix_ms | iso | auto
columns:
  external_id: id
  customer: Customer
  currency: Currency
  amount_cents: {column: Amount Due}
  status: {column: Status, values: {paid: paid, open: open, uncollectible: failed, void: void}}
  due_at: {column: Due Date (UTC), time: iso}
```

It is validated like an experiment file: every problem is reported with the file, the line and a
fix, before any data is read (:class:`MappingError`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import MarkedYAMLError

from experiments.loader import _describe, _line_of, _plain
from models.imports.entities import ENTITIES, Entity, EntityName

# cents/minor: whole minor units of the row's currency (cents, yen, fils); units: a decimal amount
# (49.00, 4900 for JPY, 4.900 for KWD); stripe: Stripe's smallest unit (see models.imports.currency)
AmountUnit = Literal["cents", "minor", "units", "stripe"]
TimeFormat = Literal["unix", "unix_ms", "iso", "auto"]
SHIPPED = Path(__file__).parent / "mappings"

DEFAULT_TRUE = ("true", "t", "yes", "y", "1")
DEFAULT_FALSE = ("false", "f", "no", "n", "0")


class ColumnSpec(BaseModel):
    """How one Retain field is filled: from ``column`` (read per its kind) or a constant ``value``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str | None = None
    value: str | int | bool | None = None
    values: dict[str, str] | None = None
    other: str | None = None
    amount: AmountUnit | None = None
    time: TimeFormat | None = None
    per_interval: bool = False


class Booleans(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    true_values: tuple[str, ...] = Field(DEFAULT_TRUE, alias="true")
    false_values: tuple[str, ...] = Field(DEFAULT_FALSE, alias="false")


class Mapping(BaseModel):
    """A validated mapping file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entity: EntityName
    format: Literal["csv", "parquet"] | None = None
    delimiter: str = Field(",", min_length=1, max_length=1)
    amounts: AmountUnit = "cents"
    currency: str | None = Field(None, pattern=r"^[A-Za-z]{3}$")
    timestamps: TimeFormat = "auto"
    booleans: Booleans = Booleans()
    phone_region: str | None = Field(None, pattern=r"^[A-Za-z]{2}$")
    columns: dict[str, str | ColumnSpec]

    @property
    def target(self) -> Entity:
        return ENTITIES[self.entity]

    def spec(self, field: str) -> ColumnSpec | None:
        """The field's spec (a bare column name becomes ``{column: name}``); None if unmapped."""
        raw = self.columns.get(field)
        if raw is None:
            return None
        return ColumnSpec(column=raw) if isinstance(raw, str) else raw

    def source_columns(self) -> list[str]:
        """Every source column the mapping reads, in mapping order, once each."""
        names: list[str] = []
        for field in self.columns:
            spec = self.spec(field)
            if spec is not None and spec.column is not None and spec.column not in names:
                names.append(spec.column)
        return names


@dataclass(frozen=True)
class MappingProblem:
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"


class MappingError(Exception):
    """Problems in a mapping file; ``str()`` gives one line per problem."""

    def __init__(self, problems: list[MappingProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def shipped_mappings() -> list[str]:
    """Names of the mappings shipped with Retain (``stripe-invoices``, ``product-events``, ...)."""
    return sorted(p.stem for p in SHIPPED.glob("*.yaml"))


def resolve_mapping_path(name_or_path: str | Path) -> Path:
    """A mapping file's path: a shipped mapping's name, or a path as given."""
    text = str(name_or_path)
    shipped = SHIPPED / f"{text}.yaml"
    if not text.endswith((".yaml", ".yml")) and shipped.is_file():
        return shipped
    return Path(text)


def load_mapping(name_or_path: str | Path) -> Mapping:
    """Read and validate a mapping file (or a shipped mapping by name)."""
    path = resolve_mapping_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        known = ", ".join(shipped_mappings())
        raise MappingError(
            [MappingProblem(str(path), None, f"file not found; give a path or one of: {known}")]
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise MappingError([MappingProblem(str(path), None, f"cannot read: {error}")]) from None
    return parse_mapping(text, str(path))


def parse_mapping(text: str, path: str = "<string>") -> Mapping:
    """Validate the YAML ``text`` of a mapping; ``path`` is only used in messages."""
    try:
        document = YAML(typ="rt").load(text)
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = error.problem or error.context or "invalid YAML"
        raise MappingError(
            [MappingProblem(path, line, f"this is not valid YAML: {problem} (check indentation)")]
        ) from None
    if not isinstance(document, CommentedMap):
        raise MappingError(
            [MappingProblem(path, 1, "a mapping file is a YAML mapping: entity: ..., columns: ...")]
        )
    try:
        mapping = Mapping.model_validate(_plain(document))
    except ValidationError as error:
        raise MappingError(
            [
                MappingProblem(path, _line_of(document, err["loc"]), _describe(err))
                for err in error.errors()
            ]
        ) from None
    problems = [
        MappingProblem(
            path, _line_of(document, ("columns", field) if field else ("columns",)), message
        )
        for field, message in _field_problems(mapping)
    ]
    if problems:
        raise MappingError(problems)
    return mapping


def _field_problems(mapping: Mapping) -> list[tuple[str | None, str]]:
    entity = mapping.target
    names = [f.name for f in entity.fields]
    problems: list[tuple[str | None, str]] = []
    for name in mapping.columns:
        field = entity.field(name)
        if field is None:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(
                (name, f"{entity.name} has no field {name!r}; {hint}fields: {', '.join(names)}")
            )
            continue
        spec = mapping.spec(name)
        assert spec is not None
        problems.extend((name, message) for message in _spec_problems(mapping, name, spec))
    for field in entity.fields:
        if field.required and field.name not in mapping.columns:
            problems.append(
                (
                    None,
                    f"columns: missing {field.name!r}, which {entity.name} need; map it to a column",
                )
            )
    return problems


def _spec_problems(mapping: Mapping, name: str, spec: ColumnSpec) -> list[str]:
    field = mapping.target.field(name)
    assert field is not None
    out = []
    if (spec.column is None) == (spec.value is None):
        out.append(f"{name}: give exactly one of column: (a source column) or value: (a constant)")
    if (spec.values is not None or spec.other is not None) and field.kind != "choice":
        out.append(f"{name}: values/other only apply to fields with a vocabulary; remove them")
    if field.kind == "choice":
        given = [*(spec.values or {}).values(), *([spec.other] if spec.other else [])]
        if spec.value is not None:
            given.append(str(spec.value))
        for value in given:
            if value not in field.choices:
                out.append(
                    f"{name}: {value!r} is not a Retain value; use one of {', '.join(field.choices)}"
                )
    if spec.amount is not None and field.kind != "amount":
        out.append(f"{name}: amount: only applies to amounts; remove it")
    if spec.time is not None and field.kind != "timestamp":
        out.append(f"{name}: time: only applies to timestamps; remove it")
    if spec.per_interval and (name != "mrr_cents" or "billing_interval" not in mapping.columns):
        out.append(f"{name}: per_interval needs the mrr_cents field and a mapped billing_interval")
    return out


def closest(name: str, options: list[str]) -> str:
    """' (did you mean X?)' for the closest option, or ''."""
    match = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""
