"""The dispatcher: send the outbox messages that are due, each exactly once, even across crashes.

Per batch (see :mod:`models.outbox` for the transactions):

1. **claim** up to ``batch_size`` due messages under a lease (one statement);
2. **decide** in one transaction, at the moment of sending: load the customers, the experiments'
   *current* specs, the ``unless`` conditions and the recent sends (customers locked on
   PostgreSQL, so frequency caps hold across dispatchers); ask the policy about every message, of
   every arm (a control customer's shadow message is recorded ``withheld``: it would have been
   sent); render what will be sent; write skips, deferrals and failures, and mark the rest in
   flight with an attempt row, before any provider call;
3. **send** on ``senders`` threads, rate-limited per channel;
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
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Connection, Engine

from experiments.loader import SpecError, parse_spec
from experiments.spec import ExperimentSpec
from messaging.channels import Channel, OutgoingMessage, body_digest
from messaging.policy import PolicySettings, Recipient, decide
from messaging.recovery import reconcile_expired, release_claims
from messaging.render import (
    MessageContext,
    OfferContext,
    TemplateError,
    build_links,
    message_token,
    render,
)
from messaging.sending import InFlightBatch, Senders, SendJob, SendResult
from models import outbox
from models.outbox import Attempt, ClaimedMessage, CustomerFacts, ExperimentFacts, Outcome

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
    ``recheck_after``: when a message whose outcome is unknown is reconciled."""

    batch_size: int = 200
    senders: int = 4
    rates: Mapping[str, float] | None = None
    lease: timedelta = timedelta(minutes=5)
    call_budget: float = 30.0
    max_attempts: int = MAX_ATTEMPTS
    retry_base: timedelta = timedelta(minutes=1)
    recheck_after: timedelta = timedelta(minutes=2)


@dataclass(frozen=True)
class DispatchSummary:
    sent: int
    skipped: dict[str, int]
    deferred: int
    failed: int
    retried: int
    withheld: int = 0
    unknown: int = 0
    reconciled: int = 0
    error: str | None = None
    """Set when the dispatch could not finish: what went wrong and what to do."""

    @property
    def complete(self) -> bool:
        return self.error is None


@dataclass
class _Tally:
    sent: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    deferred: int = 0
    failed: int = 0
    retried: int = 0
    withheld: int = 0
    unknown: int = 0
    reconciled: int = 0
    error: str | None = None

    def summary(self) -> DispatchSummary:
        return DispatchSummary(
            self.sent,
            dict(sorted(self.skipped.items())),
            self.deferred,
            self.failed,
            self.retried,
            self.withheld,
            self.unknown,
            self.reconciled,
            self.error,
        )


@dataclass(frozen=True)
class _Experiment:
    facts: ExperimentFacts
    spec: ExperimentSpec | None
    settings: PolicySettings | None
    problem: str | None


