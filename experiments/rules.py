"""The segment rule language: a small, safe expression language over per-customer fields.

Marketers write rules in the experiment YAML, for example::

    card_expires_in_days <= 30 and subscription.status == "active"
    usage_trend < 0.5 and usage_prior_14d >= 4 and subscription.status in ["active", "past_due"]
    tenure_days between 3d and 21d and not onboarding_completed
    days_since_last_active > 14d or days_since_last_active is null

Grammar (lowest precedence first; keywords are lowercase)::

    rule       := or EOF
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := sum [("==" | "!=" | "<" | "<=" | ">" | ">=") sum
                       | ["not"] "in" list | ["not"] "between" sum "and" sum
                       | "is" ["not"] "null"]
    sum        := product (("+" | "-") product)*
    product    := unary (("*" | "/") unary)*
    unary      := "-" unary | atom
    atom       := NUMBER | DURATION | STRING | "true" | "false" | "null" | FIELD | "(" or ")"
    list       := "[" literal ("," literal)* [","] "]"

A DURATION (``14d``, ``2w``, ``12h``) is a number of days; it compares with fields measured in
days. ``x between a and b`` is ``x >= a and x <= b``; ``x not between a and b`` is
``x < a or x > b``.

Rules are type-checked against :data:`FIELDS` while parsing, so a mistake is reported with its
column before anything runs. Parsing is pure: nothing is evaluated, and the SQL compiler
(``models.segments``) binds every literal as a parameter.

Missing values: a field can be null (no card, no subscription, never active). ``x is null`` (or
``x == null``) and ``x is not null`` (``x != null``) test for that. Any other comparison,
arithmetic result or list test involving a null is **false** (and ``not`` of it is true):
``card_expires_in_days <= 30`` never selects a customer without a card, while
``not (card_expires_in_days <= 30)`` does. Division by zero gives null.

Limits (:data:`LIMITS`, listed in the README) keep whatever parses runnable on SQLite and
PostgreSQL alike: tokens, nesting, conditions, arithmetic operators, list values, the size of
numbers and the range arithmetic could reach (checked from bounds on every field).
"""

from __future__ import annotations

from collections.abc import Callable

from experiments.rule_ast import (
    FIELDS,
    LIMITS,
    And,
    BinOp,
    Compare,
    FieldInfo,
    FieldRef,
    InList,
    IsNull,
    Limits,
    Literal_,
    Neg,
    Not,
    Or,
    Rule,
    RuleError,
    ValueType,
    describe_fields,
    rule_fields,
    to_text,
)
from experiments.rule_tokens import Token, tokenize
from experiments.rule_typing import FIELD_SMALLEST as _FIELD_SMALLEST
from experiments.rule_typing import KIND_NAMES as _KIND_NAMES
from experiments.rule_typing import QUANTUM as _QUANTUM
from experiments.rule_typing import Kind as _Kind
from experiments.rule_typing import Typed as _Typed
from experiments.rule_typing import arithmetic_bounds, sql_nesting, suggest, unit_mismatch

_COMPARE_OPS = ("==", "!=", "<", "<=", ">", ">=")


