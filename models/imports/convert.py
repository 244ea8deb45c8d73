"""Source values to Retain values, a batch of rows at a time, with pyarrow compute (no per-row
Python for numbers, timestamps, booleans and vocabularies; contact data goes through
``messaging.contacts`` once per distinct value).

Every value that cannot be read becomes a :class:`Reject` (line, column, value, reason) and drops
its row; the rest form a staged table whose columns are the entity's fields, ready for the merge.
Timestamps are staged as microseconds since 1970 (UTC); the merge turns them into the stored type.
"""

from __future__ import annotations

import calendar
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from messaging.contacts import ContactError, check_timezone, normalise_email, normalise_phone
from models.imports.currency import digits_per_row, power_of_ten
from models.imports.entities import MONTHS_PER_INTERVAL, TargetField
from models.imports.mapping import ColumnSpec, Mapping

_ISO = (
    r"^(?P<local>\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?)"
    r"(?P<zone>Z|[+-]\d{2}:?\d{2})?$"
)


@dataclass(frozen=True)
class Reject:
    """A source row that was not imported, and why."""

    line: int
    column: str
    value: str
    reason: str


@dataclass(frozen=True)
class Converted:
    """A batch's valid rows as staged columns (plus ``line``) and the rejects of the others."""

    table: pa.Table
    rejects: list[Reject]


@dataclass(frozen=True)
class _Column:
    values: pa.Array
    bad: pa.Array  # True where the value cannot be read
    reason: str | list[str | None]  # one reason, or one per row (contact data)


def convert_batch(
    batch: pa.Table | pa.RecordBatch,
    mapping: Mapping,
    first_line: int,
    default_region: str | None = None,
) -> Converted:
    """Read ``batch`` (source columns) per ``mapping``; its first row is on line ``first_line``."""
    n = batch.num_rows
    lines = pa.array(range(first_line, first_line + n), pa.int64())
    entity = mapping.target
    columns: dict[str, pa.Array] = {"line": lines}
    bad_any = pa.array([False] * n, pa.bool_())
    rejects: list[Reject] = []
    raw_by_field: dict[str, pa.Array] = {}
    for field in entity.fields:
        spec = mapping.spec(field.name)
        raw = _source(batch, spec, n)
        raw_by_field[field.name] = raw
        converted = _convert(field, spec, raw, mapping, columns, default_region, entity)
        columns[field.name] = converted.values
        if pc.any(converted.bad).as_py():
            source_name = spec.column if spec and spec.column else field.name
            rejects.extend(_rejects(lines, raw, converted, source_name))
            bad_any = pc.or_(bad_any, converted.bad)
    _derive(entity.name, columns, mapping)
    table = pa.table(columns)
    if rejects:
        table = table.filter(pc.invert(bad_any))
    return Converted(table, rejects)


def _source(batch: pa.Table | pa.RecordBatch, spec: ColumnSpec | None, n: int) -> pa.Array:
    """The field's raw values as trimmed strings, null where empty or unmapped."""
    if spec is None:
        return pa.nulls(n, pa.string())
    if spec.column is None:
        return pa.array(
            [str(spec.value).lower() if isinstance(spec.value, bool) else str(spec.value)] * n,
            pa.string(),
        )
    column = batch.column(spec.column)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not pa.types.is_string(column.type):
        column = pc.cast(column, pa.string())
    trimmed = pc.utf8_trim_whitespace(column)
    return pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)


def _convert(
    field: TargetField,
    spec: ColumnSpec | None,
    raw: pa.Array,
    mapping: Mapping,
    done: dict[str, pa.Array],
    default_region: str | None,
    entity: Any,
) -> _Column:
    reader = _READERS[field.kind]
    column = reader(raw, field, spec, mapping, done, default_region)
    values, bad, reason = column.values, column.bad, column.reason
    length = entity.max_length(field.name)
    if length and pa.types.is_string(values.type):
        too_long = pc.fill_null(pc.greater(pc.utf8_length(values), length), False)
        if pc.any(too_long).as_py():
            reasons = _per_row(reason, len(values))
            for i in pc.indices_nonzero(too_long).to_pylist():
                reasons[i] = f"longer than {length} characters; shorten it"
            bad, reason = pc.or_(bad, too_long), reasons
    missing = pc.and_(pc.is_null(values), pc.invert(bad))
    if field.default is not None:
        values = pc.fill_null(values, pa.scalar(field.default, values.type))
    elif field.required and pc.any(missing).as_py():
        reasons = _per_row(reason, len(values))
        for i in pc.indices_nonzero(missing).to_pylist():
            reasons[i] = f"empty; {field.name} needs a value"
        bad, reason = pc.or_(bad, missing), reasons
    return _Column(values, bad, reason)


def _per_row(reason: str | list[str | None], n: int) -> list[str | None]:
    return list(reason) if isinstance(reason, list) else [reason] * n


