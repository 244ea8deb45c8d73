"""The step's ``fallback`` option and the control arm's shadow touch points in the spec."""

from __future__ import annotations

from datetime import timedelta

import pytest

from experiments.loader import SpecError, parse_spec
from messaging.render import template_exists
from tests.dispatch_world import SPEC

FALLBACK = "unless: payment_method_updated, fallback: email, fallback_template: card_expiry}"


def test_fallback_template_must_exist_for_the_fallback_channel() -> None:
    ok = parse_spec(
        SPEC.replace("unless: payment_method_updated}", FALLBACK), "x.yaml", template_exists
    )
    step = ok.spec.arm("email_sms").steps[1]
    assert step.fallback_target() == ("email", "card_expiry")
    # Without fallback_template the step's own template is used, and card_expiry_sms has no
    # email version: the file is refused, naming it.
    bare = SPEC.replace("unless: payment_method_updated}", "fallback: email}")
    with pytest.raises(SpecError, match="card_expiry_sms"):
        parse_spec(bare, "x.yaml", template_exists)


@pytest.mark.parametrize(
    ("replacement", "message"),
    [
        ("channel: email, template: card_expiry, fallback: email}", "is the step's own channel"),
        (
            "channel: sms, template: card_expiry_sms, fallback_template: card_expiry}",
            "needs a fallback",
        ),
    ],
)
def test_fallback_mistakes_are_explained(replacement: str, message: str) -> None:
    text = SPEC.replace(
        "channel: sms, template: card_expiry_sms, unless: payment_method_updated}", replacement
    )
    with pytest.raises(SpecError, match=message):
        parse_spec(text, "x.yaml", template_exists)


def test_shadow_steps_are_the_distinct_touch_points_of_the_other_arms() -> None:
    spec = parse_spec(SPEC, "x.yaml").spec
    points = [(s.at, s.channel, s.unless) for s in spec.shadow_steps()]
    # email (0d) is shared by three arms; the SMS at 3d belongs to email_sms only.
    assert points == [
        (timedelta(0), "email", None),
        (timedelta(days=3), "sms", "payment_method_updated"),
    ]
    assert spec.step_for("control", 1, shadow=True) == spec.shadow_steps()[1]
    assert spec.step_for("email_sms", 5, shadow=False) is None
