"""The segment rule language: parsing, precedence, type checking and error columns (pure)."""

from __future__ import annotations

import random

import pytest

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
    RuleError,
    describe_fields,
    parse_rule,
    rule_fields,
    to_text,
)

TENURE = FieldRef("tenure_days")
STATUS = FieldRef("subscription.status")
EMAIL = FieldRef("email_consent")
SMS = FieldRef("sms_consent")
PHONE = FieldRef("has_phone")
LAST = FieldRef("usage_last_14d")
PRIOR = FieldRef("usage_prior_14d")


def lit(value: int | float | str | bool | None) -> Literal_:
    return Literal_(value)


# --- Structure and precedence ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("email_consent or sms_consent and has_phone", Or((EMAIL, And((SMS, PHONE))))),
        ("email_consent and sms_consent or has_phone", Or((And((EMAIL, SMS)), PHONE))),
        ("(email_consent or sms_consent) and has_phone", And((Or((EMAIL, SMS)), PHONE))),
        ("not email_consent and sms_consent", And((Not(EMAIL), SMS))),
        ("not (email_consent and sms_consent)", Not(And((EMAIL, SMS)))),
        ("not not has_phone", Not(Not(PHONE))),
        ("email_consent and sms_consent and has_phone", And((EMAIL, SMS, PHONE))),
        ("email_consent and (sms_consent and has_phone)", And((EMAIL, SMS, PHONE))),
        ("email_consent or sms_consent or has_phone", Or((EMAIL, SMS, PHONE))),
        ("not tenure_days > 3", Not(Compare(">", TENURE, lit(3)))),
        (
            "tenure_days + 2 * usage_last_14d > 3",
            Compare(">", BinOp("+", TENURE, BinOp("*", lit(2), LAST)), lit(3)),
        ),
        (
            "(tenure_days + 2) * usage_last_14d > 3",
            Compare(">", BinOp("*", BinOp("+", TENURE, lit(2)), LAST), lit(3)),
        ),
        (
            "tenure_days - 1 - 2 > 0",
            Compare(">", BinOp("-", BinOp("-", TENURE, lit(1)), lit(2)), lit(0)),
        ),
        (
            "tenure_days / 2 * 3 > 0",
            Compare(">", BinOp("*", BinOp("/", TENURE, lit(2)), lit(3)), lit(0)),
        ),
        (
            "tenure_days - usage_last_14d / usage_prior_14d < 1",
            Compare("<", BinOp("-", TENURE, BinOp("/", LAST, PRIOR)), lit(1)),
        ),
        ("-tenure_days < -3", Compare("<", Neg(TENURE), lit(-3))),
        ("tenure_days > - 2.5", Compare(">", TENURE, lit(-2.5))),
        ("tenure_days * -usage_last_14d > 0", Compare(">", BinOp("*", TENURE, Neg(LAST)), lit(0))),
        ("tenure_days >= 1e2", Compare(">=", TENURE, lit(100.0))),
        ("tenure_days >= .5", Compare(">=", TENURE, lit(0.5))),
        ("true", lit(True)),
        ("not false", Not(lit(False))),
        ("has_phone == true", Compare("==", PHONE, lit(True))),
        ("((((has_phone))))", PHONE),
    ],
)
def test_structure(text: str, expected: object) -> None:
    assert parse_rule(text) == expected


@pytest.mark.parametrize("op", ["==", "!=", "<", "<=", ">", ">="])
def test_every_comparison_operator(op: str) -> None:
    assert parse_rule(f"tenure_days {op} 30") == Compare(op, TENURE, lit(30))  # type: ignore[arg-type]
    assert parse_rule(f"30{op}tenure_days") == Compare(op, lit(30), TENURE)  # type: ignore[arg-type]


@pytest.mark.parametrize("op", ["+", "-", "*", "/"])
def test_every_arithmetic_operator(op: str) -> None:
    expected = Compare("<", BinOp(op, LAST, PRIOR), lit(1))  # type: ignore[arg-type]
    assert parse_rule(f"usage_last_14d {op} usage_prior_14d < 1") == expected