def _pattern(raw: pa.Array, pattern: str) -> pa.Array:
    """True where a present value does not match ``pattern``."""
    return pc.invert(pc.fill_null(pc.match_substring_regex(raw, pattern), True))


def _blank_bad(raw: pa.Array, bad: pa.Array) -> pa.Array:
    return pc.if_else(bad, pa.scalar(None, raw.type), raw)


def _text(raw: pa.Array, field: TargetField, *_: Any) -> _Column:
    if field.name == "last4":
        bad = _pattern(raw, r"^\d{4}$")
        return _Column(_blank_bad(raw, bad), bad, "not the last 4 digits of a card; use 4 digits")
    return _Column(raw, pa.array([False] * len(raw)), "")


def _code(raw: pa.Array, field: TargetField, *_: Any) -> _Column:
    size = 2 if field.name == "country" else 3
    upper = pc.utf8_upper(raw)
    bad = _pattern(upper, rf"^[A-Z]{{{size}}}$")
    what = "an ISO 3166 country code such as SE" if size == 2 else "an ISO 4217 code such as EUR"
    return _Column(_blank_bad(upper, bad), bad, f"not {what}")


def _int(raw: pa.Array, field: TargetField, *_: Any) -> _Column:
    bad = _pattern(raw, r"^[+-]?\d{1,15}$")
    values = pc.cast(_blank_bad(raw, bad), pa.int64())
    reason = "not a whole number"
    if field.name == "exp_month":
        out_of_range = pc.fill_null(pc.or_(pc.less(values, 1), pc.greater(values, 12)), False)
        bad, reason = pc.or_(bad, out_of_range), "not a month (1 to 12)"
        values = pc.if_else(out_of_range, pa.scalar(None, pa.int64()), values)
    return _Column(values, bad, reason)


def _amount(
    raw: pa.Array,
    field: TargetField,
    spec: ColumnSpec | None,
    mapping: Mapping,
    done: dict[str, pa.Array],
    *_: Any,
) -> _Column:
    """A whole number of the row's currency's minor unit (see :mod:`models.imports.currency`)."""
    unit = (spec.amount if spec else None) or mapping.amounts
    currencies = done.get("currency")  # the row's (nulls where not given or not mapped)
    if mapping.currency is not None:
        fallback = pa.scalar(mapping.currency.upper(), pa.string())
        currencies = (
            pa.array([fallback.as_py()] * len(raw), pa.string())
            if currencies is None
            else pc.fill_null(currencies, fallback)
        )
    if unit in ("cents", "minor", "stripe"):
        bad = _pattern(raw, r"^-?\d{1,15}$")
        values = pc.cast(_blank_bad(raw, bad), pa.int64())
        if unit == "stripe":
            values = _from_stripe(values, currencies)
        return _Column(values, bad, "not an amount in minor units (a whole number such as 4900)")
    parts = pc.extract_regex(raw, r"^(?P<sign>-?)(?P<whole>\d{1,15})(?:\.(?P<frac>\d{0,6}))?$")
    bad = pc.and_(pc.is_valid(raw), pc.is_null(parts))
    digits = digits_per_row(currencies, len(raw))
    frac_text = pc.utf8_rpad(pc.fill_null(pc.struct_field(parts, "frac"), ""), 6, "0")
    frac = pc.cast(frac_text, pa.int64())  # millionths of a unit
    step = power_of_ten(pc.subtract(6, digits))  # millionths per minor unit
    too_fine = pc.fill_null(pc.not_equal(pc.multiply(pc.divide(frac, step), step), frac), False)
    minor = pc.add(
        pc.multiply(pc.cast(pc.struct_field(parts, "whole"), pa.int64()), power_of_ten(digits)),
        pc.divide(frac, step),
    )
    negative = pc.equal(pc.struct_field(parts, "sign"), "-")
    values = pc.if_else(negative, pc.negate(minor), minor)
    bad = pc.or_(bad, too_fine)
    values = pc.if_else(bad, pa.scalar(None, pa.int64()), values)
    reasons = _per_row(
        "not an amount in units (such as 49.00; a decimal point, no thousands separators)", len(raw)
    )
    if pc.any(too_fine).as_py():
        codes = currencies.to_pylist() if currencies is not None else [None] * len(raw)
        places = digits.to_pylist()
        for i in pc.indices_nonzero(too_fine).to_pylist():
            reasons[i] = (
                f"more decimals than {codes[i] or 'the currency'} has ({places[i]}); "
                "check the amount and its currency"
            )
    return _Column(values, bad, reasons)


