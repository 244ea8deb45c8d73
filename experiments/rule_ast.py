"""The segment rule language's vocabulary: the customer fields a rule may use, its syntax tree
and the error it raises. The tokenizer and parser are in :mod:`experiments.rules`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ValueType = Literal["number", "string", "bool"]


@dataclass(frozen=True)
class FieldInfo:
    name: str
    type: ValueType
    description: str


def _fields(*rows: tuple[str, ValueType, str]) -> dict[str, FieldInfo]:
    return {name: FieldInfo(name, kind, description) for name, kind, description in rows}


FIELDS: dict[str, FieldInfo] = _fields(
    ("customer.country", "string", 'ISO 3166 two-letter country code, e.g. "SE"'),
    ("customer.locale", "string", 'preferred language, e.g. "en" or "sv"'),
    ("tenure_days", "number", "days since the customer was created"),
    ("email_consent", "bool", "the customer agreed to marketing email"),
    ("sms_consent", "bool", "the customer agreed to marketing SMS"),
    ("has_phone", "bool", "the customer has a phone number on file"),
    ("subscription.status", "string", "trialing | active | past_due | paused | canceled"),
    ("subscription.plan", "string", "plan name of the current subscription"),
    ("subscription.billing_interval", "string", "month | quarter | year"),
    ("subscription.mrr", "number", "monthly recurring revenue in dollars"),
    ("subscription.days_to_renewal", "number", "days until the current period ends"),
    (
        "subscription.days_since_plan_change",
        "number",
        "days since the last plan change (null if never)",
    ),
    ("card_expires_in_days", "number", "days until the default card expires (null if no card)"),
    ("failed_invoices", "number", "failed or open invoices past their due date, still unpaid"),
    ("usage_last_14d", "number", "logins and feature uses in the last 14 days"),
    ("usage_prior_14d", "number", "logins and feature uses in the 14 days before that"),
    (
        "days_since_last_active",
        "number",
        "days since the last login or feature use (null if never)",
    ),
    ("onboarding_completed", "bool", "the customer reached the onboarding_completed milestone"),
    ("support_tickets_30d", "number", "support tickets opened in the last 30 days"),
)

_SEE_FIELDS = "run `retain fields` to list all fields"


def describe_fields() -> str:
    """The field catalogue as aligned text lines (name, type, description), for the CLI."""
    width = max(len(name) for name in FIELDS)
    return "\n".join(f"{f.name:<{width}}  {f.type:<6}  {f.description}" for f in FIELDS.values())


class RuleError(ValueError):
    """A rule that does not parse or type-check; ``column`` is 1-based in the rule text."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"column {column}: {message}")
        self.message = message
        self.column = column


# --- AST -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Literal_:  # trailing underscore: typing.Literal is taken
    value: int | float | str | bool | None


@dataclass(frozen=True)
class FieldRef:
    name: str


@dataclass(frozen=True)
class Neg:
    operand: Rule


@dataclass(frozen=True)
class BinOp:
    op: Literal["+", "-", "*", "/"]
    left: Rule
    right: Rule


@dataclass(frozen=True)
class Compare:
    op: Literal["==", "!=", "<", "<=", ">", ">="]
    left: Rule
    right: Rule


@dataclass(frozen=True)
class InList:
    expr: Rule
    values: tuple[int | float | str | bool, ...]
    negated: bool = False


@dataclass(frozen=True)
class IsNull:
    expr: Rule
    negated: bool = False


@dataclass(frozen=True)
class And:
    items: tuple[Rule, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Rule, ...]


@dataclass(frozen=True)
class Not:
    item: Rule


Rule = Literal_ | FieldRef | Neg | BinOp | Compare | InList | IsNull | And | Or | Not


def rule_fields(rule: Rule) -> set[str]:
    """The names of the fields a rule reads."""
    match rule:
        case FieldRef(name):
            return {name}
        case Literal_():
            return set()
        case Neg(item) | Not(item) | InList(item) | IsNull(item):
            return rule_fields(item)
        case BinOp(_, left, right) | Compare(_, left, right):
            return rule_fields(left) | rule_fields(right)
        case And(items) | Or(items):
            return set().union(*(rule_fields(item) for item in items))
    raise TypeError(f"not a rule node: {rule!r}")


def to_text(rule: Rule) -> str:
    """Rule text that parses back to ``rule`` (fully parenthesised)."""
    match rule:
        case Literal_(value):
            return _literal_text(value)
        case FieldRef(name):
            return name
        case Neg(item):
            return f"-({to_text(item)})"
        case BinOp(op, left, right) | Compare(op, left, right):
            return f"({to_text(left)} {op} {to_text(right)})"
        case InList(expr, values, negated):
            items = ", ".join(_literal_text(v) for v in values)
            return f"({to_text(expr)} {'not in' if negated else 'in'} [{items}])"
        case IsNull(expr, negated):
            return f"({to_text(expr)} {'!=' if negated else '=='} null)"
        case And(items) | Or(items):
            joiner = " and " if isinstance(rule, And) else " or "
            return "(" + joiner.join(to_text(item) for item in items) + ")"
        case Not(item):
            return f"(not {to_text(item)})"
    raise TypeError(f"not a rule node: {rule!r}")


def _literal_text(value: int | float | str | bool | None) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + escaped.replace("\n", "\\n").replace("\t", "\\t") + '"'
    return repr(value)
