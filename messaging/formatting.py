"""Locale-aware formatting for templates, with Babel (CLDR): money in the customer's currency and
dates in the customer's language, never by hand.

Templates call the filters with the customer's locale taken from the template context:
``{{ amount_due|money(currency) }}``, ``{{ due_date|day }}``, ``{{ due_date|day_month }}``,
``{{ card_exp_month|month_year(card_exp_year) }}``.
"""

from __future__ import annotations

import unicodedata
from datetime import date, datetime
from decimal import Decimal
from functools import cache

from babel import Locale, UnknownLocaleError
from babel.dates import format_skeleton
from babel.numbers import format_currency, get_currency_precision
from jinja2 import pass_context
from jinja2.runtime import Context

FALLBACK_LOCALE = "en"


@cache
def babel_locale(tag: str | None, fallback: str = FALLBACK_LOCALE) -> Locale:
    """The Babel locale of a tag such as ``sv-SE``, ``zh_CN`` or ``th``; ``fallback`` if it does
    not parse (a bad locale in customer data must not stop a message)."""
    for candidate in (tag, fallback, FALLBACK_LOCALE):
        if not candidate:
            continue
        try:
            return Locale.parse(candidate.replace("-", "_"))
        except (UnknownLocaleError, ValueError, TypeError):
            continue
    raise AssertionError("the fallback locale always parses")  # pragma: no cover


_KNOWN_CURRENCIES = frozenset(Locale("en").currencies)


def is_currency(code: str | None) -> bool:
    """Whether ``code`` is an ISO 4217 code Babel knows."""
    return bool(code) and len(str(code)) == 3 and str(code).upper() in _KNOWN_CURRENCIES


def minor_to_major(amount_minor: int, currency: str) -> Decimal:
    """Minor units (cents, öre, satang; yen have none) to an amount in the currency's units."""
    digits = get_currency_precision(currency.upper())
    return Decimal(int(amount_minor)).scaleb(-digits)


def format_money(amount_minor: int, currency: str, locale: str | Locale) -> str:
    """``amount_minor`` (integer minor units) of ``currency`` as the locale writes it:
    ``49,00 US$`` (sv-SE), ``฿1,299.00`` (th-TH), ``¥99.00`` (zh-CN)."""
    code = currency.upper()
    if not is_currency(code):
        raise ValueError(f"unknown currency {currency!r}; use an ISO 4217 code such as USD or SEK")
    loc = locale if isinstance(locale, Locale) else babel_locale(locale)
    return format_currency(minor_to_major(amount_minor, code), code, locale=loc)


def _as_date(value: date | datetime) -> date:
    return value.date() if isinstance(value, datetime) else value


def format_day(value: date | datetime, locale: str | Locale, with_year: bool = True) -> str:
    """A calendar day in the locale's long form: ``March 4, 2027``, ``4 mars 2027``,
    ``2027年3月4日``; without the year: ``4 mars``."""
    loc = locale if isinstance(locale, Locale) else babel_locale(locale)
    return format_skeleton("yMMMMd" if with_year else "MMMMd", _as_date(value), locale=loc)


def format_month_year(month: int, year: int, locale: str | Locale) -> str:
    """``March 2027``, ``mars 2027``, ``2027年3月``."""
    if not 1 <= int(month) <= 12:
        raise ValueError(f"month must be 1-12, not {month!r}")
    loc = locale if isinstance(locale, Locale) else babel_locale(locale)
    return format_skeleton("yMMMM", date(int(year), int(month), 1), locale=loc)


def _locale_of(context: Context) -> Locale:
    value = context.get("locale")
    return value if isinstance(value, Locale) else babel_locale(str(value) if value else None)


@pass_context
def money_filter(context: Context, amount_minor: int, currency: str) -> str:
    return format_money(amount_minor, currency, _locale_of(context))


@pass_context
def day_filter(context: Context, value: date | datetime) -> str:
    return format_day(value, _locale_of(context))


@pass_context
def day_month_filter(context: Context, value: date | datetime) -> str:
    return format_day(value, _locale_of(context), with_year=False)


@pass_context
def month_year_filter(context: Context, month: int, year: int) -> str:
    return format_month_year(month, year, _locale_of(context))


FILTERS = {
    "money": money_filter,
    "day": day_filter,
    "day_month": day_month_filter,
    "month_year": month_year_filter,
}

# Spaces CLDR puts in numbers and dates that GSM-7 lacks; in an SMS a plain space does the job.
_SMS_SPACES = str.maketrans({"\u00a0": " ", "\u202f": " ", "\u2009": " "})


def sms_spaces(text: str) -> str:
    return text.translate(_SMS_SPACES)


def ascii_fold(text: str) -> str:
    """Drop accents (``Zoë`` -> ``Zoe``) so that a GSM-7 message stays GSM-7 when a customer's
    name has a letter outside the GSM alphabet."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))
