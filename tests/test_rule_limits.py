"""Issue 11's rule findings, on SQLite and PostgreSQL: whatever the parser accepts runs and gives
the reference evaluator's answer; whatever could not run is a RuleError before anything runs.
Plus a seeded hypothesis fuzz test of generated rule strings into parser and compiler."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.engine import Engine

from experiments.rules import FIELDS, LIMITS, RuleError, parse_rule
from models.segments import select_segment
from tests.segment_data import AS_OF, Data, build_data, insert, recount, ref_holds


@pytest.fixture
def data(engine: Engine) -> Data:
    insert(engine, build_data())
    return build_data()


def expected(data: Data, rule_text: str) -> list[int]:
    rule = parse_rule(rule_text)
    return [cid for cid, row in sorted(recount(data, AS_OF).items()) if ref_holds(rule, row)]


def _right_nested(n: int) -> str:
    text = "tenure_days"
    for _ in range(n):
        text = f"usage_last_14d - ({text})"
    return text


def _chain(n: int, joiner: str) -> str:
    return f" {joiner} ".join(f"tenure_days > {i * 10}" for i in range(n))


@pytest.mark.parametrize(
    "rule_text",
    [
        _chain(LIMITS.conditions, "or"),  # SQLite's expression depth limit is 1000
        _chain(LIMITS.conditions, "and"),
        "not (" + _chain(500, "and") + ") or (" + _chain(499, "or") + ")",
        "tenure_days" + " + 1" * LIMITS.operators + " > 150",  # 1,000 `+` was a RecursionError
        "tenure_days" + " - usage_last_14d" * 50 + " + usage_prior_14d" * 50 + " < 0",
        "(" * 10 + "not (" * 11 + "tenure_days > 30" + ")" * 21,  # 32 levels
        "-(" * 16 + "tenure_days" + ")" * 16 + " < -30",
        "tenure_days in [" + ", ".join(str(i / 2) for i in range(LIMITS.list_values)) + "]",
        'customer.country not in ["' + '", "'.join(f"X{i}" for i in range(5000)) + '"]'
        ' and customer.locale in ["' + '", "'.join(f"l{i}" for i in range(4999)) + '", "sv"]',
        # past 64 bits on integers, within doubles: both databases agree with Python
        "tenure_days * 1000000000000000 * 1000000000000000 > 1e15 * 1e15 * 100",
        "(tenure_days + 1000000000000000) * 1000000000000000 * 1000 > 1e15",
        "usage_last_14d * 9223372036854 * 1000000 >= 0 and -tenure_days * 1e15 * 1e15 < 0",
        'subscription.plan == "x\'; drop table customers; --" or customer.locale == "\'\'"',
        # SQLite's parser stack (about 30 levels of parentheses): not is pushed to the leaves,
        # sums and products are flat, and the compiled nesting is bounded by the parser
        "not (" * 16 + "tenure_days" + " - usage_last_14d" * 99 + " < 0" + ")" * 16,
        _right_nested(19) + " > 0",  # the deepest right-nested arithmetic accepted
        "(" * 10
        + "not (" * 11
        + " or ".join(["tenure_days" + " + 1" * 9 + " > 3"] * 10)
        + " and "
        + " and ".join(["has_phone"] * 980)
        + ")" * 21,
    ],
)
def test_accepted_rules_run_on_the_database(engine: Engine, data: Data, rule_text: str) -> None:
    rule = parse_rule(rule_text)
    assert select_segment(engine, rule, AS_OF) == expected(data, rule_text)
    with engine.connect() as connection:  # the injection attempt was a literal
        assert connection.scalar(text("SELECT count(*) FROM customers")) == 7


@pytest.mark.parametrize(
    "rule_text",
    [
        _chain(LIMITS.conditions + 1, "or"),
        "tenure_days" + " + 1" * 1000 + " > 3",
        "(" * 5000 + "tenure_days > 3" + ")" * 5000,
        "tenure_days in [" + ", ".join(map(str, range(100_000))) + "]",
        "tenure_days > 99999999999999999999",
        "tenure_days" + " * 1e15" * 20 + " > 0",
        "tenure_days > \uff13",
        _right_nested(23) + " > 0",  # ran out of SQLite's parser stack
    ],
)
def test_what_cannot_run_is_rejected_by_the_parser(rule_text: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_rule(rule_text)
    assert "\n" not in str(caught.value) and str(caught.value).startswith("column ")


# --- Fuzz: generated rule strings into the parser and the compiler -------------------------------

_NUMBERS = ["0", "1", "3", "2.5", "1e3", "1e15", "1000000000000000", "7d", "2w", "12h", "1e-9"]
_ATOMS = [*FIELDS, *_NUMBERS, '"SE"', "'x'", "true", "false", "null", "'; drop table x; --"]
_GLUE = ["and", "or", "not", "in", "is", "between", "==", "!=", "<", "<=", ">", ">=", "+", "-",
         "*", "/", "(", ")", "[", "]", ",", "null", "not null"]  # fmt: skip


@st.composite
def rule_strings(draw: st.DrawFn) -> str:
    """Mostly well-formed comparisons glued with random tokens, sometimes raw characters."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(alphabet="ab_.()[]\"'<=>!+-*/ 019edwntorisl\uff13\u00a0", max_size=40))
    parts: list[str] = []
    for _ in range(draw(st.integers(1, 8))):
        if draw(st.booleans()):
            field = draw(st.sampled_from(list(FIELDS)))
            op = draw(st.sampled_from(["==", "<", ">=", "!=", "between 1 and", "is", "in"]))
            value = draw(st.sampled_from([*_NUMBERS, '"SE"', "null", "true", "[1, 2]", "not null"]))
            parts.append(f"{field} {op} {value}")
        else:
            parts.append(draw(st.sampled_from(_ATOMS + _GLUE)))
    return " ".join(parts)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rule_text=rule_strings())
