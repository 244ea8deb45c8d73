"""Render a message template for one customer: Jinja2, strict about missing variables, with locale
fallback and SMS segment counting.

Templates live in ``messaging/templates/<template>/``:

- ``<locale>.email.txt.j2``: first line ``Subject: ...``, a blank line, then the text body;
- ``<locale>.email.html.j2``: optional HTML body (autoescaped);
- ``<locale>.sms.j2``: the SMS body.

A locale resolves to the exact file (``sv-SE``), then its language (``sv``), then the experiment's
default locale (if given), then ``en``; the HTML body comes from the same locale as the text body.
Templates see the fields of :class:`MessageContext` as top-level names (``first_name``,
``offer.percent``, ``links.unsubscribe_url``, ``amount_due_minor``, ...), ``locale`` (the customer's
Babel locale, which formats money and dates: see :mod:`messaging.formatting`) and the filters
``brand``, ``money(currency)``, ``day``, ``day_month``, ``month_year(year)`` and ``month_name(lang)``.
Every variable must be defined (``StrictUndefined``): a missing one is an error naming the template
file, line and variable, raised before anything is sent.

SMS bodies are GSM-7 whenever the template's own text is: a customer value outside the GSM alphabet
(``Zoë``) is folded to its base letters, and CLDR's no-break spaces become plain spaces.
"""

from __future__ import annotations

import math
import os
import re
import stat
import time
import traceback
from dataclasses import dataclass, fields, replace
from datetime import date
from functools import cache, lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateNotFound,
    TemplateSyntaxError,
    meta,
    select_autoescape,
)
from jinja2 import TemplateError as JinjaTemplateError

from messaging.email_html import blocks_of, body_html
from messaging.formatting import FILTERS, ascii_fold, babel_locale, sms_spaces
from messaging.links import ACTIONS, link_secret, message_ref, sign

TEMPLATES_DIR = Path(__file__).parent / "templates"
DEFAULT_LOCALE = "en"
DEFAULT_APP_BASE_URL = "https://app.example.com"
CHANNELS = ("email", "sms")
_SUFFIX = {"email": "email.txt.j2", "sms": "sms.j2"}
_HTML_SUFFIX = "email.html.j2"
_LAYOUT = "_layout/email.html.j2"


class TemplateError(Exception):
    """A template cannot be rendered: unknown template, syntax error or missing variable. The
    message names the template file (and line when known)."""


@dataclass(frozen=True)
class OfferContext:
    kind: str
    percent: int | None
    months: int
    code: str | None = None
    """The customer's own offer code (see :func:`messaging.links.offer_code`), if granted."""


@dataclass(frozen=True)
class Links:
    update_payment_url: str
    offer_url: str
    unsubscribe_url: str
    app_url: str


@dataclass(frozen=True)
class MessageContext:
    """Everything a template may use. Customer facts may be ``None`` when unknown."""

    links: Links
    first_name: str | None = None
    name: str | None = None
    plan: str | None = None
    card_brand: str | None = None
    card_last4: str | None = None
    card_exp_month: int | None = None
    card_exp_year: int | None = None
    offer: OfferContext | None = None
    currency: str | None = None
    """ISO 4217 code the customer is billed in (``customers.currency``)."""
    amount_due_minor: int | None = None
    """The unpaid invoice's amount in minor units of ``currency`` (dunning)."""
    due_date: date | None = None
    """When the unpaid invoice was due (dunning)."""
    cancel_date: date | None = None
    """When the subscription ends if the invoice stays unpaid (dunning)."""
    price_minor: int | None = None
    """The plan's regular price per billing interval, in minor units of ``currency``."""

    def variables(self) -> dict[str, object]:
        """The template namespace: each field by name (nested dataclasses stay objects)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class RenderedMessage:
    channel: str
    subject: str | None
    text: str
    html: str | None
    sms_segments: int | None


def message_token(idempotency_key: str) -> str:
    """The short, non-secret reference of one message that its links carry
    (:func:`messaging.links.message_ref`); :func:`build_links` signs it per link."""
    return message_ref(idempotency_key)


def build_links(customer_external_id: str, token: str, base_url: str | None = None) -> Links:
    """Signed links for a message, ``<base>/<action>/<customer external id>/<signed token>``
    (actions ``pay``, ``offer``, ``unsubscribe``): ``token`` is the message's reference
    (:func:`message_token`) and each link carries it with an HMAC of action, customer and
    reference (:mod:`messaging.links`), checked by :func:`messaging.links.verify_link_token`. Path
    segments rather than a query string keep SMS bodies short. ``base_url`` defaults to
    ``RETAIN_APP_BASE_URL`` or ``https://app.example.com``."""
    base = (base_url or os.environ.get("RETAIN_APP_BASE_URL") or DEFAULT_APP_BASE_URL).rstrip("/")
    customer = quote(customer_external_id, safe="")
    secret = link_secret()
    url = {
        action: f"{base}/{action}/{customer}/{quote(sign(action, customer_external_id, token, secret))}"
        for action in ACTIONS
    }
    return Links(
        update_payment_url=url["pay"],
        offer_url=url["offer"],
        unsubscribe_url=url["unsubscribe"],
        app_url=f"{base}/",
    )


