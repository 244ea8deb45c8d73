"""The committed JSON Schema of report.json equals the one generated from the report models, and
it accepts real reports and rejects broken ones."""

from __future__ import annotations

import json
from datetime import timedelta

import jsonschema
import pytest

from experiments.report.enrich import HoldoutInputs, ReportContext, enrich
from experiments.report.schema import SCHEMA_PATH, schema_text
from experiments.stats import SampleStats
from tests.test_report import AS_OF, binary, make_report
from tests.test_report_sections import rich_report


def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_committed_schema_is_the_generated_one() -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == schema_text(), (
        "report.schema.json is stale: run python -m experiments.report.schema"
    )


def test_reports_validate_with_and_without_the_added_sections() -> None:
    context = ReportContext(
        as_of=AS_OF,
        assigned={"control": 2_000, "email": 2_000, "email_sms": 2_000},
        mde=2.0,
        inflow_per_day=30.0,
        last_import_at=AS_OF - timedelta(hours=2),
        holdout=HoldoutInputs(
            treated_arms=["email", "email_sms"],
            holdout_arm="holdout",
            stats={"card_updated_14d": (SampleStats(4_000, 900.0, 900.0), binary(40, 210))},
        ),
    )
    enriched = enrich(rich_report(), context)
    assert enriched.holdout is not None and enriched.holdout.metrics[0].ci is not None
    for report in (make_report(), rich_report(), enriched):
        data = json.loads(report.model_dump_json())
        assert list(validator().iter_errors(data)) == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("verdict", "decision"), "maybe"),
        (("trust", "checks", 0, "status"), "blue"),
        (("metrics", 0, "comparisons", 0, "abs_ci"), [0.1]),
        (("arms", 0, "n"), "many"),
    ],
)
def test_schema_rejects_a_broken_report(path: tuple[object, ...], value: object) -> None:
    context = ReportContext(as_of=AS_OF, assigned={"control": 2_000, "email": 2_000})
    data = json.loads(enrich(rich_report(), context).model_dump_json())
    node = data
    for key in path[:-1]:
        node = node[key]  # type: ignore[index]
    node[path[-1]] = value  # type: ignore[index]
    assert list(validator().iter_errors(data)), f"{path} = {value!r} was accepted"
