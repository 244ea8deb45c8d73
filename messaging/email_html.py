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

    @property
    def inner_html(self) -> Markup:
        """The paragraph's lines as HTML: every piece of text escaped, links as anchors."""
        lines = [
            Markup("").join(
                Markup('<a href="{}" style="color:#2457d6;">{}</a>').format(part.url, part.text)
                if part.url
                else escape(part.text)
                for part in line
            )
            for line in self.lines
        ]
        return Markup("<br>\n").join(lines)


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
