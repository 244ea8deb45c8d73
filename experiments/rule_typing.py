"""Types the rule parser tracks while it reads (kind, position, magnitude bounds, units), the
number-range check on arithmetic, and the did-you-mean for unknown fields."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

from experiments.rule_ast import (
    _SEE_FIELDS,
    FIELDS,
    LIMITS,
    And,
    BinOp,
    Compare,
    FieldRef,
    InList,
    IsNull,
    Literal_,
    Neg,
    Not,
    Or,
    Rule,
    RuleError,
)

Kind = Literal["number", "string", "bool", "null", "condition"]
KIND_NAMES = {
    "number": "a number",
    "string": "text",
    "bool": "true/false",
    "null": "null",
    "condition": "a condition",
}
QUANTUM = 2.0**-53  # a sum of doubles at least m in size is a multiple of about m * 2**-53
FIELD_SMALLEST = 1e-12


@dataclass(frozen=True)
class Typed:
    node: Rule
    kind: Kind
    start: int
    end: int
    hi: float = 0.0  # numbers: largest possible magnitude
    lo: float = float("inf")  # numbers: smallest possible nonzero magnitude (inf: always 0)
    days: bool = False  # a duration, or a field measured in days


def arithmetic_bounds(op: str, start: int, left: Typed, right: Typed) -> tuple[float, float]:
    """``(largest magnitude, smallest nonzero magnitude)`` of ``left op right`` from the
    operands' bounds; a :class:`RuleError` at ``start`` when either could leave double
    precision on the way (PostgreSQL raises on overflow and underflow, SQLite does not)."""
    if op in ("+", "-"):
        hi, lo = left.hi + right.hi, min(left.lo, right.lo)
    elif op == "*":
        hi, lo = left.hi * right.hi, left.lo * right.lo * QUANTUM
    elif right.lo == float("inf"):  # always a division by zero: always null
        hi, lo = 0.0, float("inf")
    else:
        hi = left.hi / right.lo
        lo = left.lo / right.hi * QUANTUM if right.hi else float("inf")
    if hi > LIMITS.arithmetic or lo < 1 / LIMITS.arithmetic:
        raise RuleError(
            f"this arithmetic could leave the range of numbers the databases compute with "
            f"(results up to {LIMITS.arithmetic:.0e} in size, assuming fields within "
            f"±{LIMITS.field:.0e}); simplify it",
            start + 1,
        )
    return hi, lo


def suggest(name: str) -> str:
    suffix = [field for field in FIELDS if field.endswith("." + name)]
    close = suffix or difflib.get_close_matches(name, FIELDS, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}? ({_SEE_FIELDS})"
    return f'{_SEE_FIELDS}; text values need quotes, e.g. "{name}"'


def unit_mismatch(text: str, sides: tuple[Typed, ...]) -> RuleError | None:
    """A duration compares with a field measured in days (or a plain number), not with, say, a
    count of invoices: the error for the first duration compared with such a field."""
    durations = [s for s in sides if s.days and isinstance(s.node, Literal_)]
    fields = [s for s in sides if isinstance(s.node, FieldRef) and not s.days]
    for duration in durations:
        for field in fields:
            return RuleError(
                f"{text[duration.start : duration.end]!r} is a duration but "
                f"{text[field.start : field.end]!r} is not measured in days; write a plain number",
                duration.start + 1,
            )
    return None


def sql_nesting(rule: Rule) -> int:
    """An upper bound on the parenthesis nesting of the rule compiled to SQL by
    :func:`models.segments.compile_rule` (``not`` pushed to the leaves, flat sums and
    products, and/or chains grouped by at most 100): SQLite's parser overflows its stack at
    about 30 levels, so the parser rejects a rule above :attr:`Limits.sql_nesting`."""
    return _condition_nesting(rule, negated=False)


def _condition_nesting(node: Rule, negated: bool) -> int:
    match node:
        case And(items) | Or(items):
            grouping = 1 if len(items) > 100 else 0
            return 1 + grouping + max(_condition_nesting(item, negated) for item in items)
        case Not(item):
            return _condition_nesting(item, not negated)
        case IsNull(expr):
            return _value_nesting(expr)
        case Literal_():
            return 0
        case Compare(_, left, right):
            return max(_value_nesting(left), _value_nesting(right)) + (1 if negated else 0)
        case InList(expr):
            return _value_nesting(expr) + 1 + (1 if negated else 0)
    return 1 if negated else 0  # a true/false field


def _value_nesting(node: Rule) -> int:
    match node:
        case FieldRef():
            return 1  # CAST(... AS FLOAT) in arithmetic
        case Literal_():
            return 0
        case Neg(item):
            return 1 + _value_nesting(item)
        case BinOp("/", left, right):
            return 2 + max(_value_nesting(left), _value_nesting(right))
        case BinOp(op):
            chain = ("+", "-") if op in ("+", "-") else ("*",)
            terms: list[Rule] = []
            while isinstance(node, BinOp) and node.op in chain:
                terms.append(node.right)
                node = node.left
            terms.append(node)
            return 2 + max(_value_nesting(term) for term in terms)
    return 0
