"""The demo end to end on a small business, on the test database (SQLite or PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from models.records import Assignment, Message

pytestmark = [pytest.mark.slow, pytest.mark.prefect]
RESPONSES = {
    "card_updated_14d",
    "onboarding_completed_14d",
    "offer_accepted_14d",
    "payment_recovered_14d",
}


def test_demo_runs_every_stage_and_reports_planted_effects(
    prefect_api: None, engine: Engine, database_url: str, tmp_path: Path
) -> None:
    from flows.demo import DEMO_EXPERIMENTS, DemoConfig, run_demo
    from flows.pipeline import dispatch_messages

    lines: list[str] = []
    result = run_demo(
        DemoConfig(out_dir=tmp_path, customers=3_000, seed=3, database_url=database_url),
        log=lines.append,
    )
    assert set(result.reports) == set(DEMO_EXPERIMENTS)
    with engine.connect() as connection:
        assigned = dict(
            connection.execute(
                select(Assignment.experiment_id, func.count()).group_by(Assignment.experiment_id)
            ).all()
        )
        sent = connection.execute(
            select(func.count()).select_from(Message).where(Message.status == "sent")
        ).scalar_one()
        pending = connection.execute(
            select(func.count()).select_from(Message).where(Message.status == "pending")
        ).scalar_one()
    assert sum(assigned.values()) > 200 and pending == 0
    # One readable file per message sent, and dispatching again sends nothing.
    files = list((tmp_path / "outbox").rglob("*.txt"))
    assert len(files) == sent > 0
    assert dispatch_messages(str(tmp_path / "outbox")).sent == 0

    for key in DEMO_EXPERIMENTS:
        data = json.loads((tmp_path / key / "report.json").read_text())
        assert data["experiment"] == key
        assert (tmp_path / key / "report.html").exists() and (tmp_path / key / "report.md").exists()
        primary = data["metrics"][0]
        assert primary["role"] == "primary"
        n_total = sum(arm["n"] for arm in primary["arms"])
        assert n_total == sum(a["n"] for a in data["arms"]) > 0
        for metric in data["metrics"]:
            # Every window has ended 90 days later, so every assigned customer counts.
            assert sum(arm["n"] for arm in metric["arms"]) == n_total
            for comparison in metric["comparisons"]:
                assert comparison["planted_abs_lift"] is not None
        # Every treatment arm is planted to move the customer's response (card, onboarding,
        # offer) by several points.
        response = next(m for m in data["metrics"] if m["name"] in RESPONSES)
        assert all(c["planted_abs_lift"] > 0.05 for c in response["comparisons"])