def parse_rule(text: str) -> Rule:
    """Parse and type-check a segment rule; raises :class:`RuleError` naming the column (its
    ``text`` is set, for :meth:`RuleError.pointer`)."""
    try:
        return _Parser(text).rule()
    except RuleError as error:
        error.text = text
        raise


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.pos = 0
        self.depth = 0
        self.conditions = 0
        self.operators = 0
        self.list_values = 0

    # Helpers
    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.peek()
        self.pos += 1
        return token

    def at(self, kind: str, text: str) -> bool:
        token = self.peek()
        return token.kind == kind and token.text == text

    def source(self, item: _Typed) -> str:
        return self.text[item.start : item.end]

    def nest(self, token: Token) -> None:
        self.depth += 1
        if self.depth > LIMITS.depth:
            raise RuleError(
                f"the rule is nested too deeply (at most {LIMITS.depth} levels of parentheses, "
                "'not' and '-'); simplify it",
                token.start + 1,
            )

    def count_condition(self, start: int) -> None:
        self.conditions += 1
        if self.conditions > LIMITS.conditions:
            raise RuleError(
                f"the rule has too many conditions (at most {LIMITS.conditions:,}); use a list "
                "test such as x in [...] or a shorter rule",
                start + 1,
            )

    def count_operator(self, token: Token) -> None:
        self.operators += 1
        if self.operators > LIMITS.operators:
            raise RuleError(
                f"the rule has too many arithmetic operators (at most {LIMITS.operators})",
                token.start + 1,
            )

    # Grammar
    def rule(self) -> Rule:
        if self.peek().kind == "end":
            raise RuleError(
                'the rule is empty; write a condition such as subscription.status == "active"', 1
            )
        result = self.condition(self.or_())
        token = self.peek()
        if token.kind == "end" and sql_nesting(result.node) > LIMITS.sql_nesting:
            raise RuleError(
                f"the rule nests too deeply for SQL (more than {LIMITS.sql_nesting} levels of "
                "parentheses once compiled); flatten nested arithmetic and conditions",
                1,
            )
        if token.text == ")":
            raise RuleError("unmatched ')'", token.start + 1)
        if token.kind != "end":
            raise RuleError(
                f"unexpected {token.text!r} after a complete condition; "
                "join conditions with 'and' or 'or'",
                token.start + 1,
            )
        return result.node

    def or_(self) -> _Typed:
        return self.junction("or", self.and_)

    def and_(self) -> _Typed:
        return self.junction("and", self.not_)

    def junction(self, keyword: str, parse: Callable[[], _Typed]) -> _Typed:
        items: list[_Typed] = [parse()]
        while self.at("keyword", keyword):
            self.advance()
            items.append(parse())
        if len(items) == 1:
            return items[0]
        kind = And if keyword == "and" else Or
        nodes: list[Rule] = []
        for item in items:
            node = self.condition(item).node
            nodes.extend(node.items if isinstance(node, kind) else [node])
        return _Typed(kind(tuple(nodes)), "condition", items[0].start, items[-1].end)

    def not_(self) -> _Typed:
        if not self.at("keyword", "not"):
            return self.comparison()
        token = self.advance()
        self.nest(token)
        operand = self.not_()
        self.depth -= 1
        return _Typed(Not(self.condition(operand).node), "condition", token.start, operand.end)

    def comparison(self) -> _Typed:
        left = self.sum_()
        token = self.peek()
        if token.kind == "op" and token.text in _COMPARE_OPS:
            self.advance()
            result = self.compare(token, left, self.sum_())
            after = self.peek()
            if after.kind == "op" and after.text in _COMPARE_OPS:
                raise RuleError(
                    "comparisons cannot be chained; write 'a < x and x < b' or 'x between a and b'",
                    after.start + 1,
                )
            return result
        if token.kind == "keyword" and token.text in ("in", "between", "is"):
            self.advance()
            return self.special(token, left, negated=False)
        if self.at("keyword", "not"):
            following = self.peek(1)
            if following.kind == "keyword" and following.text in ("in", "between"):
                self.advance()
                self.advance()
                return self.special(following, left, negated=True)
            raise RuleError(
                "expected 'in' or 'between' after 'not' (as in x not in [...]), "
                "or join with 'and not'",
                token.start + 1,
            )
        if left.kind == "bool" and isinstance(left.node, FieldRef | Literal_):
            self.count_condition(left.start)
        return left

    def special(self, token: Token, left: _Typed, *, negated: bool) -> _Typed:
        if token.text == "in":
            return self.in_list(left, negated=negated)
        if token.text == "between":
            return self.between(token, left, negated=negated)
        return self.is_null(token, left)

    def compare(self, op: Token, left: _Typed, right: _Typed) -> _Typed:
        for side in (left, right):
            if side.kind == "condition":
                raise RuleError(
                    f"{self.source(side)!r} is a condition and cannot be compared; "
                    "combine conditions with 'and' / 'or'",
                    side.start + 1,
                )
        self.count_condition(left.start)
        if "null" in (left.kind, right.kind):
            return self.null_test(op, left, right)
        if op.text not in ("==", "!="):
            for side in (left, right):
                if side.kind != "number":
                    raise RuleError(
                        f"{op.text!r} compares numbers, but {self.source(side)!r} is "
                        f"{_KIND_NAMES[side.kind]}",
                        op.start + 1,
                    )
        if left.kind != right.kind:
            raise RuleError(
                f"cannot compare {self.source(left)!r} ({_KIND_NAMES[left.kind]}) with "
                f"{self.source(right)!r} ({_KIND_NAMES[right.kind]})"
                + ("; put text in quotes" if left.kind == "string" else ""),
                right.start + 1,
            )
        self.check_units(left, right)
        node = Compare(op.text, left.node, right.node)  # type: ignore[arg-type]
        return _Typed(node, "condition", left.start, right.end)

    def check_units(self, *sides: _Typed) -> None:
        if problem := unit_mismatch(self.text, sides):
            raise problem

    def null_test(self, op: Token, left: _Typed, right: _Typed) -> _Typed:
        if op.text not in ("==", "!="):
            raise RuleError(
                f"null can only be compared with == or != (x == null means x is missing), "
                f"not {op.text!r}",
                op.start + 1,
            )
        other = right if left.kind == "null" else left
        if other.kind == "null":
            raise RuleError("compare a field with null, not null with null", left.start + 1)
        node = IsNull(other.node, negated=op.text == "!=")
        return _Typed(node, "condition", left.start, right.end)

    def is_null(self, token: Token, left: _Typed) -> _Typed:
        negated = self.at("keyword", "not")
        if negated:
            self.advance()
        closing = self.advance()
        if not (closing.kind == "keyword" and closing.text == "null"):
            raise RuleError(
                f"expected 'null' after '{'is not' if negated else 'is'}' (x is null, "
                f"x is not null), found {closing.text!r}; compare values with == or !=",
                closing.start + 1,
            )
        if left.kind in ("condition", "null"):
            raise RuleError(
                f"{self.source(left)!r} is {_KIND_NAMES[left.kind]}; 'is null' tests a field",
                left.start + 1,
            )
        self.count_condition(left.start)
        return _Typed(IsNull(left.node, negated), "condition", left.start, closing.end)

    def between(self, token: Token, left: _Typed, *, negated: bool) -> _Typed:
        low = self.sum_()
        if not self.at("keyword", "and"):
            found = self.peek()
            raise RuleError(
                f"expected 'and' in 'x between low and high', found {found.text!r}",
                found.start + 1,
            )
        self.advance()
        high = self.sum_()
        for side in (left, low, high):
            if side.kind != "number":
                raise RuleError(
                    f"'between' compares numbers, but {self.source(side)!r} is "
                    f"{_KIND_NAMES[side.kind]}",
                    side.start + 1,
                )
        self.check_units(left, low, high)
        bounds = (low.node, high.node)
        if all(isinstance(b, Literal_) for b in bounds):
            a, b = (bound.value for bound in bounds)  # type: ignore[union-attr]
            if a > b:  # type: ignore[operator]
                raise RuleError(
                    f"the range is empty: {self.source(low)} is above {self.source(high)}; "
                    "write the lower bound first",
                    low.start + 1,
                )
        self.count_condition(left.start)
        self.count_condition(left.start)
        node: Rule
        if negated:
            node = Or((Compare("<", left.node, low.node), Compare(">", left.node, high.node)))
        else:
            node = And((Compare(">=", left.node, low.node), Compare("<=", left.node, high.node)))
        return _Typed(node, "condition", left.start, high.end)

    def in_list(self, left: _Typed, *, negated: bool) -> _Typed:
        if left.kind in ("condition", "null"):
            raise RuleError(
                f"{self.source(left)!r} is {_KIND_NAMES[left.kind]}; 'in' needs a field",
                left.start + 1,
            )
        self.count_condition(left.start)
        opening = self.advance()
        if opening.text != "[":
            raise RuleError('expected a list after \'in\', e.g. ["a", "b"]', opening.start + 1)
        values: list[int | float | str | bool] = []
        while not self.at("op", "]"):
            values.append(self.list_item(left))
            if not self.at("op", ","):
                break
            self.advance()
        closing = self.advance()
        if closing.text != "]":
            raise RuleError(
                f"expected ',' or ']' in the list, found {closing.text!r}", closing.start + 1
            )
        if not values:
            raise RuleError("the list is empty; put at least one value in it", opening.start + 1)
        node = InList(left.node, tuple(values), negated)
        return _Typed(node, "condition", left.start, closing.end)

    def list_item(self, left: _Typed) -> int | float | str | bool:
        token = self.advance()
        self.list_values += 1
        if self.list_values > LIMITS.list_values:
            raise RuleError(
                f"too many values in lists (at most {LIMITS.list_values:,} in one rule); select "
                "on a field that groups them instead",
                token.start + 1,
            )
        sign = 1
        if token.text == "-" and self.peek().kind in ("number", "duration"):
            sign, token = -1, self.advance()
        if token.kind == "keyword" and token.text == "null":
            raise RuleError(
                "null cannot be in a list; write 'x is null or x in [...]'", token.start + 1
            )
        if token.kind in ("number", "duration") and isinstance(token.value, int | float):
            value: int | float | str | bool = sign * token.value
            kind: _Kind = "number"
        elif token.kind == "string" and isinstance(token.value, str):
            value, kind = token.value, "string"
        elif token.kind == "keyword" and token.text in ("true", "false"):
            value, kind = token.text == "true", "bool"
        else:
            raise RuleError(f"lists hold plain values, found {token.text!r}", token.start + 1)
        if kind != left.kind:
            raise RuleError(
                f"{token.text!r} is {_KIND_NAMES[kind]} but {self.source(left)!r} is "
                f"{_KIND_NAMES[left.kind]}",
                token.start + 1,
            )
        return value

    def sum_(self) -> _Typed:
        left = self.product()
        while self.peek().kind == "op" and self.peek().text in ("+", "-"):
            left = self.arithmetic(self.advance(), left, self.product())
        return left

    def product(self) -> _Typed:
        left = self.unary()
        while self.peek().kind == "op" and self.peek().text in ("*", "/"):
            left = self.arithmetic(self.advance(), left, self.unary())
        return left

    def arithmetic(self, op: Token, left: _Typed, right: _Typed) -> _Typed:
        for side in (left, right):
            self.number_operand(op, side)
        self.count_operator(op)
        hi, lo = arithmetic_bounds(op.text, op.start, left, right)
        node = BinOp(op.text, left.node, right.node)  # type: ignore[arg-type]
        days = left.days and right.days and op.text in ("+", "-")
        return _Typed(node, "number", left.start, right.end, hi, lo, days)

    def number_operand(self, op: Token, side: _Typed) -> None:
        if side.kind != "number":
            raise RuleError(
                f"{op.text!r} works on numbers, but {self.source(side)!r} is "
                f"{_KIND_NAMES[side.kind]}",
                side.start + 1,
            )

    def unary(self) -> _Typed:
        if not self.at("op", "-"):
            return self.atom()
        token = self.advance()
        self.nest(token)
        operand = self.unary()
        self.depth -= 1
        self.number_operand(token, operand)
        node = operand.node
        if isinstance(node, Literal_) and isinstance(node.value, int | float):
            negated: Rule = Literal_(-node.value)
        else:
            self.count_operator(token)
            negated = Neg(node)
        return _Typed(
            negated, "number", token.start, operand.end, operand.hi, operand.lo, operand.days
        )

    def atom(self) -> _Typed:
        token = self.advance()
        if token.kind in ("number", "duration") and isinstance(token.value, int | float):
            size = abs(token.value)
            lo = size * _QUANTUM if size else float("inf")
            days = token.kind == "duration"
            return _Typed(Literal_(token.value), "number", token.start, token.end, size, lo, days)
        if token.kind == "string":
            return _Typed(Literal_(token.value), "string", token.start, token.end)
        if token.kind == "keyword" and token.text in ("true", "false", "null"):
            value = {"true": True, "false": False, "null": None}[token.text]
            kind: _Kind = "null" if value is None else "bool"
            return _Typed(Literal_(value), kind, token.start, token.end)
        if token.kind == "name":
            return self.field(token)
        if token.text == "(":
            self.nest(token)
            inner = self.or_()
            self.depth -= 1
            closing = self.advance()
            if closing.text != ")":
                raise RuleError(
                    f"expected ')' to close the '(' at column {token.start + 1}, "
                    f"found {closing.text!r}",
                    closing.start + 1,
                )
            return _Typed(
                inner.node, inner.kind, token.start, closing.end, inner.hi, inner.lo, inner.days
            )
        raise RuleError(f"expected a field, number or text, found {token.text!r}", token.start + 1)

    def field(self, token: Token) -> _Typed:
        name = token.text
        info = FIELDS.get(name)
        if info is None:
            suggestion = suggest(name)
            listing = (
                () if "did you mean" in suggestion else ("valid fields: " + ", ".join(FIELDS),)
            )
            raise RuleError(f"unknown field {name!r}; {suggestion}", token.start + 1, listing)
        hi, lo = (LIMITS.field, _FIELD_SMALLEST * _QUANTUM) if info.type == "number" else (0, 0)
        days = info.unit == "days"
        return _Typed(FieldRef(name), info.type, token.start, token.end, hi, lo, days)

    def condition(self, item: _Typed) -> _Typed:
        if item.kind in ("condition", "bool"):
            return item
        source = self.source(item)
        example = {"number": f"{source} > 0", "string": f'{source} == "..."'}.get(item.kind)
        hint = f"; compare it, e.g. {example}" if example else "; write field is null"
        raise RuleError(
            f"{source!r} is {_KIND_NAMES[item.kind]}, not a condition{hint}", item.start + 1
        )


__all__ = [
    "FIELDS",
    "LIMITS",
    "And",
    "BinOp",
    "Compare",
    "FieldInfo",
    "FieldRef",
    "InList",
    "IsNull",
    "Limits",
    "Literal_",
    "Neg",
    "Not",
    "Or",
    "Rule",
    "RuleError",
    "ValueType",
    "describe_fields",
    "parse_rule",
    "rule_fields",
    "to_text",
]
