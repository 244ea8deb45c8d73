"""The report of a fixed, seeded experiment, end to end from the database, against a golden file.

Regenerate after an intended change with ``RETAIN_UPDATE_GOLDEN=1 pytest tests/test_report_golden.py``
and review the diff: it is what a marketer will read.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import Engine

from experiments.report import render_markdown
from models.evaluation import evaluate
from models.experiments import registered_spec
from tests.report_fixture import AS_OF, COMPUTED_AT, seed_experiment

GOLDEN = Path(__file__).parent / "golden" / "report.md"


def test_report_md_matches_the_golden_file(engine: Engine) -> None:
    seeded = seed_experiment(engine)
    experiment_id, loaded = registered_spec(engine, "card-reminder-golden")
    assert experiment_id == seeded.experiment_id
    report = evaluate(engine, experiment_id, loaded.spec, AS_OF, COMPUTED_AT)
    text = render_markdown(report)
    if os.environ.get("RETAIN_UPDATE_GOLDEN"):
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")
