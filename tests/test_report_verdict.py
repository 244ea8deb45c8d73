"""The verdict, the trust badges, the numbers for people and the lift over time (pure)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from scipy import stats as sps

from experiments.analysis import AnalysisSettings, MetricInput
from experiments.report.enrich import FunnelCounts, ReportContext, enrich
from experiments.report.lift_chart import lift_chart
from experiments.report.models import AutoStopDecision, Report, StratumSrm
from experiments.report.numbers import fmt_count, fmt_money, lift_parts
from experiments.report.render import render_markdown, significance
from experiments.report.timeline import lift_over_time, sample_of, with_latest
from experiments.report.trust import freshness_check, trust
from experiments.report.verdict import decide, sample_needed, wait_for
from experiments.stats import SampleStats
from experiments.stats.sequential import SequentialSettings, sequential_test
from tests.test_report import AS_OF, binary, make_report

SEQ = AnalysisSettings(method="sequential", correction="holm")


def two_arm(
    control: SampleStats,
    treated: SampleStats,
    *,
    revenue: tuple[SampleStats, SampleStats] | None = None,
    guardrail: tuple[SampleStats, SampleStats] | None = None,
) -> Report:
    metrics = [
        MetricInput(
            "card_updated_14d",
            "binary",
            "primary",
            "updated the card",
            {"control": control, "email": treated},
        )
    ]
    if revenue is not None:
        metrics.append(
            MetricInput(
                "net_revenue_90d",
                "continuous",
                "secondary",
                "net revenue",
                {"control": revenue[0], "email": revenue[1]},
            )
        )
    if guardrail is not None:
        metrics.append(
            MetricInput(
                "unsubscribed_30d",
                "binary",
                "guardrail",
                "unsubscribed",
                {"control": guardrail[0], "email": guardrail[1]},
            )
        )
    return make_report(
        metrics=metrics, arm_weights={"control": 1, "email": 1}, settings=SEQ, planted=None
    )


def sig2(value: float) -> int:
    """Two significant digits, as the verdict states its estimates (5,507 -> 5,500)."""
    return int(float(f"{value:.2g}"))


def normal(n: int, mean: float, sd: float) -> SampleStats:
    """Sufficient statistics of ``n`` values with this mean and (sample) standard deviation."""
    return SampleStats(n, n * mean, (n - 1) * sd**2 + n * mean**2)


# --- the verdict ---------------------------------------------------------------------------------


def test_ship_states_the_lift_its_always_valid_ci_per_10k_and_money_per_month() -> None:
    report = two_arm(
        binary(2_000, 10_000),
        binary(2_600, 10_000),
        revenue=(normal(10_000, 40.0, 30.0), normal(10_000, 43.0, 30.0)),
    )
    v = decide(report, mde=0.02, power=0.8, inflow_per_day=50.0, currency="EUR")
    c = report.metrics[0].comparisons[0]
    assert c.sequential is not None and c.sequential.abs_ci is not None
    lo, hi = c.sequential.abs_ci
    assert v.decision == "ship" and v.arm == "email" and v.ci == (lo, hi)
    assert v.text.startswith(
        f"Ship email: +6.0 pp on card_updated_14d (updated the card) "
        f"(always-valid 95% CI +{100 * lo:.1f} to +{100 * hi:.1f} pp)"
    )
    assert "about 600 more customers per 10,000 targeted" in v.text  # 6 pp x 10,000
    # +€3 per customer within 90 days x 50 customers a day x 30.4 days = €4,560 a month, said
    # to two significant digits.
    assert v.money_per_month == pytest.approx(3.0 * 50 * 30.4)
    assert "about €4,600 more net revenue within 90 days per month" in v.text
    assert "(1,520 customers a month)" in v.text


def test_guardrail_harm_stops_the_arm_even_when_it_wins() -> None:
    report = two_arm(
        binary(2_000, 10_000),
        binary(2_600, 10_000),
        guardrail=(binary(20, 10_000), binary(300, 10_000)),
    )
    v = decide(report, mde=None, power=0.8, inflow_per_day=None, currency="USD")
    assert v.decision == "stop_arm" and v.arm == "email" and v.stop_arms == ["email"]
    assert v.text.startswith("Stop email: guardrail harm on unsubscribed_30d.")


def test_sample_ratio_mismatch_holds_every_decision() -> None:
    report = two_arm(binary(1_000, 5_000), binary(2_600, 10_000))
    v = decide(report, mde=0.02, power=0.8, inflow_per_day=50.0, currency="USD")
    assert not report.srm.ok and v.decision == "hold"
    assert "control 5,000, email 10,000" in v.text


def test_no_difference_yet_says_how_many_more_customers_and_days() -> None:
    report = two_arm(binary(200, 1_000), binary(205, 1_000))
    v = decide(report, mde=0.02, power=0.8, inflow_per_day=40.0, currency="USD")
    # Independent reference: the unpooled two-proportion formula at p = 0.20, delta = 0.02.
    z = sps.norm.ppf(0.975) + sps.norm.ppf(0.8)
    n = math.ceil(z**2 * (0.2 * 0.8 + 0.22 * 0.78) / 0.02**2)
    assert sample_needed(report, 0.02, 0.8) == n == v.n_needed_per_arm
    assert v.more_per_arm == n - 1_000
    # Each arm gets half of 40 a day, so the wait is (n - 1,000) / 20 days.
    assert v.days_needed == pytest.approx((n - 1_000) / 20)
    assert v.decision == "no_difference_yet"
    assert v.text == (
        f"No detectable difference yet on card_updated_14d: about {sig2(n - 1_000):,} more "
        f"customers per arm (≈ {sig2(math.ceil((n - 1_000) / 20)):,} days at the current inflow "
        f"of 40 a day) to detect the planned MDE of 2.0 pp."
    )


def test_unequal_weights_let_the_smallest_arm_set_the_pace() -> None:
    report = make_report(
        metrics=[
            MetricInput(
                "card_updated_14d",
                "binary",
                "primary",
                "updated",
                {"control": binary(100, 500), "email": binary(300, 1_500)},
            )
        ],
        arm_weights={"control": 1, "email": 3},
        settings=SEQ,
        planted=None,
    )
    wait = wait_for(report, 2_000, inflow_per_day=100.0)
    # control needs 1,500 more at a quarter of 100 a day: 60 days; email 500 more at 75 a day.
    assert wait.more_per_arm == 1_500 and wait.days == pytest.approx(60.0)


def test_enough_data_and_no_difference_says_the_arms_perform_alike() -> None:
    report = two_arm(binary(2_000, 20_000), binary(2_010, 20_000))
    v = decide(report, mde=0.02, power=0.8, inflow_per_day=10.0, currency="USD")
    assert v.decision == "no_difference" and v.more_per_arm == 0
    assert "perform alike" in v.text


def test_significance_column_never_contradicts_the_headline_ci() -> None:
    # The case: a CI that excludes 0 beside "not significant" after the correction.
    report = make_report()  # fixed-horizon headline, Holm over four comparisons
    metric = report.metrics[0]
    email = metric.comparisons[0]
    assert email.abs_ci is not None and email.abs_ci[0] > 0 and not email.significant
    assert significance(metric, email) == "no, after the Holm correction"
    assert significance(metric, metric.comparisons[1]) == "yes"


# --- trust ---------------------------------------------------------------------------------------


def test_trust_badges_cover_every_check_with_one_line_each() -> None:
    report = two_arm(binary(200, 1_000), binary(205, 1_000))
    strata = [
        StratumSrm(
            stratum="plan=team", counts={"control": 500, "email": 505}, p_value=0.9, ok=True
        ),
        StratumSrm(
            stratum="plan=pro", counts={"control": 500, "email": 700}, p_value=1e-8, ok=False
        ),
    ]
    stop = AutoStopDecision(
        decided_at=AS_OF.isoformat(), arm="email", action="stopped", reason="guardrail harm"
    )
    result = trust(
        report,
        as_of=AS_OF,
        assigned=2_300,
        mde_text="2.0 pp",
        n_needed=6_500,
        strata=strata,
        stops=[stop],
        last_import_at=AS_OF - timedelta(hours=3),
    )
    badges = {(c.check, c.title): c.status for c in result.checks}
    assert badges[("srm", "Sample ratio")] == "green"
    # One badge for every stratum: red, naming the flagged one with its counts.
    within = next(c for c in result.checks if c.check == "srm_stratum")
    assert (within.title, within.status) == ("Sample ratio within strata", "red")
    assert within.detail.startswith("1 of 2 strata off the planned split: plan=pro")
    assert "control 500, email 700, p < 0.001" in within.detail and "plan=team" not in within.detail
    assert [c.check for c in result.checks].count("srm_stratum") == 1
    calm = trust(
        report, as_of=AS_OF, assigned=2_300, mde_text=None, n_needed=None, strata=strata[:1]
    )
    calm_badge = next(c for c in calm.checks if c.check == "srm_stratum")
    assert calm_badge.status == "green" and calm_badge.detail == (
        "no stratum is off the planned split (1 checked; smallest p = 0.900)."
    )
    assert badges[("balance", "Covariate balance")] == "amber"  # no covariates given
    assert badges[("sample_size", "Enough data for the MDE")] == "amber"
    assert badges[("immature", "Customers counted")] == "amber"
    assert badges[("auto_stop", "Automatic stops")] == "amber"
    assert badges[("freshness", "Data freshness")] == "green"
    assert result.not_yet_counted == {"card_updated_14d": 300}
    immature = next(c for c in result.checks if c.check == "immature")
    assert immature.detail.startswith("300 of 2,300 assigned customers are not counted yet")
    assert all("\n" not in c.detail and c.detail.endswith(".") for c in result.checks)
    empty = trust(report, as_of=AS_OF, assigned=2_000, mde_text=None, n_needed=None)
    assert empty.srm_strata == [] and empty.auto_stops == [] and empty.last_import_at is None


@pytest.mark.parametrize(
    ("hours", "badge"), [(None, "amber"), (20, "green"), (60, "amber"), (24 * 10, "red")]
)
def test_data_freshness_badge(hours: int | None, badge: str) -> None:
    last = None if hours is None else AS_OF - timedelta(hours=hours)
    assert freshness_check(AS_OF, last).status == badge


def test_data_freshness_says_which_source_and_when_data_was_loaded_directly() -> None:
    seeded = freshness_check(AS_OF, None, None, AS_OF - timedelta(days=3))
    assert seeded.status == "amber"  # honest, not an alarm: nothing to be stale against
    assert "loaded directly, e.g. the seeded synthetic business (newest customer created " in (
        seeded.detail
    )
    webhook = freshness_check(AS_OF, AS_OF - timedelta(hours=5), "Stripe webhook")
    assert webhook.detail.startswith("last Stripe webhook 5 hours before the data cut-off")
    stale = freshness_check(AS_OF, AS_OF - timedelta(days=10), "import (customers)")
    assert stale.status == "red" and "run the import or sync" in stale.detail
    later = freshness_check(AS_OF, AS_OF + timedelta(hours=1), "import (invoices)")
    assert later.status == "green" and "after the data cut-off" in later.detail


# --- numbers for people --------------------------------------------------------------------------


def test_numbers_use_points_percent_separators_and_the_currency() -> None:
    assert lift_parts(0.257, (0.184, 0.330), "binary") == ("+25.7 pp", "+18.4 to +33.0 pp")
    assert lift_parts(0.003, (-0.001, 0.007), "binary") == ("+0.30 pp", "−0.10 to +0.70 pp")
    assert lift_parts(3.2, (1.1, 5.3), "continuous", "EUR") == ("+€3.20", "+€1.10 to +€5.30")
    assert lift_parts(-40.0, (-150.0, 64.6), "continuous", "USD")[1] == "−$150 to +$65"
    assert fmt_money(12_345.6, "SEK") == "SEK12,346" and fmt_money(-3.2, "GBP") == "−£3.20"
    assert fmt_count(2_570.4) == "2,570"


# --- lift over time ------------------------------------------------------------------------------


def test_lift_over_time_is_the_confidence_sequence_of_the_cumulated_days() -> None:
    points = [
        (15, {"control": binary(20, 100), "email": binary(30, 100)}),
        (16, {"control": binary(42, 200), "email": binary(30, 100)}),
        (17, {"control": binary(42, 200), "email": binary(59, 200)}),
        (18, {"control": binary(60, 300), "email": binary(92, 300)}),
    ]
    settings = SequentialSettings(tuning_n=500, alpha=0.05)
    start = datetime(2026, 11, 2, tzinfo=UTC)
    result = lift_over_time(
        "card_updated_14d", "binary", "control", ["control", "email"], points, start, settings
    )
    series = result.arms[0].points
    assert [p.day for p in series] == [15, 16, 17, 18]
    assert [(p.n, p.n_baseline) for p in series] == [(100, 100), (100, 200), (200, 200), (300, 300)]
    on_17 = sequential_test("binary", binary(59, 200), binary(42, 200), settings)
    assert series[2].abs_lift == pytest.approx(0.085) and series[2].ci == on_17.abs_ci
    widths = [p.ci[1] - p.ci[0] for p in series if p.ci]
    assert widths[-1] < widths[0]  # narrows as customers are counted
    # The report's own numbers close the series when they count more customers.
    latest = {"control": binary(70, 320), "email": binary(99, 310)}
    assert with_latest(points, 18, latest) == [*points[:3], (18, latest)]
    assert with_latest(points, 25, latest)[-1] == (25, latest)
    assert with_latest(points, 25, points[-1][1]) == points  # nothing new: no extra point
    arm = make_report().metrics[0].arms[1]
    back = sample_of(arm)
    assert (back.n, back.mean) == (arm.n, pytest.approx(arm.mean))
    assert back.variance == pytest.approx(arm.variance, rel=1e-12)
    chart = lift_chart(result)
    drawn = chart.series[0]
    assert drawn.line.count("L") == 3 and drawn.band.endswith(" Z")
    assert chart.left <= drawn.last_x <= chart.right and chart.top <= chart.zero_y <= chart.bottom


def test_enriched_report_renders_every_section_in_markdown() -> None:
    report = two_arm(binary(200, 1_000), binary(280, 1_000))
    ctx = ReportContext(
        as_of=AS_OF,
        assigned={"control": 1_100, "email": 1_050},
        currency="EUR",
        mde=0.05,
        inflow_per_day=12.0,
        owner="growth@example.com",
        spec_yaml="key: x\nhypothesis: ```fenced```\n",
        spec_hash="ab" * 32,
        lift_series=[(14, {"control": binary(200, 1_000), "email": binary(280, 1_000)})],
        started_at=AS_OF - timedelta(days=20),
        funnel={
            "control": FunnelCounts(1_100, None, None, None, None),
            "email": FunnelCounts(1_050, 990, 980, None, None),
        },
        sent_stats={"email": binary(270, 930)},
    )
    text = render_markdown(enrich(report, ctx))
    assert (
        text.index("## Verdict: Ship")
        < text.index("## Can I trust it?")
        < text.index("## Headline")
    )
    assert (
        "| email | 1,050 | 990 | 980 | — | — | 1,000 | 280 (28.0%) | 270 of 930 (29.0%) |" in text
    )
    assert "| control | 1,100 | — | — | — | — | 1,000 | 200 (20.0%) | — |" in text
    assert "- spec sha256: `" + "ab" * 32 + "`" in text
    assert "````yaml\nkey: x\nhypothesis: ```fenced```\n````" in text  # the fence outlasts the YAML
    assert "| 14 | +8.0 pp (" in text  # the lift-over-time table


def test_a_revenue_primary_states_its_mde_in_the_currency_and_slow_inflow_in_decimals() -> None:
    report = make_report(
        metrics=[
            MetricInput(
                "net_revenue_90d",
                "continuous",
                "primary",
                "net revenue",
                {"control": normal(500, 40.0, 30.0), "email": normal(500, 40.5, 30.0)},
            )
        ],
        arm_weights={"control": 1, "email": 1},
        settings=SEQ,
        planted=None,
    )
    v = decide(report, mde=5.0, power=0.8, inflow_per_day=0.4, currency="EUR")
    # Cohen's d convention: n = 2 k² σ² / δ², σ the baseline's standard deviation of 30.
    z = sps.norm.ppf(0.975) + sps.norm.ppf(0.8)
    n = math.ceil(2 * z**2 * 30.0**2 / 5.0**2)
    assert v.n_needed_per_arm == n and v.more_per_arm == n - 500
    assert v.text.endswith(
        f"about {sig2(n - 500):,} more customers per arm (≈ {sig2(math.ceil((n - 500) / 0.2)):,} "
        f"days at the current inflow of 0.4 a day) to detect the planned MDE of €5.00."
    )


def test_the_best_harmless_arm_ships_and_the_harmful_one_is_stopped() -> None:
    report = make_report(
        metrics=[
            MetricInput(
                "card_updated_14d",
                "binary",
                "primary",
                "updated",
                {
                    "control": binary(2_000, 10_000),
                    "email": binary(2_500, 10_000),
                    "email_sms": binary(2_900, 10_000),
                },
            ),
            MetricInput(
                "unsubscribed_30d",
                "binary",
                "guardrail",
                "unsubscribed",
                {
                    "control": binary(20, 10_000),
                    "email": binary(25, 10_000),
                    "email_sms": binary(300, 10_000),
                },
            ),
        ],
        settings=SEQ,
        planted=None,
    )
    v = decide(report, mde=None, power=0.8, inflow_per_day=None, currency="USD")
    assert v.decision == "ship" and v.arm == "email" and v.stop_arms == ["email_sms"]
    assert v.text.startswith("Ship email: +5.0 pp")
    assert v.text.endswith(" Stop email_sms: guardrail harm on unsubscribed_30d.")