# --- SMS segments --------------------------------------------------------------------------------

# GSM 03.38 basic character set (one septet each) and its extension table (escape + one septet).
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = frozenset("^{}\\[~]|€\f")


def sms_encoding(text: str) -> Literal["GSM-7", "UCS-2"]:
    """GSM-7 if every character is in the GSM 03.38 tables, else UCS-2."""
    ok = all(ch in _GSM_BASIC or ch in _GSM_EXTENDED for ch in text)
    return "GSM-7" if ok else "UCS-2"


def sms_segments(text: str) -> int:
    """Number of SMS parts: GSM-7 holds 160 septets in one part and 153 per part when split
    (``^{}\\[~]|€`` take two); UCS-2 holds 70 UTF-16 units, then 67 per part."""
    if sms_encoding(text) == "GSM-7":
        units = sum(2 if ch in _GSM_EXTENDED else 1 for ch in text)
        single, multi = 160, 153
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, multi = 70, 67
    if units <= single:
        return 1
    return math.ceil(units / multi)


# --- Filters -------------------------------------------------------------------------------------

_BRANDS = {"visa": "Visa", "mastercard": "Mastercard", "amex": "American Express"}


def _brand(value: str | None) -> str:
    if not value:
        return ""
    return _BRANDS.get(value.lower(), value.title())


def _month_name(month: int, lang: str = DEFAULT_LOCALE) -> str:
    if not 1 <= int(month) <= 12:
        raise ValueError(f"month must be 1-12, not {month!r}")
    names = babel_locale(lang).months["stand-alone"]["wide"]
    return str(names[int(month)])


@cache
def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        auto_reload=False,  # no stat per message; a changed template needs a new process
    )
    env.filters["brand"] = _brand
    env.filters["month_name"] = _month_name
    env.filters.update(FILTERS)
    return env


# --- Lookup --------------------------------------------------------------------------------------


def _check_channel(channel: str) -> str:
    if channel not in _SUFFIX:
        raise TemplateError(f"unknown channel {channel!r}; use one of: {', '.join(CHANNELS)}")
    return _SUFFIX[channel]


def _locales_of(template: str, suffix: str) -> list[str]:
    if not re.fullmatch(r"[a-z0-9_]+", template):
        return []
    folder = TEMPLATES_DIR / template
    stamp = _stamp(folder)
    # The listing is cached until the folder changes (its mtime moves); the folder is looked at
    # at most once a second, so a busy dispatcher makes no system call per message.
    return [] if stamp is None else list(_listing(folder, suffix, stamp))


_STAMPS: dict[Path, tuple[float, int | None]] = {}


def _stamp(folder: Path) -> int | None:
    now = time.monotonic()
    seen = _STAMPS.get(folder)
    if seen is not None and now - seen[0] < 1.0:
        return seen[1]
    try:
        info = folder.stat()
        stamp = info.st_mtime_ns if stat.S_ISDIR(info.st_mode) else None
    except OSError:
        stamp = None
    _STAMPS[folder] = (now, stamp)
    return stamp


