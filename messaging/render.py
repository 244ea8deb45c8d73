"""Render a message template for one customer: Jinja2, strict about missing variables, with locale
fallback and SMS segment counting.

Templates live in ``messaging/templates/<template>/``:

- ``<locale>.email.txt.j2``: first line ``Subject: ...``, a blank line, then the text body;
- ``<locale>.email.html.j2``: optional HTML body (autoescaped);
- ``<locale>.sms.j2``: the SMS body.

A locale resolves to the exact file (``sv-SE``), then its language (``sv``), then ``en``; the HTML body
comes from the same locale as the text body, or is absent. Templates see the fields of
:class:`MessageContext` as top-level names (``first_name``, ``offer.percent``,
``links.unsubscribe_url``, ...) plus the filters ``brand`` and ``month_name(lang)``.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import stat
import time
import traceback
from dataclasses import dataclass, fields
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
    select_autoescape,
)
from jinja2 import TemplateError as JinjaTemplateError

TEMPLATES_DIR = Path(__file__).parent / "templates"
DEFAULT_LOCALE = "en"
DEFAULT_APP_BASE_URL = "https://app.example.com"
CHANNELS = ("email", "sms")
_SUFFIX = {"email": "email.txt.j2", "sms": "sms.j2"}
_HTML_SUFFIX = "email.html.j2"


class TemplateError(Exception):
    """A template cannot be rendered: unknown template, syntax error or missing variable. The
    message names the template file (and line when known)."""


@dataclass(frozen=True)
class OfferContext:
    kind: str
    percent: int | None
    months: int


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
    """A short, stable token naming one message in links: the first 12 hex digits of the sha256
    of its idempotency key (short enough to keep an SMS in one segment; not a secret)."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:12]


def build_links(customer_external_id: str, token: str, base_url: str | None = None) -> Links:
    """Links for a message, ``<base>/<action>/<customer external id>/<token>``: the token is
    :func:`message_token` of the message's idempotency key (never a secret). Path segments rather than a query string keep SMS
    bodies short. ``base_url`` defaults to ``RETAIN_APP_BASE_URL`` or ``https://app.example.com``."""
    base = (base_url or os.environ.get("RETAIN_APP_BASE_URL") or DEFAULT_APP_BASE_URL).rstrip("/")
    tail = f"{quote(customer_external_id, safe='')}/{quote(token, safe=':')}"
    return Links(
        update_payment_url=f"{base}/pay/{tail}",
        offer_url=f"{base}/offer/{tail}",
        unsubscribe_url=f"{base}/unsubscribe/{tail}",
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
_MONTHS = {
    "en": "January February March April May June July August September October November December",
    "sv": "januari februari mars april maj juni juli augusti september oktober november december",
}


def _brand(value: str | None) -> str:
    if not value:
        return ""
    return _BRANDS.get(value.lower(), value.title())


def _month_name(month: int, lang: str = DEFAULT_LOCALE) -> str:
    names = _MONTHS.get(lang, _MONTHS[DEFAULT_LOCALE]).split()
    if not 1 <= int(month) <= 12:
        raise ValueError(f"month must be 1-12, not {month!r}")
    return names[int(month) - 1]


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
    return [] if stamp is None else list(_listing(folder, stamp, suffix))


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


@lru_cache(maxsize=4096)
def _listing(folder: Path, _stamp: int, suffix: str) -> tuple[str, ...]:
    return tuple(sorted(p.name.removesuffix("." + suffix) for p in folder.glob(f"*.{suffix}")))


def template_exists(channel: str, template: str) -> bool:
    """Whether ``template`` exists for ``channel``, i.e. has its English fallback file."""
    if channel not in _SUFFIX:
        return False
    return DEFAULT_LOCALE in _locales_of(template, _SUFFIX[channel])


def available_templates() -> list[tuple[str, str, list[str]]]:
    """Every shipped ``(template, channel, locales)``, sorted."""
    found = []
    for folder in sorted(p for p in TEMPLATES_DIR.iterdir() if p.is_dir()):
        for channel, suffix in _SUFFIX.items():
            locales = _locales_of(folder.name, suffix)
            if locales:
                found.append((folder.name, channel, locales))
    return found


def _candidates(locale: str) -> list[str]:
    language = re.split(r"[-_]", locale, maxsplit=1)[0].lower()
    out: list[str] = []
    for candidate in (locale, language, DEFAULT_LOCALE):
        if candidate and candidate not in out:
            out.append(candidate)
    return out


def _resolve(channel: str, template: str, locale: str) -> str:
    """The locale whose file will be used; TemplateError if none (not even ``en``) exists."""
    suffix = _check_channel(channel)
    available = _locales_of(template, suffix)
    for candidate in _candidates(locale):
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


def _render_file(name: str, context: MessageContext) -> str:
    try:
        return _environment().get_template(name).render(context.variables())
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


def render(channel: str, template: str, locale: str, context: MessageContext) -> RenderedMessage:
    """Render ``template`` for ``channel`` in the best available locale; raise
    :class:`TemplateError` naming the file and line on any problem."""
    chosen = _resolve(channel, template, locale)
    if channel == "sms":
        name = f"{template}/{chosen}.{_SUFFIX['sms']}"
        text = _render_file(name, context).strip()
        if not text:
            raise TemplateError(f"{_display(name)}: the SMS body is empty")
        return RenderedMessage("sms", None, text, None, sms_segments(text))
    name = f"{template}/{chosen}.{_SUFFIX['email']}"
    subject, text = _split_subject(name, _render_file(name, context))
    html_name = f"{template}/{chosen}.{_HTML_SUFFIX}"
    html = None
    if chosen in _locales_of(template, _HTML_SUFFIX):
        html = _render_file(html_name, context).strip() + "\n"
    return RenderedMessage("email", subject, text, html, None)
