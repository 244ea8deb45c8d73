"""Hostile experiment files (issue 11): each is one SpecError line with the right line number, never
a traceback, a hang or a silently accepted mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments import limits
from experiments.loader import SpecError, load_spec, parse_spec
from messaging.render import template_exists, template_variables

VALID = """\
key: test-exp
hypothesis: Reminders help.
segment:
  where: card_expires_in_days <= 30
arms:
  - {name: control, weight: 1}
  - name: email
    weight: 2
    steps:
      - {at: 0d, channel: email, template: card_expiry}
metrics:
  primary: card_updated_14d
messaging: {frequency_cap: {max: 2, per: 7d}}
"""


def problems(text: str) -> list[tuple[int | None, str]]:
    with pytest.raises(SpecError) as caught:
        parse_spec(text, "exp.yaml", template_exists, template_variables)
    for problem in caught.value.problems:
        assert "\n" not in str(problem)
    return [(p.line, p.message) for p in caught.value.problems]


def one(text: str) -> tuple[int | None, str]:
    [found] = problems(text)
    return found


def test_the_base_file_is_valid() -> None:
    assert parse_spec(VALID, "exp.yaml", template_exists, template_variables).spec.key == "test-exp"


@pytest.mark.parametrize(
    ("old", "new", "line"),
    [
        ("at: 0d", "at: 9999999999d", 10),
        ("per: 7d", "per: 99999999999w", 13),
        ("at: 0d", "at: 3651d", 10),
        ("at: 0d", "at: 99999999999999999999999999999d", 10),
    ],
)
def test_overflowing_durations_are_one_line(old: str, new: str, line: int) -> None:
    found_line, message = one(VALID.replace(old, new))
    assert found_line == line
    assert "too long; durations are at most 3650d" in message or "is not a duration" in message


def test_full_width_digits_are_not_a_duration() -> None:
    found_line, message = one(VALID.replace("at: 0d", "at: ３d"))
    assert found_line == 10
    assert "'３d' is not a duration" in message


def test_a_weight_of_400_digits_is_one_line() -> None:
    found_line, message = one(VALID.replace("weight: 2", "weight: " + "9" * 400))
    assert found_line == 8
    assert "weight must be between 1e-06 and 1e+06" in message
    assert len(message) < 250  # the 400 digits are not echoed


@pytest.mark.parametrize(
    ("weight", "expected"),
    [("1e-7", "between"), ("2000000", "between"), (".inf", "positive"), ("-.inf", "positive")],
)
def test_weights_out_of_range(weight: str, expected: str) -> None:
    found_line, message = one(VALID.replace("weight: 2", f"weight: {weight}"))
    assert found_line == 8 and expected in message


@pytest.mark.parametrize(
    ("character", "name"), [("\x00", "U+0000 (NUL)"), ("\x1b", "U+001B (ESC)"), ("\x07", "U+0007")]
)
def test_control_characters_name_line_and_column(character: str, name: str) -> None:
    text = VALID.replace("Reminders help.", f"Remin{character}ders help.")
    found_line, message = one(text)
    assert found_line == 2
    assert message.startswith(f"column 18: the file contains {name}")


def test_nul_byte_in_a_file_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "nul.yaml"
    path.write_bytes(b"key: a\x00b\n")
    with pytest.raises(SpecError, match=r"nul\.yaml:1: column 7: the file contains U\+0000"):
        load_spec(path)


@pytest.mark.parametrize(
    "text",
    [
        "a: " + "[" * 5000 + "]" * 5000,
        "a: " + "{a: " * 3000 + "}" * 3000,
        "a:\n" + "".join(" " * i + "-\n" for i in range(1, 200)),
    ],
)
def test_deep_nesting_is_refused_before_parsing(text: str) -> None:
    found_line, message = one(text)
    assert found_line is not None and found_line <= 40
    assert f"nested more than {limits.MAX_DEPTH} levels deep" in message


def test_nesting_within_the_limit_is_an_ordinary_error() -> None:
    text = "a: " + "[" * 30 + "]" * 30
    [(_, message)] = [p for p in problems(text) if "'a'" in p[1]]
    assert "unknown field 'a'" in message


BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_billion_laughs_is_refused_before_expansion() -> None:
    found_line, message = one(BILLION_LAUGHS)
    assert found_line == 5  # where the expanded count passes MAX_NODES
    assert f"more than {limits.MAX_NODES:,} values (YAML aliases counted in full)" in message


def test_a_few_aliases_are_still_fine() -> None:
    text = VALID.replace(
        "      - {at: 0d, channel: email, template: card_expiry}",
        "      - &step {at: 0d, channel: email, template: card_expiry}\n      - *step",
    )
    spec = parse_spec(text, "exp.yaml", template_exists, template_variables).spec
    assert len(spec.arm("email").steps) == 2


def test_file_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(VALID + "# padding\n" * (limits.MAX_FILE_BYTES // 10))
    with pytest.raises(SpecError, match="larger than 65,536 bytes"):
        load_spec(path)
    found_line, message = one(VALID + "# padding\n" * (limits.MAX_FILE_BYTES // 10))
    assert found_line is None and "at most 65,536 bytes" in message


def test_not_utf8_and_a_folder(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(VALID.replace("Reminders", "Påminnelser").encode("latin-1"))
    with pytest.raises(SpecError, match=r"latin1\.yaml:2: byte 0xe5 is not UTF-8"):
        load_spec(path)
    with pytest.raises(SpecError, match="is a folder"):
        load_spec(tmp_path)


def test_duplicate_key_says_so_on_its_line() -> None:
    text = VALID.replace(
        "  primary: card_updated_14d\n", "  primary: card_updated_14d\n  primary: x\n"
    )
    found_line, message = one(text)
    assert found_line == 13
    assert message == (
        "'primary' is given twice in the same mapping; a field may appear once: "
        "remove or merge the repeated one"
    )
    assert "construct opened" not in message


def test_missing_baseline_arm_is_reported_on_its_line() -> None:
    found_line, message = one(VALID + "analysis: {baseline: nobody}\n")
    assert found_line == 14
    assert message == (
        "experiment 'test-exp': analysis.baseline: 'nobody' is not an arm; "
        "use one of ['control', 'email']"
    )


def test_non_text_keys_are_reported_on_their_line() -> None:
    text = VALID.replace("    weight: 2\n", "    weight: 2\n    1: x\n")
    found_line, message = one(text)
    assert found_line == 9
    assert "'1' is not a field name" in message
    found_line, message = one(VALID + "? [a, b]\n: c\n")
    assert found_line == 14 and "is not a field name" in message


@pytest.mark.parametrize(
    ("value", "line"),
    [("2026-13-45", 2), ("!!int x", 2), ("9" * 5000, 2), ("!!float x", 2)],
)
def test_values_yaml_cannot_build_are_one_line(value: str, line: int) -> None:
    found_line, message = one(VALID.replace("hypothesis: Reminders help.", f"hypothesis: {value}"))
    assert found_line == line
    assert message.startswith("this is not valid YAML: a value cannot be read")


def test_empty_file_and_other_documents() -> None:
    assert one("") == (
        None,
        "the file is empty; an experiment file is a mapping of fields (key: ...)",
    )
    found_line, message = one("a: 1\n---\nb: 2\n")
    assert found_line == 2 and message.startswith("a second YAML document starts here")
    assert "construct opened" not in message


def test_offer_template_without_offer_block_is_rejected() -> None:
    text = VALID.replace("template: card_expiry}", "template: offer_discount}")
    found_line, message = one(text)
    assert found_line == 10
    assert "template 'offer_discount' shows an offer but arm 'email' has none" in message
    with_offer = text.replace(
        "    weight: 2\n", "    weight: 2\n    offer: {kind: discount, percent: 30, months: 3}\n"
    )
    spec = parse_spec(with_offer, "exp.yaml", template_exists, template_variables).spec
    assert spec.arm("email").offer is not None


def test_limits_on_arms_steps_metrics_and_text() -> None:
    arms = "".join(f"  - {{name: arm{i}}}\n" for i in range(limits.MAX_ARMS + 1))
    text = VALID.replace(
        "  - {name: control, weight: 1}\n  - name: email\n    weight: 2\n    steps:\n"
        "      - {at: 0d, channel: email, template: card_expiry}\n",
        arms,
    )
    found_line, message = one(text)
    assert found_line == 5 and "arms: List should have at most 20 items" in message
    steps = "".join(
        "      - {at: 0d, channel: email, template: card_expiry}\n"
        for _ in range(limits.MAX_STEPS + 1)
    )
    text = VALID.replace("      - {at: 0d, channel: email, template: card_expiry}\n", steps)
    found_line, message = one(text)
    assert found_line == 9 and "arms[1].steps: List should have at most 20 items" in message
    found_line, message = one(VALID.replace("Reminders help.", "x" * 10_001))
    assert found_line == 2 and "hypothesis: String should have at most 10000 characters" in message
    many = ", ".join(["retained_30d"] * (limits.MAX_METRICS + 1))
    text = VALID.replace(
        "primary: card_updated_14d\n", f"primary: card_updated_14d\n  secondary: [{many}]\n"
    )
    found_line, message = one(text)
    assert found_line == 13
    assert "metrics.secondary: List should have at most 20 items" in message


@pytest.mark.parametrize(
    ("addition", "field"),
    [
        ("analysis: {sequential_tuning_n: 99999999999999}", "analysis.sequential_tuning_n"),
        ("analysis: {priors: {binary: {alpha: .inf}}}", "analysis.priors.binary.alpha"),
        ("analysis: {costs: {offer: {discount: 1e300}}}", "analysis.costs.offer.discount"),
        ("analysis: {mde: .nan}", "analysis.mde"),
        ("analysis: {cuped_lookback_days: 100000}", "analysis.cuped_lookback_days"),
    ],
)
def test_numbers_out_of_range_are_one_line(addition: str, field: str) -> None:
    found_line, message = one(VALID + addition + "\n")
    assert found_line == 14
    assert f"experiment 'test-exp': {field}: " in message
