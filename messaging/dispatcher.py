"""The dispatcher: send the outbox messages that are due, each at most once.

One call works through the due messages in batches: claim a batch (see :mod:`models.outbox`), load
what it needs in a handful of queries (customers, suppressions, recent sends, ``unless``
conditions, experiment specs), then for each message ask the policy, render, send through the
message's channel and commit the new state at once, so a crash loses at most the message in flight.

Outcomes: ``sent``; ``skipped`` with the policy's reason (also ``experiment_stopped``); deferred
back to ``pending`` for quiet hours; a transient :class:`ChannelError` goes back to ``pending`` with
exponential backoff and becomes ``failed`` after :data:`MAX_ATTEMPTS`; a permanent one, a template
error or an experiment without a valid spec snapshot is ``failed`` with the reason in
``last_error``. An unexpected exception from a channel leaves the row ``sending`` (the provider may
have accepted it, and providers take no idempotency key) for an operator: see
:func:`models.outbox.stuck_messages`. Messages on channels missing from ``channels`` stay pending.

Frequency caps count sends per customer and channel across experiments; two dispatchers running at
the same moment may each send one message to the same customer and so exceed a cap by one.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from experiments.loader import SpecError, parse_spec
from experiments.spec import ExperimentSpec
from messaging.channels import Channel, ChannelError, OutgoingMessage
from messaging.policy import PolicySettings, Recipient, decide, zone_of
from messaging.render import (
    MessageContext,
    OfferContext,
    RenderedMessage,
    TemplateError,
    build_links,
    message_token,
    render,
)
from models import outbox
from models.outbox import ClaimedMessage, CustomerFacts, ExperimentFacts

logger = logging.getLogger("retain.messaging")

MAX_ATTEMPTS = 5
"""Provider attempts before a transiently failing message is marked failed."""


def retry_delay(attempts: int) -> timedelta:
    """Backoff after the ``attempts``-th failed attempt: 1, 2, 4, 8 ... minutes, at most an hour."""
    return timedelta(minutes=min(2 ** max(attempts - 1, 0), 60))


@dataclass(frozen=True)
class DispatchSummary:
    sent: int
    skipped: dict[str, int]
    deferred: int
    failed: int
    retried: int


@dataclass
class _Tally:
    sent: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    deferred: int = 0
    failed: int = 0
    retried: int = 0

    def summary(self) -> DispatchSummary:
        return DispatchSummary(
            self.sent, dict(sorted(self.skipped.items())), self.deferred, self.failed, self.retried
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


class _Dispatcher:
    def __init__(
        self,
        engine: Engine,
        now: datetime,
        channels: Mapping[str, Channel],
        worker_id: str,
        settings_for: Callable[[int], PolicySettings] | None,
    ) -> None:
        self.engine = engine
        self.now = now
        self.channels = channels
        self.worker = worker_id
        self.settings_for = settings_for
        self.experiments: dict[int, _Experiment] = {}
        self.tally = _Tally()

    # -- batch facts --

    def _experiment(self, facts: ExperimentFacts) -> _Experiment:
        cached = self.experiments.get(facts.id)
        if cached is not None:
            return cached
        spec, problem = None, None
        if facts.spec_yaml is None:
            problem = f"experiment {facts.key!r} has no spec snapshot"
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

    def run_batch(self, batch: list[ClaimedMessage]) -> None:
        customer_ids = {m.customer_id for m in batch}
        with self.engine.connect() as conn:
            customers = outbox.load_customers(conn, customer_ids)
            experiments = {
                eid: self._experiment(facts)
                for eid, facts in outbox.load_experiments(
                    conn, {m.experiment_id for m in batch}
                ).items()
            }
            met = outbox.conditions_met(conn, [m.id for m in batch if m.unless_condition], self.now)
            periods = {
                e.settings.frequency_cap_period
                for e in experiments.values()
                if e.settings is not None
                and e.settings.frequency_cap_max is not None
                and e.settings.frequency_cap_period is not None
            }
            counts = {p: outbox.sent_counts(conn, customer_ids, self.now - p) for p in periods}
        sent_here: Counter[tuple[int, str]] = Counter()
        for message in batch:
            experiment = experiments[message.experiment_id]
            customer = customers[message.customer_id]
            settings = experiment.settings
            period = settings.frequency_cap_period if settings else None
            window = counts.get(period, {}) if period is not None else {}
            recent = window.get((message.customer_id, message.channel), 0)
            if self._handle(
                message,
                customer,
                experiment,
                recent + sent_here[(customer.id, message.channel)],
                message.id in met,
            ):
                sent_here[(customer.id, message.channel)] += 1

    # -- one message --

    def _handle(
        self,
        message: ClaimedMessage,
        customer: CustomerFacts,
        experiment: _Experiment,
        sent_in_window: int,
        condition_met: bool,
    ) -> bool:
        """Process one claimed message; True if it was sent."""
        if experiment.settings is None:
            self._fail(message, "no_valid_spec", experiment.problem or "no policy settings")
            return False
        if experiment.facts.status == "stopped":
            self._skip(message, "experiment_stopped")
            return False
        recipient = Recipient(
            customer_id=customer.id,
            email=customer.email,
            phone=customer.phone,
            timezone=customer.timezone,
            email_consent=customer.email_consent,
            sms_consent=customer.sms_consent,
            suppressed_channels=customer.suppressed_channels,
        )
        decision = decide(
            message.channel,
            recipient,
            self.now,
            experiment.settings,
            sent_in_window,
            condition_met,
        )
        if not zone_of(customer.timezone)[1]:
            logger.warning(
                "customer_id=%s has unknown time zone %r; quiet hours use UTC",
                customer.id,
                customer.timezone,
            )
        if decision.action == "skip":
            self._skip(message, decision.reason or "skipped")
            return False
        if decision.action == "defer":
            assert decision.not_before is not None
            outbox.mark_deferred(
                self.engine,
                message.id,
                self.worker,
                self.now,
                decision.not_before,
                decision.reason or "deferred",
            )
            self.tally.deferred += 1
            logger.debug("deferred key=%s until %s", message.idempotency_key, decision.not_before)
            return False
        try:
            rendered = render(
                message.channel,
                message.template,
                customer.locale,
                _context(message, customer, experiment),
            )
        except TemplateError as error:
            self._fail(message, "template_error", str(error))
            return False
        address = customer.email if message.channel == "email" else customer.phone
        assert address is not None  # the policy skips messages without an address
        return self._send(message, address, rendered, experiment.facts.key, decision.reason)

    def _send(
        self,
        message: ClaimedMessage,
        address: str,
        rendered: RenderedMessage,
        experiment_key: str,
        note: str | None,
    ) -> bool:
        if not outbox.mark_in_flight(self.engine, message.id, self.worker, self.now):
            logger.warning("lost the claim on key=%s; not sending", message.idempotency_key)
            return False
        outgoing = OutgoingMessage(
            idempotency_key=message.idempotency_key,
            channel=message.channel,
            to=address,
            rendered=rendered,
            customer_id=message.customer_id,
            experiment_key=experiment_key,
            arm=message.arm,
        )
        try:
            receipt = self.channels[message.channel].send(outgoing)
        except ChannelError as error:
            self._channel_error(message, error)
            return False
        except Exception as error:  # the provider may have accepted it: never resend blindly
            logger.exception(
                "unexpected error sending key=%s customer_id=%s; left in 'sending' for review",
                message.idempotency_key,
                message.customer_id,
            )
            outbox.mark_outcome_unknown(
                self.engine, message.id, self.worker, self.now, f"{type(error).__name__}: {error}"
            )
            self.tally.failed += 1
            return False
        outbox.mark_sent(
            self.engine,
            message.id,
            self.worker,
            self.now,
            receipt.provider,
            receipt.provider_message_id,
            note,
        )
        self.tally.sent += 1
        logger.info(
            "sent key=%s customer_id=%s channel=%s provider=%s",
            message.idempotency_key,
            message.customer_id,
            message.channel,
            receipt.provider,
        )
        return True

    def _channel_error(self, message: ClaimedMessage, error: ChannelError) -> None:
        attempts = message.attempts + 1
        text = str(error)
        if error.permanent or attempts >= MAX_ATTEMPTS:
            reason = "permanent_error" if error.permanent else "gave_up"
            if not error.permanent:
                text = f"gave up after {attempts} attempts; last error: {text}"
            self._fail(message, reason, text, attempted=True)
            return
        retry_at = self.now + retry_delay(attempts)
        outbox.mark_retry(self.engine, message.id, self.worker, self.now, retry_at, text)
        self.tally.retried += 1
        logger.warning(
            "transient error for key=%s customer_id=%s (attempt %d), retry at %s: %s",
            message.idempotency_key,
            message.customer_id,
            attempts,
            retry_at.isoformat(),
            text,
        )

    def _skip(self, message: ClaimedMessage, reason: str) -> None:
        outbox.mark_skipped(self.engine, message.id, self.worker, self.now, reason)
        self.tally.skipped[reason] += 1
        logger.debug("skipped key=%s: %s", message.idempotency_key, reason)

    def _fail(
        self, message: ClaimedMessage, reason: str, error: str, *, attempted: bool = False
    ) -> None:
        outbox.mark_failed(
            self.engine, message.id, self.worker, self.now, reason, error, attempted=attempted
        )
        self.tally.failed += 1
        logger.warning(
            "failed key=%s customer_id=%s (%s): %s",
            message.idempotency_key,
            message.customer_id,
            reason,
            error,
        )


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
    now: datetime,
    channels: Mapping[str, Channel],
    *,
    worker_id: str | None = None,
    batch_size: int = 500,
    settings_for: Callable[[int], PolicySettings] | None = None,
) -> DispatchSummary:
    """Send every outbox message due at ``now`` on the given ``channels`` (keyed by channel name,
    e.g. ``{"email": ..., "sms": ...}``), in batches of ``batch_size``. Safe to run concurrently
    from several threads or machines: each message is claimed by one worker and sent at most once.
    ``settings_for(experiment_id)`` gives an experiment's policy settings; by default they come from
    its latest spec snapshot (``messaging.quiet_hours`` and ``messaging.frequency_cap``).

    A database error (or an exception from ``settings_for``) ends the call; the rest of the
    claimed batch, never handed to a provider, can be put back with
    :func:`models.outbox.release_unattempted`."""
    if now.tzinfo is None:
        raise ValueError("dispatch_due() needs a timezone-aware 'now' (UTC)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    worker = worker_id or default_worker_id()
    dispatcher = _Dispatcher(engine, now, channels, worker, settings_for)
    while True:
        seen, batch = outbox.claim_due(engine, now, worker, batch_size, list(channels))
        if seen == 0:
            break
        if batch:
            dispatcher.run_batch(batch)
    summary = dispatcher.tally.summary()
    logger.info(
        "dispatch by %s: sent=%d skipped=%s deferred=%d failed=%d retried=%d",
        worker,
        summary.sent,
        summary.skipped,
        summary.deferred,
        summary.failed,
        summary.retried,
    )
    return summary
