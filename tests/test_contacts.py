"""Contact data checks: phone numbers, email addresses and time zones."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messaging.contacts import ContactError, check_timezone, normalise_email, normalise_phone


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+46 70 123 45 67", None, "+46701234567"),
        ("070-123 45 67", "SE", "+46701234567"),
        ("(415) 555-2671", "us", "+14155552671"),
        ("+31 6 12345678", "SE", "+31612345678"),
    ],
)
def test_phone_numbers_are_normalised_to_e164(raw: str, region: str | None, expected: str) -> None:
    assert normalise_phone(raw, region) == expected


@pytest.mark.parametrize("raw", [" ", "not a number", "+46 70", "070-123 45 67", "+1 555 0000"])
def test_unusable_phone_numbers_are_rejected_in_one_line(raw: str) -> None:
    with pytest.raises(ContactError) as caught:
        normalise_phone(raw)
    assert "\n" not in str(caught.value)
    assert "phone number" in str(caught.value)


def test_email_addresses_are_checked_without_the_network() -> None:
    assert normalise_email(" Anna@Example.COM ") == "Anna@example.com"
    for bad in ["", "anna", "anna@", "a b@example.com", "anna@@example.com"]:
        with pytest.raises(ContactError):
            normalise_email(bad)


@pytest.mark.parametrize("name", ["Europe/Stockholm", "Asia/Tokyo", "UTC", "America/Santiago"])
def test_iana_zones_pass(name: str) -> None:
    assert check_timezone(name) == name


@pytest.mark.parametrize(
    "name", ["Europe", "JST", "", "x" * 200, "../etc/passwd", "/etc/localtime"]
)
def test_directories_abbreviations_and_paths_are_not_zones(name: str) -> None:
    with pytest.raises(ContactError, match="IANA"):
        check_timezone(name)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.text(max_size=40), st.one_of(st.none(), st.sampled_from(["SE", "US", "NL", "CN", "TH"])))
def test_any_text_is_a_phone_number_or_one_clear_error(raw: str, region: str | None) -> None:
    try:
        number = normalise_phone(raw, region)
    except ContactError as error:
        assert "\n" not in str(error)
    else:
        assert number.startswith("+") and number[1:].isdigit() and len(number) <= 16
