"""Customer contact data, checked with the field's libraries: phone numbers normalised to E.164 with
``phonenumbers``, email addresses with ``email-validator`` (syntax only: no DNS lookups, so it works
offline and fast), time zones against the IANA database.

Every check either returns the normalised value or raises :class:`ContactError`, whose message is one
line saying what is wrong and how to fix it. Imports use these when customer data is written, and
the dispatcher uses them before sending, so a malformed address is a recorded skip, never a send.
"""

from __future__ import annotations

import zoneinfo
from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email

MAX_TIMEZONE_LENGTH = 64


class ContactError(ValueError):
    """A phone number, email address or time zone that cannot be used; the message says why."""


def normalise_phone(raw: str, default_region: str | None = None) -> str:
    """``raw`` as E.164 (``+46701234567``).

    A number without a leading ``+`` is read in ``default_region`` (ISO 3166 alpha-2, e.g. ``SE``);
    without one it must be international. Raises :class:`ContactError` for text that is not a
    number, a number that is impossible or not valid for its region.
    """
    text = raw.strip()
    if not text:
        raise ContactError("phone number is empty; leave the field blank (null) for no phone")
    region = default_region.upper() if default_region else None
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as error:
        hint = "" if region else " or set a default region"
        raise ContactError(
            f"phone number {text!r} does not parse ({str(error).split(') ', 1)[-1].rstrip('.')}); write it in E.164 "
            f"such as +46701234567{hint}"
        ) from None
    if not phonenumbers.is_valid_number(number):
        raise ContactError(
            f"phone number {text!r} is not a valid number for its region; check the digits and "
            "the country code (E.164, such as +46701234567)"
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_email(raw: str) -> str:
    """``raw`` checked for syntax and normalised (domain lower-cased and IDNA-normalised).

    No deliverability (DNS) check: that needs the network and belongs to the provider's bounces.
    """
    text = raw.strip()
    if not text:
        raise ContactError("email address is empty; leave the field blank (null) for no email")
    try:
        return validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError as error:
        raise ContactError(f"email address {text!r} is not valid: {error}") from None


@lru_cache(maxsize=4096)
def check_timezone(name: str) -> str:
    """``name`` if it is an IANA time zone such as ``Europe/Stockholm``.

    Rejects directory names (``Europe``), over-long or path-like strings and abbreviations that are
    not zones in their own right (``JST``): a customer messaged by the wrong clock is messaged at
    night, so an unknown zone is an error, never UTC.
    """
    if not name or len(name) > MAX_TIMEZONE_LENGTH or name.startswith(("/", ".")) or ".." in name:
        raise ContactError(
            f"time zone {name[:80]!r} is not an IANA time zone name; use one such as "
            "'Europe/Stockholm' or 'America/New_York'"
        )
    if name not in _available_zones():
        raise ContactError(
            f"time zone {name!r} is not an IANA time zone name; use one such as "
            "'Europe/Stockholm' or 'Asia/Tokyo' (abbreviations like 'JST' are ambiguous)"
        )
    return name


@lru_cache(maxsize=1)
def _available_zones() -> frozenset[str]:
    # Abbreviation-named zones (EST, MST, HST) exist in tzdata but are fixed offsets without DST
    # and are usually a mistake for a customer's home zone; they are still valid IANA names.
    return frozenset(zoneinfo.available_timezones()) | {"UTC"}
