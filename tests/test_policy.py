"""The pure sending policy: one test per rule, the rule order, quiet hours across midnight and DST."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta

import pytest

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
    assert check() == Decision("send", None, None)
    assert check("sms") == Decision("send", None, None)


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
        assert decision == Decision("send")
    else:
        assert decision == Decision("defer", "quiet_hours", expected)
        assert decision.not_before is not None and decision.not_before.utcoffset() == timedelta(0)


def test_quiet_hours_across_the_spring_dst_change() -> None:
    # 2026-03-29: Stockholm moves from CET (+1) to CEST (+2) at 02:00 local.
    # 22:30 local on the 28th is 21:30 UTC; 08:00 local on the 29th is CEST, i.e. 06:00 UTC.
    evening = datetime(2026, 3, 28, 21, 30, tzinfo=UTC)
    assert check(now=evening, settings=QUIET) == Decision(
        "defer", "quiet_hours", datetime(2026, 3, 29, 6, 0, tzinfo=UTC)
    )
    # 07:30 CEST (05:30 UTC) is still quiet; 06:30 UTC is 08:30 CEST and not.
    assert check(now=datetime(2026, 3, 29, 5, 30, tzinfo=UTC), settings=QUIET).action == "defer"
    assert check(now=datetime(2026, 3, 29, 6, 30, tzinfo=UTC), settings=QUIET).action == "send"


def test_quiet_hours_across_the_autumn_dst_change() -> None:
    # 2026-10-25: CEST (+2) -> CET (+1) at 03:00 local. 21:00 local on the 24th is 19:00 UTC;
    # the window ends at 08:00 CET on the 25th = 07:00 UTC.
    decision = check(now=datetime(2026, 10, 24, 19, 0, tzinfo=UTC), settings=QUIET)
    assert decision == Decision("defer", "quiet_hours", datetime(2026, 10, 25, 7, 0, tzinfo=UTC))


def test_quiet_window_within_one_day() -> None:
    lunch = PolicySettings(quiet_hours=(time(12), time(14)))
    # 12:00 UTC is 13:00 in Stockholm: inside; ends at 14:00 local = 13:00 UTC.
    assert check(settings=lunch) == Decision(
        "defer", "quiet_hours", datetime(2026, 11, 10, 13, 0, tzinfo=UTC)
    )
    assert check(who=recipient(timezone="America/New_York"), settings=lunch).action == "send"


def test_empty_quiet_window_never_defers() -> None:
    assert check(settings=PolicySettings(quiet_hours=(time(9), time(9)))).action == "send"


def test_quiet_hours_use_the_customer_zone() -> None:
    # 12:00 UTC is 21:00 in Tokyo (quiet) but 13:00 in Stockholm.
    tokyo = recipient(timezone="Asia/Tokyo")
    assert check(who=tokyo, settings=QUIET) == Decision(
        "defer", "quiet_hours", datetime(2026, 11, 10, 23, 0, tzinfo=UTC)
    )


def test_unknown_time_zone_falls_back_to_utc_and_says_so() -> None:
    mars = recipient(timezone="Mars/Olympus_Mons")
    assert check(who=mars, now=datetime(2026, 11, 10, 20, 30, tzinfo=UTC)) == Decision(
        "send", "unknown_timezone"
    )
    # Quiet hours are read in UTC: 21:30 UTC is inside 21:00-08:00, ending 08:00 UTC.
    assert check(
        who=mars, now=datetime(2026, 11, 10, 21, 30, tzinfo=UTC), settings=QUIET
    ) == Decision("defer", "quiet_hours:unknown_timezone", datetime(2026, 11, 11, 8, 0, tzinfo=UTC))
    assert check(who=recipient(timezone="")).reason == "unknown_timezone"


def test_naive_now_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        check(now=datetime(2026, 11, 10, 12, 0))


def test_unknown_channel_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown channel 'fax'"):
        check("fax")
