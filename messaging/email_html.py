"""The HTML part of an email, built from its rendered text part so the two always say the same.

The text body is split into paragraphs (blank lines); a paragraph that is just a link becomes a
button labelled by what the link does (update payment details, accept the offer) in the email's
language; other links become anchors; what follows the ``--`` signature line is the small-print
footer. The HTML comes from ``templates/_layout/email.html.j2`` with autoescaping on, so a
customer's name such as ``<b>Ann</b>`` arrives as text, never as markup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from markupsafe import Markup, escape

URL = re.compile(r"https?://[^\s<>\"']+")

BUTTON_LABELS: dict[str, dict[str, str]] = {
    "pay": {
        "en": "Update payment details",
        "sv": "Uppdatera betalningsuppgifter",
        "nl": "Betaalgegevens bijwerken",
        "zh": "更新付款信息",
        "th": "อัปเดตข้อมูลการชำระเงิน",
    },
    "offer": {
        "en": "Accept the offer",
        "sv": "Ta del av erbjudandet",
        "nl": "Aanbod accepteren",
        "zh": "领取优惠",
        "th": "รับข้อเสนอ",
    },
    "app": {
        "en": "Open your account",
        "sv": "Öppna ditt konto",
        "nl": "Open je account",
        "zh": "打开我的账户",
        "th": "เปิดบัญชีของคุณ",
    },
}


@dataclass(frozen=True)
class Part:
    text: str
    url: str | None = None


@dataclass(frozen=True)
class Block:
    kind: Literal["paragraph", "button", "footer"]
    lines: tuple[tuple[Part, ...], ...] = ()
    url: str | None = None
    label: str | None = None


def _parts(line: str) -> tuple[Part, ...]:
    parts: list[Part] = []
    at = 0
    for match in URL.finditer(line):
        if match.start() > at:
            parts.append(Part(line[at : match.start()]))
        parts.append(Part(match.group(), match.group()))
        at = match.end()
    if at < len(line):
        parts.append(Part(line[at:]))
    return tuple(parts)


def _action(url: str) -> str:
    path = url.split("://", 1)[-1].split("/", 1)[-1]
    first = path.split("/", 1)[0]
    return first if first in BUTTON_LABELS else "app"


def button_label(url: str, language: str) -> str:
    labels = BUTTON_LABELS[_action(url)]
    return labels.get(language, labels["en"])


def blocks_of(text: str, language: str) -> list[Block]:
    """The text body as HTML blocks (see the module docstring)."""
    blocks: list[Block] = []
    footer = False
    for chunk in re.split(r"\n\s*\n", text.strip()):
        lines = chunk.split("\n")
        if lines[0].strip() == "--":
            footer, lines = True, lines[1:]
            if not lines:
                continue
        stripped = chunk.strip()
        if not footer and URL.fullmatch(stripped):
            blocks.append(Block("button", url=stripped, label=button_label(stripped, language)))
            continue
        kind: Literal["paragraph", "footer"] = "footer" if footer else "paragraph"
        blocks.append(Block(kind, lines=tuple(_parts(line) for line in lines)))
    return blocks


_BUTTON = (
    '<p style="margin:24px 0;"><a href="{url}" style="display:inline-block;padding:12px 22px;'
    'border-radius:6px;background:#2457d6;color:#ffffff;text-decoration:none;font-weight:600;">'
    "{label}</a></p>"
)
_FOOTER_STYLE = "font-size:13px;color:#6b7280;margin-top:32px;"


def _e(text: str) -> str:
    return str(escape(text))


def body_html(blocks: list[Block]) -> Markup:
    """The blocks as HTML, every piece of text and every URL escaped (markupsafe, as Jinja's
    autoescape does); built in plain Python because it runs for every email sent."""
    out = []
    for block in blocks:
        if block.kind == "button":
            out.append(_BUTTON.format(url=_e(block.url or ""), label=_e(block.label or "")))
            continue
        lines = [
            "".join(
                f'<a href="{_e(part.url)}" style="color:#2457d6;">{_e(part.text)}</a>'
                if part.url
                else _e(part.text)
                for part in line
            )
            for line in block.lines
        ]
        style = _FOOTER_STYLE if block.kind == "footer" else ""
        out.append(f'<p style="margin:0 0 16px 0;{style}">' + "<br>\n".join(lines) + "</p>")
    return Markup("\n".join(out))  # every piece above was escaped
