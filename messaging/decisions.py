"""The decisions of one claimed batch: the policy asked about every message (of every arm, at the
moment of sending), the message rendered, and the outcome or the attempt to make recorded.

Used by :mod:`messaging.dispatcher` inside a batch's decision transaction.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.engine import Connection

from experiments.autostop import stopped_arms
from experiments.loader import SpecError, parse_spec
from experiments.spec import ExperimentSpec
from messaging.channels import OutgoingMessage, body_digest
from messaging.context import CustomerView, message_context
from messaging.policy import PolicySettings, Recipient, decide
from messaging.render import MessageContext, TemplateError, render
from messaging.sending import SendJob
from models import outbox, outbox_facts
from models.billing_facts import BillingFacts, load_billing_facts
from models.outbox import Attempt, ClaimedMessage, Outcome
from models.outbox_facts import CustomerFacts, ExperimentFacts

logger = logging.getLogger("retain.messaging")


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

    def counts(self) -> str:
        """The outcome in one line, for logs."""
        return (
            f"sent={self.sent} withheld={self.withheld} skipped={dict(self.skipped)} "
            f"deferred={self.deferred} failed={self.failed} retried={self.retried} "
            f"unknown={self.unknown} reconciled={self.reconciled}"
        )


@dataclass
class Tally:
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
class ExperimentPolicy:
    facts: ExperimentFacts
    spec: ExperimentSpec | None
    settings: PolicySettings | None
    problem: str | None
    stopped_arms: frozenset[str] = frozenset()
    """Arms stopped now (the YAML's ``status`` over recorded auto-stops)."""


def settings_from_spec(spec: ExperimentSpec) -> PolicySettings:
    """The policy settings an experiment file declares under ``messaging``."""
    cap = spec.messaging.frequency_cap
    return PolicySettings(
        quiet_hours=spec.messaging.quiet_window(),
        frequency_cap_max=cap.max if cap else None,
        frequency_cap_period=cap.per if cap else None,
    )


class Experiments:
    """Experiments' policy inputs, parsed once per spec snapshot."""

    def __init__(self, settings_for: Callable[[int], PolicySettings] | None) -> None:
        self.settings_for = settings_for
        self.cache: dict[int, ExperimentPolicy] = {}

    def get(self, facts: ExperimentFacts) -> ExperimentPolicy:
        cached = self.cache.get(facts.id)
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
        stopped = stopped_arms(spec, facts.auto_stopped) if spec else facts.auto_stopped
        result = ExperimentPolicy(
            facts, spec, settings, problem if settings is None else None, stopped
        )
        self.cache[facts.id] = result
        return result


class BatchDecisions:
    """The decisions of one claimed batch, made inside its decision transaction."""

    def __init__(
        self, now: datetime, channels: Collection[str], experiments: Experiments, tally: Tally
    ) -> None:
        self.now = now
        self.channels = channels
        self.experiments = experiments
        self.tally = tally
        self.outcomes: list[Outcome] = []
        self.attempts: list[Attempt] = []
        self.jobs: list[SendJob] = []
        self.numbers: dict[int, int] = {}
        self.billing: dict[int, BillingFacts] = {}

    def decide_all(self, conn: Connection, batch: list[ClaimedMessage]) -> None:
        customers = outbox_facts.load_customers(conn, {m.customer_id for m in batch})
        self.billing = load_billing_facts(
            conn, {m.customer_id for m in batch if not m.shadow}, self.now
        )
        experiments = {
            eid: self.experiments.get(facts)
            for eid, facts in outbox_facts.load_experiments(
                conn, {m.experiment_id for m in batch}
            ).items()
        }
        met = outbox_facts.conditions_met(
            conn, [m.id for m in batch if m.unless_condition], self.now
        )
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
        experiment: ExperimentPolicy,
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
            arm_stopped=message.arm in experiment.stopped_arms,
        )
        if decision.action == "skip":
            self.outcome(message, "skipped", decision.reason or "skipped")
            self.tally.skipped[decision.reason or "skipped"] += 1
            return None
        if decision.action == "defer":
            self.outcome(message, "pending", decision.reason, scheduled_at=decision.not_before)
            self.tally.deferred += 1
            return None
        channel, address = decision.channel or message.channel, decision.address or ""
        if message.shadow:
            self.outcome(
                message, "withheld", decision.reason or "control", channel=channel, sent_at=self.now
            )
            self.tally.withheld += 1
            return channel
        if channel not in self.channels:  # a fallback channel this run has no sender for
            later = self.now + timedelta(hours=1)
            self.outcome(message, "pending", f"no_channel:{channel}", scheduled_at=later)
            return None
        template = fallback[1] if fallback and channel != message.channel else message.template
        try:
            context = _context(message, customer, experiment, self.billing.get(customer.id))
            default_locale = experiment.spec.messaging.default_locale if experiment.spec else None
            rendered = render(channel, template, customer.locale, context, default_locale)
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
        self.tally.failed += 1
        logger.warning(
            "failed key=%s customer_id=%s (%s): %s",
            message.idempotency_key,
            message.customer_id,
            reason,
            error,
        )


def customer_view(customer: CustomerFacts, billing: BillingFacts | None) -> CustomerView:
    """What a message may say about ``customer``: the dispatcher's and ``retain preview``'s view."""
    card = customer.card
    return CustomerView(
        external_id=customer.external_id,
        name=customer.name,
        plan=customer.plan,
        card_brand=card.brand if card else None,
        card_last4=card.last4 if card else None,
        card_exp_month=card.exp_month if card else None,
        card_exp_year=card.exp_year if card else None,
        currency=billing.currency if billing else None,
        amount_due_minor=billing.amount_due_minor if billing else None,
        due_date=billing.due_date if billing else None,
        cancel_date=billing.cancel_date if billing else None,
    )


def _context(
    message: ClaimedMessage,
    customer: CustomerFacts,
    experiment: ExperimentPolicy,
    billing: BillingFacts | None,
) -> MessageContext:
    """The template context, built as ``retain preview`` builds it (:mod:`messaging.context`):
    signed links, billing facts and the offer with the customer's code (what the grant records)."""
    offer = None
    if experiment.spec is not None:
        try:
            offer = experiment.spec.arm(message.arm).offer
        except KeyError:
            offer = None
    return message_context(
        message.idempotency_key,
        experiment.facts.key,
        customer_view(customer, billing),
        offer,
    )
