"""``retain segment`` and ``retain risk``: who gets treated. Registered on the main app in
:mod:`flows.cli`; nothing here needs Prefect."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from flows import cli as base
from flows.console import console, fail, safe

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from experiments.risk.evaluation import DecileRow
    from experiments.risk.model import Coefficient
    from models.risk import HoldoutEvaluation

risk_app = typer.Typer(
    help="The churn-risk model: train on history, score customers, evaluate.",
    no_args_is_help=True,
)


def _engine() -> Engine:
    from flows.cli_checks import open_database

    return base._checked(open_database)


def _as_of(value: datetime | None) -> datetime:
    """``--as-of`` (already UTC, see flows.cli_checks.parse_as_of) or now."""
    return value or datetime.now(UTC)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


# --- retain segment ------------------------------------------------------------------------------


def segment(
    path: Annotated[Path, typer.Argument(help="Experiment YAML file.")],
    as_of: base.AsOf = None,
    sample: Annotated[int, typer.Option(min=0, max=100, help="Customers to show.")] = 10,
) -> None:
    """Preview an experiment's segment: its size, customers entering per day (last 7 days), its
    make-up by plan, country and churn-risk decile, overlap with running experiments, and a
    sample of its customers."""
    base._validate_or_exit([path])
    from experiments.loader import load_spec
    from experiments.rules import parse_rule
    from models.segment_preview import preview_segment

    spec = load_spec(path).spec
    moment = _as_of(as_of)
    try:
        preview = preview_segment(_engine(), parse_rule(spec.segment.where), moment, sample)
    except ValueError as error:
        fail(f"{path}: {error}")
    console.print(
        f"[bold]{safe(spec.key)}[/bold]: {preview.size:,} customers in the segment at "
        f"{moment:%Y-%m-%d %H:%M} UTC; {preview.inflow_per_day:,.1f} entering per day "
        "(last 7 days)",
        highlight=False,
        soft_wrap=True,
    )
    titles = {
        "subscription.plan": "plan",
        "customer.country": "country",
        "churn_risk_decile": "churn-risk decile",
    }
    for field, rows in preview.make_up.items():
        table = Table(title=f"by {titles[field]}", title_justify="left")
        table.add_column(titles[field])
        table.add_column("customers", justify="right")
        table.add_column("share", justify="right")
        for value, n in rows:
            label = "(none)" if value is None else safe(str(value))
            table.add_row(label, f"{n:,}", _percent(n / preview.size if preview.size else None))
        console.print(table)
    if preview.overlap:
        table = Table(title="already in running experiments", title_justify="left")
        table.add_column("experiment")
        table.add_column("customers", justify="right")
        for key, n in preview.overlap:
            marker = " (this experiment)" if key == spec.key else ""
            table.add_row(safe(key) + marker, f"{n:,}")
        console.print(table)
    else:
        console.print("none of them is in a running experiment", highlight=False)
    if preview.sample:
        table = Table(title="a sample of the segment", title_justify="left")
        for column in ("id", "external id", "name", "email", "plan", "country", "churn risk"):
            table.add_column(column)
        for c in preview.sample:
            table.add_row(
                str(c.customer_id), safe(c.external_id), safe(c.name), safe(c.email or ""),
                safe(c.plan or ""), safe(c.country or ""), _percent(c.churn_risk),
            )  # fmt: skip
        console.print(table)


# --- retain risk ---------------------------------------------------------------------------------


@risk_app.command("train")
def risk_train(
    as_of: base.AsOf = None,
    horizon: Annotated[
        int, typer.Option(min=1, max=365, help="Label: churned within this many days.")
    ] = 30,
    holdout: Annotated[
        int, typer.Option(min=0, max=12, help="Most recent monthly snapshots held out.")
    ] = 2,
    max_rows: Annotated[int, typer.Option(min=1000, help="Training rows at most (sampled).")] = (
        200_000
    ),
) -> None:
    """Train the churn-risk model (logistic regression) on monthly snapshots of history: features
    as of each snapshot, label "churned within --horizon days"; store it with its window."""
    from experiments.risk.model import RiskModelError
    from models.risk import train_model

    try:
        result = train_model(
            _engine(), _as_of(as_of), horizon=horizon, holdout=holdout, max_rows=max_rows
        )
    except RiskModelError as error:
        fail(f"risk train: {error}")
    s = result.snapshots
    console.print(
        f"model {result.version} (id {result.id}): {result.n_train:,} training rows from "
        f"{len(s.training)} snapshots {min(s.training):%Y-%m-%d}..{max(s.training):%Y-%m-%d}, "
        f"label: churned within {horizon} days ({result.model.method} fit)",
        highlight=False,
        soft_wrap=True,
    )
    if result.holdout is not None:
        _print_holdout(result.holdout, f"{len(s.holdout)} held-out snapshot(s)")
    _print_coefficients(result.model.coefficients)


@risk_app.command("score")
def risk_score(
    as_of: base.AsOf = None,
    model: Annotated[int | None, typer.Option(help="Model id (default: the newest).")] = None,
) -> None:
    """Score every customer with a live subscription and store their churn risk and decile
    (what the rule fields churn_risk and churn_risk_decile read)."""
    from experiments.risk.model import RiskModelError
    from models.risk import score_customers

    moment = _as_of(as_of)
    try:
        version, n = score_customers(_engine(), moment, model)
    except RiskModelError as error:
        fail(f"risk score: {error}")
    console.print(
        f"scored {n:,} customers with model {version} as of {moment:%Y-%m-%d %H:%M} UTC",
        highlight=False,
        soft_wrap=True,
    )


@risk_app.command("evaluate")
def risk_evaluate(
    csv: Annotated[
        Path | None, typer.Option("--csv", help="Evaluate on this CSV instead of the database.")
    ] = None,
    label: Annotated[
        str | None, typer.Option(help="CSV: the churn label column (1/0, true/false, yes/no).")
    ] = None,
    id_column: Annotated[
        str | None, typer.Option("--id", help="CSV: an id column, left out of the features.")
    ] = None,
    folds: Annotated[int, typer.Option(min=2, max=50, help="CSV: cross-validation folds.")] = 5,
    seed: Annotated[int, typer.Option(min=0, help="CSV: seed of the fold split.")] = 20240601,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    model: Annotated[int | None, typer.Option(help="Stored model id (default: newest).")] = None,
) -> None:
    """Evaluate the churn-risk model: the stored model on its held-out months (AUC, calibration
    by decile, top-decile lift, coefficients with 95% CIs), or, with --csv and --label, a
    logistic regression on any CSV by stratified k-fold cross-validation."""
    from experiments.risk.model import RiskModelError

    try:
        if csv is not None:
            _evaluate_csv(csv, label, id_column, folds, seed, as_json)
        else:
            _evaluate_stored(model, as_json)
    except RiskModelError as error:
        fail(f"risk evaluate: {error}")


def _evaluate_csv(
    path: Path, label: str | None, id_column: str | None, folds: int, seed: int, as_json: bool
) -> None:
    from experiments.risk.model import cross_validate, fit
    from experiments.risk.table import RiskDataError, read_labeled_csv

    if label is None:
        fail("risk evaluate: --csv needs --label COLUMN, the churn label column")
    try:
        data = read_labeled_csv(path, label, id_column)
    except RiskDataError as error:
        fail(error)
    result = cross_validate(data.features, data.labels, folds=folds, seed=seed)
    if as_json:
        typer.echo(json.dumps(result.as_json()))
        return
    console.print(
        f"{safe(str(path))}: {data.labels.size:,} rows, churn rate "
        f"{_percent(float(data.labels.mean()))}; {folds}-fold cross-validated AUC "
        f"{result.auc_mean:.3f} ± {result.auc_std:.3f} (folds: "
        + ", ".join(f"{a:.3f}" for a in result.aucs)
        + ")",
        highlight=False,
        soft_wrap=True,
    )
    _print_calibration(result.calibration, result.top_decile_lift, "out-of-fold predictions")
    _print_coefficients(fit(data.features, data.labels).coefficients)


def _evaluate_stored(model_id: int | None, as_json: bool) -> None:
    from models.risk import evaluate_stored

    version, facts, evaluation, coefficients = evaluate_stored(_engine(), model_id)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "model": version,
                    "auc_holdout": evaluation.auc,
                    "n": evaluation.n,
                    "calibration": [vars(row) for row in evaluation.calibration],
                    "top_decile_lift": evaluation.top_decile_lift,
                }
            )
        )
        return
    console.print(
        f"model {version}: trained on snapshots {facts['train_start']:%Y-%m-%d}.."
        f"{facts['train_end']:%Y-%m-%d}, held out {facts['holdout_start']:%Y-%m-%d}.."
        f"{facts['holdout_end']:%Y-%m-%d}",
        highlight=False,
        soft_wrap=True,
    )
    _print_holdout(evaluation, "the held-out snapshots")
    _print_coefficients(coefficients)


def _print_holdout(evaluation: HoldoutEvaluation, where: str) -> None:
    console.print(
        f"on {where}: {evaluation.n:,} customers, churn rate {_percent(evaluation.churn_rate)}, "
        f"AUC {_number(evaluation.auc)}",
        highlight=False,
        soft_wrap=True,
    )
    _print_calibration(evaluation.calibration, evaluation.top_decile_lift, where)


def _print_calibration(rows: tuple[DecileRow, ...], lift: float | None, where: str) -> None:
    console.print(f"calibration by decile ({safe(where)}):", highlight=False)
    table = Table()
    for column in ("decile", "predicted", "observed", "customers"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            str(row.decile),
            _percent(row.predicted),
            _percent(row.observed),
            f"{row.n:,}",
        )
    console.print(table)
    console.print(f"top-decile lift: {_number(lift, 2)}", highlight=False)


def _print_coefficients(coefficients: tuple[Coefficient, ...]) -> None:
    table = Table(title="coefficients (log-odds per unit, 95% CI)", title_justify="left")
    for column, justify in (("feature", "left"), ("estimate", "right"), ("95% CI", "right"),
                            ("p", "right")):  # fmt: skip
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for c in coefficients:
        ci = "–" if c.ci_low is None else f"[{c.ci_low:.4g}, {c.ci_high:.4g}]"
        p = "–" if c.p_value is None else f"{c.p_value:.2g}"
        table.add_row(safe(c.name), f"{c.estimate:.4g}", ci, p)
    console.print(table)