@lru_cache(maxsize=1024)
def _listing(folder: Path, suffix: str, stamp: int) -> tuple[str, ...]:
    """The locales of one template folder: one directory listing per change, not per message."""
    if not folder.is_dir():
        return ()
    return tuple(sorted(p.name.removesuffix("." + suffix) for p in folder.glob(f"*.{suffix}")))


def template_exists(channel: str, template: str) -> bool:
    """Whether ``template`` exists for ``channel``, i.e. has its English fallback file."""
    if channel not in _SUFFIX:
        return False
    return DEFAULT_LOCALE in _locales_of(template, _SUFFIX[channel])


def template_variables(channel: str, template: str) -> frozenset[str]:
    """The top-level names (``offer``, ``first_name``, ...) any locale of ``template`` for
    ``channel`` uses (text and HTML bodies), read with Jinja2's ``meta``; empty if unknown or
    unparsable (validation reports those on their own)."""
    if channel not in _SUFFIX:
        return frozenset()
    env = _environment()
    names: set[str] = set()
    for suffix in {_SUFFIX[channel], _HTML_SUFFIX if channel == "email" else _SUFFIX[channel]}:
        for locale in _locales_of(template, suffix):
            path = TEMPLATES_DIR / template / f"{locale}.{suffix}"
            try:
                names |= meta.find_undeclared_variables(env.parse(path.read_text("utf-8")))
            except (OSError, UnicodeDecodeError, TemplateSyntaxError):
                continue
    return frozenset(names)


def available_templates() -> list[tuple[str, str, list[str]]]:
    """Every shipped ``(template, channel, locales)``, sorted."""
    found = []
    for folder in sorted(p for p in TEMPLATES_DIR.iterdir() if p.is_dir()):
        for channel, suffix in _SUFFIX.items():
            locales = _locales_of(folder.name, suffix)
            if locales:
                found.append((folder.name, channel, locales))
    return found


# Chinese in traditional script must not fall back to the simplified-Chinese files (``zh``).
_TRADITIONAL = re.compile(r"^zh[-_](hant|tw|hk|mo)\b", re.IGNORECASE)


def locale_candidates(locale: str, default_locale: str | None = None) -> list[str]:
    """The template locales tried, in order: ``sv-SE`` -> ``sv`` -> the experiment's default
    locale (and its language) -> ``en``."""
    out: list[str] = []
    for tag in (locale, default_locale):
        if not tag:
            continue
        normal = tag.replace("_", "-")
        language = normal.split("-", 1)[0].lower()
        for candidate in (normal, language):
            if candidate == "zh" and _TRADITIONAL.match(normal):
                continue
            if candidate and candidate not in out:
                out.append(candidate)
    if DEFAULT_LOCALE not in out:
        out.append(DEFAULT_LOCALE)
    return out


def resolve_locale(
    channel: str, template: str, locale: str, default_locale: str | None = None
) -> str:
    """The template locale a customer with ``locale`` gets (see :func:`locale_candidates`)."""
    return _resolve(channel, template, locale, default_locale)


def _resolve(channel: str, template: str, locale: str, default_locale: str | None = None) -> str:
    """The locale whose file will be used; TemplateError if none (not even ``en``) exists."""
    suffix = _check_channel(channel)
    available = _locales_of(template, suffix)
    for candidate in locale_candidates(locale, default_locale):
        if candidate in available:
            return candidate
    if not available:
        known = sorted({t for t, c, _ in available_templates() if c == channel})
        raise TemplateError(
            f"unknown {channel} template {template!r}: no messaging/templates/{template}/"
            f"*.{suffix} file; known {channel} templates: {', '.join(known) or 'none'}"
        )
    raise TemplateError(
        f"{channel} template {template!r} has no file for locale {locale!r} and no English "
        f"fallback; add messaging/templates/{template}/{DEFAULT_LOCALE}.{suffix}"
    )


# --- Rendering -----------------------------------------------------------------------------------


def _display(name: str) -> str:
    return f"messaging/templates/{name}"


def _line_of(error: BaseException, name: str) -> int | None:
    """The template line of the innermost traceback frame that belongs to template ``name``."""
    filename = str(TEMPLATES_DIR / name)
    line = None
    for frame, lineno in traceback.walk_tb(error.__traceback__):
        if frame.f_code.co_filename == filename:
            line = lineno
    return line


