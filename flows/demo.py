"""``retain demo``: the whole path on a synthetic subscription business with planted effects.

Seeds the business, runs the four shipped experiments through the real flows (segment, assignment,
outbox, dispatch), lets simulated customers respond to the messages they really received while
simulated time advances, evaluates every experiment 90 days later and compares each estimate with
the effect the simulator planted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import Engine

from experiments.loader import LoadedSpec, load_spec
from experiments.report import Report
from experiments.simulation.business import BusinessConfig, generate_business
from experiments.simulation.realise import ResponseRun
from experiments.simulation.response import HORIZON_DAYS, family_for, planted_effects
from flows.pipeline import dispatch_messages, evaluate_experiment, run_experiment
from messaging.render import template_exists
from models.db import engine_for, redact, using_database
from models.migrate import upgrade
from models.outcomes import delivered, population_for, write_events, write_final
from models.seed import SeedSummary, seed_business

DEFINITIONS = Path(__file__).resolve().parent.parent / "experiments" / "definitions"
DEMO_EXPERIMENTS = ("dunning", "card-expiry-reminder", "onboarding-checkin", "falling-usage-offer")
# Dispatch rounds within each stage: quiet hours (at most 11 h) defer some sends to a later round.
DISPATCH_ROUNDS = (timedelta(hours=0), timedelta(hours=12))

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DemoConfig:
    out_dir: Path
    customers: int = 20_000
    seed: int = 7
    database_url: str | None = None


@dataclass(frozen=True)
class DemoExperiment:
    loaded: LoadedSpec
    experiment_id: int
    planted: dict[tuple[str, str], float]
    run: ResponseRun


@dataclass(frozen=True)
class DemoResult:
    database_url: str
    seeded: SeedSummary
    reports: dict[str, Report]
    report_dirs: dict[str, Path]


def demo_database(config: DemoConfig) -> str:
    """The demo's database: a fresh SQLite file in the output folder unless one is given."""
    if config.database_url:
        return config.database_url
    path = config.out_dir / "retain-demo.db"
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
    return f"sqlite:///{path}"


def run_demo(
    config: DemoConfig, progress: Progress | None = None, log: Callable[[str], None] = print
) -> DemoResult:
    config.out_dir.mkdir(parents=True, exist_ok=True)
    url = demo_database(config)
    engine = engine_for(url)
    upgrade(engine)
    log(f"database {redact(url)}")
    with using_database(url):  # the flows read the database from the environment
        return _run(config, url, engine, progress, log)


def _run(
    config: DemoConfig,
    url: str,
    engine: Engine,
    progress: Progress | None,
    log: Callable[[str], None],
) -> DemoResult:

    business = generate_business(BusinessConfig(customers=config.customers, seed=config.seed))
    seeded = seed_business(engine, business, progress=progress)
    t0 = business.config.as_of
    log(
        f"seeded {seeded.customers:,} customers, {seeded.invoices:,} invoices, "
        f"{seeded.activity_events:,} activity rows; today is {t0:%Y-%m-%d %H:%M} UTC"
    )

    experiments: dict[str, DemoExperiment] = {}
    for key in DEMO_EXPERIMENTS:
        path = DEFINITIONS / f"{key}.yaml"
        loaded = load_spec(path, template_exists)
        summary = run_experiment(str(path), as_of=t0)
        pop, arms = population_for(engine, summary.experiment_id, t0)
        metrics = [name for name, _ in loaded.spec.metrics.roles()]
        experiments[key] = DemoExperiment(
            loaded,
            summary.experiment_id,
            planted_effects(loaded.spec, pop, metrics),
            ResponseRun(loaded.spec, pop, arms, t0, seed=_seed(config.seed, key)),
        )
        log(f"{key}: {summary.segment_size:,} customers in segment, arms {summary.by_arm}")

    _simulate(url, t0, experiments, config.out_dir / "outbox", log)

    evaluated_at = t0 + timedelta(days=HORIZON_DAYS, hours=1)
    reports: dict[str, Report] = {}
    report_dirs: dict[str, Path] = {}
    for key, exp in experiments.items():
        report_dirs[key] = config.out_dir / key
        reports[key] = evaluate_experiment(
            key,
            str(report_dirs[key]),
            as_of=evaluated_at,
            planted={f"{m}/{a}": v for (m, a), v in exp.planted.items()},
        )
    return DemoResult(url, seeded, reports, report_dirs)


def _simulate(
    url: str,
    t0: datetime,
    experiments: dict[str, DemoExperiment],
    outbox: Path,
    log: Callable[[str], None],
) -> None:
    """Advance simulated time stage by stage: dispatch what is due, let customers respond to what
    they received, record the responses before the next stage's sends check their conditions."""
    engine = engine_for(url)
    stages = sorted(
        {
            step.at
            for exp in experiments.values()
            for arm in exp.loaded.spec.arms
            for step in arm.steps
        }
    )
    horizon = timedelta(days=HORIZON_DAYS)
    for i, stage in enumerate(stages):
        for offset in DISPATCH_ROUNDS:
            summary = dispatch_messages(str(outbox), as_of=t0 + stage + offset)
            log(
                f"day {stage.days}: sent {summary.sent}, skipped {summary.skipped}, "
                f"deferred {summary.deferred}, failed {summary.failed}"
            )
        until = t0 + (stages[i + 1] if i + 1 < len(stages) else horizon)
        for exp in experiments.values():
            for arm in exp.loaded.spec.arms:
                for index, step in enumerate(arm.steps):
                    if step.at == stage:
                        exp.run.deliver(
                            arm.name, index, delivered(engine, exp.experiment_id, arm.name, index)
                        )
            response = family_for(exp.loaded.spec).response
            write_events(engine, exp.experiment_id, response, exp.run.events_until(until))
    for exp in experiments.values():
        response = family_for(exp.loaded.spec).response
        write_events(engine, exp.experiment_id, response, exp.run.events_until(t0 + horizon))
        write_final(engine, exp.run.finish())


def _seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big")