def test_strings_and_equality_on_text_and_bools() -> None:
    assert parse_rule('subscription.status == "active"') == Compare("==", STATUS, lit("active"))
    assert parse_rule("subscription.status != 'paused'") == Compare("!=", STATUS, lit("paused"))
    assert parse_rule(r'customer.locale == "a\"b\\c\'d"') == Compare(
        "==", FieldRef("customer.locale"), lit("a\"b\\c'd")
    )
    assert parse_rule("email_consent != false") == Compare("!=", EMAIL, lit(False))


def test_lists() -> None:
    assert parse_rule("subscription.status in [\"active\", 'past_due']") == InList(
        STATUS, ("active", "past_due")
    )
    assert parse_rule('subscription.status not in ["canceled",]') == InList(
        STATUS, ("canceled",), negated=True
    )
    assert parse_rule("tenure_days in [1, -2, 3.5]") == InList(TENURE, (1, -2, 3.5))
    assert parse_rule("has_phone in [true]") == InList(PHONE, (True,))
    assert parse_rule("tenure_days + 1 in [2]") == InList(BinOp("+", TENURE, lit(1)), (2,))
    assert parse_rule('not subscription.status in ["active"]') == Not(InList(STATUS, ("active",)))


def test_null() -> None:
    card = FieldRef("card_expires_in_days")
    assert parse_rule("card_expires_in_days == null") == IsNull(card)
    assert parse_rule("card_expires_in_days != null") == IsNull(card, negated=True)
    assert parse_rule("null == card_expires_in_days") == IsNull(card)
    assert parse_rule("not card_expires_in_days == null") == Not(IsNull(card))


def test_example_rules_parse_and_round_trip() -> None:
    examples = [
        'card_expires_in_days <= 30 and subscription.status == "active"',
        "usage_last_14d < 0.5 * usage_prior_14d and usage_prior_14d >= 4 and "
        'subscription.status in ["active", "past_due"]',
        "tenure_days <= 21 and not onboarding_completed",
    ]
    for text in examples:
        rule = parse_rule(text)
        assert parse_rule(to_text(rule)) == rule
    assert rule_fields(parse_rule(examples[1])) == {
        "usage_last_14d",
        "usage_prior_14d",
        "subscription.status",
    }
    assert rule_fields(parse_rule("true")) == set()


def test_the_field_catalogue() -> None:
    assert set(FIELDS) == {
        "customer.country", "customer.locale", "tenure_days", "email_consent", "sms_consent",
        "has_phone", "subscription.status", "subscription.plan", "subscription.billing_interval",
        "subscription.mrr", "subscription.days_to_renewal", "subscription.days_since_plan_change",
        "card_expires_in_days", "card_expires_before_next_charge", "failed_invoices",
        "usage_last_14d", "usage_prior_14d", "days_since_last_active", "onboarding_completed", "support_tickets_30d",
        "failed_payments_30d", "invoice_past_due", "days_past_due", "in_grace_period", "paused",
        "downgraded_90d", "billing_interval_shortened", "contract_ends_in_days",
        "milestones_completed", "usage_trend", "churn_risk", "churn_risk_decile",
    }  # fmt: skip
    assert {n for n, f in FIELDS.items() if f.type == "bool"} == {
        "email_consent", "sms_consent", "has_phone", "onboarding_completed", "invoice_past_due",
        "in_grace_period", "paused", "downgraded_90d", "billing_interval_shortened",
        "card_expires_before_next_charge",
    }  # fmt: skip
    assert {n for n, f in FIELDS.items() if f.unit == "days"} == {
        "tenure_days", "subscription.days_to_renewal", "subscription.days_since_plan_change",
        "card_expires_in_days", "days_past_due", "contract_ends_in_days", "days_since_last_active",
    }  # fmt: skip
    assert {n for n, f in FIELDS.items() if f.type == "string"} == {
        "customer.country", "customer.locale", "subscription.status", "subscription.plan",
        "subscription.billing_interval",
    }  # fmt: skip
    listing = describe_fields()
    assert all(name in listing and info.description in listing for name, info in FIELDS.items())


