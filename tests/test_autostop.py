"""Auto-stop's decisions, pure: which arms a report stops, the YAML's override, the sample-ratio
check among the arms still enrolling, and the YAML settings (with file and line on a mistake)."""

from __future__ import annotations

import pytest

from experiments.analysis import AnalysisSettings, MetricInput
from experiments.autostop import decide_stops, srm_of_running_arms, stopped_arms
from experiments.loader import SpecError, parse_spec
from experiments.report.models import Report
from experiments.spec import ExperimentSpec
from experiments.stats import SampleStats
from messaging.policy import NO_LIMITS, Recipient, decide
from tests.test_report import AS_OF, binary, make_report

SPEC = """\
key: autostop-unit
hypothesis: Reminders help.
segment: {where: card_expires_in_days <= 30}
arms:
  - {name: control}
  - {name: email, steps: [{at: 0d, channel: email, template: card_expiry}]}
  - {name: email_sms, steps: [{at: 0d, channel: sms, template: card_expiry_sms}]}
metrics: {primary: card_updated_14d, guardrails: [unsubscribed_30d]}
analysis: {sequential_tuning_n: 500}
"""
ARMS = ("control", "email", "email_sms")
SEQ = AnalysisSettings(method="sequential", correction="holm", sequential_tuning_n=500)


def spec(extra: str = "", arms: str | None = None) -> ExperimentSpec:
    text = SPEC + extra
    if arms is not None:
        text = text.replace("  - {name: control}\n", arms)
    return parse_spec(text, "autostop.yaml").spec


def report(
    primary: tuple[int, int, int], guardrail: tuple[int, int, int] = (20, 20, 20), n: int = 1000
) -> Report:
    """Three arms of ``n`` customers with these numbers of card updates and unsubscribes."""

    def stats(counts: tuple[int, int, int]) -> dict[str, SampleStats]:
        return {arm: binary(k, n) for arm, k in zip(ARMS, counts, strict=True)}

    return make_report(
        metrics=[
            MetricInput("card_updated_14d", "binary", "primary", "card", stats(primary)),
            MetricInput("unsubscribed_30d", "binary", "guardrail", "unsub", stats(guardrail)),
        ],
        settings=SEQ,
        planted=None,
    )


WINNER = "auto_stop: {on_winner: true}\n"


def test_a_winner_keeps_itself_and_stops_every_other_arm_with_its_numbers() -> None:
    # 10% vs 10% vs 25% of 1,000: email_sms's always-valid interval is far above 0.
    decisions = decide_stops(report((100, 105, 250)), spec(WINNER), stopped=(), days_running=10)
    assert [(d.arm, d.reason) for d in decisions] == [("control", "winner"), ("email", "winner")]
    first = decisions[0]
    assert first.compared_arm == "email_sms" and first.baseline == "control"
    assert first.metric == "card_updated_14d" and first.abs_lift == pytest.approx(0.15)
    assert first.ci is not None and first.ci[0] > 0 and first.p_value is not None
    assert first.p_value < 0.05 and first.method.startswith("sequential")
    assert (first.n_arm, first.n_baseline) == (1000, 1000)
    assert first.sentence() == "email_sms beats control on card_updated_14d"


def test_winner_stops_are_opt_in_and_wait_for_min_days_and_min_n() -> None:
    crossing = report((100, 105, 250))
    assert decide_stops(crossing, spec(), stopped=(), days_running=30) == []  # default off
    assert decide_stops(crossing, spec(WINNER), stopped=(), days_running=6.9) == []
    assert decide_stops(crossing, spec(WINNER), stopped=(), days_running=None) == []
    few = "auto_stop: {on_winner: true, min_n_per_arm: 1001}\n"
    assert decide_stops(crossing, spec(few), stopped=(), days_running=30) == []
    off = "auto_stop: {enabled: false, on_winner: true}\n"
    assert decide_stops(crossing, spec(off), stopped=(), days_running=30) == []


def test_an_arm_worse_than_the_baseline_on_the_primary_is_stopped_alone() -> None:
    decisions = decide_stops(report((250, 100, 245)), spec(WINNER), stopped=(), days_running=8)
    assert [(d.arm, d.reason) for d in decisions] == [("email", "primary_harm")]
    assert decisions[0].abs_lift == pytest.approx(-0.15)


def test_guardrail_harm_stops_that_arm_at_once_by_default() -> None:
    # 2% vs 2% vs 9% unsubscribed (lower is better): email_sms harms; day 0 is soon enough.
    decisions = decide_stops(
        report((100, 100, 100), guardrail=(20, 22, 90)), spec(), stopped=(), days_running=0
    )
    assert [(d.arm, d.reason, d.metric) for d in decisions] == [
        ("email_sms", "guardrail_harm", "unsubscribed_30d")
    ]
    assert decisions[0].sentence() == "guardrail harm on unsubscribed_30d"
    quiet = "auto_stop: {on_guardrail_harm: false}\n"
    assert (
        decide_stops(report((100, 100, 100), (20, 22, 90)), spec(quiet), stopped=(), days_running=0)
        == []
    )