def _from_stripe(values: pa.Array, currencies: pa.Array | None) -> pa.Array:
    """Stripe's smallest unit to the currency's minor unit (ISK, HUF: Stripe counts 2 decimals,
    CLDR none), rounding half to even where Stripe's unit is finer."""
    n = len(values)
    shift = pc.subtract(digits_per_row(currencies, n), digits_per_row(currencies, n, stripe=True))
    if not pc.any(pc.not_equal(shift, 0)).as_py():
        return values
    up = pc.multiply(values, power_of_ten(pc.max_element_wise(shift, 0)))
    down = power_of_ten(pc.max_element_wise(pc.negate(shift), 0))
    exact = pc.divide(pc.cast(up, pa.float64()), pc.cast(down, pa.float64()))
    return pc.cast(pc.round(exact, round_mode="half_to_even"), pa.int64())


def _timestamp(
    raw: pa.Array, field: TargetField, spec: ColumnSpec | None, mapping: Mapping, *_: Any
) -> _Column:
    """Microseconds since 1970 (UTC). Kept in integers: pyarrow's time-zone-aware types pull in
    pandas, and a time without an offset is UTC anyway."""
    fmt = (spec.time if spec else None) or mapping.timestamps
    digits = pc.fill_null(pc.match_substring_regex(raw, r"^-?\d{1,14}$"), False)
    micros = pa.nulls(len(raw), pa.int64())
    bad = pa.array([False] * len(raw))
    if fmt in ("unix", "unix_ms", "auto"):
        numbers = pc.cast(pc.if_else(digits, raw, pa.scalar(None, pa.string())), pa.int64())
        micros = pc.multiply(numbers, 1000 if fmt == "unix_ms" else 1_000_000)
    if fmt in ("iso", "auto"):
        text = pc.if_else(digits, pa.scalar(None, pa.string()), raw)
        parts = pc.extract_regex(text, _ISO)
        iso_bad = pc.and_(pc.is_valid(text), pc.is_null(parts))
        naive, cast_bad = _cast(pc.struct_field(parts, "local"), pa.timestamp("us"))
        micros = pc.coalesce(
            micros, pc.subtract(pc.cast(naive, pa.int64()), _offset(pc.struct_field(parts, "zone")))
        )
        bad = pc.or_(iso_bad, cast_bad)
    else:
        bad = pc.and_(pc.is_valid(raw), pc.invert(digits))
    what = {
        "unix": "Unix seconds such as 1767225600",
        "unix_ms": "Unix milliseconds such as 1767225600000",
        "iso": "an ISO 8601 time such as 2026-01-01T09:00:00Z",
        "auto": "Unix seconds or an ISO 8601 time such as 2026-01-01T09:00:00Z",
    }[fmt]
    return _Column(micros, bad, f"not a time; expected {what}")


def _offset(zone: pa.Array) -> pa.Array:
    """Microseconds east of UTC of ``Z``, ``+02:00``, ``-0530`` (0 when there is none)."""
    has = pc.fill_null(pc.match_substring_regex(zone, r"^[+-]"), False)
    hours = pc.cast(pc.if_else(has, pc.utf8_slice_codeunits(zone, 1, 3), "0"), pa.int64())
    minutes = pc.cast(pc.if_else(has, pc.utf8_slice_codeunits(zone, -2), "0"), pa.int64())
    sign = pc.if_else(pc.fill_null(pc.starts_with(zone, "-"), False), -1, 1)
    total = pc.multiply(pc.add(pc.multiply(hours, 60), minutes), 60_000_000)
    return pc.fill_null(pc.multiply(total, sign), 0)


def _cast(values: pa.Array, to: pa.DataType) -> tuple[pa.Array, pa.Array]:
    """``values`` cast to ``to``, with the values that do not cast (a 13th month) set to null."""
    try:
        return pc.cast(values, to), pa.array([False] * len(values))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        out: list[Any] = []
        bad: list[bool] = []
        for value in values.to_pylist():
            try:
                out.append(None if value is None else pc.cast(pa.array([value]), to)[0].as_py())
                bad.append(False)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                out.append(None)
                bad.append(True)
        return pa.array(out, to), pa.array(bad)


def _bool(
    raw: pa.Array, field: TargetField, spec: ColumnSpec | None, mapping: Mapping, *_: Any
) -> _Column:
    lowered = pc.utf8_lower(raw)
    yes = pc.is_in(lowered, value_set=pa.array([v.lower() for v in mapping.booleans.true_values]))
    no = pc.is_in(lowered, value_set=pa.array([v.lower() for v in mapping.booleans.false_values]))
    bad = pc.and_(pc.is_valid(raw), pc.invert(pc.or_(yes, no)))
    values = pc.if_else(pc.is_null(raw), pa.scalar(None, pa.bool_()), yes)
    allowed = "/".join((*mapping.booleans.true_values, *mapping.booleans.false_values))
    return _Column(_blank_bad(values, bad), bad, f"not a yes/no value; use one of {allowed}")


