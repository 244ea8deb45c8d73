"""The HTML report as a person sees it: rendered by a real browser (Debian's headless Chromium).

The page is loaded from disk with networking features off; the test reads back the DOM the
browser built and a screenshot. CI installs Chromium; elsewhere the test is skipped.
"""

from __future__ import annotations

import html.parser
import struct
import subprocess
from pathlib import Path

import pytest

from experiments.report import write_report
from tests.test_report_sections import ARMS, rich_report

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
WIDTH, HEIGHT = 1280, 2000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chromium(profile: Path, *arguments: str) -> str:
    """Run headless Chromium (no sandbox, GPU, network extras or first-run UI) and return stdout."""
    if not CHROMIUM.exists():
        pytest.skip("Chromium not installed: apt-get install chromium")
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *arguments,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-2000:]}"
    return done.stdout


def screenshot(profile: Path, page: Path, png: Path) -> bytes:
    chromium(profile, f"--screenshot={png}", f"--window-size={WIDTH},{HEIGHT}", page.as_uri())
    assert png.exists(), f"Chromium wrote no screenshot to {png}"
    return png.read_bytes()


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the PNG signature and IHDR chunk (the first chunk, by the spec)."""
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", "not a PNG file"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


class _Dom(html.parser.HTMLParser):
    """The dumped DOM: every element (tag, attributes, ancestors' tags), the visible text, and
    the text of each table header cell."""

    _VOID = frozenset({"path", "line", "circle", "rect", "meta", "br", "img", "link"})
    _HIDDEN = frozenset({"head", "style", "title"})

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None], tuple[str, ...]]] = []
        self.text: list[str] = []
        self.headers: list[str] = []
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs), tuple(self._open)))
        if tag == "th":
            self.headers.append("")
        if tag not in self._VOID:
            self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._open:
            while self._open.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if self._HIDDEN.isdisjoint(self._open):
            self.text.append(data)
            if "th" in self._open:
                self.headers[-1] += data


def test_the_browser_shows_headline_km_chart_and_planted_effects(tmp_path: Path) -> None:
    paths = write_report(rich_report(), tmp_path / "report")
    dom = _Dom()
    dom.feed(chromium(tmp_path / "profile", "--dump-dom", paths["html"].as_uri()))
    text = " ".join(" ".join(dom.text).split())

    assert "email_sms has the largest significant lift on revenue_90d" in text
    assert "safe to check daily" in text and "Holm correction" in text
    assert "variance reduced by" in text and "chance that email_sms beats control" in text
    assert "Guardrail warning: unsubscribed_30d" in text
    headers = [" ".join(h.split()) for h in dom.headers]
    assert headers.count("planted effect") == 2  # the two metrics with planted effects
    svgs = [attrs for tag, attrs, _ in dom.elements if tag == "svg"]
    assert sum(attrs.get("class") == "km-chart" for attrs in svgs) == 1
    lines = [
        attrs
        for tag, attrs, parents in dom.elements
        if tag == "path" and attrs.get("class") == "km-line" and "svg" in parents
    ]
    assert len(lines) == len(ARMS)  # one Kaplan-Meier curve per arm
    assert len({attrs.get("stroke") for attrs in lines}) == len(ARMS)  # told apart by colour
    assert all((attrs.get("d") or "").startswith("M") for attrs in lines)
    assert "days since assignment" in text and "share still subscribed" in text
    assert not [a for tag, a, _ in dom.elements if tag in ("script", "link", "img", "iframe")]

    shot = screenshot(tmp_path / "profile", paths["html"], tmp_path / "report.png")
    assert png_size(shot) == (WIDTH, HEIGHT)
    empty = tmp_path / "empty.html"
    empty.write_text("<!DOCTYPE html><html><body></body></html>\n", encoding="utf-8")
    blank = screenshot(tmp_path / "profile", empty, tmp_path / "empty.png")
    assert png_size(blank) == (WIDTH, HEIGHT)
    # A blank page compresses to almost nothing (about 12 kB); text, tables and curves do not.
    assert len(shot) > 20_000 and len(shot) > 5 * len(blank), (len(shot), len(blank))