def test_fuzz_parser_and_compiler(engine: Engine, data: Data, rule_text: str) -> None:
    """A generated rule either parses and selects on the database exactly what the reference
    evaluator selects, or is a RuleError with a one-line message; nothing else escapes."""
    try:
        rule = parse_rule(rule_text)
    except RuleError as error:
        assert "\n" not in str(error) and 1 <= error.column <= len(rule_text) + 1
        return
    assert select_segment(engine, rule, AS_OF) == expected(data, rule_text)


@st.composite
def nested_rules(draw: st.DrawFn) -> str:
    """Deeply nested conditions and arithmetic (up to 40 levels), to probe the nesting limits."""

    def value(depth: int) -> str:
        if depth <= 0:
            return draw(st.sampled_from(["tenure_days", "usage_last_14d", "2", "subscription.mrr"]))
        shape = draw(st.integers(0, 4))
        inner = value(depth - 1)
        return [f"-({inner})", f"usage_last_14d / ({inner})", f"tenure_days - ({inner})",
                f"({inner}) * 2", f"({inner}) - 1 + usage_prior_14d"][shape]  # fmt: skip

    def condition(depth: int) -> str:
        if depth <= 0:
            inner = value(draw(st.integers(0, 40)))
            return draw(st.sampled_from([f"{inner} > 1", f"({inner}) in [1, 2]",
                                         f"({inner}) is null", "has_phone"]))  # fmt: skip
        inner = condition(depth - 1)
        shape = draw(st.integers(0, 3))
        return [f"not ({inner})", f"has_phone and ({inner})", f"sms_consent or ({inner})",
                f"({inner}) and tenure_days > 3"][shape]  # fmt: skip

    return condition(draw(st.integers(0, 40)))


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rule_text=nested_rules())
def test_fuzz_nesting(engine: Engine, data: Data, rule_text: str) -> None:
    """Whatever nesting the parser accepts, both databases can parse and run."""
    try:
        rule = parse_rule(rule_text)
    except RuleError as error:
        assert "\n" not in str(error)
        return
    assert select_segment(engine, rule, AS_OF) == expected(data, rule_text)
