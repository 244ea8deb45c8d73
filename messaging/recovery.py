"""Crash recovery: settle messages a dead (or timed-out) dispatcher left in flight.

A message is ``in_flight`` from just before its provider call until its result is recorded. If
its lease expires first, nobody knows whether the provider accepted it, and providers take no
idempotency key. So it is *reconciled*: the channel asks the provider (SendGrid's Email Activity
API by the message id in ``custom_args``; Twilio's Messages list by number, date and body; the
outbox folder by file) and the message is marked ``sent`` with the provider's id when found, or
put back to ``pending`` (safe to send again) when not. A lookup that fails leaves it in flight
for the next run. Claims that were never handed to a provider simply expire and are claimed
again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from messaging.channels import Channel, ChannelError, SendRecord
from models import outbox_recovery
from models.outbox_recovery import InFlight

logger = logging.getLogger("retain.messaging")


def reconcile_expired(
    engine: Engine,
    now: datetime,
    worker_id: str,
    channels: Mapping[str, Channel],
    lease: timedelta,
    *,
    batch_size: int = 200,
) -> int:
    """Reconcile every in-flight message whose lease expired, on ``channels``; returns how many
    were settled (found sent or put back)."""
    settled = 0
    while True:
        taken = outbox_recovery.take_over_expired(
            engine, now, worker_id, list(channels), now + lease, batch_size
        )
        if not taken:
            return settled
        found: list[tuple[InFlight, str, str]] = []
        absent: list[InFlight] = []
        unsure: list[InFlight] = []
        for item in taken:
            record = _record(item)
            if record is None:  # in flight without an attempt row: it never reached a provider
                absent.append(item)
                continue
            channel = channels.get(record.channel)
            if channel is None:
                unsure.append(item)
                continue
            try:
                receipt = channel.find_sent(record)
            except ChannelError as error:
                logger.warning("cannot reconcile key=%s yet: %s", item.idempotency_key, error)
                unsure.append(item)
                continue
            if receipt is None:
                absent.append(item)
            else:
                found.append((item, receipt.provider, receipt.provider_message_id))
        outbox_recovery.settle(engine, worker_id, now, found, absent, unsure)
        settled += len(found) + len(absent)
        logger.info("reconciled %d found sent, %d not sent", len(found), len(absent))
        if unsure and len(unsure) == len(taken):
            return settled  # the provider cannot tell now; the next run tries again


def _record(item: InFlight) -> SendRecord | None:
    attempt = item.attempt
    if attempt is None:
        return None
    return SendRecord(
        message_id=item.id,
        idempotency_key=item.idempotency_key,
        channel=attempt.channel,
        experiment_key=item.experiment_key,
        to=attempt.address,
        body_sha256=attempt.body_sha256,
        started_at=attempt.started_at,
    )


def release_claims(engine: Engine, worker_id: str, message_ids: list[int]) -> int:
    """Put this worker's claimed (never in flight) messages back to pending."""
    return outbox_recovery.release(engine, worker_id, message_ids)