def test_a_harmful_arm_is_never_kept_as_the_winner() -> None:
    crossing = report((100, 105, 250), guardrail=(20, 22, 90))
    decisions = decide_stops(crossing, spec(WINNER), stopped=(), days_running=10)
    # email_sms wins on the primary but harms: it is stopped, and nothing else is.
    assert [(d.arm, d.reason) for d in decisions] == [("email_sms", "guardrail_harm")]


def test_no_decision_on_aa_data_nor_for_stopped_or_pinned_arms() -> None:
    assert (
        decide_stops(
            report((100, 104, 97), (20, 19, 22)), spec(WINNER), stopped=(), days_running=30
        )
        == []
    )
    crossing = report((100, 105, 250))
    assert decide_stops(crossing, spec(WINNER), stopped={"control", "email"}, days_running=30) == []
    pinned = spec(WINNER, arms="  - {name: control, status: running}\n")
    assert [d.arm for d in decide_stops(crossing, pinned, stopped=(), days_running=30)] == ["email"]


def test_no_decision_when_the_sample_ratio_is_off() -> None:
    skewed = make_report(
        metrics=[
            MetricInput(
                "card_updated_14d",
                "binary",
                "primary",
                "card",
                {
                    "control": binary(100, 1000),
                    "email": binary(105, 1000),
                    "email_sms": binary(400, 1600),
                },
            )
        ],
        settings=SEQ,
        planted=None,
    )
    assert not skewed.srm.ok
    assert decide_stops(skewed, spec(WINNER), stopped=(), days_running=30) == []


def test_the_yaml_status_wins_over_recorded_stops() -> None:
    plain = spec()
    assert stopped_arms(plain, {"email"}) == {"email"}
    forced = spec(arms="  - {name: control, status: stopped}\n")
    assert stopped_arms(forced, set()) == {"control"}
    text = SPEC.replace("  - {name: email, steps:", "  - {name: email, status: running, steps:")
    assert stopped_arms(parse_spec(text).spec, {"email", "email_sms"}) == {"email_sms"}


def test_srm_is_checked_among_the_arms_still_enrolling() -> None:
    # control stopped early at 300; email and email_sms went on in their 1:1 ratio.
    skewed = make_report(
        metrics=[
            MetricInput(
                "card_updated_14d",
                "binary",
                "primary",
                "card",
                {
                    "control": binary(30, 300),
                    "email": binary(100, 1000),
                    "email_sms": binary(100, 1010),
                },
            )
        ],
        settings=SEQ,
        planted=None,
    )
    assert not skewed.srm.ok
    fixed = srm_of_running_arms(skewed, {"control"})
    assert fixed.srm.ok and fixed.srm.expected["control"] == 300
    assert fixed.srm.expected["email"] == pytest.approx(1005)
    alone = srm_of_running_arms(skewed, {"control", "email"})
    assert alone.srm.ok and alone.srm.p_value == 1.0
    assert srm_of_running_arms(skewed, set()) is skewed


def test_auto_stop_settings_defaults_and_mistakes_with_file_and_line() -> None:
    defaults = spec().auto_stop
    assert (defaults.enabled, defaults.on_guardrail_harm, defaults.on_winner) == (True, True, False)
    assert (defaults.min_days, defaults.min_n_per_arm) == (7, 150)
    with pytest.raises(SpecError) as error:
        spec("auto_stop:\n  on_winner: true\n  min_days: -1\n")
    assert str(error.value).startswith("autostop.yaml:12: ")
    assert "auto_stop.min_days" in str(error.value)
    with pytest.raises(SpecError) as error:
        spec("auto_stop: {stop_early: true}\n")
    assert "unknown field 'stop_early' in auto_stop" in str(error.value)
    with pytest.raises(SpecError) as error:
        spec(arms="  - {name: control, status: paused}\n")
    assert str(error.value).startswith("autostop.yaml:5: ") and "arms[0].status" in str(error.value)


def test_every_arm_stopped_is_refused_at_the_last_arm() -> None:
    text = SPEC.replace("{name: control}", "{name: control, status: stopped}")
    text = text.replace("{name: email, steps:", "{name: email, status: stopped, steps:")
    text = text.replace("{name: email_sms, steps:", "{name: email_sms, status: stopped, steps:")
    with pytest.raises(SpecError) as error:
        parse_spec(text, "autostop.yaml")
    assert str(error.value).startswith("autostop.yaml:7: ")
    assert "every arm is stopped" in str(error.value)


def test_the_policy_skips_a_stopped_arm_s_message_first() -> None:
    nobody = Recipient(1, None, None, "UTC", False, False, frozenset())
    skipped = decide("email", nobody, AS_OF, NO_LIMITS, 0, False, arm_stopped=True)
    assert (skipped.action, skipped.reason) == ("skip", "arm_stopped")
    assert decide("email", nobody, AS_OF, NO_LIMITS, 0, False).reason == "no_address"
