"""Two dispatchers at once on PostgreSQL, each in its own process, over the same 7,500 due messages
of 1,250 customers (three emails and three SMS each, a cap of two per channel and week): 5,000
distinct messages reach SendGrid and Twilio, each exactly once, the other 2,500 are skipped by the
cap, and no customer gets more than two of either, although both dispatchers decide the same
customers at the same time (row claiming with SKIP LOCKED, customers locked while deciding)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from models.dispatch_records import SendAttempt
from models.records import Message
from tests.concurrent_dispatch import CAP, STEPS, prepare
from tests.conftest import ON_POSTGRES
from tests.providers import FakeProviders

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not ON_POSTGRES, reason="row locking across dispatchers: PostgreSQL only"),
]

CUSTOMERS = 1_250
ROOT = Path(__file__).resolve().parent.parent


def _start(database_url: str, provider_url: str, worker: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.concurrent_dispatch", database_url, provider_url, worker],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_two_dispatchers_send_each_message_once_within_the_cap(
    database_url: str, engine: Engine
) -> None:
    prepare(database_url, CUSTOMERS, datetime.now(UTC))
    with FakeProviders() as fake:
        children = [_start(database_url, fake.url, f"dispatcher-{i}") for i in (1, 2)]
        try:
            for child in children:
                assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            for child in children:  # both start together
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.flush()
            outputs = [child.communicate(timeout=900)[0] for child in children]
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
        assert [child.returncode for child in children] == [0, 0], outputs
        summaries = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
        emails, texts = fake.accepted_ids("sendgrid"), fake.accepted_ids("twilio")

    assert all(s["error"] is None for s in summaries), summaries
    assert all(s["sent"] > 0 for s in summaries), summaries  # both dispatchers took part
    assert sum(s["sent"] for s in summaries) == 5_000
    # At the channels: 5,000 distinct message ids, none twice.
    assert len(emails) + len(texts) == 5_000
    assert len(set(emails) | set(texts)) == 5_000

    with engine.connect() as conn:
        rows = conn.execute(
            select(
                Message.id,  # type: ignore[call-overload]
                Message.customer_id,
                Message.channel,
                Message.status,
                Message.status_reason,
            )
        ).all()
        attempts = Counter(
            conn.execute(select(SendAttempt.message_id, SendAttempt.outcome)).all()  # type: ignore[call-overload]
        )
        workers = conn.execute(
            select(Message.customer_id, SendAttempt.worker).join(  # type: ignore[call-overload]
                SendAttempt, SendAttempt.message_id == Message.id
            )
        ).all()
    assert len(rows) == CUSTOMERS * len(STEPS)
    assert Counter((r.status, r.status_reason) for r in rows) == Counter(
        {("sent", None): 5_000, ("skipped", "frequency_cap"): 2_500}
    )
    sent = {str(r.id) for r in rows if r.status == "sent"}
    assert sent == set(emails) | set(texts)  # what the channels got is what is recorded sent
    per_customer = Counter((r.customer_id, r.channel) for r in rows if r.status == "sent")
    assert set(per_customer.values()) == {CAP}  # nobody over the cap, nobody short of it
    assert len(per_customer) == CUSTOMERS * 2
    assert attempts == Counter({(int(mid), "sent"): 1 for mid in sent})  # one attempt each
    # The cap was held across the two: many customers got sends from both dispatchers.
    by_customer: dict[int, set[str]] = {}
    for customer_id, worker in workers:
        by_customer.setdefault(customer_id, set()).add(worker)
    shared = sum(1 for seen in by_customer.values() if len(seen) == 2)
    assert shared >= CUSTOMERS // 10, shared
