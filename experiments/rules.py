"""The segment rule language: a small, safe expression language over per-customer fields.

Marketers write rules in the experiment YAML, for example::

    card_expires_in_days <= 30 and subscription.status == "active"
    usage_last_14d < 0.5 * usage_prior_14d and subscription.status in ["active", "past_due"]
    tenure_days <= 21 and not onboarding_completed

Grammar (lowest precedence first; keywords are lowercase)::

    rule       := or EOF
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := sum [("==" | "!=" | "<" | "<=" | ">" | ">=") sum | ["not"] "in" list]
    sum        := product (("+" | "-") product)*
    product    := unary (("*" | "/") unary)*
    unary      := "-" unary | atom
    atom       := NUMBER | STRING | "true" | "false" | "null" | FIELD | "(" or ")"
    list       := "[" literal ("," literal)* [","] "]"

Rules are type-checked against :data:`FIELDS` while parsing, so a mistake is reported with its
column before anything runs. Parsing is pure: nothing is evaluated, and the SQL compiler
(``models.segments``) binds every literal as a parameter.

Missing values: a field can be null (no card, no subscription, never active). ``x == null`` and
``x != null`` test for that. Any other comparison, arithmetic result or list test involving a null
is **false** (and ``not`` of it is true): ``card_expires_in_days <= 30`` never selects a customer
without a card, while ``not (card_expires_in_days <= 30)`` does. Division by zero gives null.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from experiments.rule_ast import (
    _SEE_FIELDS,
    FIELDS,
    And,
    BinOp,
    Compare,
    FieldInfo,
    FieldRef,
    InList,
    IsNull,
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

# --- Tokens --------------------------------------------------------------------------------------

_KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false", "null"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_NUMBER = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_OPERATORS = ("==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "(", ")", "[", "]", ",")
_MISTAKES = {
    "<>": "'<>' is not an operator; use '!='",
    "=>": "'=>' is not an operator; use '>='",
    "=<": "'=<' is not an operator; use '<='",
    "=": "'=' is not an operator; use '==' to compare",
    "&&": "use 'and' instead of '&&'",
    "&": "use 'and' instead of '&'",
    "||": "use 'or' instead of '||'",
    "|": "use 'or' instead of '|'",
    "!": "use 'not' instead of '!'",
}
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}
_MAX_MAGNITUDE = 1e15  # exact in a double and within every database's integer range
_MAX_DEPTH = 64


@dataclass(frozen=True)
class _Token:
    kind: Literal["number", "string", "name", "keyword", "op", "end"]
    text: str
    value: int | float | str | None
    start: int  # 0-based offset; the column is start + 1
    end: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        token = _string(text, i) if text[i] in "\"'" else _word(text, i) or _operator(text, i)
        tokens.append(token)
        i = token.end
    tokens.append(_Token("end", "end of rule", None, len(text), len(text)))
    return tokens


def _string(text: str, start: int) -> _Token:
    quote, chars, i = text[start], [], start + 1
    while i < len(text) and text[i] != quote:
        if text[i] == "\\" and i + 1 < len(text):
            chars.append(_ESCAPES.get(text[i + 1], "\\" + text[i + 1]))
            i += 2
        else:
            chars.append(text[i])
            i += 1
    if i >= len(text):
        raise RuleError(f"unterminated string: add a closing {quote} to end it", start + 1)
    return _Token("string", text[start : i + 1], "".join(chars), start, i + 1)


def _word(text: str, start: int) -> _Token | None:
    if number := _NUMBER.match(text, start):
        end = number.end()
        if end < len(text) and (text[end].isalnum() or text[end] in "_."):
            while end < len(text) and (text[end].isalnum() or text[end] in "_."):
                end += 1
            junk = text[start:end]
            raise RuleError(f"{junk!r} is not a number; write plain numbers such as 30", start + 1)
        raw = number.group()
        value: int | float = float(raw) if any(c in raw for c in ".eE") else int(raw)
        if not math.isfinite(value) or abs(value) > _MAX_MAGNITUDE:
            raise RuleError(f"the number {raw} is too large", start + 1)
        return _Token("number", raw, value, start, end)
    if name := _NAME.match(text, start):
        word = name.group()
        if word.lower() in _KEYWORDS and word not in _KEYWORDS:
            raise RuleError(f"keywords are lowercase: write {word.lower()!r}", start + 1)
        if word in ("None", "NULL", "nil"):
            raise RuleError(f"write 'null' instead of {word!r}", start + 1)
        if word.lower() == "is":
            raise RuleError("write 'x == null' or 'x != null' instead of 'is'", start + 1)
        kind: Literal["keyword", "name"] = "keyword" if word in _KEYWORDS else "name"
        return _Token(kind, word, word, start, name.end())
    return None


def _operator(text: str, start: int) -> _Token:
    if text.startswith("<>", start):
        raise RuleError(_MISTAKES["<>"], start + 1)
    for op in _OPERATORS:
        if text.startswith(op, start):
            return _Token("op", op, op, start, start + len(op))
    for mistake, hint in _MISTAKES.items():
        if text.startswith(mistake, start):
            raise RuleError(hint, start + 1)
    raise RuleError(f"unexpected character {text[start]!r}", start + 1)


# --- Parser --------------------------------------------------------------------------------------

_Kind = Literal["number", "string", "bool", "null", "condition"]
_KIND_NAMES = {
    "number": "a number",
    "string": "text",
    "bool": "true/false",
    "null": "null",
    "condition": "a condition",
}


@dataclass(frozen=True)
class _Typed:
    node: Rule
    kind: _Kind
    start: int
    end: int


def parse_rule(text: str) -> Rule:
    """Parse and type-check a segment rule; raises :class:`RuleError` naming the column."""
    return _Parser(text).rule()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0
        self.depth = 0

    # Helpers
    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        token = self.peek()
        self.pos += 1
        return token

    def at(self, kind: str, text: str) -> bool:
        token = self.peek()
        return token.kind == kind and token.text == text

    def source(self, item: _Typed) -> str:
        return self.text[item.start : item.end]

    def nest(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise RuleError("the rule is nested too deeply; simplify it", token.start + 1)

    # Grammar
    def rule(self) -> Rule:
        if self.peek().kind == "end":
            raise RuleError(
                'the rule is empty; write a condition such as subscription.status == "active"', 1
            )
        result = self.condition(self.or_())
        token = self.peek()
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
        if token.kind == "op" and token.text in ("==", "!=", "<", "<=", ">", ">="):
            self.advance()
            result = self.compare(token, left, self.sum_())
            after = self.peek()
            if after.kind == "op" and after.text in ("==", "!=", "<", "<=", ">", ">="):
                raise RuleError(
                    "comparisons cannot be chained; write 'a < x and x < b'", after.start + 1
                )
            return result
        if self.at("keyword", "in"):
            self.advance()
            return self.in_list(left, negated=False)
        if self.at("keyword", "not"):
            if self.peek(1).kind == "keyword" and self.peek(1).text == "in":
                self.advance()
                self.advance()
                return self.in_list(left, negated=True)
            raise RuleError(
                "expected 'in' after 'not' (as in x not in [...]), or join with 'and not'",
                token.start + 1,
            )
        return left

    def compare(self, op: _Token, left: _Typed, right: _Typed) -> _Typed:
        for side in (left, right):
            if side.kind == "condition":
                raise RuleError(
                    f"{self.source(side)!r} is a condition and cannot be compared; "
                    "combine conditions with 'and' / 'or'",
                    side.start + 1,
                )
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
        node = Compare(op.text, left.node, right.node)  # type: ignore[arg-type]
        return _Typed(node, "condition", left.start, right.end)

    def null_test(self, op: _Token, left: _Typed, right: _Typed) -> _Typed:
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

    def in_list(self, left: _Typed, *, negated: bool) -> _Typed:
        if left.kind in ("condition", "null"):
            raise RuleError(
                f"{self.source(left)!r} is {_KIND_NAMES[left.kind]}; 'in' needs a field",
                left.start + 1,
            )
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
        sign = 1
        if token.text == "-" and self.peek().kind == "number":
            sign, token = -1, self.advance()
        if token.kind == "keyword" and token.text == "null":
            raise RuleError(
                "null cannot be in a list; write 'x == null or x in [...]'", token.start + 1
            )
        if token.kind == "number" and isinstance(token.value, int | float):
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

    def arithmetic(self, op: _Token, left: _Typed, right: _Typed) -> _Typed:
        for side in (left, right):
            self.number_operand(op, side)
        node = BinOp(op.text, left.node, right.node)  # type: ignore[arg-type]
        return _Typed(node, "number", left.start, right.end)

    def number_operand(self, op: _Token, side: _Typed) -> None:
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
        literal = isinstance(node, Literal_) and isinstance(node.value, int | float)
        negated = Literal_(-node.value) if literal else Neg(node)  # type: ignore[union-attr,operator]
        return _Typed(negated, "number", token.start, operand.end)

    def atom(self) -> _Typed:
        token = self.advance()
        if token.kind == "number":
            return _Typed(Literal_(token.value), "number", token.start, token.end)
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
            return _Typed(inner.node, inner.kind, token.start, closing.end)
        raise RuleError(f"expected a field, number or text, found {token.text!r}", token.start + 1)

    def field(self, token: _Token) -> _Typed:
        name = token.text
        info = FIELDS.get(name)
        if info is None:
            raise RuleError(f"unknown field {name!r}; {_suggest(name)}", token.start + 1)
        return _Typed(FieldRef(name), info.type, token.start, token.end)

    def condition(self, item: _Typed) -> _Typed:
        if item.kind in ("condition", "bool"):
            return item
        source = self.source(item)
        example = {"number": f"{source} > 0", "string": f'{source} == "..."'}.get(item.kind)
        hint = f"; compare it, e.g. {example}" if example else "; write field == null"
        raise RuleError(
            f"{source!r} is {_KIND_NAMES[item.kind]}, not a condition{hint}", item.start + 1
        )


def _suggest(name: str) -> str:
    suffix = [field for field in FIELDS if field.endswith("." + name)]
    close = suffix or difflib.get_close_matches(name, FIELDS, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}? ({_SEE_FIELDS})"
    return f'{_SEE_FIELDS}; text values need quotes, e.g. "{name}"'


__all__ = [
    "FIELDS",
    "And",
    "BinOp",
    "Compare",
    "FieldInfo",
    "FieldRef",
    "InList",
    "IsNull",
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
