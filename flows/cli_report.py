"""``retain report``: regenerate an experiment's report from the database, or every experiment's
and an ``index.html`` listing them. Needs no flow, so Prefect is not imported."""

from __future__ import annotations

import webbrowser
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from flows.console import console, fail, safe


def _regenerate(key: str, out: Path, as_of: datetime) -> tuple[Path, object]:
    """Evaluate ``key`` as of ``as_of`` and write its report into ``out/key``."""
    from experiments.report import write_report
    from models.db import engine_for
    from models.evaluation import evaluate
    from models.experiments import registered_spec

    engine = engine_for()
    experiment_id, loaded = registered_spec(engine, key)
    report = evaluate(engine, experiment_id, loaded.spec, as_of, datetime.now(UTC))
    paths = write_report(report, out / key)
    return paths["html"], report


def _index(out: Path, as_of: datetime) -> Path:
    from experiments.report.index import IndexEntry, render_index
    from experiments.report.models import Report
    from models.db import engine_for
    from models.report_data import experiment_list

    entries = []
    for key, state, hypothesis in experiment_list(engine_for()):
        try:
            html, report = _regenerate(key, out, as_of)
        except (KeyError, ValueError) as error:
            entries.append(IndexEntry(key, state, hypothesis, error=str(error)))
            console.print(f"{safe(key)}: no report ({safe(str(error))})", highlight=False)
            continue
        assert isinstance(report, Report)
        verdict = report.verdict
        entries.append(
            IndexEntry(
                key,
                state,
                hypothesis,
                decision=verdict.decision if verdict else None,
                verdict=verdict.text if verdict else None,
                as_of=f"{as_of:%Y-%m-%d %H:%M} UTC",
                href=html.relative_to(out).as_posix(),
            )
        )
        console.print(f"{safe(key)}: {safe(str(html))}", highlight=False)
    out.mkdir(parents=True, exist_ok=True)
    index = out / "index.html"
    index.write_text(
        render_index(entries, f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"), encoding="utf-8"
    )
    return index


def report(
    key: Annotated[str | None, typer.Argument(help="Experiment key (as in its YAML).")] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Every experiment, and an index.html listing them.")
    ] = False,
    out: Annotated[Path, typer.Option(help="Folder for the reports.")] = Path("reports"),
    as_of: Annotated[
        datetime | None,
        typer.Option(
            "--as-of",
            help="Data cut-off, UTC (ISO 8601); default: now.",
            formats=["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"],
        ),
    ] = None,
    open_: Annotated[
        bool, typer.Option("--open", help="Open the report (or the index) in a browser.")
    ] = False,
) -> None:
    """Regenerate a report from the database: the verdict, trust checks, tables, lift over time,
    funnel and provenance, into OUT/KEY/report.{json,md,html}. With --all, every experiment and
    OUT/index.html with each one's state and verdict."""
    from models.db import engine_for
    from models.migrate import upgrade

    if (key is None) == (not all_):
        fail("report: give one experiment KEY or --all, not both or neither")
    cut_off = datetime.now(UTC) if as_of is None else as_of.replace(tzinfo=as_of.tzinfo or UTC)
    upgrade(engine_for())
    if all_:
        target = _index(out, cut_off)
    else:
        assert key is not None
        try:
            target, built = _regenerate(key, out, cut_off)
        except KeyError as error:
            fail(f"report {key}: {error.args[0]}")
        except ValueError as error:
            fail(f"report {key}: {error}; run the experiment so customers are assigned")
        verdict = getattr(built, "verdict", None)
        if verdict is not None:
            console.print(safe(verdict.text), highlight=False)
    console.print(f"report written to {safe(str(target))}", highlight=False)
    if open_:
        webbrowser.open(target.resolve().as_uri())
