"""The sending policy: whether a due message may go out now, and where. Pure: facts in, a decision
out. The dispatcher asks it for every message at the moment it would send (never at the start of a
run), and for every arm alike: a control customer's would-be message gets the same decision,
recorded as "would have sent" instead of being sent (intent-to-treat).

Rules, in order (the first that applies wins):

1. the experiment is stopped                       -> skip ``experiment_stopped``;
   the message's arm is stopped (auto-stop or the arm's ``status`` in the YAML)
                                                   -> skip ``arm_stopped``
2. the channel cannot reach the customer:
   no address (``no_address``), an address that does not parse (``invalid_email``,
   ``invalid_phone``), no consent (``no_consent``), suppressed (``suppressed``)
                                                   -> the step's fallback channel if it can reach
                                                      them (reason ``fallback:<why>``), else skip
3. the step's ``unless`` condition holds           -> skip ``condition_met``
4. the frequency cap is reached on the channel     -> skip ``frequency_cap``
5. quiet hours are set and the customer's time zone is not a valid IANA name
                                                   -> skip ``invalid_timezone`` (never UTC instead)
6. inside quiet hours, customer-local              -> defer ``quiet_hours`` until the window ends,
                                                      always to an instant strictly after ``now``
7. otherwise                                       -> send

Quiet hours are wall-clock times in the customer's zone (``zoneinfo``): a window ending inside the
hour repeated when clocks fall back ends at the first instant after ``now`` whose wall clock reads
the end time, so a deferral never points into the past (which made dispatchers spin).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

from messaging.contacts import ContactError, check_timezone, normalise_email, normalise_phone

Action = Literal["send", "skip", "defer"]
CHANNELS = ("email", "sms")


@dataclass(frozen=True)
class Recipient:
    customer_id: int
    email: str | None
    phone: str | None
    timezone: str
    email_consent: bool
    sms_consent: bool
    suppressed_channels: frozenset[str]
    country: str | None = None
    """ISO 3166 alpha-2; the region a phone number without ``+`` is read in."""


@dataclass(frozen=True)
class PolicySettings:
    """An experiment's messaging limits: a customer-local quiet window ``(start, end)`` (may wrap
    midnight, e.g. 21:00-08:00; start == end means none) and a frequency cap of at most
    ``frequency_cap_max`` sends per channel within ``frequency_cap_period``, counted across all
    experiments."""

    quiet_hours: tuple[time, time] | None = None
    frequency_cap_max: int | None = None
    frequency_cap_period: timedelta | None = None


NO_LIMITS = PolicySettings()


@dataclass(frozen=True)
class Decision:
    """``send`` or ``defer`` carry the channel to use and the normalised address."""

    action: Action
    reason: str | None = None
    not_before: datetime | None = None
    channel: str | None = None
    address: str | None = None


def _reach(channel: str, recipient: Recipient) -> tuple[str | None, str | None]:
    """(normalised address, None) if ``channel`` may reach the recipient, else (None, reason)."""
    if channel == "email":
        raw, consent = recipient.email, recipient.email_consent
    elif channel == "sms":
        raw, consent = recipient.phone, recipient.sms_consent
    else:
        raise ValueError(f"unknown channel {channel!r}; use email or sms")
    if raw is None or not raw.strip():
        return None, "no_address"
    address = _normalised(channel, raw, recipient.country or None)
    if address is None:
        return None, "invalid_email" if channel == "email" else "invalid_phone"
    if not consent:
        return None, "no_consent"
    if channel in recipient.suppressed_channels:
        return None, "suppressed"
    return address, None


@lru_cache(maxsize=65536)
def _normalised(channel: str, raw: str, region: str | None) -> str | None:
    """The address in normal form, or None if it does not parse (cached: pure and repeated)."""
    try:
        return normalise_email(raw) if channel == "email" else normalise_phone(raw, region)
    except ContactError:
        return None


def zone_of(name: str | None) -> tzinfo | None:
    """The customer's zone, or None when ``name`` is not a valid IANA zone name (``Europe``,
    ``JST``, an over-long string): such customers get no quiet-hours-bound message."""
    try:
        return ZoneInfo(check_timezone(name or ""))
    except (ContactError, ValueError):
        return None


def _inside(clock: time, start: time, end: time) -> bool:
    if start < end:
        return start <= clock < end
    return clock >= start or clock < end


def quiet_until(now: datetime, window: tuple[time, time], zone: tzinfo) -> datetime | None:
    """If ``now`` lies inside the customer-local quiet ``window``, the aware UTC instant it ends
    (always strictly after ``now``); else None. Windows with start > end wrap midnight; start ==
    end is an empty window.

    The end is the first instant after ``now`` whose local wall clock shows ``end``: on a fall-back
    day that may be the second pass through the repeated hour (``fold=1``); on a spring-forward
    day an end inside the skipped hour resolves to the instant just after the gap."""
    start, end = window
    if start == end:
        return None
    local = now.astimezone(zone)
    clock = local.time().replace(tzinfo=None, fold=0)
    if not _inside(clock, start, end):
        return None
    day = local.date()
    if start > end and clock >= start:
        day += timedelta(days=1)
    for offset in range(3):
        for fold in (0, 1):
            candidate = datetime.combine(day + timedelta(days=offset), end, tzinfo=zone)
            instant = candidate.replace(fold=fold).astimezone(UTC)
            if instant > now:
                return instant
    raise AssertionError("unreachable: a wall-clock time recurs within three days")


def decide(
    channel: str,
    recipient: Recipient,
    now: datetime,
    settings: PolicySettings,
    sent_in_cap_window: int | Mapping[str, int],
    condition_met: bool,
    *,
    fallback: str | None = None,
    stopped: bool = False,
    arm_stopped: bool = False,
) -> Decision:
    """Whether to send, skip or defer a due message (rules in the module docstring).

    ``now`` must be timezone-aware. ``sent_in_cap_window`` counts this customer's sends within
    the cap period: per channel as a mapping, or an int for ``channel`` alone. ``fallback`` is
    the step's fallback channel (e.g. email for an SMS step). ``stopped``: the experiment is;
    ``arm_stopped``: the message's arm is."""
    if now.tzinfo is None:
        raise ValueError("decide() needs a timezone-aware 'now' (UTC)")
    if stopped:
        return Decision("skip", "experiment_stopped")
    if arm_stopped:
        return Decision("skip", "arm_stopped")
    address, why = _reach(channel, recipient)
    used, note = channel, None
    if address is None:
        if fallback is None or fallback == channel:
            return Decision("skip", why)
        address, _ = _reach(fallback, recipient)
        if address is None:
            return Decision("skip", why)
        used, note = fallback, f"fallback:{why}"
    if condition_met:
        return Decision("skip", "condition_met")
    cap = settings.frequency_cap_max
    if isinstance(sent_in_cap_window, int):
        sent = sent_in_cap_window if used == channel else 0
    else:
        sent = sent_in_cap_window.get(used, 0)
    if cap is not None and sent >= cap:
        return Decision("skip", "frequency_cap")
    if settings.quiet_hours is not None:
        zone = zone_of(recipient.timezone)
        if zone is None:
            return Decision("skip", "invalid_timezone")
        until = quiet_until(now, settings.quiet_hours, zone)
        if until is not None:
            return Decision("defer", "quiet_hours", until, used, address)
    return Decision("send", note, None, used, address)
