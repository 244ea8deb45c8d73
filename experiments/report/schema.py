"""The JSON Schema of ``report.json``, generated from the pydantic report models.

The committed copy, ``experiments/report/report.schema.json``, is what consumers validate against;
a test fails when it and the models drift apart. Regenerate it with
``python -m experiments.report.schema``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from experiments.report.models import Report

SCHEMA_PATH = Path(__file__).with_name("report.schema.json")
SCHEMA_ID = "https://github.com/retain/retain/report.schema.json"


def report_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the report as serialised by ``write_report``."""
    schema = Report.model_json_schema(mode="serialization")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


def schema_text() -> str:
    """The schema as committed: indented, keys in generation order, a final newline."""
    return json.dumps(report_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":  # pragma: no cover
    SCHEMA_PATH.write_text(schema_text(), encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")
