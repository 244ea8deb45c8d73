"""The sending policy: whether a due message may go out now. Pure: facts in, a decision out.

Rules, in order (the first that applies wins):

1. no address for the channel           -> skip ``no_address``
2. no consent for the channel           -> skip ``no_consent``
3. the channel is suppressed            -> skip ``suppressed``
4. the step's ``unless`` condition holds -> skip ``condition_met``
5. the frequency cap is reached         -> skip ``frequency_cap``
6. inside quiet hours, customer-local   -> defer ``quiet_hours`` until the window ends
7. otherwise                            -> send

Time zones: quiet hours are read in the customer's IANA zone (DST-correct through ``zoneinfo``).
An unknown or empty zone is treated as UTC rather than blocking the message; the decision then
carries the reason ``unknown_timezone`` (on a send) or ``quiet_hours:unknown_timezone`` (on a defer)
so the fallback is visible in the outbox and the logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Action = Literal["send", "skip", "defer"]


@dataclass(frozen=True)
class Recipient:
    customer_id: int
    email: str | None
    phone: str | None
    timezone: str
    email_consent: bool
    sms_consent: bool
    suppressed_channels: frozenset[str]


@dataclass(frozen=True)
class PolicySettings:
    """An experiment's messaging limits: a customer-local quiet window ``(start, end)`` (may wrap
    midnight, e.g. 21:00-08:00; start == end means none) and a frequency cap of at most
    ``frequency_cap_max`` sends per channel within ``frequency_cap_period``."""

    quiet_hours: tuple[time, time] | None = None
    frequency_cap_max: int | None = None
    frequency_cap_period: timedelta | None = None


NO_LIMITS = PolicySettings()


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str | None = None
    not_before: datetime | None = None


def _address(channel: str, recipient: Recipient) -> str | None:
    if channel == "email":
        return recipient.email
    if channel == "sms":
        return recipient.phone
    raise ValueError(f"unknown channel {channel!r}; use email or sms")


def _consent(channel: str, recipient: Recipient) -> bool:
    return recipient.email_consent if channel == "email" else recipient.sms_consent


def zone_of(name: str | None) -> tuple[tzinfo, bool]:
    """The time zone for ``name`` and whether it was known; unknown or empty -> (UTC, False)."""
    if not name:
        return UTC, False
    try:
        return ZoneInfo(name), True
    except (ZoneInfoNotFoundError, ValueError):
        return UTC, False


def _local(day: date, clock: time, zone: tzinfo) -> datetime:
    # A wall time in a spring-forward gap resolves (fold=0) to the instant just after the gap;
    # an ambiguous autumn time resolves to its first occurrence. Both are fine for "not before".
    return datetime.combine(day, clock, tzinfo=zone)


def quiet_until(now: datetime, window: tuple[time, time], zone: tzinfo) -> datetime | None:
    """If ``now`` lies inside the customer-local quiet ``window``, the aware UTC instant it ends;
    else None. Windows with start > end wrap midnight; start == end is an empty window."""
    start, end = window
    if start == end:
        return None
    local = now.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    today = local.date()
    if start < end:
        inside = start <= clock < end
        end_day = today
    else:
        inside = clock >= start or clock < end
        end_day = today + timedelta(days=1) if clock >= start else today
    if not inside:
        return None
    return _local(end_day, end, zone).astimezone(UTC)


def decide(
    channel: str,
    recipient: Recipient,
    now: datetime,
    settings: PolicySettings,
    sent_in_cap_window: int,
    condition_met: bool,
) -> Decision:
    """Whether to send, skip or defer a due message (rules in the module docstring). ``now`` must be
    timezone-aware; ``sent_in_cap_window`` counts this customer's sends on ``channel`` within the
    cap period; ``condition_met`` says whether the step's ``unless`` condition holds."""
    if now.tzinfo is None:
        raise ValueError("decide() needs a timezone-aware 'now' (UTC)")
    if not _address(channel, recipient):
        return Decision("skip", "no_address")
    if not _consent(channel, recipient):
        return Decision("skip", "no_consent")
    if channel in recipient.suppressed_channels:
        return Decision("skip", "suppressed")
    if condition_met:
        return Decision("skip", "condition_met")
    cap = settings.frequency_cap_max
    if cap is not None and sent_in_cap_window >= cap:
        return Decision("skip", "frequency_cap")
    zone, known = zone_of(recipient.timezone)
    if settings.quiet_hours is not None:
        until = quiet_until(now, settings.quiet_hours, zone)
        if until is not None:
            reason = "quiet_hours" if known else "quiet_hours:unknown_timezone"
            return Decision("defer", reason, until)
    return Decision("send", None if known else "unknown_timezone")
