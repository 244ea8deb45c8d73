"""The segment rule language's vocabulary: the customer fields a rule may use, its syntax tree,
its limits and the error it raises. The tokenizer and parser are in :mod:`experiments.rules`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ValueType = Literal["number", "string", "bool"]
Unit = Literal["days"]


@dataclass(frozen=True)
class FieldInfo:
    name: str
    type: ValueType
    description: str
    unit: Unit | None = None  # "days": durations such as 14d compare with it


def _fields(
    *rows: tuple[str, ValueType, str] | tuple[str, ValueType, str, Unit],
) -> dict[str, FieldInfo]:
    return {row[0]: FieldInfo(*row) for row in rows}


GRACE_PERIOD_DAYS = 27
"""Default length of the dunning grace period (``in_grace_period``); ``RETAIN_GRACE_PERIOD_DAYS``
overrides it."""

FIELDS: dict[str, FieldInfo] = _fields(
    ("customer.country", "string", 'ISO 3166 two-letter country code, e.g. "SE"'),
    ("customer.locale", "string", 'preferred language, e.g. "en" or "sv"'),
    ("tenure_days", "number", "days since the customer was created", "days"),
    ("email_consent", "bool", "the customer agreed to marketing email"),
    ("sms_consent", "bool", "the customer agreed to marketing SMS"),
    ("has_phone", "bool", "the customer has a phone number on file"),
    ("subscription.status", "string", "trialing | active | past_due | paused | canceled"),
    ("subscription.plan", "string", "plan name of the current subscription"),
    ("subscription.billing_interval", "string", "month | quarter | year"),
    ("subscription.mrr", "number", "monthly recurring revenue in dollars"),
    (
        "subscription.days_to_renewal",
        "number",
        "days until the current period ends",
        "days",
    ),
    (
        "subscription.days_since_plan_change",
        "number",
        "days since the last plan change (null if never)",
        "days",
    ),
    (
        "card_expires_in_days",
        "number",
        "days until the default card expires (null if no card)",
        "days",
    ),
    (
        "card_expires_before_next_charge",
        "bool",
        "the default card expires before the subscription's next charge (the upcoming invoice "
        "Stripe announced, else the period end); false without a card or a live subscription",
    ),
    ("failed_invoices", "number", "failed or open invoices past their due date, still unpaid"),
    (
        "failed_payments_30d",
        "number",
        "invoices due in the last 30 days whose first charge failed (still unpaid, or paid on a "
        "later attempt)",
    ),
    ("invoice_past_due", "bool", "an invoice is past its due date and still unpaid"),
    (
        "days_past_due",
        "number",
        "days since the due date of the oldest unpaid past-due invoice (null if none)",
        "days",
    ),
    (
        "in_grace_period",
        "bool",
        f"past due for at most the grace period (default {GRACE_PERIOD_DAYS} days, "
        "RETAIN_GRACE_PERIOD_DAYS), so dunning can still save the subscription",
    ),
    ("paused", "bool", "the current subscription is paused"),
    (
        "downgraded_90d",
        "bool",
        "the last plan change, within the last 90 days, lowered the MRR",
    ),
    (
        "billing_interval_shortened",
        "bool",
        "the last plan change moved to a shorter billing interval (year or quarter to month, "
        "year to quarter)",
    ),
    (
        "contract_ends_in_days",
        "number",
        "days until a yearly or quarterly term ends (null for monthly plans and canceled "
        "subscriptions)",
        "days",
    ),
    ("usage_last_14d", "number", "logins and feature uses in the last 14 days"),
    ("usage_prior_14d", "number", "logins and feature uses in the 14 days before that"),
    (
        "usage_trend",
        "number",
        "usage_last_14d / usage_prior_14d (below 1: falling; null if there was no prior usage)",
    ),
    (
        "days_since_last_active",
        "number",
        "days since the last login or feature use (null if never)",
        "days",
    ),
    ("onboarding_completed", "bool", "the customer reached the onboarding_completed milestone"),
    ("milestones_completed", "number", "distinct onboarding milestones reached"),
    ("support_tickets_30d", "number", "support tickets opened in the last 30 days"),
    (
        "churn_risk",
        "number",
        "probability of churning within the model's horizon, from the latest stored churn-risk "
        "score (`retain risk score`; null if unscored)",
    ),
    (
        "churn_risk_decile",
        "number",
        "1 (lowest risk) to 10 (highest) among the customers scored together (null if unscored)",
    ),
)

_SEE_FIELDS = "run `retain fields` to list all fields"


def describe_fields() -> str:
    """The field catalogue as aligned text lines (name, type, description), for the CLI."""
    width = max(len(name) for name in FIELDS)
    return "\n".join(
        f"{f.name:<{width}}  {f.type + (' (days)' if f.unit else ''):<13}  {f.description}"
        for f in FIELDS.values()
    )


@dataclass(frozen=True)
class Limits:
    """What a rule may hold, so that whatever ``retain validate`` accepts runs on SQLite and
    PostgreSQL alike (expression depth, bind parameters, Python recursion, number range)."""

    characters: int = 1_000_000  # length of the rule text
    tokens: int = 30_000  # words, numbers, strings and operators in one rule
    depth: int = 32  # nested parentheses, `not` and unary minus
    sql_nesting: int = 40  # parenthesis levels of the compiled SQL (SQLite's parser stack)
    conditions: int = 1_000  # comparisons, list and null tests, true/false fields
    operators: int = 100  # arithmetic + - * / and unary minus
    list_values: int = 10_000  # values in all the `in [...]` lists of one rule
    literal: float = 1e15  # largest magnitude of a number written in a rule
    smallest: float = 1e-9  # smallest magnitude of a nonzero number written in a rule
    field: float = 1e12  # assumed largest magnitude of a numeric field (smallest nonzero: 1e-12)
    arithmetic: float = 1e300  # bound on any arithmetic result (double precision, both ways)


LIMITS = Limits()


class RuleError(ValueError):
    """A rule that does not parse or type-check; ``column`` is 1-based in the rule text.

    ``str()`` is one line; :meth:`pointer` gives the rule with a caret under the bad token, and
    ``details`` any further lines (the valid names).
    """

    def __init__(self, message: str, column: int, details: tuple[str, ...] = ()) -> None:
        super().__init__(f"column {column}: {message}")
        self.message = message
        self.column = column
        self.details = details
        self.text: str | None = None

    def pointer(self, width: int = 72) -> list[str]:
        """The rule (a window of ``width`` characters around the column) and a caret line."""
        if self.text is None:
            return list(self.details)
        flat = "".join(c if c.isprintable() else " " for c in self.text)
        at = min(max(self.column - 1, 0), len(flat))
        start = max(0, min(at - width // 2, len(flat) - width))
        end = min(len(flat), start + width)
        prefix = "…" if start > 0 else ""
        suffix = "…" if end < len(flat) else ""
        line = prefix + flat[start:end] + suffix
        return [line, " " * (len(prefix) + at - start) + "^", *self.details]


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