def _choice(raw: pa.Array, field: TargetField, spec: ColumnSpec | None, *_: Any) -> _Column:
    table = {choice: choice for choice in field.choices}
    table.update({k.lower(): v for k, v in ((spec.values or {}) if spec else {}).items()})
    keys, targets = list(table), list(table.values())
    index = pc.index_in(pc.utf8_lower(raw), value_set=pa.array(keys, pa.string()))
    values = pa.array(targets, pa.string()).take(index)
    unknown = pc.and_(pc.is_valid(raw), pc.is_null(index))
    if spec is not None and spec.other is not None:
        values = pc.if_else(unknown, pa.scalar(spec.other), values)
        unknown = pa.array([False] * len(raw))
    known = ", ".join(sorted(set(keys)))
    reason = f"unknown {field.name} value; add it under values: in the mapping (known: {known})"
    return _Column(values, unknown, reason)


def _contact(check: Callable[[str], str]) -> Callable[..., _Column]:
    def read(raw: pa.Array, *_: Any) -> _Column:
        distinct: dict[str, str | ContactError] = {}
        for value in pc.unique(raw).to_pylist():
            if value is not None:
                try:
                    distinct[value] = check(value)
                except ContactError as error:
                    distinct[value] = error
        out = [distinct.get(v) if v is not None else None for v in raw.to_pylist()]
        reasons: list[str | None] = [str(v) if isinstance(v, ContactError) else None for v in out]
        values = pa.array([v if isinstance(v, str) else None for v in out], pa.string())
        return _Column(values, pa.array([r is not None for r in reasons]), reasons)

    return read


def _phone(
    raw: pa.Array,
    field: TargetField,
    spec: ColumnSpec | None,
    mapping: Mapping,
    done: dict[str, pa.Array],
    default_region: str | None,
) -> _Column:
    countries = done.get("country")
    regions = countries.to_pylist() if countries is not None else [None] * len(raw)
    values: list[str | None] = []
    reasons: list[str | None] = []
    for value, country in zip(raw.to_pylist(), regions, strict=True):
        if value is None:
            values.append(None)
            reasons.append(None)
            continue
        try:
            values.append(normalise_phone(value, mapping.phone_region or country or default_region))
            reasons.append(None)
        except ContactError as error:
            values.append(None)
            reasons.append(str(error))
    return _Column(
        pa.array(values, pa.string()), pa.array([r is not None for r in reasons]), reasons
    )


_READERS: dict[str, Callable[..., _Column]] = {
    "text": _text,
    "ref": _text,
    "code": _code,
    "int": _int,
    "amount": _amount,
    "timestamp": _timestamp,
    "bool": _bool,
    "choice": _choice,
    "email": _contact(normalise_email),
    "timezone": _contact(check_timezone),
    "phone": _phone,
}


def _rejects(lines: pa.Array, raw: pa.Array, column: _Column, source: str) -> list[Reject]:
    out = []
    reasons = column.reason
    raw_values = raw.to_pylist()
    line_numbers = lines.to_pylist()
    for i in pc.indices_nonzero(column.bad).to_pylist():
        reason = reasons[i] if isinstance(reasons, list) else reasons
        out.append(Reject(line_numbers[i], source, raw_values[i] or "", reason or "invalid"))
    return out


def _derive(entity: str, columns: dict[str, pa.Array], mapping: Mapping) -> None:
    """Columns computed from others: card expiry dates, MRR from a per-interval amount, event ids."""
    if entity == "payment_methods":
        years, months = columns["exp_year"].to_pylist(), columns["exp_month"].to_pylist()
        columns["expires_on"] = pa.array(
            [
                f"{y:04d}-{m:02d}-{calendar.monthrange(y, m)[1]:02d}"
                if y is not None and m is not None and 1 <= y <= 9999
                else None
                for y, m in zip(years, months, strict=True)
            ],
            pa.string(),
        )
    if entity == "subscriptions":
        spec = mapping.spec("mrr_cents")
        if spec is not None and spec.per_interval:
            months = pa.array(list(MONTHS_PER_INTERVAL.values()), pa.float64()).take(
                pc.index_in(
                    columns["billing_interval"], value_set=pa.array(list(MONTHS_PER_INTERVAL))
                )
            )
            mrr = pc.round(pc.divide(pc.cast(columns["mrr_cents"], pa.float64()), months))
            columns["mrr_cents"] = pc.cast(mrr, pa.int64())
    if entity == "activity_events" and mapping.spec("external_id") is None:
        keys = zip(
            columns["customer"].to_pylist(),
            columns["occurred_at"].to_pylist(),
            columns["kind"].to_pylist(),
            columns["name"].to_pylist(),
            strict=True,
        )
        columns["external_id"] = pa.array(
            ["evt:" + hashlib.sha1("|".join(map(str, key)).encode()).hexdigest() for key in keys],
            pa.string(),
        )
