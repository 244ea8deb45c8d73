"""Concurrent provider calls for one batch: a pool of senders, a limiter per channel, and the
translation of each call's result into what the dispatcher records.

A channel's limiter is a :class:`TokenBucket` (this process's own pace) unless the dispatcher is
given another :class:`Limiter` for it, such as a rate limit shared by every worker
(:mod:`flows.throttle`, Prefect's global concurrency limits).

A sender never starts a call whose worst-case end (now + the channel's timeout + a margin) would
fall after the batch's lease: past the lease, another dispatcher may reconcile the message, and a
call still running then could be sent twice. Such a message is reported ``not_attempted``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from messaging.channels import Channel, ChannelError, OutgoingMessage, Receipt


class Limiter(Protocol):
    """Paces one channel's provider calls: ``acquire()`` returns when the next call may start.
    Called from several sender threads at once."""

    def acquire(self) -> None: ...


class LimiterError(Exception):
    """A limiter that cannot be used (e.g. a shared limit does not exist); the message says what
    to do. The dispatch stops: nothing more is sent and the unsent messages go back to pending."""


class TokenBucket:
    """At most ``rate`` acquisitions per second on average, bursts of up to ``burst``;
    thread-safe. ``acquire`` sleeps until a token is available."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate)
        self.tokens = self.capacity
        self.clock, self.sleep = clock, sleep
        self.stamp = clock()
        self.lock = threading.Lock()

    def acquire(self) -> None:
        """Take a token, sleeping until it is due: each caller reserves the next token (the
        balance may go negative), so waiters are served in order and never spin."""
        with self.lock:
            now = self.clock()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            self.tokens -= 1
            wait = -self.tokens / self.rate if self.tokens < 0 else 0.0
        if wait > 0:
            self.sleep(wait)


@dataclass(frozen=True)
class SendJob:
    message: OutgoingMessage
    attempt: int
    """The attempt's number (unique per message, recorded in ``send_attempts``)."""
    tries: int = 1
    """Provider attempts including this one (what the retry limit counts)."""
    note: str | None = None
    """The policy's note, kept as the sent message's reason (e.g. ``fallback:no_address``)."""


@dataclass(frozen=True)
class SendResult:
    job: SendJob
    receipt: Receipt | None = None
    error: ChannelError | None = None
    unexpected: str | None = None
    not_attempted: bool = False
    refused: str | None = None
    """Why the call never started when a limiter refused it (:class:`LimiterError`)."""


@dataclass(frozen=True)
class InFlightBatch:
    futures: list[Future[SendResult]]

    def results(self) -> list[SendResult]:
        """Every job's result, in the jobs' order (waits for the calls still running)."""
        return [future.result() for future in self.futures]


class Senders:
    """Runs a batch's provider calls on ``senders`` threads, rate-limited per channel: by
    ``limiters`` where given, else by a token bucket at ``rates``."""

    def __init__(
        self,
        channels: Mapping[str, Channel],
        senders: int = 4,
        rates: Mapping[str, float] | None = None,
        call_budget: float = 30.0,
        limiters: Mapping[str, Limiter] | None = None,
    ) -> None:
        self.channels = channels
        self.senders = max(1, senders)
        self.limiters: dict[str, Limiter] = {
            name: TokenBucket(rate) for name, rate in (rates or {}).items()
        }
        self.limiters.update(limiters or {})
        self.call_budget = call_budget
        self.pool = ThreadPoolExecutor(max_workers=self.senders, thread_name_prefix="retain-send")
        self.stop = threading.Event()

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def run(self, jobs: Sequence[SendJob], deadline: Callable[[], float]) -> list[SendResult]:
        """Send every job and wait; ``deadline()`` is the monotonic time after which no call may
        start."""
        return self.start(jobs, deadline).results()

    def start(self, jobs: Sequence[SendJob], deadline: Callable[[], float]) -> InFlightBatch:
        """Start sending ``jobs`` on the pool and return at once (the dispatcher decides the
        next batch meanwhile)."""
        return InFlightBatch([self.pool.submit(self._one, job, deadline) for job in jobs])

    def _one(self, job: SendJob, deadline: Callable[[], float]) -> SendResult:
        channel = job.message.channel
        if self.stop.is_set():
            return SendResult(job, not_attempted=True)
        limiter = self.limiters.get(channel)
        if limiter is not None:
            try:
                limiter.acquire()
            except LimiterError as error:
                self.stop.set()
                return SendResult(job, not_attempted=True, refused=str(error))
        if self.stop.is_set() or time.monotonic() + self.call_budget > deadline():
            return SendResult(job, not_attempted=True)
        try:
            return SendResult(job, receipt=self.channels[channel].send(job.message))
        except ChannelError as error:
            if error.fatal:
                self.stop.set()
            return SendResult(job, error=error)
        except Exception as error:  # the provider may have accepted it: reconcile, never resend
            return SendResult(job, unexpected=f"{type(error).__name__}: {error}")
