"""The segment rule language's tokenizer: words, numbers, durations, strings and operators.

Only ASCII counts as syntax: digits are 0-9 (a full-width ``３`` is an error, never 3), and
whitespace is space, tab and newline. A duration (``14d``, ``2w``, ``12h``, ``30m``) is a number
of days.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from experiments.rule_ast import LIMITS, RuleError

KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false", "null", "between", "is"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_DURATION_UNITS = {"d": 1.0, "w": 7.0, "h": 1 / 24, "m": 1 / 1440}
_WORD_CHARS = re.compile(r"[A-Za-z0-9_.]")
_SPACE = " \t\n\r\f\v"
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

TokenKind = Literal["number", "duration", "string", "name", "keyword", "op", "end"]


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    text: str
    value: int | float | str | None
    start: int  # 0-based offset; the column is start + 1
    end: int


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text`` and a final ``end`` token; raises :class:`RuleError`."""
    if len(text) > LIMITS.characters:
        raise RuleError(
            f"the rule is too long: at most {LIMITS.characters:,} characters; shorten it",
            LIMITS.characters + 1,
        )
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        if text[i] in _SPACE:
            i += 1
            continue
        if len(tokens) >= LIMITS.tokens:
            raise RuleError(
                f"the rule is too long: at most {LIMITS.tokens:,} words, numbers and operators; "
                "split it or select with a shorter condition",
                i + 1,
            )
        token = _string(text, i) if text[i] in "\"'" else _word(text, i) or _operator(text, i)
        tokens.append(token)
        i = token.end
    tokens.append(Token("end", "end of rule", None, len(text), len(text)))
    return tokens


def _string(text: str, start: int) -> Token:
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
    return Token("string", text[start : i + 1], "".join(chars), start, i + 1)


def _word(text: str, start: int) -> Token | None:
    if number := _NUMBER.match(text, start):
        return _number(text, start, number.group())
    if name := _NAME.match(text, start):
        word = name.group()
        if word.lower() in KEYWORDS and word not in KEYWORDS:
            raise RuleError(f"keywords are lowercase: write {word.lower()!r}", start + 1)
        if word in ("None", "NULL", "nil"):
            raise RuleError(f"write 'null' instead of {word!r}", start + 1)
        kind: TokenKind = "keyword" if word in KEYWORDS else "name"
        return Token(kind, word, word, start, name.end())
    return None


def _number(text: str, start: int, raw: str) -> Token:
    end = start + len(raw)
    unit = text[end] if end < len(text) else ""
    after = text[end + 1] if end + 1 < len(text) else ""
    if unit in _DURATION_UNITS and not _WORD_CHARS.match(after) and raw.isdigit():
        days = int(raw) * _DURATION_UNITS[unit]
        _check_magnitude(days, raw + unit, start)
        value = int(days) if days.is_integer() else days
        return Token("duration", raw + unit, value, start, end + 1)
    if end < len(text) and (_WORD_CHARS.match(text[end]) or text[end].isalnum()):
        while end < len(text) and (_WORD_CHARS.match(text[end]) or text[end].isalnum()):
            end += 1
        junk = text[start:end]
        raise RuleError(
            f"{junk!r} is not a number; write plain numbers such as 30, or durations such as "
            "14d, 2w, 12h",
            start + 1,
        )
    number: int | float = float(raw) if any(c in raw for c in ".eE") else int(raw)
    _check_magnitude(number, raw, start)
    return Token("number", raw, number, start, end)


def _check_magnitude(value: int | float, raw: str, start: int) -> None:
    if not math.isfinite(value) or abs(value) > LIMITS.literal:
        raise RuleError(
            f"the number {raw} is too large: numbers in rules are at most {LIMITS.literal:.0e} "
            "in size",
            start + 1,
        )
    if value != 0 and abs(value) < LIMITS.smallest:
        raise RuleError(
            f"the number {raw} is too small: nonzero numbers in rules are at least "
            f"{LIMITS.smallest:.0e} in size",
            start + 1,
        )


def _operator(text: str, start: int) -> Token:
    if text.startswith("<>", start):
        raise RuleError(_MISTAKES["<>"], start + 1)
    for op in _OPERATORS:
        if text.startswith(op, start):
            return Token("op", op, op, start, start + len(op))
    for mistake, hint in _MISTAKES.items():
        if text.startswith(mistake, start):
            raise RuleError(hint, start + 1)
    char = text[start]
    if char.isdigit():
        plain = unicodedata.digit(char, None)
        fix = f"; write {plain}" if plain is not None else ""
        raise RuleError(f"{char!r} is not a plain digit: type numbers with 0-9{fix}", start + 1)
    if char.isspace():
        raise RuleError(
            f"unexpected space character {char!r}: use a plain space, tab or newline", start + 1
        )
    raise RuleError(f"unexpected character {char!r}", start + 1)
