"""The demo's reports as people see them, in a real browser (Debian's headless Chromium), and their
report.json against the committed JSON Schema.

One Chromium session (DevTools protocol over a local WebSocket) opens each demo report at 1280 px
and at 375 px and checks, from the rendered page: the verdict is visible above the fold, every
arm's name and the primary metric's headline CI are visible, every chart is drawn at its expected
size, nothing scrolls sideways on the phone, and nothing was requested from the network.
Screenshots go to ``demo-output/report-screenshots/`` for people to look at. CI installs Chromium
(``.ci/run``); elsewhere the browser test is skipped, saying so.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from websockets.sync.client import ClientConnection, connect

from experiments.report.direction import headline_ci, primary_metric
from experiments.report.models import Report
from experiments.report.numbers import lift_parts
from experiments.report.render import money_unit
from experiments.report.schema import SCHEMA_PATH

pytestmark = [pytest.mark.slow, pytest.mark.prefect]

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "demo-output" / "report-screenshots"
VIEWPORTS = {"desktop": (1280, 800), "phone": (375, 812)}


@pytest.fixture(scope="module")
def demo_reports(prefect_api: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo on a small business (its own SQLite file), with a 10 % global holdout so the
    reports carry the programme-effect section too: each experiment's report folder."""
    from flows.demo import DemoConfig, run_demo

    out = tmp_path_factory.mktemp("demo")
    holdout = out / "holdout.yaml"
    holdout.write_text("share: 0.1\nsalt: browser-holdout\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RETAIN_HOLDOUT_FILE", str(holdout))
        result = run_demo(DemoConfig(out_dir=out, customers=2_000, seed=5), log=lambda _: None)
    return result.report_dirs


def test_every_demo_report_json_matches_the_committed_schema(
    demo_reports: dict[str, Path],
) -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    held = 0
    for folder in demo_reports.values():
        data = json.loads((folder / "report.json").read_text(encoding="utf-8"))
        assert list(validator.iter_errors(data)) == []
        assert data["verdict"]["text"] and data["trust"]["checks"] and data["funnel"]["arms"]
        assert data["provenance"]["spec_hash"] and data["lift_over_time"]["arms"]
        if data["holdout"] is not None:  # an experiment may select no holdout customer
            held += 1
            assert data["holdout"]["metrics"][0]["holdout"]["n"] > 0
    assert held >= 2, "the 10 % holdout should show in most demo reports"


