"""The scheduled sync as a real Prefect flow run against the local Stripe-like server, and its
hourly deployment."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from models.customer_data import ActivityEvent, Customer
from models.imports.stripe_sync import read_cursors
from tests import stripe_fixtures as sf
from tests.fake_stripe import FakeStripe, running
from tests.stripe_exports import write_csv

pytestmark = [pytest.mark.slow, pytest.mark.prefect]
KEY = "rk_test_flow_key_0001"


def test_sync_flow_runs_stripe_then_files(
    prefect_api: None,
    engine: Engine,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.sync import FileImport, sync_customers

    fake = FakeStripe(KEY)
    for i in (1, 2):
        fake.add("customers", sf.customer(i, sf.T0 + i))
    events = write_csv(
        tmp_path / "events.csv",
        ["customer_id", "timestamp", "event", "value"],
        [["cus_1", "2026-05-01T09:00:00Z", "login", 1], ["cus_2", sf.T0, "report_export", 2]],
    )
    with running(fake):
        monkeypatch.setenv("RETAIN_STRIPE_API_KEY", KEY)
        monkeypatch.setenv("RETAIN_STRIPE_API_BASE", fake.base)
        summaries = sync_customers(
            files=[FileImport(path=str(events), mapping="product-events")],
        )
    assert [(s.entity, s.inserted) for s in summaries] == [("customers", 2), ("activity_events", 2)]
    assert [path for _, path, _ in fake.requests][:4] == [
        "/v1/customers",
        "/v1/subscriptions",
        "/v1/invoices",
        "/v1/customers/cus_2/payment_methods",
    ]
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(Customer)).scalar_one() == 2
        assert connection.execute(select(func.count()).select_from(ActivityEvent)).scalar_one() == 2
    assert read_cursors(engine)["customers"] == sf.T0 + 2


def test_hourly_deployment() -> None:
    from flows.sync import FileImport, hourly_deployment

    deployment = hourly_deployment(
        files=[FileImport(path="/data/events.parquet", mapping="product-events")]
    )
    assert deployment.name == "hourly" and deployment.flow_name == "sync-customers"
    assert [s.schedule.cron for s in deployment.schedules] == ["0 * * * *"]
    assert deployment.parameters == {
        "files": [{"path": "/data/events.parquet", "mapping": "product-events"}]
    }


def test_the_key_comes_from_settings_or_a_prefect_secret_block(prefect_api: None) -> None:
    from prefect.blocks.system import Secret

    from models.imports.settings import ImportSettings
    from models.imports.stripe_sync import StripeKeyMissing, api_key

    Secret(value="rk_test_from_block").save("retain-stripe-key-test", overwrite=True)
    from_block = ImportSettings(stripe_api_key=None, stripe_secret_block="retain-stripe-key-test")
    assert api_key(from_block) == "rk_test_from_block"
    both = ImportSettings(
        stripe_api_key="rk_test_env", stripe_secret_block="retain-stripe-key-test"
    )
    assert api_key(both) == "rk_test_env"
    assert "rk_test_env" not in repr(both)  # a SecretStr never prints
    with pytest.raises(StripeKeyMissing, match="RETAIN_STRIPE_API_KEY"):
        api_key(ImportSettings(stripe_api_key=None, stripe_secret_block=None))
