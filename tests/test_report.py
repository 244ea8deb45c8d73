"""The report: the report.json contract, and the Markdown and HTML a marketer reads."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from experiments.analysis import MetricInput, build_report
from experiments.report import (
    Report,
    render_html,
    render_markdown,
    write_report,
)
from experiments.stats import SampleStats

COMPUTED_AT = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
AS_OF = datetime(2026, 3, 1, tzinfo=UTC)
HOSTILE = "Reminders <script>alert('x')</script> & \"offers\" | win"


def binary(successes: int, n: int) -> SampleStats:
    return SampleStats(n, successes, successes)


def metrics(primary_arms: dict[str, SampleStats] | None = None) -> list[MetricInput]:
    return [
        MetricInput(
            "card_updated_14d",
            "binary",
            "primary",
            "added a new payment method within 14 days",
            primary_arms
            or {
                "control": binary(100, 1000),
                "email": binary(130, 1010),
                "email_sms": binary(160, 990),
            },
        ),
        MetricInput(
            "revenue_90d",
            "continuous",
            "secondary",
            "revenue from invoices paid within 90 days",
            {
                "control": SampleStats(1000, 50_000.0, 5_000_000.0),
                "email": SampleStats(1010, 52_000.0, 5_200_000.0),
                "email_sms": SampleStats(990, 49_000.0, 4_800_000.0),
            },
        ),
        MetricInput(
            "unsubscribed_30d",
            "binary",
            "guardrail",
            "unsubscribed within 30 days",
            {"control": binary(0, 1000), "email": binary(0, 1010), "email_sms": binary(3, 990)},
        ),
    ]


def main_family_holm() -> list[float]:
    """Holm-adjusted fixed-horizon p-values of the primary + secondary comparisons of
    :func:`metrics` (card email, card email_sms, revenue email, revenue email_sms), by statsmodels.
    """
    raw = [float(proportions_ztest([x, 100], [n, 1000])[1]) for x, n in ((130, 1010), (160, 990))]
    for total, squares, n in ((52_000.0, 5_200_000.0, 1010), (49_000.0, 4_800_000.0, 990)):
        mean, base = total / n, 50.0
        sd = np.sqrt((squares - n * mean**2) / (n - 1))
        sd_b = np.sqrt((5_000_000.0 - 1000 * base**2) / 999)
        raw.append(float(sps.ttest_ind_from_stats(mean, sd, n, base, sd_b, 1000, False).pvalue))
    return [float(v) for v in multipletests(raw, method="holm")[1]]


def chance_beta(x_t: int, n_t: int, x_b: int, n_b: int) -> float:
    """P(T > B) for independent Beta(1 + x, 1 + n - x) posteriors, by direct quadrature."""
    t, b = sps.beta(1 + x_t, 1 + n_t - x_t), sps.beta(1 + x_b, 1 + n_b - x_b)
    value, _ = integrate.quad(lambda v: t.pdf(v) * b.cdf(v), 0, 1, points=[t.mean()], limit=200)
    return float(value)


def make_report(**overrides: object) -> Report:
    arguments: dict[str, object] = {
        "experiment": "card-expiry-reminder",
        "hypothesis": "An email + SMS reminder recovers more renewals than email alone.",
        "computed_at": COMPUTED_AT,
        "as_of": AS_OF,
        "alpha": 0.05,
        "baseline": "control",
        "arm_weights": {"control": 1, "email": 1, "email_sms": 1},
        "metrics": metrics(),
        "planted": {("card_updated_14d", "email"): 0.03, ("card_updated_14d", "email_sms"): 0.06},
    }
    arguments.update(overrides)
    return build_report(**arguments)  # type: ignore[arg-type]


# --- the JSON contract ---------------------------------------------------------------------------


def test_json_has_the_documented_keys() -> None:
    data = json.loads(make_report().model_dump_json())
    assert set(data) == {
        "experiment", "hypothesis", "computed_at", "as_of", "alpha", "baseline", "arms", "srm",
        "metrics", "analysis", "survival", "balance", "verdict", "trust", "lift_over_time",
        "funnel", "provenance", "currency", "holdout",
    }  # fmt: skip
    assert data["survival"] is None and data["balance"] is None  # their inputs were not given
    assert set(data["arms"][0]) == {"name", "weight", "n"}
    assert set(data["srm"]) == {"p_value", "ok", "chi2", "expected"}
    assert set(data["srm"]["expected"]) == {"control", "email", "email_sms"}
    metric = data["metrics"][0]
    assert set(metric) == {"name", "kind", "role", "description", "arms", "comparisons", "omnibus"}
    assert set(metric["arms"][0]) == {"name", "n", "mean", "sum", "variance"}
    assert set(metric["comparisons"][0]) == {
        "arm", "baseline", "abs_lift", "abs_ci", "rel_lift", "rel_ci", "p_value", "method",
        "status", "significant", "planted_abs_lift", "p_value_adjusted", "correction",
        "headline", "sequential", "bayes", "cuped",
    }  # fmt: skip
    assert isinstance(metric["comparisons"][0]["abs_ci"], list)
    assert data["computed_at"] == "2026-03-02T09:30:00+00:00"
    assert data["as_of"] == "2026-03-01T00:00:00+00:00"


def test_json_round_trips_and_holds_no_nan() -> None:
    report = make_report()
    text = report.model_dump_json()
    assert Report.model_validate_json(text) == report
    assert "NaN" not in text and "Infinity" not in text


def test_numbers_come_from_the_tests() -> None:
    report = make_report()
    primary = report.metrics[0]
    assert [a.name for a in report.arms] == ["control", "email", "email_sms"]
    assert [a.n for a in report.arms] == [1000, 1010, 990]
    assert [c.arm for c in primary.comparisons] == ["email", "email_sms"]
    email = primary.comparisons[0]
    _, p = proportions_ztest([130, 100], [1010, 1000])
    lo, hi = confint_proportions_2indep(130, 1010, 100, 1000, method="wald", compare="diff")
    assert email.p_value == pytest.approx(float(p))
    assert email.abs_ci == pytest.approx((float(lo), float(hi)))
    # Significance is decided by the Holm-adjusted p within the primary + secondary family.
    adjusted = main_family_holm()
    assert email.p_value_adjusted == pytest.approx(adjusted[0])
    assert email.significant == (adjusted[0] < 0.05)
    assert float(p) < 0.05 and not email.significant  # raw p alone would have called it
    assert email.method == "two_proportion_z" and email.baseline == "control"
    assert email.planted_abs_lift == 0.03
    assert report.metrics[1].comparisons[0].method == "welch_t"
    assert report.metrics[1].comparisons[0].planted_abs_lift is None
    srm = sps.chisquare([1000, 1010, 990])
    assert report.srm.p_value == pytest.approx(float(srm.pvalue)) and report.srm.ok
    assert report.srm.expected == {"control": 1000.0, "email": 1000.0, "email_sms": 1000.0}
    control = primary.arms[0]
    assert (control.n, control.mean, control.sum) == (1000, 0.1, 100.0)
    assert control.variance == pytest.approx(100 * 900 / 1000 / 999)


def test_degenerate_comparison_is_reported_with_its_status() -> None:
    guardrail = make_report().metrics[2]
    email, email_sms = guardrail.comparisons
    # 0 of 1010 vs 0 of 1000: no spread anywhere, so no test: an explicit status, no p-value
    # (the same convention as experiments.stats).
    assert email.status == "zero_variance" and not email.significant
    assert email.method == "two_proportion_z" and email.p_value is None
    assert email_sms.status == "zero_baseline" and email_sms.rel_lift is None
    assert email_sms.method == "fisher_exact"
    assert email_sms.p_value == pytest.approx(sps.fisher_exact([[3, 987], [0, 1000]]).pvalue)


def test_srm_uses_the_primary_metric_counts() -> None:
    skewed = {
        "control": binary(100, 1200),
        "email": binary(110, 1000),
        "email_sms": binary(90, 800),
    }
    report = make_report(metrics=metrics(skewed))
    assert not report.srm.ok
    assert [a.n for a in report.arms] == [1200, 1000, 800]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"baseline": "holdout"}, "baseline arm 'holdout' is not one of the arms"),
        ({"arm_weights": {"control": 1, "email": 1}}, "has statistics for arms"),
        ({"arm_weights": {"control": 1}}, "at least 2 arms"),
        ({"planted": {("retained_30d", "email"): 0.1}}, r"planted effect for \('retained_30d'"),
        ({"planted": {("card_updated_14d", "control"): 0.1}}, "non-baseline arm"),
        ({"alpha": 1.5}, "alpha must be strictly between 0 and 1"),
        ({"computed_at": datetime(2026, 3, 2)}, "computed_at must be timezone-aware"),
        ({"metrics": metrics()[1:]}, "exactly one metric with role 'primary', got none"),
        ({"metrics": metrics() + metrics()[:1]}, "metric names must be unique"),
    ],
)
def test_build_report_rejects_bad_input(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_report(**overrides)


# --- Markdown ------------------------------------------------------------------------------------


def test_markdown_headline_and_tables_carry_the_numbers() -> None:
    text = render_markdown(make_report())
    p_t, p_b = 130 / 1010, 100 / 1000
    lo, hi = confint_proportions_2indep(130, 1010, 100, 1000, method="wald", compare="diff")
    _, p = proportions_ztest([130, 100], [1010, 1000])
    assert "## Headline: card_updated_14d" in text
    assert "## Verdict: Ship\n\n**Ship email_sms: +6.2 pp on card_updated_14d" in text
    assert "about 616 more customers per 10,000 targeted" in text  # 16/99 - 10/100 = 6.16 pp
    assert f"{100 * p_t:.1f}%" in text  # email's rate, 12.9%
    # The CI spans more than a point, so one decimal (the fixed-horizon headline of this report).
    assert f"{100 * (p_t - p_b):+.1f} pp ({100 * lo:+.1f} to {100 * hi:+.1f} pp)" in text
    assert f"{100 * (p_t / p_b - 1):+.1f}%" in text  # relative lift, +28.7%
    # Holm-adjusted p, chance to beat, significant (by the adjusted p); the raw p below the table
    chance = f"{100 * chance_beta(130, 1010, 100, 1000):.1f}%"
    # The fixed CI excludes 0, the Holm-adjusted p does not: the row says why, not a contradiction.
    assert lo > 0 and main_family_holm()[0] > 0.05
    assert f"| {main_family_holm()[0]:.3f} | {chance} | no, after the Holm correction |" in text
    assert f"Uncorrected fixed-horizon p (raw): email {float(p):.3f};" in text
    assert "| $51.49 |" in text  # revenue mean for email, in the data's currency
    assert "planted effect" in text and "+3.00 pp (inside CI)" in text
    assert "Warning: sample ratio mismatch" not in text
    assert "undefined (baseline is 0)" in text  # zero_baseline explained


def test_markdown_leaves_out_the_planted_column_without_planted_effects() -> None:
    assert "planted" not in render_markdown(make_report(planted=None))


def test_markdown_warns_on_sample_ratio_mismatch() -> None:
    skewed = {
        "control": binary(100, 1200),
        "email": binary(110, 1000),
        "email_sms": binary(90, 800),
    }
    text = render_markdown(make_report(metrics=metrics(skewed)))
    assert "**Warning: sample ratio mismatch (SRM).**" in text
    assert "control 1,200, email 1,000, email_sms 800" in text


def test_markdown_headline_without_a_winner() -> None:
    flat = {"control": binary(100, 1000), "email": binary(101, 1000), "email_sms": binary(99, 1000)}
    text = render_markdown(make_report(metrics=metrics(flat), planted=None))
    assert "## Verdict: Keep running" in text
    assert "No detectable difference yet on card_updated_14d. Set analysis.mde" in text
    assert "no significant difference from control" in text


def test_markdown_escapes_hostile_text() -> None:
    text = render_markdown(make_report(hypothesis=HOSTILE))
    assert "<script>" not in text
    assert "&lt;script&gt;" in text and "\\| win" in text


# --- HTML ----------------------------------------------------------------------------------------


def test_html_is_well_formed_and_self_contained() -> None:
    page = render_html(make_report())
    root = ET.fromstring(page.removeprefix("<!DOCTYPE html>\n"))  # raises on malformed markup
    assert root.tag == "html"
    assert root.find("./head/style") is not None
    assert "<script" not in page and "<link" not in page and "src=" not in page
    assert page.replace("http://www.w3.org/2000/svg", "").count("http") == 0
    svgs = root.findall(".//{http://www.w3.org/2000/svg}svg")
    assert len(svgs) == 6  # one CI bar per (metric, treatment arm); no survival chart here


def test_html_carries_headline_and_srm_banner() -> None:
    ok_page = render_html(make_report())
    assert "<h2>Headline: card_updated_14d</h2>" in ok_page
    assert "+6.2 pp" in ok_page and 'role="alert"' not in ok_page
    assert 'id="verdict" class="ship"' in ok_page
    skewed = {
        "control": binary(100, 1200),
        "email": binary(110, 1000),
        "email_sms": binary(90, 800),
    }
    page = render_html(make_report(metrics=metrics(skewed)))
    assert 'role="alert"' in page and "sample ratio mismatch" in page


def test_html_escapes_hostile_text() -> None:
    hostile_metric = MetricInput(
        "card_updated_14d",
        "binary",
        "primary",
        '<img src=x onerror="alert(1)">',
        {"control": binary(10, 100), "email": binary(12, 100), "email_sms": binary(9, 100)},
    )
    page = render_html(make_report(hypothesis=HOSTILE, metrics=[hostile_metric]))
    ET.fromstring(page.removeprefix("<!DOCTYPE html>\n"))
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &#34;offers&#34;" in page


def test_write_report_writes_three_files(tmp_path: Path) -> None:
    report = make_report()
    paths = write_report(report, tmp_path / "out")
    assert set(paths) == {"json", "markdown", "html"}
    assert [p.name for p in paths.values()] == ["report.json", "report.md", "report.html"]
    assert Report.model_validate_json(paths["json"].read_text(encoding="utf-8")) == report
    assert paths["markdown"].read_text(encoding="utf-8") == render_markdown(report)
    assert paths["html"].read_text(encoding="utf-8") == render_html(report)
