"""Segment rules compiled to SQL over the per-customer features of :mod:`models.features`.

:func:`compile_rule` turns a parsed rule into a SQLAlchemy condition with every literal bound as a
parameter. Null semantics are two-valued, as the rule language documents: a comparison, list test
or arithmetic involving a null is false (SQL's unknown, coalesced to false under ``not``), so
``not (card_expires_in_days <= 30)`` selects customers without a card; division by zero is null.
Arithmetic is double precision on both databases; long ``and``/``or`` chains become balanced
groups, so SQLite's expression depth (1000) is never reached.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    Integer,
    String,
    Table,
    and_,
    cast,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.engine import Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement, Select, Subquery
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeEngine

from experiments.rules import (
    FIELDS,
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
    rule_fields,
)
from models.features import customer_features, feature_rows
from models.records import Assignment

_assignments: Table = Assignment.__table__  # type: ignore[attr-defined]

__all__ = ["compile_rule", "customer_features", "feature_rows", "segment_query", "select_segment"]


def compile_rule(rule: Rule, features: Subquery, negated: bool = False) -> ColumnElement[bool]:
    """The rule as a SQL condition over a :func:`customer_features` subquery (literals bound).

    ``not`` is pushed down to the leaves (negation normal form: ``not (a and b)`` is
    ``not a or not b``), which is exact under the two-valued logic because a negated leaf is
    "not true" (null counts as false first). So nested ``not`` never nests in the SQL, whose
    parsers have small stacks (SQLite's holds about 30 levels of parentheses).
    """
    match rule:
        case And(items) | Or(items):
            conjunction = isinstance(rule, And) != negated
            parts = [compile_rule(item, features, negated) for item in items]
            return _grouped(and_ if conjunction else or_, parts)
        case Not(item):
            return compile_rule(item, features, not negated)
        case IsNull(expr, is_not):
            column = _value(expr, features)
            return column.is_not(None) if is_not != negated else column.is_(None)
        case Literal_(bool() as value):
            return true() if value != negated else false()
    condition = _leaf(rule, features)
    # two-valued logic: an unknown (null) condition counts as false before negation
    return not_(func.coalesce(condition, false())) if negated else condition


def _leaf(rule: Rule, features: Subquery) -> ColumnElement[bool]:
    match rule:
        case Compare(op, left, right):
            return _COMPARISONS[op](_value(left, features), _value(right, features))
        case InList(expr, values, negated):
            column = _value(expr, features)
            return column.not_in(values) if negated else column.in_(values)
        case FieldRef(name) if FIELDS[name].type == "bool":
            return features.c[name]
    raise ValueError(f"not a condition: {rule!r}")


class _Parens(FunctionElement[bool]):
    """A parenthesised condition that SQLAlchemy does not flatten into an enclosing AND/OR."""

    type = Boolean()
    inherit_cache = True


@compiles(_Parens)
def _compile_parens(element: _Parens, compiler: Any, **kw: Any) -> str:
    (inner,) = list(element.clauses)
    return f"({compiler.process(inner, **kw)})"


GROUP = 100  # SQLite parses `a OR b OR c ...` into a tree as deep as the chain (limit 1000)


def _grouped(
    join: Callable[..., ColumnElement[bool]], items: list[ColumnElement[bool]]
) -> ColumnElement[bool]:
    """``join(*items)``, in parenthesised groups of at most :data:`GROUP` items when longer, so
    the expression depth the database sees stays far below SQLite's limit of 1000 while the
    parenthesis nesting grows by one level only (for up to 10,000 items)."""
    while len(items) > GROUP:
        items = [_Parens(join(*items[i : i + GROUP])) for i in range(0, len(items), GROUP)]
    return join(*items)


_COMPARISONS: dict[str, Callable[[Any, Any], ColumnElement[bool]]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _value(node: Rule, features: Subquery) -> ColumnElement[Any]:
    match node:
        case FieldRef(name):
            return features.c[name]
        case Literal_(value) if value is not None:
            return literal(value, _literal_type(value))
        case Neg(operand):
            return -_number(operand, features)
        case BinOp("/", left, right):
            # true division on both databases; x / 0 is null (PostgreSQL would raise)
            numerator = _number(left, features)
            return numerator / func.nullif(_number(right, features), 0.0, type_=Float)
        case BinOp("+" | "-"):
            return _chain(node, ("+", "-"), features)
        case BinOp("*"):
            return _chain(node, ("*",), features)
    raise ValueError(f"not a value: {node!r}")


def _chain(node: Rule, ops: tuple[str, ...], features: Subquery) -> ColumnElement[Any]:
    """A left-deep chain ``a - b + c`` (or ``a * b * c``) as one flat SQL sum (product):
    SQLAlchemy would parenthesise every link of a subtraction, ``((a - b) + c)``, and a chain
    of 100 terms would overflow SQLite's parser stack. Terms are read iteratively."""
    terms: list[tuple[str, Rule]] = []
    while isinstance(node, BinOp) and node.op in ops:
        terms.append((node.op, node.right))
        node = node.left
    result = _number(node, features)
    for op, term in reversed(terms):
        value = _number(term, features)
        result = result * value if op == "*" else result + (value if op == "+" else -value)
    return result


def _number(node: Rule, features: Subquery) -> ColumnElement[Any]:
    """An arithmetic operand in double precision: SQLite and PostgreSQL then compute the same
    thing (integer arithmetic overflows differently on each); the parser bounds the range."""
    if isinstance(node, Literal_) and isinstance(node.value, int | float):
        return literal(float(node.value), Float())
    if isinstance(node, FieldRef | Neg | BinOp):
        return (
            cast(_value(node, features), Float)
            if isinstance(node, FieldRef)
            else _value(node, features)
        )
    raise ValueError(f"not a number: {node!r}")


def _literal_type(value: int | float | str | bool) -> TypeEngine[Any]:
    if isinstance(value, bool):
        return Boolean()
    if isinstance(value, str):
        return String()
    return Integer() if isinstance(value, int) else Float()


def segment_query(
    rule: Rule,
    as_of: datetime,
    *,
    exclude_assigned_except: int | None = None,
    exclude_assigned: bool = False,
) -> Select[Any]:
    """``customer_id`` of the customers matching ``rule`` at ``as_of``, ordered by id.

    With ``exclude_assigned``, customers with an assignment in any experiment other than
    ``exclude_assigned_except`` (all experiments when it is None) are left out.
    """
    features = customer_features(as_of, fields=rule_fields(rule)).subquery("features")
    query = select(features.c.customer_id).where(compile_rule(rule, features))
    if exclude_assigned:
        a = _assignments
        elsewhere = select(a.c.id).where(a.c.customer_id == features.c.customer_id)
        if exclude_assigned_except is not None:
            elsewhere = elsewhere.where(a.c.experiment_id != exclude_assigned_except)
        query = query.where(~elsewhere.exists())
    return query.order_by(features.c.customer_id)


def select_segment(
    engine: Engine,
    rule: Rule,
    as_of: datetime,
    *,
    experiment_id: int | None = None,
    exclude_assigned: bool = False,
) -> list[int]:
    """The ids of the customers matching ``rule`` at ``as_of`` (see :func:`segment_query`)."""
    query = segment_query(
        rule, as_of, exclude_assigned_except=experiment_id, exclude_assigned=exclude_assigned
    )
    with engine.connect() as connection:
        return [int(customer_id) for customer_id in connection.scalars(query)]
