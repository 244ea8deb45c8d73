"""Flow commands find the local Prefect server `retain server start` recorded, and only when it
answers; PREFECT_API_URL always wins."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from flows import server


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/api/health" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/api"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RETAIN_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    return tmp_path


def test_a_recorded_healthy_server_is_used(home: Path, health_server: str) -> None:
    (home / "prefect-server.json").write_text(json.dumps({"url": health_server, "pid": 1}))
    assert server.use_local_server() == health_server
    import os

    assert os.environ["PREFECT_API_URL"] == health_server


def test_a_dead_or_garbled_record_falls_back_to_the_ephemeral_api(home: Path) -> None:
    (home / "prefect-server.json").write_text(
        json.dumps({"url": "http://127.0.0.1:9/api", "pid": 1})
    )
    assert server.use_local_server() is None
    (home / "prefect-server.json").write_text("{not json")
    assert server.use_local_server() is None
    assert server.stop() is False


def test_prefect_api_url_wins(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://prefect.internal:4200/api")
    (home / "prefect-server.json").write_text(
        json.dumps({"url": "http://127.0.0.1:9/api", "pid": 1})
    )
    assert server.use_local_server() == "http://prefect.internal:4200/api"
