"""Experiment files: every mistake is one line naming the file, the line and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.loader import SpecError, load_spec, load_specs, parse_spec
from messaging.render import template_exists

DEFINITIONS = Path(__file__).resolve().parent.parent / "experiments" / "definitions"

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
  secondary: [retained_30d]
"""


def problems(text: str) -> list[tuple[int | None, str]]:
    with pytest.raises(SpecError) as caught:
        parse_spec(text, "exp.yaml", template_exists)
    return [(p.line, p.message) for p in caught.value.problems]


def test_shipped_definitions_are_valid() -> None:
    loaded = load_specs(sorted(DEFINITIONS.glob("*.yaml")), template_exists)
    assert {item.spec.key for item in loaded} == {
        "card-expiry-reminder",
        "onboarding-checkin",
        "falling-usage-offer",
        "dunning",
    }
    families = {item.spec.key: {a.name for a in item.spec.arms} for item in loaded}
    assert families["card-expiry-reminder"] == {"control", "email", "email_sms"}
    assert families["falling-usage-offer"] == {"control", "discount", "pause"}
    dunning = next(item.spec for item in loaded if item.spec.key == "dunning")
    follow_ups = [s for s in dunning.arm("email_sms").steps if s.at.days > 0]
    assert [s.unless for s in follow_ups] == ["invoice_paid"] * 3


def test_valid_file_parses_with_defaults_and_hash() -> None:
    loaded = parse_spec(VALID, "exp.yaml", template_exists)
    assert loaded.spec.baseline == "control"
    assert loaded.spec.salt == "test-exp"
    assert loaded.spec.arm("email").steps[0].at.days == 0
    assert len(loaded.sha256) == 64
    assert loaded.spec.metrics.roles() == [
        ("card_updated_14d", "primary"),
        ("retained_30d", "secondary"),
    ]


def test_unknown_field_names_its_line() -> None:
    text = VALID.replace("    weight: 2\n", "    weight: 2\n    colour: red\n")
    [(line, message)] = problems(text)
    assert line == 9
    assert "unknown field 'colour'" in message and "arms[1]" in message
    assert message.startswith("experiment 'test-exp': ")


def test_bad_weight_names_its_line_and_the_fix() -> None:
    for bad in ("abc", "0", "-1", ".nan", "true"):
        text = VALID.replace("weight: 2", f"weight: {bad}")
        [(line, message)] = problems(text)
        assert line == 8, bad
        assert "weight must be a positive number" in message


def test_unknown_metric_lists_the_choices() -> None:
    [(line, message)] = problems(VALID.replace("[retained_30d]", "[retained_31d]"))
    assert line == 13
    assert "unknown metric 'retained_31d'" in message and "retained_30d" in message


def test_unknown_template_names_the_step_line() -> None:
    [(line, message)] = problems(VALID.replace("template: card_expiry}", "template: card_expiri}"))
    assert line == 10
    assert "unknown email template 'card_expiri'" in message


def test_bad_rule_names_the_where_line() -> None:
    [(line, message)] = problems(VALID.replace("card_expires_in_days <= 30", "card_expiry <= 30"))
    assert line == 4
    assert "segment.where" in message and "card_expiry" in message


def test_rule_syntax_error() -> None:
    [(line, message)] = problems(VALID.replace("<= 30", "<= 30 and"))
    assert line == 4 and "column" in message


def test_invalid_yaml_gives_the_line() -> None:
    text = VALID.replace("  primary: card_updated_14d", "  primary: [card_updated_14d")
    [(line, message)] = problems(text)
    assert line is not None and 13 <= line <= 15
    assert "not valid YAML" in message


def test_duplicate_arm_names_and_missing_fields() -> None:
    text = VALID.replace("name: email", "name: control")
    [(line, message)] = problems(text)
    assert line == 7  # the repeated name, not the top of the file
    assert "arms[1].name: arm name 'control' is already used by arms[0]" in message
    [(_line, message)] = problems(VALID.replace("hypothesis: Reminders help.\n", ""))
    assert "missing required field 'hypothesis'" in message


def test_not_a_mapping_and_missing_file(tmp_path: Path) -> None:
    assert problems("- just\n- a list\n") == [
        (1, "an experiment file must be a mapping of fields (key: ...)")
    ]
    with pytest.raises(SpecError, match="file not found"):
        load_spec(tmp_path / "nope.yaml")


def test_error_string_is_file_colon_line(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(VALID.replace("weight: 2", "weight: heavy"))
    with pytest.raises(SpecError) as caught:
        load_spec(path, template_exists)
    assert str(caught.value).startswith(f"{path}:8: experiment 'test-exp': arms[1].weight:")


def test_duplicate_keys_across_files(tmp_path: Path) -> None:
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text(VALID)
    with pytest.raises(SpecError, match="already used by"):
        load_specs([tmp_path / "a.yaml", tmp_path / "b.yaml"], template_exists)
