"""The bulk path of the merge (a first import of many rows): the target's plain indexes, foreign
keys and unique id index are dropped for the insert and built again, with the same result as the
row-by-row upsert and the same constraints afterwards. The threshold is lowered to the test's size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from models.imports import merge
from tests import test_imports

TABLES = ("customers", "subscriptions", "invoices", "payment_methods")


def schema(engine: Engine) -> dict[str, Any]:
    inspector = inspect(engine)
    return {
        name: (
            sorted(
                (i["name"], tuple(i["column_names"]), i["unique"])
                for i in inspector.get_indexes(name)
            ),
            sorted(
                (k["name"], tuple(k["constrained_columns"]))
                for k in inspector.get_foreign_keys(name)
            ),
            sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(name)),
        )
        for name in TABLES
    }


def test_bulk_first_import_equals_the_upsert_and_keeps_every_constraint(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = schema(engine)
    deferred: list[str] = []
    original = merge._worth_deferring

    def spy(connection: Any, target: Any, new: int) -> bool:
        worth = original(connection, target, new)
        if worth:
            deferred.append(target.name)
        return worth

    monkeypatch.setattr(merge, "DEFER_INDEXES_ROWS", 1)
    monkeypatch.setattr(merge, "_worth_deferring", spy)
    # The first import of every file takes the bulk path, the re-import the upsert; the test's
    # own assertions (values, parents, re-import changes nothing) hold for both.
    test_imports.test_first_import_then_reimport_changes_nothing(engine, tmp_path)
    assert deferred == ["customers", "subscriptions", "invoices", "payment_methods"]
    assert schema(engine) == before

    with engine.begin() as connection:
        customer = connection.exec_driver_sql("SELECT id FROM customers LIMIT 1").scalar_one()
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO invoices (external_id, customer_id, amount_cents, status, attempts, "
            f"due_at) VALUES ('in_0000', {customer}, 1, 'paid', 1, '2026-01-01')"
        )
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO invoices (external_id, customer_id, amount_cents, status, attempts, "
            "due_at) VALUES ('in_new', 987654, 1, 'paid', 1, '2026-01-01')"
        )