def _render_file(name: str, context: MessageContext, locale: str) -> str:
    variables = context.variables()
    variables["locale"] = babel_locale(locale, fallback=name.split("/")[-1].split(".")[0])
    try:
        return _environment().get_template(name).render(variables)
    except TemplateSyntaxError as error:
        raise TemplateError(
            f"{_display(name)}:{error.lineno}: template syntax error: {error.message}"
        ) from None
    except TemplateNotFound:
        raise TemplateError(f"{_display(name)}: template file not found") from None
    except (JinjaTemplateError, ValueError, TypeError) as error:
        line = _line_of(error, name)
        where = f"{_display(name)}:{line}" if line else _display(name)
        raise TemplateError(f"{where}: {error}") from None


def _split_subject(name: str, rendered: str) -> tuple[str, str]:
    first, _, rest = rendered.lstrip("\n").partition("\n")
    if not first.startswith("Subject:") or not first.removeprefix("Subject:").strip():
        raise TemplateError(
            f"{_display(name)}:1: an email template must start with 'Subject: ...' and a blank "
            "line before the body"
        )
    body = rest.strip("\n").rstrip()
    if not body:
        raise TemplateError(f"{_display(name)}: the email body is empty")
    return first.removeprefix("Subject:").strip(), body + "\n"


def _formatting_locale(customer: str, chosen: str) -> str:
    """The customer's own locale (``sv-SE``: Swedish with Swedish conventions) when the template is
    in their language; otherwise the template's, so numbers read naturally in the text around them."""
    language = customer.replace("_", "-").split("-", 1)[0].lower()
    return customer if customer and language == chosen.split("-", 1)[0].lower() else chosen


def _folded(context: MessageContext) -> MessageContext:
    """The context with the customer's own words folded to base letters (for GSM-7 SMS)."""

    def fold(value: str | None) -> str | None:
        return ascii_fold(value) if value else value

    return replace(
        context,
        first_name=fold(context.first_name),
        name=fold(context.name),
        plan=fold(context.plan),
    )


def _render_sms(name: str, context: MessageContext, locale: str) -> str:
    text = sms_spaces(_render_file(name, context, locale).strip())
    if sms_encoding(text) == "UCS-2":
        folded = sms_spaces(_render_file(name, _folded(context), locale).strip())
        if sms_encoding(folded) == "GSM-7":
            return folded
    return text


def render(
    channel: str,
    template: str,
    locale: str,
    context: MessageContext,
    default_locale: str | None = None,
) -> RenderedMessage:
    """Render ``template`` for ``channel`` in the best available locale for a customer with
    ``locale`` (falling back to ``default_locale``, then English); money and dates follow the
    customer's ``locale``. Raise :class:`TemplateError` naming the file and line on any problem."""
    chosen = _resolve(channel, template, locale, default_locale)
    fmt_locale = _formatting_locale(locale, chosen)
    if channel == "sms":
        name = f"{template}/{chosen}.{_SUFFIX['sms']}"
        text = _render_sms(name, context, fmt_locale)
        if not text:
            raise TemplateError(f"{_display(name)}: the SMS body is empty")
        return RenderedMessage("sms", None, text, None, sms_segments(text))
    name = f"{template}/{chosen}.{_SUFFIX['email']}"
    subject, text = _split_subject(name, _render_file(name, context, fmt_locale))
    html_name = f"{template}/{chosen}.{_HTML_SUFFIX}"
    if chosen in _locales_of(template, _HTML_SUFFIX):  # a hand-made HTML part wins
        html = _render_file(html_name, context, fmt_locale).strip() + "\n"
    else:
        html = _html_from_text(subject, text, chosen)
    return RenderedMessage("email", subject, text, html, None)


def _html_from_text(subject: str, text: str, chosen: str) -> str:
    """The HTML part made from the text part (:mod:`messaging.email_html`), autoescaped."""
    language = chosen.split("-", 1)[0]
    layout = _environment().get_template(_LAYOUT)
    return (
        layout.render(
            lang=chosen, subject=subject, body=body_html(blocks_of(text, language))
        ).strip()
        + "\n"
    )