# --- Errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "column", "fragment"),
    [
        ("tenure_days > 3 and tenur_days < 9", 21, "did you mean 'tenure_days'?"),
        ('status == "active"', 1, "did you mean 'subscription.status'?"),
        ("zzz > 1", 1, "`retain fields`"),
        ("subscription.status == active", 24, "unknown field 'active'"),
        ("customer.country == 46", 21, "cannot compare 'customer.country' (text) with '46'"),
        ('tenure_days == "30"', 16, "cannot compare 'tenure_days' (a number)"),
        ("has_phone == 1", 14, "cannot compare 'has_phone' (true/false)"),
        ('customer.locale + "x" == "y"', 1, "'+' works on numbers"),
        ("tenure_days * has_phone > 1", 15, "'*' works on numbers"),
        ("email_consent < true", 15, "'<' compares numbers"),
        ('customer.locale >= "m"', 17, "'>=' compares numbers"),
        ("tenure_days < null", 13, "null can only be compared with == or !="),
        ("null == null", 1, "compare a field with null"),
        ("tenure_days + null > 1", 15, "'+' works on numbers, but 'null' is null"),
        ("tenure_days in [1, null]", 20, "null cannot be in a list"),
        ('tenure_days in [1, "2"]', 20, "'\"2\"' is text but 'tenure_days' is a number"),
        ("tenure_days in [usage_last_14d]", 17, "lists hold plain values"),
        ("tenure_days in []", 16, "the list is empty"),
        ("tenure_days in 3", 16, "expected a list after 'in'"),
        ("tenure_days in [1 2]", 19, "expected ',' or ']'"),
        ("tenure_days > 1 in [1]", 17, "after a complete condition"),
        ("(tenure_days > 1) in [true]", 1, "'in' needs a field"),
        ('customer.country == "SE', 21, "unterminated string"),
        ("customer.country == 'SE", 21, "unterminated string"),
        ("tenure_days > 3 tenure_days", 17, "unexpected 'tenure_days' after a complete condition"),
        ("tenure_days > 3 3", 17, "after a complete condition"),
        ("", 1, "the rule is empty"),
        ("   ", 1, "the rule is empty"),
        ("tenure_days = 30", 13, "use '=='"),
        ("tenure_days => 30", 13, "use '>='"),
        ("tenure_days <> 30", 13, "use '!='"),
        ("has_phone && sms_consent", 11, "use 'and'"),
        ("has_phone || sms_consent", 11, "use 'or'"),
        ("!has_phone", 1, "use 'not'"),
        ("(tenure_days > 3", 17, "expected ')' to close the '(' at column 1"),
        ("((tenure_days > 3) and has_phone", 33, "expected ')' to close the '(' at column 1"),
        ("tenure_days > 3)", 16, "unmatched ')'"),
        ("(tenure_days > 3))", 18, "unmatched ')'"),
        ("()", 2, "expected a field, number or text, found ')'"),
        ("tenure_days >", 14, "found 'end of rule'"),
        ("tenure_days > 3 and", 20, "found 'end of rule'"),
        ("tenure_days", 1, "'tenure_days' is a number, not a condition"),
        ("subscription.status", 1, "is text, not a condition"),
        ("has_phone and 3", 15, "'3' is a number, not a condition"),
        ("null", 1, "null, not a condition"),
        ("(tenure_days > 1) == true", 1, "is a condition and cannot be compared"),
        ("(tenure_days > 1) + 1 > 0", 1, "'+' works on numbers, but '(tenure_days > 1)'"),
        ("1 < tenure_days < 5", 17, "cannot be chained"),
        ("has_phone AND sms_consent", 11, "keywords are lowercase: write 'and'"),
        ("tenure_days == None", 16, "write 'null'"),
        ("tenure_days is 3", 16, "expected 'null' after 'is'"),
        ("tenure_days is not 3", 20, "expected 'null' after 'is not'"),
        ("(tenure_days > 1) is null", 1, "'is null' tests a field"),
        ("tenure_days not 3", 13, "expected 'in' or 'between' after 'not'"),
        ("failed_invoices > 30d", 19, "'30d' is a duration but 'failed_invoices' is not"),
        ("tenure_days > 30x", 15, "'30x' is not a number"),
        ("tenure_days > 3dd", 15, "'3dd' is not a number"),
        ("tenure_days > 1.5d", 15, "'1.5d' is not a number"),
        ("tenure_days between 1", 22, "expected 'and' in 'x between low and high'"),
        ("tenure_days between 5 and 1", 21, "the range is empty"),
        ('tenure_days between "a" and 3', 21, "'between' compares numbers"),
        ("has_phone between 1 and 3", 1, "'between' compares numbers"),
        ("tenure_days > \uff13", 15, "not a plain digit: type numbers with 0-9; write 3"),
        ("tenure_days > 3\u00a0", 16, "unexpected space character"),
        ("tenure_days > 1e-12", 15, "too small"),
        ("tenure_days > 1.2.3", 15, "'1.2.3' is not a number"),
        ("tenure_days > 1e400", 15, "too large"),
        ("tenure_days > 99999999999999999999", 15, "too large"),
        ("tenure_days > 3 ; drop", 17, "unexpected character ';'"),
        ("tenure_dáys > 3", 9, "unexpected character 'á'"),
        ("customer.country.x == 1", 1, "unknown field 'customer.country.x'"),
    ],
)
def test_errors_name_the_column(text: str, column: int, fragment: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_rule(text)
    error = caught.value
    assert fragment in error.message
    assert error.column == column, error.message
    assert str(error) == f"column {column}: {error.message}"


def test_unknown_field_message_reads_well() -> None:
    with pytest.raises(RuleError) as caught:
        parse_rule("tenur_days <= 21")
    assert str(caught.value).startswith(
        "column 1: unknown field 'tenur_days'; did you mean 'tenure_days'?"
    )
    assert isinstance(caught.value, ValueError)


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    for text in ["(" * 5000 + "has_phone" + ")" * 5000, "not " * 5000 + "has_phone",
                 "tenure_days > " + "-" * 5000 + "1"]:  # fmt: skip
        with pytest.raises(RuleError, match="nested too deeply"):
            parse_rule(text)
    assert parse_rule("(" * 20 + "has_phone" + ")" * 20) == PHONE


_VOCABULARY = [
    *FIELDS, "and", "or", "not", "in", "true", "false", "null", "==", "!=", "<", "<=", ">", ">=",
    "+", "-", "*", "/", "(", ")", "[", "]", ",", "=", "!", "&", "|", '"', "'", "\\", "0", "1.5",
    "30", "1e3", '"active"', "'x'", " ", "AND", "is", "tenur_days", ".", "é", "\n", "\t", ";",
]  # fmt: skip


def test_fuzz_only_rule_errors_escape() -> None:
    """Seeded random token soup and random characters: parse_rule either returns a rule (that
    round-trips through to_text) or raises RuleError with a column inside the text."""
    rng = random.Random(20260301)
    parsed = 0
    for i in range(6000):
        if i % 3 == 0:
            text = "".join(rng.choice("ab_.(),[]\"'<=>!&|+-*/ 019eEntorid\\\n") for _ in range(20))
        else:
            text = " ".join(rng.choice(_VOCABULARY) for _ in range(rng.randint(1, 9)))
        try:
            rule = parse_rule(text)
        except RuleError as error:
            assert 1 <= error.column <= len(text) + 1, (text, error)
        else:
            parsed += 1
            assert parse_rule(to_text(rule)) == rule, text
    assert parsed > 50  # the soup does hit valid rules too


# --- between, is null, durations -----------------------------------------------------------------


def test_between_is_null_and_durations() -> None:
    idle = FieldRef("days_since_last_active")
    assert parse_rule("tenure_days between 3 and 21") == And(
        (Compare(">=", TENURE, lit(3)), Compare("<=", TENURE, lit(21)))
    )
    assert parse_rule("tenure_days not between 3d and 2w") == Or(
        (Compare("<", TENURE, lit(3)), Compare(">", TENURE, lit(14)))
    )
    assert parse_rule("has_phone and tenure_days between 1 and 2 and sms_consent") == And(
        (PHONE, Compare(">=", TENURE, lit(1)), Compare("<=", TENURE, lit(2)), SMS)
    )
    assert parse_rule("days_since_last_active > 14d") == Compare(">", idle, lit(14))
    assert parse_rule("days_since_last_active <= 12h") == Compare("<=", idle, lit(0.5))
    assert parse_rule("days_since_last_active >= 2w - 1d") == Compare(
        ">=", idle, BinOp("-", lit(14), lit(1))
    )
    assert parse_rule("tenure_days in [7d, -1d]") == InList(TENURE, (7, -1))
    assert parse_rule("days_since_last_active is null") == IsNull(idle)
    assert parse_rule("days_since_last_active is not null") == IsNull(idle, negated=True)
    assert parse_rule("not days_since_last_active is null") == Not(IsNull(idle))
    assert parse_rule("usage_last_14d + 1 is null") == IsNull(BinOp("+", LAST, lit(1)))
    # durations are days; a plain number still compares with anything numeric
    assert parse_rule("failed_invoices > 3") == Compare(">", FieldRef("failed_invoices"), lit(3))


def test_error_pointer_shows_a_caret_under_the_bad_token() -> None:
    text = "tenure_days > 3 and tenur_days < 9"
    with pytest.raises(RuleError) as caught:
        parse_rule(text)
    lines = caught.value.pointer()
    assert lines[0] == text
    assert lines[1] == " " * 20 + "^"
    assert len(lines) == 2  # the message has a did-you-mean
    with pytest.raises(RuleError) as caught:
        parse_rule("zzz > 1")
    assert caught.value.pointer()[2].startswith("valid fields: customer.country, customer.locale,")
    with pytest.raises(RuleError) as caught:
        parse_rule("x" * 200 + " > 3")  # a long rule: a window around the column
    first, caret = caught.value.pointer(width=40)[:2]
    assert len(first) <= 42 and first.endswith("…") and caret == "^"
    with pytest.raises(RuleError) as caught:
        parse_rule("usage_last_14d > 1 and " * 3 + "usage_last_14d >\n\tqqq")
    first, caret = caught.value.pointer()[:2]
    assert "\n" not in first and first[len(caret) - 1] == "q"


# --- Limits (issue 11): whatever parses can run; whatever cannot is an error ----------------------


def _or_chain(n: int) -> str:
    return " or ".join(f"tenure_days == {i}" for i in range(n))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (_or_chain(1001), "too many conditions (at most 1,000)"),
        (" and ".join(["has_phone"] * 1001), "too many conditions"),
        ("tenure_days" + " + 1" * 101 + " > 0", "too many arithmetic operators (at most 100)"),
        ("tenure_days" + " + tenure_days" * 1000 + " > 0", "too many arithmetic operators"),
        ("(" * 33 + "has_phone" + ")" * 33, "nested too deeply (at most 32"),
        ("(" * 5000 + "has_phone" + ")" * 5000, "nested too deeply"),
        ("tenure_days in [" + ", ".join(map(str, range(10_001))) + "]", "too many values in lists"),
        ("tenure_days in [" + ", ".join(map(str, range(100_000))) + "]", "too long"),
        ("tenure_days > 1000000000000001", "too large"),
        ("has_phone" + " " * 1_000_000, "at most 1,000,000 characters"),
        ("tenure_days" + " * 1e15" * 20 + " > 0", "could leave the range"),
        ("tenure_days" + " * tenure_days" * 30 + " > 0", "could leave the range"),
        ("usage_last_14d" + " / 1e-9" * 15 + " > 1", "could leave"),
        (
            "1e-9 * 1e-9 * 1e-9 * 1e-9 * 1e-9 * 1e-9 * 1e-9 * 1e-9 * 1e-9 * 1e-9 * 1e-9 == 0",
            "range",
        ),
        ("tenure_days * 1e-9 * 1e-9 * 1e-9 * 1e-9 * 1e-9 * 1e-9 * 1e-9 * 1e-9 > 0", "range"),
    ],
)
def test_limits_are_rule_errors(text: str, fragment: str) -> None:
    with pytest.raises(RuleError, match=r"^column") as caught:
        parse_rule(text)
    assert fragment in caught.value.message
    assert "\n" not in str(caught.value)


def test_rules_at_the_limits_parse() -> None:
    assert len(parse_rule(_or_chain(1000)).items) == 1000  # type: ignore[union-attr]
    parse_rule("tenure_days" + " + 1" * 100 + " > 0")
    parse_rule("(" * 32 + "has_phone" + ")" * 32)
    parse_rule("tenure_days in [" + ", ".join(map(str, range(10_000))) + "]")
    parse_rule("tenure_days > 1000000000000000 and tenure_days < -1e15")
    parse_rule("tenure_days * usage_last_14d * subscription.mrr / usage_prior_14d > 1")


def test_injection_attempts_are_literals() -> None:
    rule = parse_rule('subscription.plan == "x\'; drop table customers; --"')
    assert rule == Compare("==", FieldRef("subscription.plan"), lit("x'; drop table customers; --"))
