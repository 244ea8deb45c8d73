"""The report with the full statistics engine: sequential headline, Bayes, CUPED, guardrails,
survival and balance sections, checked against independent references."""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET

import numpy as np
from scipy import stats as sps
from statsmodels.duration.survfunc import SurvfuncRight, survdiff
from statsmodels.stats.oneway import anova_oneway
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from experiments.analysis import AnalysisSettings, MetricInput, SurvivalInput
from experiments.report import Report, render_html, render_markdown
from experiments.report.charts import km_chart, share_after
from experiments.report.models import SurvivalArm
from experiments.report.render import verdict
from experiments.stats import SampleStats
from experiments.stats.cuped import PairedStats
from experiments.stats.survival import SurvivalCounts
from tests.test_report import (
    HOSTILE,
    binary,
    chance_beta,
    make_report,
)

# --- the full statistics engine in the report ----------------------------------------------------

ARMS = ("control", "email", "email_sms")
RICH_N = 2000


def sample(values: np.ndarray) -> SampleStats:
    return SampleStats(len(values), float(values.sum()), float((values**2).sum()))


def revenue_units(seed: int = 21) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-customer pre-period revenue ``x`` and 90-day revenue ``y`` (planted +1.2 and +3.0)."""
    rng = np.random.default_rng(seed)
    units = {}
    for arm, effect in zip(ARMS, (0.0, 1.2, 3.0), strict=True):
        x = rng.gamma(4.0, 12.5, RICH_N)
        units[arm] = (x, 0.8 * x + rng.normal(10.0 + effect, 15.0, RICH_N))
    return units


def churn_counts(seed: int = 5) -> dict[str, SurvivalCounts]:
    """Per-day churn and censoring counts: geometric churn, follow-up of 60 to 120 days."""
    rng = np.random.default_rng(seed)
    counts = {}
    for arm, hazard in zip(ARMS, (0.006, 0.005, 0.004), strict=True):
        churn = rng.geometric(hazard, 1500) - 1
        day = np.minimum(churn, rng.integers(60, 121, 1500))
        churned = churn <= day
        days = np.unique(day)
        counts[arm] = SurvivalCounts(
            tuple(int(d) for d in days),
            tuple(int(np.sum(churned & (day == d))) for d in days),
            tuple(int(np.sum(~churned & (day == d))) for d in days),
        )
    return counts


def covariate_units(seed: int = 3) -> dict[str, dict[str, np.ndarray]]:
    """Pre-assignment covariates per arm; ``plan_price`` is shifted by a fifth of an SD in email."""
    rng = np.random.default_rng(seed)
    return {
        name: {a: rng.normal(40 + s, 15, RICH_N) for a, s in zip(ARMS, shift, strict=True)}
        for name, shift in (("tenure_days", (0, 0, 0)), ("plan_price", (0, 3.0, 0)))
    }


def rich_report(**overrides: object) -> Report:
    """A realistic report from every method: sequential headline, Holm, CUPED on the primary,
    Fisher's exact test and a significant unsubscribe increase on the guardrail, survival and a
    balance table with one flagged covariate."""
    units = revenue_units()
    paired = {
        arm: PairedStats(
            RICH_N,
            float(x.sum()),
            float((x**2).sum()),
            float(y.sum()),
            float((y**2).sum()),
            float((x * y).sum()),
        )
        for arm, (x, y) in units.items()
    }
    balance = {
        name: {arm: sample(values) for arm, values in arms.items()}
        for name, arms in covariate_units().items()
    }
    rich_metrics = [
        MetricInput(
            "revenue_90d",
            "continuous",
            "primary",
            "revenue from invoices paid within 90 days",
            {arm: sample(y) for arm, (_, y) in units.items()},
            paired=paired,
        ),
        MetricInput(
            "card_updated_14d",
            "binary",
            "secondary",
            "added a new payment method within 14 days",
            {
                "control": binary(200, 2000),
                "email": binary(240, 2000),
                "email_sms": binary(300, 2000),
            },
        ),
        MetricInput(
            "unsubscribed_30d",
            "binary",
            "guardrail",
            "unsubscribed within 30 days",
            {"control": binary(2, 2000), "email": binary(3, 2000), "email_sms": binary(40, 2000)},
        ),
    ]
    arguments: dict[str, object] = {
        "metrics": rich_metrics,
        "arm_weights": dict.fromkeys(ARMS, 1),
        "planted": {
            ("card_updated_14d", "email"): 0.02,
            ("card_updated_14d", "email_sms"): 0.05,
            ("revenue_90d", "email"): 1.2,
            ("revenue_90d", "email_sms"): 3.0,
        },
        "settings": AnalysisSettings(method="sequential", correction="holm", cuped=True),
        "survival": SurvivalInput(churn_counts(), 90),
        "balance": balance,
    }
    arguments.update(overrides)
    return make_report(**arguments)


def visible(page: str) -> str:
    """The text of an HTML page as a person reads it: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def md_row(text: str, first_cell: str, table_after: str) -> list[str]:
    """The cells of the Markdown table row starting with ``first_cell`` after ``table_after``."""
    section = text[text.index(table_after) :]
    line = next(x for x in section.splitlines() if x.startswith(f"| {first_cell} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def headline_of(text: str) -> str:
    return text[text.index("Headline:") : text.index("Arms")]


def test_headline_uses_the_always_valid_ci_the_correction_bayes_and_cuped() -> None:
    report = rich_report()
    units = revenue_units()
    winner = report.metrics[0].comparisons[1]
    assert winner.arm == "email_sms" and winner.significant and winner.sequential is not None
    lo, hi = winner.sequential.abs_ci or (0.0, 0.0)
    # Bayesian normal approximation with a flat prior on the unadjusted means (gbstats), for email.
    (_, y_t), (_, y_b) = units["email"], units["control"]
    d = y_t.mean() - y_b.mean()
    sd = np.sqrt(y_t.var(ddof=1) / RICH_N + y_b.var(ddof=1) / RICH_N)
    chance = sps.norm.cdf(d / sd)
    risk = sd * sps.norm.pdf(d / sd) - d * sps.norm.cdf(-d / sd)
    # CUPED: one pooled theta (OLS slope of y on x), within-arm sums of squares before and after.
    x_all = np.concatenate([x for x, _ in units.values()])
    y_all = np.concatenate([y for _, y in units.values()])
    theta = np.cov(x_all, y_all)[0, 1] / x_all.var(ddof=1)
    ss = [((y - y.mean()) ** 2).sum() for _, y in units.values()]
    ss_z = [((y - theta * x - (y - theta * x).mean()) ** 2).sum() for x, y in units.values()]
    reduction = 1 - sum(ss_z) / sum(ss)
    assert winner.abs_lift is not None and winner.abs_ci is not None
    for text in (render_markdown(report).replace("**", ""), visible(render_html(report))):
        # email_sms wins on revenue but harms the unsubscribe guardrail: the verdict stops it.
        assert "Stop email_sms: guardrail harm on unsubscribed_30d" in text
        headline = headline_of(text)
        shown = f"{money(winner.abs_lift)} ({money(lo)} to {money(hi)})"
        assert f"lift {shown} (CUPED-adjusted, always-valid 95% CI)" in headline
        assert "safe to check daily" in headline
        fixed = f"({money(winner.abs_ci[0])} to {money(winner.abs_ci[1])})"
        assert fixed not in headline  # the fixed CI is not the headline's
        assert f"adjusted {p_words(winner.p_value_adjusted)} (Holm correction)" in headline
        assert f"{100 * chance:.1f}% chance that email beats control" in headline
        assert f"shipping it loses ${risk:,.2f} on average" in headline  # in the currency
        assert f"variance reduced by {100 * reduction:.0f}% using pre-period data" in headline
        assert "significantly higher than control" in headline
        # email is not significant once corrected: the verdict says so.
        assert "no significant difference from control" in headline


def money(value: float) -> str:
    """A signed amount in dollars as the report shows one below $100 (Unicode minus)."""
    return ("+" if value > 0 else "−") + f"${abs(value):,.2f}"


def pp(value: float) -> str:
    """A signed lift in percentage points with one decimal (Unicode minus)."""
    return ("+" if value > 0 else "−") + f"{abs(100 * value):.1f}"


def pct(ci: tuple[float, float] | None) -> str:
    assert ci is not None
    return f"[{100 * ci[0]:+.1f}%, {100 * ci[1]:+.1f}%]"


def p_words(p: float | None) -> str:
    assert p is not None
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def test_metric_tables_show_both_p_values_chance_to_beat_and_notes() -> None:
    report = rich_report()
    text = render_markdown(report)
    card = report.metrics[1]
    email = card.comparisons[0]
    _, raw_p = proportions_ztest([240, 200], [2000, 2000])
    assert email.sequential is not None and email.sequential.abs_ci is not None
    cells = md_row(text, "email", "### card_updated_14d")
    seq_lo, seq_hi = email.sequential.abs_ci
    assert cells == [
        "email",
        "2,000",
        "12.0%",
        f"+2.0 pp ({pp(seq_lo)} to {pp(seq_hi)} pp)",  # the headline: always-valid
        f"+20.0% {pct(email.sequential.rel_ci)}",
        f"{email.p_value_adjusted:.3f}",
        f"{100 * chance_beta(240, 2000, 200, 2000):.1f}%",
        "no",  # raw p < 0.05, but the always-valid CI holds 0
        "+2.00 pp (inside CI)",
    ]
    assert raw_p < 0.05 and seq_lo < 0
    # The fixed-horizon numbers, labelled, below the table (Wald CI, as statsmodels computes it).
    lo, hi = confint_proportions_2indep(240, 2000, 200, 2000, method="wald", compare="diff")
    section = text[text.index("### card_updated_14d") :]
    assert (
        f"Fixed-horizon 95% CI (secondary, valid only if read once at a size fixed in advance): email +2.0 pp ({pp(lo)} to {pp(hi)} pp)"
        in section
    )
    assert f"Uncorrected fixed-horizon p (raw): email {raw_p:.3f};" in section
    chi2 = sps.chi2_contingency([[200, 1800], [240, 1760], [300, 1700]]).statistic
    assert f"Do the 3 arms differ at all? chi-square test: chi-square = {chi2:.2f} on 2 df" in text
    units = revenue_units()
    welch = anova_oneway([y for _, y in units.values()], use_var="unequal")
    assert f"Welch's ANOVA: F = {welch.statistic:.2f} on 2 df, {p_words(welch.pvalue)}" in text
    assert "† few conversions: Fisher's exact test (email)." in text
    fisher = sps.fisher_exact([[3, 1997], [2, 1998]]).pvalue
    guardrail = text[text.index("### unsubscribed_30d") :]
    assert f"Uncorrected fixed-horizon p (raw): email {fisher:.3f} †;" in guardrail
    page = render_html(report)
    assert "few conversions: Fisher's exact test (email)" in visible(page)
    assert "<th>planted effect</th>" in page and '<th class="num">p (Holm)</th>' in page


def test_guardrail_increase_reads_as_a_warning_not_a_win() -> None:
    report = rich_report()
    guardrail = report.metrics[2]
    email, email_sms = guardrail.comparisons
    assert email_sms.significant and (email_sms.abs_lift or 0) > 0
    assert verdict(email, guardrail) == "no significant difference from control"
    assert verdict(email_sms, guardrail) == (
        "warning: significantly higher than control (lower is better)"
    )
    text = render_markdown(report)
    assert "> **Guardrail warning: unsubscribed_30d** is significantly higher in email_sms" in text
    cells = md_row(text, "email_sms", "### unsubscribed_30d")
    assert cells[7] == "**yes, warning**"
    # Lower is better, so the chance to beat is P(T < B) = 1 - P(T > B).
    assert cells[6] == "< 0.1%"
    assert md_row(text, "email", "### unsubscribed_30d")[6] == (
        f"{100 * (1 - chance_beta(3, 2000, 2, 2000)):.1f}%"
    )
    page = render_html(report)
    section = page[page.index("<h3>unsubscribed_30d") :]
    start = section.index("<td>email_sms</td>")
    row = section[start : section.index("</tr>", start)]
    assert '<span class="bad">yes, warning</span>' in row and 'circle class="bad"' in row
    assert "good" not in row
    assert 'role="alert"><strong>Guardrail warning: unsubscribed_30d</strong>' in page


def expanded(counts: SurvivalCounts) -> tuple[np.ndarray, np.ndarray]:
    """Per-customer times and churn flags from per-day counts."""
    times = np.repeat(counts.days, np.add(counts.events, counts.censored))
    flags = np.concatenate(
        [[1] * e + [0] * c for e, c in zip(counts.events, counts.censored, strict=True)]
    )
    return times, flags


def test_survival_section_shows_curves_log_rank_and_rmst() -> None:
    report = rich_report()
    counts = churn_counts()
    data = [expanded(counts[a]) for a in ARMS]
    chi2, p = survdiff(
        np.concatenate([t for t, _ in data]),
        np.concatenate([f for _, f in data]),
        np.concatenate([[a] * len(t) for a, (t, _) in zip(ARMS, data, strict=True)]),
    )
    sentence = f"chi-square {chi2:.2f} on 2 df, {p_words(p)}"
    page, text = render_html(report), render_markdown(report)
    assert sentence in visible(page) and sentence in text
    root = ET.fromstring(page.removeprefix("<!DOCTYPE html>\n"))
    svg = "{http://www.w3.org/2000/svg}"
    chart = next(s for s in root.iter(f"{svg}svg") if "km-chart" in (s.get("class") or "").split())
    paths = chart.findall(f"{svg}path")
    assert [p.get("class") for p in paths] == ["km-band"] * 3 + ["km-line"] * 3
    labels = [t.text for t in chart.iter(f"{svg}text")]
    assert "days since assignment" in labels and "share still subscribed" in labels
    assert {"control (baseline)", "email", "email_sms"} <= set(labels)
    assert "horizon 90 d" in labels
    for r in report.survival.rmst if report.survival else []:
        assert r.diff is not None and r.diff_ci is not None
        gained = f"{r.diff:+.1f} days [{r.diff_ci[0]:+.1f}, {r.diff_ci[1]:+.1f}]"
        assert gained in text and gained in visible(page)
    # Markdown: the curves read at milestones, against statsmodels' Kaplan-Meier estimate.
    times, flags = expanded(counts["control"])
    km = SurvfuncRight(times, flags)
    after_30 = km.surv_prob[km.surv_times <= 29][-1]  # survived days 0..29
    assert md_row(text, "control (baseline)", "## Time to churn")[3] == f"{100 * after_30:.1f}%"


def test_km_chart_draws_step_curves_inside_the_plot() -> None:
    survival = rich_report().survival
    assert survival is not None
    chart = km_chart(survival, "control")
    finals = []
    for arm, series in zip(survival.arms, chart.series, strict=True):
        points = [
            tuple(map(float, p.split(","))) for p in re.findall(r"[\d.]+,[\d.]+", series.line)
        ]
        assert len(points) == 2 + 2 * len(arm.days)  # start, two corners per day, end
        assert points[0] == (chart.left, chart.top)  # everyone subscribed on day 0
        assert all(chart.left <= x <= chart.right and chart.top <= y <= chart.bottom
                   for x, y in points)  # fmt: skip
        band = [tuple(map(float, p.split(","))) for p in re.findall(r"[\d.]+,[\d.]+", series.band)]
        assert all(chart.top <= y <= chart.bottom for _, y in band)
        finals.append((arm.survival[-1], points[-1][1]))
    # Higher survival is drawn higher (smaller y).
    assert sorted(finals) == sorted(finals, key=lambda f: -f[1])
    assert series.color != chart.series[0].color


def test_share_after_reads_the_kaplan_meier_step_function() -> None:
    # 8 customers: 2 churn on day 2 (S = 6/8), 1 of 5 at risk churns on day 5 (S = 0.75 * 4/5).
    arm = SurvivalArm(
        name="control",
        days=[2, 5, 7],
        at_risk=[8, 5, 3],
        survival=[0.75, 0.6, 0.6],
        ci_low=[0.5, 0.3, 0.3],
        ci_high=[0.9, 0.8, 0.8],
    )
    assert [share_after(arm, d) for d in (0, 2, 3, 5, 6, 8)] == [1.0, 1.0, 0.75, 0.75, 0.6, 0.6]
    assert share_after(arm, 9) is None  # beyond follow-up


def test_balance_section_flags_imbalanced_covariates() -> None:
    report = rich_report()
    units = covariate_units()["plan_price"]
    t, b = units["email"], units["control"]
    smd = (t.mean() - b.mean()) / np.sqrt((t.var(ddof=1) + b.var(ddof=1)) / 2)
    text = render_markdown(report)
    row = md_row(text, "plan_price", "## Balance check")
    assert row[4] == f"{smd:+.2f}" and row[-1] == "**imbalanced**"
    assert md_row(text, "tenure_days", "## Balance check")[-1] == ""
    assert "standardised mean difference (SMD)" in text
    page = render_html(report)
    assert '<tr class="flagged"><td>plan_price</td>' in page
    assert "<tr><td>tenure_days</td>" in page


def test_methods_explain_families_correction_and_priors() -> None:
    for text in (render_markdown(rich_report()), visible(render_html(rich_report()))):
        methods = text[text.index("Methods") :]
        assert "Holm correction of the headline p-values within each family" in methods
        assert "primary and secondary metrics: every non-baseline arm x metric" in methods
        assert "guardrail metrics: every non-baseline arm x metric" in methods
        assert "Beta(1, 1) on each arm" in methods and "a flat prior" in methods
        assert "tuned for 5,000 customers per arm" in methods
        assert "Kaplan–Meier" in methods and "0.1 is flagged" in methods


def test_rich_html_is_well_formed_self_contained_and_escaped() -> None:
    covariates = {
        HOSTILE: {a: SampleStats(10, 10.0 + i, 20.0 + i) for i, a in enumerate(ARMS)},
    }
    page = render_html(rich_report(hypothesis=HOSTILE, balance=covariates))
    root = ET.fromstring(page.removeprefix("<!DOCTYPE html>\n"))
    assert "<script" not in page and "<link" not in page and "src=" not in page
    assert page.replace("http://www.w3.org/2000/svg", "").count("http") == 0
    assert len(root.findall(".//{http://www.w3.org/2000/svg}svg")) == 6 + 1  # bars + KM chart
    assert page.count("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;") == 2
    assert "&lt;script&gt;" in render_markdown(rich_report(balance=covariates))


def test_srm_banner_stays_in_the_full_report() -> None:
    report = rich_report(arm_weights={"control": 2, "email": 1, "email_sms": 1})
    assert 'role="alert"><strong>Warning: sample ratio mismatch' in render_html(report)
    assert "**Warning: sample ratio mismatch (SRM).**" in render_markdown(report)


def test_report_without_analysis_summary_renders_the_plain_tables() -> None:
    report = make_report().model_copy(update={"analysis": None})
    text = render_markdown(report)
    assert "always-valid" not in text and "chance to beat" not in text
    assert "| arm | n | rate | lift (95% CI) | relative | significant |" in text
    ET.fromstring(render_html(report).removeprefix("<!DOCTYPE html>\n"))
