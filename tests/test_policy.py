"""The pure sending policy: one test per rule, the rule order, quiet hours across midnight and DST."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messaging.policy import (
    NO_LIMITS,
    Decision,
    PolicySettings,
    Recipient,
    decide,
)

NOW = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)  # 13:00 in Stockholm (CET)
QUIET = PolicySettings(quiet_hours=(time(21), time(8)))
CAPPED = PolicySettings(frequency_cap_max=2, frequency_cap_period=timedelta(days=7))


def recipient(**overrides: object) -> Recipient:
    base = Recipient(
        customer_id=1,
        email="anna@example.com",
        phone="+46701234567",
        timezone="Europe/Stockholm",
        email_consent=True,
        sms_consent=True,
        suppressed_channels=frozenset(),
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def check(
    channel: str = "email",
    who: Recipient | None = None,
    now: datetime = NOW,
    settings: PolicySettings = NO_LIMITS,
    sent: int = 0,
    met: bool = False,
) -> Decision:
    return decide(channel, who or recipient(), now, settings, sent, met)


def test_send_when_nothing_stands_in_the_way() -> None:
    assert check() == Decision("send", None, None, "email", "anna@example.com")
    assert check("sms") == Decision("send", None, None, "sms", "+46701234567")


def test_no_address() -> None:
    assert check("email", recipient(email=None)) == Decision("skip", "no_address")
    assert check("sms", recipient(phone="")) == Decision("skip", "no_address")
    assert check("email", recipient(phone=None)).action == "send"


def test_no_consent_is_per_channel() -> None:
    assert check("sms", recipient(sms_consent=False)) == Decision("skip", "no_consent")
    assert check("email", recipient(sms_consent=False)).action == "send"
    assert check("email", recipient(email_consent=False)) == Decision("skip", "no_consent")


def test_suppressed_channel() -> None:
    who = recipient(suppressed_channels=frozenset({"sms"}))
    assert check("sms", who) == Decision("skip", "suppressed")
    assert check("email", who).action == "send"


def test_condition_met() -> None:
    assert check(met=True) == Decision("skip", "condition_met")


def test_frequency_cap() -> None:
    assert check(settings=CAPPED, sent=1).action == "send"
    assert check(settings=CAPPED, sent=2) == Decision("skip", "frequency_cap")
    assert check(settings=NO_LIMITS, sent=99).action == "send"


def test_rules_apply_in_order() -> None:
    everything_wrong = recipient(
        email=None, email_consent=False, suppressed_channels=frozenset({"email"})
    )
    late = datetime(2026, 11, 10, 22, 0, tzinfo=UTC)
    settings = PolicySettings((time(21), time(8)), 1, timedelta(days=1))
    assert check(who=everything_wrong, now=late, settings=settings, sent=5, met=True).reason == (
        "no_address"
    )
    steps = [
        ({"email": "a@example.com"}, "no_consent"),
        ({"email_consent": True}, "suppressed"),
        ({"suppressed_channels": frozenset()}, "condition_met"),
    ]
    who = everything_wrong
    for change, reason in steps:
        who = replace(who, **change)  # type: ignore[arg-type]
        assert check(who=who, now=late, settings=settings, sent=5, met=True).reason == reason
    assert check(who=who, now=late, settings=settings, sent=5).reason == "frequency_cap"
    assert check(who=who, now=late, settings=settings, sent=0).action == "defer"


@pytest.mark.parametrize(
    ("utc", "expected"),
    [
        # Stockholm is UTC+1 in November: quiet 21:00-08:00 local = 20:00-07:00 UTC.
        (datetime(2026, 11, 10, 19, 59, tzinfo=UTC), None),
        (datetime(2026, 11, 10, 20, 0, tzinfo=UTC), datetime(2026, 11, 11, 7, 0, tzinfo=UTC)),
        (datetime(2026, 11, 10, 22, 30, tzinfo=UTC), datetime(2026, 11, 11, 7, 0, tzinfo=UTC)),
        # After midnight local, the window ends the same local day.
        (datetime(2026, 11, 10, 23, 30, tzinfo=UTC), datetime(2026, 11, 11, 7, 0, tzinfo=UTC)),
        (datetime(2026, 11, 11, 6, 59, tzinfo=UTC), datetime(2026, 11, 11, 7, 0, tzinfo=UTC)),
        (datetime(2026, 11, 11, 7, 0, tzinfo=UTC), None),
    ],
)
def test_quiet_hours_wrap_midnight(utc: datetime, expected: datetime | None) -> None:
    decision = check(now=utc, settings=QUIET)
    if expected is None:
        assert decision == Decision("send", None, None, "email", "anna@example.com")
    else:
        assert decision == Decision("defer", "quiet_hours", expected, "email", "anna@example.com")
        assert decision.not_before is not None and decision.not_before.utcoffset() == timedelta(0)


def test_quiet_hours_across_the_spring_dst_change() -> None:
    # 2026-03-29: Stockholm moves from CET (+1) to CEST (+2) at 02:00 local.
    # 22:30 local on the 28th is 21:30 UTC; 08:00 local on the 29th is CEST, i.e. 06:00 UTC.
    evening = datetime(2026, 3, 28, 21, 30, tzinfo=UTC)
    assert check(now=evening, settings=QUIET).not_before == datetime(2026, 3, 29, 6, 0, tzinfo=UTC)
    # 07:30 CEST (05:30 UTC) is still quiet; 06:30 UTC is 08:30 CEST and not.
    assert check(now=datetime(2026, 3, 29, 5, 30, tzinfo=UTC), settings=QUIET).action == "defer"
    assert check(now=datetime(2026, 3, 29, 6, 30, tzinfo=UTC), settings=QUIET).action == "send"


def test_quiet_hours_across_the_autumn_dst_change() -> None:
    # 2026-10-25: CEST (+2) -> CET (+1) at 03:00 local. 21:00 local on the 24th is 19:00 UTC;
    # the window ends at 08:00 CET on the 25th = 07:00 UTC.
    decision = check(now=datetime(2026, 10, 24, 19, 0, tzinfo=UTC), settings=QUIET)
    assert (decision.action, decision.not_before) == (
        "defer",
        datetime(2026, 10, 25, 7, 0, tzinfo=UTC),
    )


def test_quiet_window_within_one_day() -> None:
    lunch = PolicySettings(quiet_hours=(time(12), time(14)))
    # 12:00 UTC is 13:00 in Stockholm: inside; ends at 14:00 local = 13:00 UTC.
    assert check(settings=lunch).not_before == datetime(2026, 11, 10, 13, 0, tzinfo=UTC)
    assert check(who=recipient(timezone="America/New_York"), settings=lunch).action == "send"


def test_empty_quiet_window_never_defers() -> None:
    assert check(settings=PolicySettings(quiet_hours=(time(9), time(9)))).action == "send"


def test_quiet_hours_use_the_customer_zone() -> None:
    # 12:00 UTC is 21:00 in Tokyo (quiet) but 13:00 in Stockholm.
    tokyo = recipient(timezone="Asia/Tokyo")
    assert check(who=tokyo, settings=QUIET).not_before == datetime(2026, 11, 10, 23, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus_Mons", "Europe", "JST", "", "Europe/" + "x" * 80, "../etc/passwd"]
)
def test_invalid_time_zone_is_a_recorded_skip_never_utc(zone: str) -> None:
    who = recipient(timezone=zone)
    for hour in (3, 12, 22):
        now = datetime(2026, 11, 10, hour, 0, tzinfo=UTC)
        assert check(who=who, now=now, settings=QUIET) == Decision("skip", "invalid_timezone")
    # Without quiet hours the zone does not matter.
    assert check(who=who).action == "send"


@pytest.mark.parametrize(
    ("channel", "field", "value", "reason"),
    [
        ("sms", "phone", " ", "no_address"),
        ("sms", "phone", "not a number", "invalid_phone"),
        ("sms", "phone", "+46 70", "invalid_phone"),
        ("email", "email", "anna@", "invalid_email"),
        ("email", "email", "not an address", "invalid_email"),
    ],
)
def test_malformed_addresses_are_skips(channel: str, field: str, value: str, reason: str) -> None:
    assert check(channel, recipient(**{field: value})) == Decision("skip", reason)


def test_addresses_are_normalised() -> None:
    who = recipient(phone="070-123 45 67", country="SE", email="Anna@EXAMPLE.com")
    assert check("sms", who).address == "+46701234567"
    assert check("email", who).address == "Anna@example.com"


def test_fallback_to_email_when_sms_cannot_reach() -> None:
    for change, why in [
        ({"phone": None}, "no_address"),
        ({"phone": "not a number"}, "invalid_phone"),
        ({"sms_consent": False}, "no_consent"),
        ({"suppressed_channels": frozenset({"sms"})}, "suppressed"),
    ]:
        who = recipient(**change)
        decision = decide("sms", who, NOW, NO_LIMITS, {}, False, fallback="email")
        assert decision == Decision("send", f"fallback:{why}", None, "email", "anna@example.com")
        assert check("sms", who).action == "skip"  # no fallback in the step: skip
    nobody = recipient(phone=None, email_consent=False)
    assert decide("sms", nobody, NOW, NO_LIMITS, {}, False, fallback="email") == Decision(
        "skip", "no_address"
    )
    # The cap is counted on the channel actually used.
    capped = decide(
        "sms", recipient(phone=None), NOW, CAPPED, {"sms": 0, "email": 2}, False, fallback="email"
    )
    assert capped == Decision("skip", "frequency_cap")


def test_stopped_experiment_wins() -> None:
    assert decide("email", recipient(email=None), NOW, NO_LIMITS, 0, True, stopped=True) == (
        Decision("skip", "experiment_stopped")
    )


def test_naive_now_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        check(now=datetime(2026, 11, 10, 12, 0))


def test_unknown_channel_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown channel 'fax'"):
        check("fax")


# --- DST fall-back: a window ending in the repeated hour ------------------------------------------

FALL_BACK = [
    # zone, local date of the fall-back, the repeated wall-clock hour
    ("Europe/Stockholm", date(2026, 10, 25), 2),
    ("Europe/London", date(2026, 10, 25), 1),
    ("America/New_York", date(2026, 11, 1), 1),
    ("America/Los_Angeles", date(2026, 11, 1), 1),
    ("America/Santiago", date(2026, 4, 4), 23),
    ("America/Havana", date(2026, 11, 1), 0),
]


@pytest.mark.parametrize(("zone", "day", "hour"), FALL_BACK)
def test_quiet_window_ending_in_the_repeated_hour_defers_into_the_future(
    zone: str, day: date, hour: int
) -> None:
    tz = ZoneInfo(zone)
    end = time(hour, 30)
    window = PolicySettings(quiet_hours=(time((hour + 20) % 24, 0), end))
    who = recipient(timezone=zone)
    # Every minute across the repeated hour, both passes: a deferral is strictly in the future
    # and deciding again at it sends (never a loop).
    second_pass = datetime.combine(day, time(hour, 10), tzinfo=tz).replace(fold=1)
    first_pass = datetime.combine(day, time(hour, 10), tzinfo=tz).replace(fold=0)
    assert second_pass.astimezone(UTC) - first_pass.astimezone(UTC) == timedelta(hours=1)
    start = first_pass.astimezone(UTC) - timedelta(hours=2)
    for minute in range(0, 5 * 60, 5):
        now = start + timedelta(minutes=minute)
        decision = check(who=who, now=now, settings=window)
        if decision.action == "defer":
            assert decision.not_before is not None and decision.not_before > now
            assert check(who=who, now=decision.not_before, settings=window).action == "send"
    decision = check(who=who, now=second_pass.astimezone(UTC), settings=window)
    assert decision.action == "defer"
    assert decision.not_before == datetime.combine(day, end, tzinfo=tz).replace(fold=1).astimezone(
        UTC
    )


# --- Properties (hypothesis) -----------------------------------------------------------------------


ZONES = [z for z, _, _ in FALL_BACK] + ["Asia/Tokyo", "Australia/Lord_Howe", "UTC", "Europe", "JST"]
instants = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
)
clocks = st.times().map(lambda t: t.replace(second=0, microsecond=0))
recipients = st.builds(
    Recipient,
    customer_id=st.just(1),
    email=st.sampled_from([None, "", "anna@example.com", "bad@", "a@b.example"]),
    phone=st.sampled_from([None, " ", "not a number", "+46701234567", "+14155550123"]),
    timezone=st.sampled_from(ZONES),
    email_consent=st.booleans(),
    sms_consent=st.booleans(),
    suppressed_channels=st.frozensets(st.sampled_from(["email", "sms"])),
)
policies = st.builds(
    PolicySettings,
    quiet_hours=st.none() | st.tuples(clocks, clocks),
    frequency_cap_max=st.none() | st.integers(1, 3),
    frequency_cap_period=st.just(timedelta(days=7)),
)


@settings(max_examples=400, deadline=None)
@given(
    channel=st.sampled_from(["email", "sms"]),
    fallback=st.sampled_from([None, "email"]),
    who=recipients,
    now=instants,
    limits=policies,
    sent=st.fixed_dictionaries({"email": st.integers(0, 4), "sms": st.integers(0, 4)}),
    met=st.booleans(),
    stopped=st.booleans(),
)
def test_policy_properties(
    channel: str,
    fallback: str | None,
    who: Recipient,
    now: datetime,
    limits: PolicySettings,
    sent: dict[str, int],
    met: bool,
    stopped: bool,
) -> None:
    decision = decide(channel, who, now, limits, sent, met, fallback=fallback, stopped=stopped)
    if decision.action == "skip":
        return
    used = decision.channel
    assert used in (channel, fallback)
    # Never without consent, an address or despite a suppression, on the channel actually used.
    assert (who.email_consent if used == "email" else who.sms_consent) is True
    assert used not in who.suppressed_channels
    assert decision.address
    # Never after the stop condition or over the cap.
    assert not met and not stopped
    if limits.frequency_cap_max is not None:
        assert sent[used or ""] < limits.frequency_cap_max
    if limits.quiet_hours is not None:
        zone = ZoneInfo(who.timezone)  # an invalid zone never gets past the policy
        start, end = limits.quiet_hours
        clock = now.astimezone(zone).time().replace(tzinfo=None, fold=0)
        inside = start != end and (
            start <= clock < end if start < end else (clock >= start or clock < end)
        )
        if decision.action == "send":
            assert not inside  # never inside quiet hours
        else:
            assert inside and decision.not_before is not None
            assert now < decision.not_before <= now + timedelta(hours=26)  # future, no loop
            again = decide(used or "", who, decision.not_before, limits, sent, met)
            assert again.not_before != decision.not_before
    else:
        assert decision.action == "send"


@settings(max_examples=200, deadline=None)
@given(who=recipients, now=instants, limits=policies, met=st.booleans(), stopped=st.booleans())
def test_control_and_treatment_get_identical_decisions(
    who: Recipient, now: datetime, limits: PolicySettings, met: bool, stopped: bool
) -> None:
    # The policy has no notion of arm: the dispatcher asks it the same question for a control
    # customer's would-be message; two customers with the same facts get the same answer.
    twin = replace(who, customer_id=2)
    for channel in ("email", "sms"):
        assert decide(channel, who, now, limits, 1, met, stopped=stopped) == decide(
            channel, twin, now, limits, 1, met, stopped=stopped
        )
