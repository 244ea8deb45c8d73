"""Sending rates shared by every dispatcher: Prefect global concurrency limits used as rate limits.

One limit per channel, ``retain-email-sends`` and ``retain-sms-sends``, whose slots decay at the
channel's rate (``RETAIN_EMAIL_RATE_PER_SECOND``, ``RETAIN_SMS_RATE_PER_SECOND``) and whose size is
the burst (one second's sends, at least one). ``retain deploy`` creates them when missing and
updates them when the configured rate changed. A dispatch takes a slot per message through
``prefect.concurrency.sync.rate_limit(..., strict=True)``, a few slots per API call (see
:class:`PrefectRateLimit`), so the rate holds across all workers on all machines.

Which limiter a dispatch uses per channel (``RETAIN_RATE_LIMITER``):

* ``auto`` (default): the Prefect limit when the API in use has it, else this process's token
  bucket. A one-shot ``retain dispatch`` on Prefect's ephemeral API finds no limit and keeps the
  bucket: one dispatcher, so its own pace is the whole pace.
* ``prefect``: the Prefect limit, required: a missing one stops the dispatch before anything is
  sent, with one line saying to run ``retain deploy``.
* ``local``: the bucket only (each worker paces itself: N workers may send N times the rate).

The limit on the server is the truth while it exists: edit it in the Prefect UI and every worker
follows at once (``retain deploy`` sets it back to the configured rate).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from messaging.sending import Limiter, LimiterError

if TYPE_CHECKING:
    from messaging.settings import MessagingSettings

CHANNELS = ("email", "sms")
CALLS_PER_SECOND = 10
"""Roughly how many slot requests a busy channel makes per second and dispatcher: a chunk of
slots is a tenth of a second's sends, so a fast channel costs a few API calls per second."""


def limit_name(channel: str) -> str:
    """The Prefect global concurrency limit that paces ``channel``'s sends."""
    return f"retain-{channel}-sends"


@dataclass(frozen=True)
class PlannedLimit:
    """A rate limit as the settings ask for it: ``limit`` slots decaying at ``per_second``."""

    channel: str
    name: str
    limit: int
    per_second: float

    @property
    def create_command(self) -> str:
        return (
            f"prefect gcl create {self.name} --limit {self.limit} "
            f"--slot-decay-per-second {self.per_second:g}"
        )


def planned_limits(settings: MessagingSettings) -> list[PlannedLimit]:
    """The per-channel rate limits the settings ask for."""
    rates = {"email": settings.email_rate_per_second, "sms": settings.sms_rate_per_second}
    return [
        PlannedLimit(channel, limit_name(channel), max(1, math.ceil(rate)), rate)
        for channel, rate in rates.items()
    ]


@dataclass(frozen=True)
class AppliedLimit:
    planned: PlannedLimit
    action: Literal["created", "updated", "unchanged"]


def apply_limits(planned: Iterable[PlannedLimit]) -> list[AppliedLimit]:
    """Create the limits missing on the Prefect API in use and update those whose size or rate
    differs (``retain deploy``)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectNotFound

    applied: list[AppliedLimit] = []
    with get_client(sync_client=True) as client:
        for item in planned:
            try:
                current = client.read_global_concurrency_limit_by_name(item.name)
            except ObjectNotFound:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(
                        name=item.name, limit=item.limit, slot_decay_per_second=item.per_second
                    )
                )
                applied.append(AppliedLimit(item, "created"))
                continue
            if current.limit == item.limit and math.isclose(
                current.slot_decay_per_second or 0.0, item.per_second
            ):
                applied.append(AppliedLimit(item, "unchanged"))
                continue
            client.update_global_concurrency_limit(
                item.name,
                GlobalConcurrencyLimitUpdate(
                    limit=item.limit, slot_decay_per_second=item.per_second
                ),
            )
            applied.append(AppliedLimit(item, "updated"))
    return applied


class PrefectRateLimit:
    """A :class:`~messaging.sending.Limiter` backed by a Prefect global rate limit. Slots are
    taken ``chunk`` at a time (``rate_limit(name, occupy=chunk, strict=True)``) and handed out one
    per call; at most ``chunk - 1`` slots go unused when a dispatch ends (they decay anyway)."""

    def __init__(self, planned: PlannedLimit, chunk: int) -> None:
        self.planned = planned
        self.chunk = max(1, chunk)
        self.permits = 0
        self.lock = threading.Lock()

    def acquire(self) -> None:
        # Under the lock: the other senders of this channel wait for the same chunk, as they
        # would for the rate anyway.
        with self.lock:
            if self.permits == 0:
                self._take()
                self.permits = self.chunk
            self.permits -= 1

    def _take(self) -> None:
        from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
        from prefect.concurrency.sync import rate_limit

        try:
            rate_limit(self.planned.name, occupy=self.chunk, strict=True)
        except ConcurrencySlotAcquisitionError as error:
            raise LimiterError(missing_message(self.planned, str(error))) from None


def missing_message(planned: PlannedLimit, detail: str | None = None) -> str:
    """The one line for a Prefect rate limit that cannot be used."""
    why = f" ({detail})" if detail and "must be created" not in detail else ""
    return (
        f"the Prefect rate limit {planned.name!r} for {planned.channel} cannot be used{why}; "
        f"run `retain deploy` to create it (or `{planned.create_command}`), or set "
        "RETAIN_RATE_LIMITER=local to pace each worker on its own"
    )


def shared_limiters(settings: MessagingSettings) -> dict[str, Limiter]:
    """The Prefect rate limit per channel, as ``RETAIN_RATE_LIMITER`` asks (module docstring);
    channels left out keep the local bucket. Raises :class:`LimiterError` in ``prefect`` mode
    when a limit is missing."""
    if settings.rate_limiter == "local":
        return {}
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    limiters: dict[str, Limiter] = {}
    with get_client(sync_client=True) as client:
        for planned in planned_limits(settings):
            try:
                found = client.read_global_concurrency_limit_by_name(planned.name)
            except ObjectNotFound:
                if settings.rate_limiter == "prefect":
                    raise LimiterError(missing_message(planned)) from None
                continue
            rate = found.slot_decay_per_second or 0.0
            chunk = min(found.limit, max(1, int(rate / CALLS_PER_SECOND)))
            limiters[planned.channel] = PrefectRateLimit(planned, chunk)
    return limiters
