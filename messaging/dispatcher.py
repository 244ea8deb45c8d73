"""The dispatcher: send the outbox messages that are due, each exactly once, even across crashes.

Per batch (see :mod:`models.outbox` for the transactions):

1. **claim** up to ``batch_size`` due messages under a lease (one statement);
2. **decide** in one transaction, at the moment of sending: load the customers, the experiments'
   *current* specs, the ``unless`` conditions and the recent sends (customers locked on
   PostgreSQL, so frequency caps hold across dispatchers); ask the policy about every message, of
   every arm (a control customer's shadow message is recorded ``withheld``: it would have been
   sent); render what will be sent; write skips, deferrals and failures, and mark the rest in
   flight with an attempt row, before any provider call;
3. **send** on ``senders`` threads, rate-limited per channel: by ``DispatchOptions.limiters``
   where given (a rate shared by every dispatcher, e.g. a Prefect global rate limit, see
   :mod:`flows.throttle`), else by this process's token bucket at ``DispatchOptions.rates``;
4. **record** the results in one transaction: sent, retry later (exponential backoff with jitter,
   at least the provider's ``Retry-After``), failed (with the provider's code, plus a suppression
   where the error means so), or outcome unknown (a timeout: reconciled, never blindly resent).

Before the first batch, messages whose worker died in flight (lease expired) are reconciled with
the provider (:mod:`messaging.recovery`). Any exception inside a batch ends the run: the batch's
messages not yet in flight go back to pending, and the summary says the dispatch is incomplete.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from messaging.channels import Channel
from messaging.decisions import BatchDecisions, DispatchSummary, Experiments, Tally
from messaging.policy import PolicySettings
from messaging.recovery import reconcile_expired, release_claims
from messaging.sending import InFlightBatch, Limiter, Senders, SendResult
from models import outbox
from models.outbox import ClaimedMessage, Outcome

logger = logging.getLogger("retain.messaging")

MAX_ATTEMPTS = 5
"""Provider attempts before a transiently failing message is marked failed."""

_jitter = random.Random()


def retry_delay(attempts: int, base: timedelta = timedelta(minutes=1)) -> timedelta:
    """Backoff after the ``attempts``-th failed attempt: ``base`` doubled per attempt (1, 2, 4 ...
    minutes by default, at most 60 times ``base``), times a jitter factor in [0.5, 1)."""
    exponent = min(max(attempts - 1, 0), 6)
    return min(base * 2**exponent, base * 60) * (0.5 + _jitter.random() / 2)


@dataclass(frozen=True)
class DispatchOptions:
    """How a dispatcher runs. ``lease``: how long a claim is held before others may take it over
    (it must exceed one batch's send phase); ``call_budget``: the longest one provider call may
    take (its timeout plus a margin): no call starts closer than that to the lease's end;
    ``recheck_after``: when a message whose outcome is unknown is reconciled; ``rates``: sends
    per second per channel for this process's own token bucket; ``limiters``: a channel's
    limiter instead of that bucket (a rate shared across dispatchers)."""

    batch_size: int = 200
    senders: int = 4
    rates: Mapping[str, float] | None = None
    limiters: Mapping[str, Limiter] | None = None
    lease: timedelta = timedelta(minutes=5)
    call_budget: float = 30.0
    max_attempts: int = MAX_ATTEMPTS
    retry_base: timedelta = timedelta(minutes=1)
    recheck_after: timedelta = timedelta(minutes=2)


def default_worker_id() -> str:
    """host-pid-random: unique per dispatcher call, readable in ``claimed_by``."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class _Flying:
    decided: BatchDecisions
    calls: InFlightBatch

    def customers(self) -> set[int]:
        return {job.message.customer_id for job in self.decided.jobs}


class _Dispatcher:
    def __init__(
        self,
        engine: Engine,
        channels: Mapping[str, Channel],
        worker_id: str,
        settings_for: Callable[[int], PolicySettings] | None,
        options: DispatchOptions,
    ) -> None:
        self.engine = engine
        self.channels = channels
        self.worker = worker_id
        self.settings_for = settings_for
        self.options = options
        self.experiments = Experiments(settings_for)
        self.tally = Tally()

    def decide(self, batch: list[ClaimedMessage], now: datetime) -> BatchDecisions:
        """The decision transaction of one claimed batch: afterwards every message is settled
        (skipped, deferred, withheld, failed) or in flight with its attempt recorded."""
        lease_until = now + self.options.lease
        decided = BatchDecisions(now, set(self.channels), self.experiments, self.tally)
        with self.engine.begin() as conn:
            mine = outbox.begin_decisions(
                conn,
                self.worker,
                [m.id for m in batch],
                {m.customer_id for m in batch},
                lease_until,
            )
            held = [m for m in batch if m.id in mine]
            decided.decide_all(conn, held)
            outbox.write_outcomes(conn, self.worker, now, decided.outcomes)
            outbox.start_attempts(conn, self.worker, now, lease_until, decided.attempts)
        return decided

    def send(self, decided: BatchDecisions, senders: Senders) -> _Flying:
        """Start the batch's provider calls; no call starts after the lease (minus one call)."""
        deadline = time.monotonic() + self.options.lease.total_seconds()
        return _Flying(decided, senders.start(decided.jobs, lambda: deadline))

    def finish(self, flying: _Flying) -> bool:
        """Wait for a batch's calls and record them; False if the run must stop."""
        results = flying.calls.results()
        progressed = self.record(results, flying.decided.now)
        if results and all(r.not_attempted for r in results) and self.tally.error is None:
            self.tally.error = (
                "no provider call could start within the claim's lease; raise the lease "
                "(RETAIN_LEASE_SECONDS) or lower the batch size"
            )
            return False
        return progressed

    def abandon(self, decided: BatchDecisions) -> None:
        """Put a decided batch whose calls never started back to pending."""
        self.record([SendResult(job, not_attempted=True) for job in decided.jobs], decided.now)

    def record(self, results: list[SendResult], now: datetime) -> bool:
        outcomes: list[Outcome] = []
        finished: list[tuple[int, int, str, str | None, str | None]] = []
        suppress: list[tuple[int, str, str, str]] = []
        fatal: str | None = None
        refused: str | None = None
        for result in results:
            message = result.job.message
            mid, attempt = message.message_id, result.job.attempt
            refused = refused or result.refused
            if result.receipt is not None:
                receipt = result.receipt
                outcomes.append(
                    Outcome(
                        mid,
                        "sent",
                        result.job.note,
                        sent_at=now,
                        provider=receipt.provider,
                        provider_message_id=receipt.provider_message_id,
                    )
                )
                finished.append((mid, attempt, "sent", receipt.provider_message_id, None))
                self.tally.sent += 1
                continue
            if result.not_attempted:
                outcomes.append(Outcome(mid, "pending", "not_attempted", attempts_delta=-1))
                finished.append((mid, attempt, "not_attempted", None, None))
                continue
            if result.unexpected is not None or (result.error and result.error.unknown_outcome):
                text = result.unexpected or str(result.error)
                outcomes.append(
                    Outcome(
                        mid,
                        "sending",
                        outbox.IN_FLIGHT,
                        error=text,
                        lease_until=now + self.options.recheck_after,
                    )
                )
                finished.append((mid, attempt, "unknown", None, None))
                self.tally.unknown += 1
                logger.warning(
                    "outcome unknown for key=%s, reconciled later: %s",
                    message.idempotency_key,
                    text,
                )
                continue
            error = result.error
            assert error is not None
            code = error.code
            if error.fatal:
                fatal = str(error)
                outcomes.append(
                    Outcome(mid, "pending", "channel_error", error=str(error), attempts_delta=-1)
                )
                finished.append((mid, attempt, "not_attempted", None, code))
            elif error.permanent or result.job.tries >= self.options.max_attempts:
                reason = "permanent_error" if error.permanent else "gave_up"
                text = (
                    str(error)
                    if error.permanent
                    else f"gave up after {result.job.tries} attempts; last error: {error}"
                )
                outcomes.append(
                    Outcome(mid, "failed", f"{reason}:{code}" if code else reason, error=text)
                )
                finished.append((mid, attempt, "failed", None, code))
                self.tally.failed += 1
                if error.suppress:
                    suppress.append(
                        (
                            message.customer_id,
                            message.channel,
                            error.suppress,
                            f"{self.channels[message.channel].provider}:{code}",
                        )
                    )
                logger.warning("failed key=%s: %s", message.idempotency_key, text)
            else:
                delay = retry_delay(result.job.tries, self.options.retry_base)
                if error.retry_after is not None:
                    delay = max(delay, timedelta(seconds=error.retry_after))
                outcomes.append(
                    Outcome(
                        mid,
                        "pending",
                        "transient_error",
                        scheduled_at=now + delay,
                        error=str(error),
                    )
                )
                finished.append((mid, attempt, "retry", None, code))
                self.tally.retried += 1
        with self.engine.begin() as conn:
            outbox.write_outcomes(conn, self.worker, now, outcomes)
            outbox.finish_attempts(conn, now, finished)
            outbox.add_suppressions(conn, now, suppress)
        if fatal is not None:
            self.tally.error = f"a provider refused our credentials: {fatal}"
            return False
        if refused is not None:
            self.tally.error = refused
            return False
        return True


def dispatch_due(
    engine: Engine,
    now: datetime | None,
    channels: Mapping[str, Channel],
    *,
    worker_id: str | None = None,
    batch_size: int | None = None,
    settings_for: Callable[[int], PolicySettings] | None = None,
    options: DispatchOptions | None = None,
    clock: Callable[[], datetime] | None = None,
) -> DispatchSummary:
    """Send every outbox message due on the given ``channels`` (keyed by channel name, e.g.
    ``{"email": ..., "sms": ...}``), exactly once; safe to run concurrently from several threads,
    processes or machines. ``now`` fixes the time for the whole run (tests, ``--as-of``); with
    ``now=None`` each batch is judged at ``clock()`` (default: the current UTC time), i.e. when
    its messages are sent. ``settings_for(experiment_id)`` overrides an experiment's policy
    settings (by default from its current spec snapshot).

    Never raises for a failed batch: the summary's ``error`` says why the run stopped (the
    batch's messages not yet handed to a provider are put back first)."""
    if now is not None and now.tzinfo is None:
        raise ValueError("dispatch_due() needs a timezone-aware 'now' (UTC)")
    opts = options or DispatchOptions()
    if batch_size is not None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        opts = DispatchOptions(**{**opts.__dict__, "batch_size": batch_size})
    if opts.call_budget >= opts.lease.total_seconds():
        raise ValueError("the lease must be longer than one provider call (call_budget)")

    def tick() -> datetime:
        if now is not None:
            return now
        return clock() if clock is not None else datetime.now(UTC)

    worker = worker_id or default_worker_id()
    dispatcher = _Dispatcher(engine, channels, worker, settings_for, opts)
    rates = {k: v for k, v in (opts.rates or {}).items() if k in channels}
    limiters = {k: v for k, v in (opts.limiters or {}).items() if k in channels}
    senders = Senders(channels, opts.senders, rates, opts.call_budget, limiters)
    batch: list[ClaimedMessage] = []
    held: list[int] = []
    flying: _Flying | None = None
    try:
        dispatcher.tally.reconciled = reconcile_expired(
            engine, tick(), worker, channels, opts.lease
        )
        while True:
            # Pipelined: the next batch is claimed and decided while the previous one is sent.
            moment = tick()
            batch = outbox.claim(
                engine, moment, worker, opts.batch_size, list(channels), moment + opts.lease
            )
            # A customer with a message in the batch still being sent waits for its result (an
            # earlier message's outcome can change the decision about a later one).
            busy = flying.customers() if flying is not None else set()
            held = [m.id for m in batch if m.customer_id in busy]
            if held:
                release_claims(engine, worker, held)
                batch = [m for m in batch if m.customer_id not in busy]
            decided = dispatcher.decide(batch, moment) if batch else None
            batch = []
            if flying is not None:
                done, flying = flying, None
                if not dispatcher.finish(done):
                    if decided is not None:
                        dispatcher.abandon(decided)
                    break
            if decided is not None:
                flying = dispatcher.send(decided, senders)
                continue
            if held:
                continue  # due again now that the batch they waited for is recorded
            # Nothing due. Leases may have lapsed meanwhile (another worker died): settle those
            # too, and send what turned out not to have been sent.
            settled = reconcile_expired(engine, tick(), worker, channels, opts.lease)
            dispatcher.tally.reconciled += settled
            if not settled:
                break
    except Exception as error:
        logger.exception("dispatch by %s stopped", worker)
        released = 0
        try:
            released = release_claims(engine, worker, [m.id for m in batch])
            if flying is not None:
                dispatcher.finish(flying)
        except Exception:
            logger.exception("could not settle the last batches; their leases will expire")
        dispatcher.tally.error = (
            f"{type(error).__name__}: {error}; {released} claimed message(s) put back, messages in "
            "flight are reconciled by the next run (or `retain outbox recover`)"
        )
    finally:
        senders.close()
    summary = dispatcher.tally.summary()
    logger.info("dispatch by %s: %s error=%s", worker, summary.counts(), summary.error)
    return summary
