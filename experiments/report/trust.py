"""Trust checks: can the numbers be acted on? Each is a green, amber or red badge with one line on
why: sample ratio (overall and per stratum), covariate balance, enough data for the planned MDE,
customers not yet counted, CUPED, automatic stops and the data's freshness."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from experiments.metrics import CATALOGUE
from experiments.report.direction import primary_metric
from experiments.report.models import (
    AutoStopDecision,
    Badge,
    Report,
    StratumSrm,
    Trust,
    TrustCheck,
)
from experiments.report.numbers import fmt_count, lift_parts

SRM_RED = 0.001  # the report's SRM threshold (``srm.ok``)
SRM_AMBER = 0.01
SMD_RED = 0.25  # balance rows above 0.1 are flagged; far above, the comparison is suspect
FRESH = timedelta(hours=36)
STALE = timedelta(days=3)


def _p(value: float | None) -> str:
    if value is None:
        return "no p-value"
    return "p < 0.001" if value < 0.001 else f"p = {value:.3f}"


def _srm_badge(p_value: float | None) -> Badge:
    if p_value is None:
        return "amber"
    if p_value < SRM_RED:
        return "red"
    return "amber" if p_value < SRM_AMBER else "green"


def srm_checks(report: Report, strata: Sequence[StratumSrm]) -> list[TrustCheck]:
    """The overall sample-ratio check, then one for every stratum together."""
    sizes = ", ".join(f"{a.name} {fmt_count(a.n)}" for a in report.arms)
    badge = _srm_badge(report.srm.p_value)
    explain = {
        "green": "arm sizes match the planned split",
        "amber": "arm sizes are a little off the planned split; watch it",
        "red": "arm sizes do not match the planned split: assignment or data is broken",
    }[badge]
    checks = [
        TrustCheck(
            check="srm",
            status=badge,
            title="Sample ratio",
            detail=f"{explain} ({sizes}; chi-square {_p(report.srm.p_value)}).",
        )
    ]
    if strata:
        checks.append(strata_check(strata))
    return checks


def strata_check(strata: Sequence[StratumSrm]) -> TrustCheck:
    """One badge for the sample-ratio checks within every stratum (as stored by the last
    assignment run): red naming the flagged strata, else green with the smallest p-value."""
    title = "Sample ratio within strata"
    flagged = [s for s in strata if not s.ok]
    if flagged:
        worst = sorted(flagged, key=lambda s: s.p_value if s.p_value is not None else 1.0)
        shown = "; ".join(
            f"{s.stratum} ({', '.join(f'{a} {fmt_count(n)}' for a, n in s.counts.items())}, "
            f"{_p(s.p_value)})"
            for s in worst[:3]
        )
        more = f" and {len(flagged) - 3} more" if len(flagged) > 3 else ""
        return TrustCheck(
            check="srm_stratum",
            status="red",
            title=title,
            detail=f"{len(flagged)} of {len(strata)} strata off the planned split: "
            f"{shown}{more}; stratified assignment keeps every stratum within one block of the "
            "weights, so assignment or data is broken there.",
        )
    smallest = min((s.p_value for s in strata if s.p_value is not None), default=None)
    return TrustCheck(
        check="srm_stratum",
        status="green",
        title=title,
        detail=f"no stratum is off the planned split ({len(strata)} checked; smallest "
        f"{_p(smallest)}).",
    )


def balance_check(report: Report) -> TrustCheck:
    if not report.balance:
        return TrustCheck(
            check="balance",
            status="amber",
            title="Covariate balance",
            detail="not computed: some arm has no customers yet, or no covariates were measured.",
        )
    worst = max(
        ((abs(v), row.covariate) for row in report.balance for v in row.smd.values() if v),
        default=(0.0, ""),
    )
    flagged = [row.covariate for row in report.balance if row.flagged]
    if not flagged:
        detail = f"the arms were alike before the experiment (largest |SMD| {worst[0]:.2f})."
        return TrustCheck(check="balance", status="green", title="Covariate balance", detail=detail)
    status: Badge = "red" if worst[0] > SMD_RED else "amber"
    return TrustCheck(
        check="balance",
        status=status,
        title="Covariate balance",
        detail=f"arms differ before the experiment on {', '.join(flagged)} "
        f"(largest |SMD| {worst[0]:.2f} on {worst[1]}).",
    )


def sample_size_check(report: Report, mde_text: str | None, n_needed: int | None) -> TrustCheck:
    primary = primary_metric(report)
    smallest = min((a.n for a in primary.arms), default=0) if primary else 0
    title = "Enough data for the MDE"
    if mde_text is None:
        return TrustCheck(
            check="sample_size",
            status="amber",
            title=title,
            detail="no planned MDE (analysis.mde), so there is no target sample size.",
        )
    if n_needed is None:
        return TrustCheck(
            check="sample_size",
            status="amber",
            title=title,
            detail=f"the sample needed for an MDE of {mde_text} cannot be computed from this baseline.",
        )
    if smallest >= n_needed:
        return TrustCheck(
            check="sample_size",
            status="green",
            title=title,
            detail=f"every arm has the {fmt_count(n_needed)} counted customers needed to detect "
            f"{mde_text}.",
        )
    return TrustCheck(
        check="sample_size",
        status="amber",
        title=title,
        detail=f"the smallest arm has {fmt_count(smallest)} of the {fmt_count(n_needed)} counted "
        f"customers needed to detect {mde_text}: a null result is not yet evidence of no effect.",
    )


def not_yet_counted(report: Report, assigned: int) -> dict[str, int]:
    """Per metric, assigned customers whose window has not ended yet."""
    return {m.name: max(0, assigned - sum(a.n for a in m.arms)) for m in report.metrics}


def immature_check(report: Report, assigned: int, pending: Mapping[str, int]) -> TrustCheck:
    primary = primary_metric(report)
    title = "Customers counted"
    if primary is None or assigned == 0:
        return TrustCheck(
            check="immature", status="red", title=title, detail="nobody is assigned yet."
        )
    waiting = pending.get(primary.name, 0)
    counted = assigned - waiting
    if counted == 0:
        return TrustCheck(
            check="immature",
            status="red",
            title=title,
            detail=f"none of the {fmt_count(assigned)} assigned customers is counted yet on "
            f"{primary.name}: its window has not ended for anyone.",
        )
    if waiting:
        return TrustCheck(
            check="immature",
            status="amber",
            title=title,
            detail=f"{fmt_count(waiting)} of {fmt_count(assigned)} assigned customers are not "
            f"counted yet on {primary.name}: their window has not ended.",
        )
    return TrustCheck(
        check="immature",
        status="green",
        title=title,
        detail=f"all {fmt_count(assigned)} assigned customers are counted on {primary.name}.",
    )


_CUPED_WHY = {
    "no_covariate_variance": "the pre-period value is the same for everyone",
    "n_too_small": "too few customers to estimate the adjustment",
    "zero_outcome_variance": "the metric has no spread to reduce",
}


def cuped_check(report: Report) -> TrustCheck:
    title = "CUPED variance reduction"
    primary = primary_metric(report)
    if report.analysis is None or not report.analysis.cuped or primary is None:
        return TrustCheck(
            check="cuped",
            status="amber",
            title=title,
            detail="off (analysis.cuped: false): intervals are wider than pre-period data could make them.",
        )
    cuped = [c.cuped for c in primary.comparisons if c.cuped is not None]
    applied = [c for c in cuped if c.applied and c.variance_reduction is not None]
    if applied:
        share = max(c.variance_reduction or 0.0 for c in applied)
        return TrustCheck(
            check="cuped",
            status="green",
            title=title,
            detail=f"applied on {primary.name}: the pre-period value removes {100 * share:.0f}% "
            f"of the variance.",
        )
    if not cuped:
        why = "no pre-period data for this metric"
    else:
        status = cuped[0].status
        why = _CUPED_WHY.get(status, "the pre-period value removes less than 1% of the variance")
    return TrustCheck(
        check="cuped",
        status="green",
        title=title,
        detail=f"not applied on {primary.name}: {why}, so the plain test is used.",
    )


def auto_stop_check(stops: Sequence[AutoStopDecision]) -> TrustCheck:
    title = "Automatic stops"
    if not stops:
        return TrustCheck(
            check="auto_stop",
            status="green",
            title=title,
            detail="no automatic stop decision recorded.",
        )
    last = stops[-1]
    # One decision stops several arms at once (a winner keeps itself and stops the others).
    together = [s.arm for s in stops if (s.decided_at, s.reason) == (last.decided_at, last.reason)]
    who = ", ".join(a for a in together if a) or "the experiment"
    numbers = ""
    if last.abs_lift is not None and last.metric is not None:
        kind = CATALOGUE[last.metric].kind if last.metric in CATALOGUE else "continuous"
        lift, ci = lift_parts(last.abs_lift, last.ci, kind)
        interval = f", always-valid CI {ci}" if ci else ""
        numbers = f": {lift}{interval}, {_p(last.p_value)}"
    resumed = sum(1 for s in stops if not s.in_effect)
    overridden = f", {resumed} resumed in the experiment file" if resumed else ""
    return TrustCheck(
        check="auto_stop",
        status="amber",
        title=title,
        detail=f"{len(stops)} recorded{overridden}; latest: {last.action} {who} "
        f"({last.reason}{numbers}).",
    )


def freshness_check(
    as_of: datetime,
    last_import_at: datetime | None,
    source: str | None = None,
    newest_customer: datetime | None = None,
) -> TrustCheck:
    """How current the customer data was at the cut-off: the last import, Stripe sync or webhook
    (``source`` says which). Without any, the data was loaded directly (the synthetic demo
    business, a seed or the database filled by other means): said so, with its newest customer."""
    title = "Data freshness"
    if last_import_at is None:
        newest = (
            "" if newest_customer is None else f" (newest customer created {_day(newest_customer)})"
        )
        return TrustCheck(
            check="freshness",
            status="amber",
            title=title,
            detail="no import, Stripe sync or webhook recorded: the customer data was loaded "
            f"directly, e.g. the seeded synthetic business{newest}, so its freshness is not "
            "tracked; import or sync real data to track it.",
        )
    lag = as_of - last_import_at
    what = source or "import or sync"
    if lag.total_seconds() < 0:
        return TrustCheck(
            check="freshness",
            status="green",
            title=title,
            detail=f"last {what} after the data cut-off ({_day(last_import_at)}): the data "
            "covers the cut-off.",
        )
    hours = lag.total_seconds() / 3600
    status: Badge = "green" if lag <= FRESH else "amber" if lag <= STALE else "red"
    when = f"{hours:.0f} hours" if hours < 48 else f"{hours / 24:.0f} days"
    explain = {
        "green": "current",
        "amber": "a little old; check the import schedule",
        "red": "stale: recent changes are missing, run the import or sync",
    }[status]
    return TrustCheck(
        check="freshness",
        status=status,
        title=title,
        detail=f"last {what} {when} before the data cut-off ({_day(last_import_at)}): {explain}.",
    )


def _day(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def trust(
    report: Report,
    *,
    as_of: datetime,
    assigned: int,
    mde_text: str | None,
    n_needed: int | None,
    strata: Sequence[StratumSrm] = (),
    strata_checked_at: datetime | None = None,
    stops: Sequence[AutoStopDecision] = (),
    last_import_at: datetime | None = None,
    last_import_source: str | None = None,
    newest_customer: datetime | None = None,
) -> Trust:
    """Every trust check of ``report``, in reading order."""
    pending = not_yet_counted(report, assigned)
    checks = [
        *srm_checks(report, strata),
        balance_check(report),
        sample_size_check(report, mde_text, n_needed),
        immature_check(report, assigned, pending),
        cuped_check(report),
        auto_stop_check(stops),
        freshness_check(as_of, last_import_at, last_import_source, newest_customer),
    ]
    return Trust(
        checks=checks,
        srm_strata=list(strata),
        srm_strata_checked_at=None if strata_checked_at is None else strata_checked_at.isoformat(),
        auto_stops=list(stops),
        last_import_at=None if last_import_at is None else last_import_at.isoformat(),
        last_import_source=last_import_source,
        data_loaded_directly=last_import_at is None,
        assigned=assigned,
        not_yet_counted=pending,
    )