class DevTools:
    """A minimal Chrome DevTools Protocol client: one browser, one page (flat sessions)."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.events: list[dict[str, Any]] = []
        self.next_id = 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        for domain in ("Page", "Network", "Runtime"):
            self.call(f"{domain}.enable", page=True)

    def call(self, method: str, page: bool = False, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if page:
            message["sessionId"] = self.session
        self.socket.send(json.dumps(message))
        while True:
            reply = json.loads(self.socket.recv(timeout=60))
            if reply.get("id") == self.next_id:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return dict(reply.get("result", {}))
            self.events.append(reply)

    def wait_for(self, event: str) -> None:
        while not any(e.get("method") == event for e in self.events):
            self.events.append(json.loads(self.socket.recv(timeout=60)))

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", page=True, expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"]["value"]

    def open(self, url: str, width: int, height: int) -> list[str]:
        """Load ``url`` in a ``width`` x ``height`` viewport; the URLs it requested."""
        self.call(
            "Emulation.setDeviceMetricsOverride",
            page=True,
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=width < 600,
        )
        self.events.clear()
        self.call("Page.navigate", page=True, url=url)
        self.wait_for("Page.loadEventFired")
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent"
        ]

    def screenshot(self, path: Path) -> bytes:
        data = base64.b64decode(
            self.call("Page.captureScreenshot", page=True, format="png")["data"]
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return data


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevTools]:
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed: apt-get install chromium chromium-driver")
    profile = tmp_path_factory.mktemp("chromium-profile")
    process = subprocess.Popen(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(600):  # Chromium writes its port once it listens
            if port_file.exists() and len(port_file.read_text().splitlines()) >= 2:
                break
            assert process.poll() is None, "Chromium exited before it listened"
            time.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        with connect(f"ws://127.0.0.1:{port}{path}", max_size=None) as socket:
            yield DevTools(socket)
    finally:
        process.terminate()
        process.wait(timeout=30)


# Everything the checks need from the rendered page, measured by the browser itself.
PAGE_FACTS = """(() => {
  const box = (el) => { const r = el.getBoundingClientRect();
    return {top: r.top, bottom: r.bottom, width: r.width, height: r.height}; };
  const verdict = document.getElementById("verdict");
  const style = verdict ? getComputedStyle(verdict) : null;
  return {
    text: document.body.innerText,
    innerWidth: window.innerWidth,
    innerHeight: window.innerHeight,
    scrollWidth: document.documentElement.scrollWidth,
    verdict: verdict ? {...box(verdict), visible: style.visibility === "visible"
      && style.display !== "none", text: verdict.innerText} : null,
    charts: [...document.querySelectorAll("svg.chart, svg.ci-bar")].map((svg) => ({
      cls: svg.getAttribute("class"),
      attrWidth: +svg.getAttribute("width"), attrHeight: +svg.getAttribute("height"),
      container: svg.parentElement.getBoundingClientRect().width,
      marks: svg.querySelectorAll("path, line, circle, rect").length,
      drawn: [...svg.querySelectorAll("path, line, circle")].filter((m) => {
        const b = m.getBBox(); return b.width > 0 || b.height > 0; }).length,
      ...box(svg),
    })),
  };
})()"""


@dataclass(frozen=True)
class Expected:
    arms: list[str]
    primary_cis: list[str]
    charts: int


def expected(report: Report) -> Expected:
    primary = primary_metric(report)
    assert primary is not None
    money = money_unit(report, primary.name)
    cis = []
    for c in primary.comparisons:
        ci = headline_ci(c)
        if c.abs_lift is not None and ci is not None:
            cis.append(lift_parts(c.abs_lift, ci, primary.kind, money)[1] or "")
    # One bar per (metric, compared arm), the lift-over-time chart, the Kaplan-Meier chart.
    bars = sum(len(m.comparisons) for m in report.metrics)
    return Expected([a.name for a in report.arms], cis, bars + 1 + (report.survival is not None))


def test_demo_reports_render_for_people_at_1280_and_375_px(
    demo_reports: dict[str, Path], browser: DevTools
) -> None:
    for key, folder in demo_reports.items():
        report = Report.model_validate_json((folder / "report.json").read_text(encoding="utf-8"))
        want = expected(report)
        assert want.primary_cis, f"{key}: the primary metric has no CI to show"
        page = (folder / "report.html").resolve().as_uri()
        for name, (width, height) in VIEWPORTS.items():
            where = f"{key} at {width} px"
            requested = browser.open(page, width, height)
            assert requested and all(u.startswith(("file:", "data:")) for u in requested), (
                f"{where}: requested from the network: {requested}"
            )
            facts = browser.evaluate(PAGE_FACTS)
            v = facts["verdict"]
            assert v is not None and v["visible"], f"{where}: no visible #verdict"
            assert 0 <= v["top"] < v["bottom"] <= facts["innerHeight"], f"{where}: verdict {v}"
            assert report.verdict is not None and report.verdict.text in v["text"]
            for arm in want.arms:
                assert arm in facts["text"], f"{where}: arm {arm} not shown"
            for ci in want.primary_cis:
                assert ci in facts["text"], f"{where}: primary CI {ci} not shown"
            section = "Programme effect: treated vs global holdout"
            assert (section in facts["text"]) == (report.holdout is not None), where
            charts = facts["charts"]
            assert len(charts) == want.charts, f"{where}: {len(charts)} charts"
            for chart in charts:
                assert chart["marks"] > 0 and chart["drawn"] > 0, f"{where}: empty {chart}"
                w, h = chart["attrWidth"], chart["attrHeight"]
                # A chart scales down to its column, keeping its proportions; a bar keeps its size.
                fits = w if "ci-bar" in chart["cls"] else min(w, chart["container"])
                assert abs(chart["width"] - fits) <= 1, f"{where}: {chart}"
                assert abs(chart["height"] - fits * h / w) <= 1.5, f"{where}: {chart}"
            if name == "phone":
                assert facts["scrollWidth"] <= facts["innerWidth"], (
                    f"{where}: scrolls sideways ({facts['scrollWidth']} px wide)"
                )
            shot = browser.screenshot(SCREENSHOTS / f"{key}-{width}px.png")
            assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 20_000
        # Printing to PDF (A4, the print stylesheet) gives a document of several pages.
        pdf = base64.b64decode(
            browser.call("Page.printToPDF", page=True, paperWidth=8.27, paperHeight=11.69)["data"]
        )
        (SCREENSHOTS / f"{key}.pdf").write_bytes(pdf)
        assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page") >= 2