def default_worker_id() -> str:
    """host-pid-random: unique per dispatcher call, readable in ``claimed_by``."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def settings_from_spec(spec: ExperimentSpec) -> PolicySettings:
    """The policy settings an experiment file declares under ``messaging``."""
    cap = spec.messaging.frequency_cap
    return PolicySettings(
        quiet_hours=spec.messaging.quiet_window(),
        frequency_cap_max=cap.max if cap else None,
        frequency_cap_period=cap.per if cap else None,
    )


class _Batch:
    """The decisions of one claimed batch, made inside its decision transaction."""

    def __init__(self, dispatcher: _Dispatcher, now: datetime) -> None:
        self.d = dispatcher
        self.now = now
        self.outcomes: list[Outcome] = []
        self.attempts: list[Attempt] = []
        self.jobs: list[SendJob] = []
        self.numbers: dict[int, int] = {}

    def decide_all(self, conn: Connection, batch: list[ClaimedMessage]) -> None:
        customers = outbox.load_customers(conn, {m.customer_id for m in batch})
        experiments = {
            eid: self.d.experiment(facts)
            for eid, facts in outbox.load_experiments(
                conn, {m.experiment_id for m in batch}
            ).items()
        }
        met = outbox.conditions_met(conn, [m.id for m in batch if m.unless_condition], self.now)
        periods = {
            e.settings.frequency_cap_period
            for e in experiments.values()
            if e.settings is not None and e.settings.frequency_cap_period is not None
        }
        self.numbers = outbox.last_attempts(conn, [m.id for m in batch if not m.shadow])
        ids = {m.customer_id for m in batch}
        recent = {p: outbox.recent_sends(conn, ids, self.now - p) for p in periods}
        here: Counter[tuple[int, str, int | None]] = Counter()
        for message in batch:
            experiment = experiments[message.experiment_id]
            customer = customers[message.customer_id]
            period = experiment.settings.frequency_cap_period if experiment.settings else None
            counts = {
                channel: (
                    recent[period].count(
                        customer.id, channel, message.experiment_id, message.shadow
                    )
                    if period is not None
                    else 0
                )
                + here[(customer.id, channel, None)]
                + (here[(customer.id, channel, message.experiment_id)] if message.shadow else 0)
                for channel in ("email", "sms")
            }
            used = self.one(message, customer, experiment, counts, message.id in met)
            if used is not None:
                here[(customer.id, used, message.experiment_id if message.shadow else None)] += 1

    def one(
        self,
        message: ClaimedMessage,
        customer: CustomerFacts,
        experiment: _Experiment,
        counts: dict[str, int],
        condition_met: bool,
    ) -> str | None:
        """Decide one message; returns the channel it will be (or would have been) sent on."""
        if experiment.settings is None:
            self.fail(message, "no_valid_spec", experiment.problem or "no policy settings")
            return None
        step = None
        if experiment.spec is not None:
            try:
                step = experiment.spec.step_for(message.arm, message.step_index, message.shadow)
            except KeyError:
                step = None
        fallback = step.fallback_target() if step is not None else None
        recipient = Recipient(
            customer_id=customer.id,
            email=customer.email,
            phone=customer.phone,
            timezone=customer.timezone,
            email_consent=customer.email_consent,
            sms_consent=customer.sms_consent,
            suppressed_channels=customer.suppressed_channels,
            country=customer.country,
        )
        decision = decide(
            message.channel,
            recipient,
            self.now,
            experiment.settings,
            counts,
            condition_met,
            fallback=fallback[0] if fallback else None,
            stopped=experiment.facts.status == "stopped",
        )
        if decision.action == "skip":
            self.outcome(message, "skipped", decision.reason or "skipped")
            self.d.tally.skipped[decision.reason or "skipped"] += 1
            return None
        if decision.action == "defer":
            self.outcome(message, "pending", decision.reason, scheduled_at=decision.not_before)
            self.d.tally.deferred += 1
            return None
        channel, address = decision.channel or message.channel, decision.address or ""
        if message.shadow:
            self.outcome(
                message, "withheld", decision.reason or "control", channel=channel, sent_at=self.now
            )
            self.d.tally.withheld += 1
            return channel
        if channel not in self.d.channels:  # a fallback channel this run has no sender for
            later = self.now + timedelta(hours=1)
            self.outcome(message, "pending", f"no_channel:{channel}", scheduled_at=later)
            return None
        template = fallback[1] if fallback and channel != message.channel else message.template
        try:
            context = _context(message, customer, experiment)
            rendered = render(channel, template, customer.locale, context)
        except TemplateError as error:
            self.fail(message, "template_error", str(error))
            return None
        attempt = max(message.attempts, self.numbers.get(message.id, 0)) + 1
        self.attempts.append(
            Attempt(message.id, attempt, channel, address, body_digest(rendered.text))
        )
        outgoing = OutgoingMessage(
            idempotency_key=message.idempotency_key,
            channel=channel,
            to=address,
            rendered=rendered,
            customer_id=message.customer_id,
            experiment_key=experiment.facts.key,
            arm=message.arm,
            message_id=message.id,
            unsubscribe_url=context.links.unsubscribe_url,
        )
        self.jobs.append(SendJob(outgoing, attempt, message.attempts + 1, decision.reason))
        return channel

    def outcome(
        self, message: ClaimedMessage, status: str, reason: str | None, **values: object
    ) -> None:
        self.outcomes.append(Outcome(message.id, status, reason, **values))  # type: ignore[arg-type]

    def fail(self, message: ClaimedMessage, reason: str, error: str) -> None:
        self.outcome(message, "failed", reason, error=error)
        self.d.tally.failed += 1
        logger.warning(
            "failed key=%s customer_id=%s (%s): %s",
            message.idempotency_key,
            message.customer_id,
            reason,
            error,
        )


@dataclass(frozen=True)
class _Flying:
    decided: _Batch
    calls: InFlightBatch


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
        self.experiments: dict[int, _Experiment] = {}
        self.tally = _Tally()

    def experiment(self, facts: ExperimentFacts) -> _Experiment:
        cached = self.experiments.get(facts.id)
        if cached is not None and cached.facts == facts:
            return cached
        spec, problem = None, None
        if facts.spec_yaml is None:
            problem = f"experiment {facts.key!r} has no current spec snapshot"
        else:
            try:
                spec = parse_spec(facts.spec_yaml, f"<snapshot of experiment {facts.key}>").spec
            except SpecError as error:
                problem = f"the spec snapshot of experiment {facts.key!r} is invalid: {error}"
        settings: PolicySettings | None = None
        if self.settings_for is not None:
            settings = self.settings_for(facts.id)
        elif spec is not None:
            settings = settings_from_spec(spec)
        result = _Experiment(facts, spec, settings, problem if settings is None else None)
        self.experiments[facts.id] = result
        return result

    def decide(self, batch: list[ClaimedMessage], now: datetime) -> _Batch:
        """The decision transaction of one claimed batch: afterwards every message is settled
        (skipped, deferred, withheld, failed) or in flight with its attempt recorded."""
        lease_until = now + self.options.lease
        decided = _Batch(self, now)
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

    def send(self, decided: _Batch, senders: Senders) -> _Flying:
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

    def abandon(self, decided: _Batch) -> None:
        """Put a decided batch whose calls never started back to pending."""
        self.record([SendResult(job, not_attempted=True) for job in decided.jobs], decided.now)

    def record(self, results: list[SendResult], now: datetime) -> bool:
        outcomes: list[Outcome] = []
        finished: list[tuple[int, int, str, str | None, str | None]] = []
        suppress: list[tuple[int, str, str, str]] = []
        fatal: str | None = None
        for result in results:
            message = result.job.message
            mid, attempt = message.message_id, result.job.attempt
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
        return True


def _context(
    message: ClaimedMessage, customer: CustomerFacts, experiment: _Experiment
) -> MessageContext:
    offer = None
    if experiment.spec is not None:
        try:
            arm_offer = experiment.spec.arm(message.arm).offer
        except KeyError:
            arm_offer = None
        if arm_offer is not None:
            offer = OfferContext(arm_offer.kind, arm_offer.percent, arm_offer.months)
    card = customer.card
    return MessageContext(
        links=build_links(customer.external_id, message_token(message.idempotency_key)),
        first_name=customer.name.split()[0] if customer.name.strip() else None,
        name=customer.name or None,
        plan=customer.plan,
        card_brand=card.brand if card else None,
        card_last4=card.last4 if card else None,
        card_exp_month=card.exp_month if card else None,
        card_exp_year=card.exp_year if card else None,
        offer=offer,
    )


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
    senders = Senders(channels, opts.senders, rates, opts.call_budget)
    batch: list[ClaimedMessage] = []
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
    logger.info(
        "dispatch by %s: sent=%d withheld=%d skipped=%s deferred=%d failed=%d retried=%d "
        "unknown=%d reconciled=%d error=%s",
        worker,
        summary.sent,
        summary.withheld,
        summary.skipped,
        summary.deferred,
        summary.failed,
        summary.retried,
        summary.unknown,
        summary.reconciled,
        summary.error,
    )
    return summary
