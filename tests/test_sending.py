"""The senders: a token bucket per channel (on a simulated clock) and the pool's concurrency."""

from __future__ import annotations

import itertools
import threading
import time

from messaging.channels import OutgoingMessage, Receipt, SendRecord
from messaging.render import RenderedMessage
from messaging.sending import Senders, SendJob, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_token_bucket_allows_the_rate_after_a_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, burst=5, clock=clock, sleep=clock.sleep)
    stamps = []
    for _ in range(25):
        bucket.acquire()
        stamps.append(clock.now)
    assert stamps[:5] == [0.0] * 5  # the burst goes at once
    # Then one every 0.1 s: 20 more take 2 simulated seconds.
    assert abs(stamps[-1] - 2.0) < 1e-9
    gaps = [b - a for a, b in itertools.pairwise(stamps[5:])]
    assert all(abs(g - 0.1) < 1e-9 for g in gaps)


def job(i: int) -> SendJob:
    rendered = RenderedMessage("email", "s", "t\n", None, None)
    message = OutgoingMessage(f"k{i}", "email", "a@b.example", rendered, 1, "e", "a", i)
    return SendJob(message, 1)


class Concurrent:
    """Counts how many sends run at the same time."""

    provider = "concurrent"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0

    def send(self, message: OutgoingMessage) -> Receipt:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.02)  # keeps calls overlapping; no assertion on time
        with self.lock:
            self.active -= 1
        return Receipt(self.provider, message.idempotency_key)

    def find_sent(self, record: SendRecord) -> Receipt | None:
        return None


def test_senders_run_calls_concurrently_up_to_the_limit() -> None:
    for senders in (1, 3):
        channel = Concurrent()
        pool = Senders({"email": channel}, senders=senders)
        try:
            results = pool.run([job(i) for i in range(12)], lambda: time.monotonic() + 3600)
        finally:
            pool.close()
        assert [r.receipt.provider_message_id for r in results if r.receipt] == [
            f"k{i}" for i in range(12)
        ]
        assert channel.peak == senders


def test_no_call_starts_past_the_lease() -> None:
    channel = Concurrent()
    pool = Senders({"email": channel}, senders=2, call_budget=30.0)
    try:
        results = pool.run([job(i) for i in range(3)], lambda: time.monotonic() + 10)
    finally:
        pool.close()
    assert all(r.not_attempted for r in results) and channel.peak == 0
