"""Numbers for people (Babel, English): counts with thousands separators, rates in percent, lifts in
percentage points, money in the data's currency, and no more decimals than the data supports."""

from __future__ import annotations

import math
from collections.abc import Sequence

from babel.numbers import format_currency, format_decimal

from experiments.metrics import CATALOGUE

LOCALE = "en"
DASH = "—"


def is_money(metric: str) -> bool:
    """Whether a catalogue metric is an amount of money (its unit is a currency)."""
    definition = CATALOGUE.get(metric)
    return definition is not None and definition.unit == "USD"


def fmt_count(value: float | None) -> str:
    """A whole number of customers: ``2,570``."""
    if value is None:
        return DASH
    return format_decimal(round(value), format="#,##0", locale=LOCALE)


def fmt_rate(value: float | None) -> str:
    """A daily rate: one decimal below 10 (``0.4``), whole numbers above (``1,250``)."""
    if value is None:
        return DASH
    return format_decimal(value, format="#,##0.#" if value < 10 else "#,##0", locale=LOCALE)


def fmt_mde(mde: float, kind: str, money: str | None = None) -> str:
    """An unsigned minimum detectable effect: ``5.0 pp``, ``$5.00`` or ``5.00``."""
    if kind == "binary":
        return lift_parts(mde, None, kind)[0].lstrip("+±")
    if money is not None:
        return fmt_money(mde, money)
    return format_decimal(mde, format="#,##0.00", locale=LOCALE)


def round_sig(value: float, digits: int = 3) -> float:
    """``value`` rounded to ``digits`` significant digits (an estimate's honest precision)."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def fmt_money(
    value: float | None, currency: str, signed: bool = False, whole: bool | None = None
) -> str:
    """An amount in ``currency``: cents below 100 (``€3.20``), whole units above (``€12,345``),
    or as ``whole`` says (so a lift and its CI share one precision)."""
    if value is None:
        return DASH
    whole = abs(value) >= 100 if whole is None else whole
    pattern = "¤#,##0" if whole else "¤#,##0.00"
    text = format_currency(
        abs(value), currency, format=pattern, locale=LOCALE, currency_digits=False
    )
    if value < 0:
        return f"−{text}"
    return f"+{text}" if signed and value > 0 else text


def _decimals(reference: float) -> int:
    """One decimal for a lift whose CI spans a point or more, two or three for narrower ones: the
    last digit shown is about a tenth of the uncertainty."""
    if reference >= 1 or reference == 0:
        return 1
    return 2 if reference >= 0.1 else 3


def _signed(value: float, decimals: int) -> str:
    pattern = "#,##0" + ("." + "0" * decimals if decimals else "")
    text = format_decimal(abs(value), format=pattern, locale=LOCALE)
    if round(abs(value), decimals) == 0:
        return "±" + text
    return ("+" if value > 0 else "−") + text


def lift_parts(
    value: float, ci: Sequence[float] | None, kind: str, money: str | None = None
) -> tuple[str, str | None]:
    """A lift and its CI as ``("+25.7 pp", "+18.4 to +33.0 pp")``: percentage points for binary
    metrics, the currency for money, plain numbers otherwise; one precision for all three."""
    scale = 100.0 if kind == "binary" else 1.0
    points = [value * scale, *((c * scale) for c in ci or ())]
    reference = points[2] - points[1] if ci is not None else abs(points[0])
    decimals = _decimals(reference)
    unit = " pp" if kind == "binary" else ""

    whole = max(abs(v) for v in points) >= 100

    def fmt(v: float) -> str:
        if money is not None and kind != "binary":
            return fmt_money(v, money, signed=True, whole=whole)
        return _signed(v, decimals)

    shown = fmt(points[0]) + unit
    if ci is None:
        return shown, None
    return shown, f"{fmt(points[1])} to {fmt(points[2])}{unit}"


def fmt_lift_text(
    value: float | None, ci: Sequence[float] | None, kind: str, money: str | None = None
) -> str:
    """``+25.7 pp (+18.4 to +33.0 pp)``, or the dash without an estimate."""
    if value is None:
        return DASH
    shown, interval = lift_parts(value, ci, kind, money)
    return shown if interval is None else f"{shown} ({interval})"
