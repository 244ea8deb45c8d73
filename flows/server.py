"""A local Prefect server that outlives one command, so flow commands start in a second.

Without ``PREFECT_API_URL`` every flow command would start Prefect's ephemeral API server (8-10 s).
``retain server start`` runs ``prefect server start`` on 127.0.0.1 in the background and records its
address in ``prefect-server.json`` under Retain's state folder (``RETAIN_STATE_DIR``, default
``~/.retain``, where the link key lives too); flow commands then use it
when it answers its health check, and fall back to the ephemeral API when it does not.
``PREFECT_API_URL``, when set, always wins.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

DEFAULT_PORT = 4200


def _home() -> Path:
    from messaging.links import state_dir

    return state_dir()


def state_file() -> Path:
    return _home() / "prefect-server.json"


@dataclass(frozen=True)
class LocalServer:
    url: str
    pid: int


def healthy(url: str, timeout: float = 0.5) -> bool:
    """Whether the Prefect API at ``url`` (ending in ``/api``) answers its health check."""
    try:
        return httpx.get(f"{url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def recorded() -> LocalServer | None:
    """The server ``retain server start`` recorded, if the record is readable."""
    try:
        data = json.loads(state_file().read_text())
        return LocalServer(str(data["url"]), int(data["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def use_local_server() -> str | None:
    """Point this process at the recorded local server when ``PREFECT_API_URL`` is unset and the
    server is up; returns the URL in use (None: Prefect will start its ephemeral API)."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    server = recorded()
    if server is None or not healthy(server.url):
        return None
    os.environ["PREFECT_API_URL"] = server.url
    return server.url


def start(port: int = DEFAULT_PORT, wait_seconds: float = 90.0) -> LocalServer:
    """Start ``prefect server start`` on 127.0.0.1:``port`` in the background (or return the one
    already recorded and healthy). Raises RuntimeError, with the log's path, if it does not come up."""
    current = recorded()
    if current is not None and healthy(current.url):
        return current
    home = _home()
    home.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}/api"
    if healthy(url):
        raise RuntimeError(
            f"something already answers on 127.0.0.1:{port}; set PREFECT_API_URL={url} to use "
            "it, or pick another port with --port"
        )
    log_path = home / "prefect-server.log"
    env = {
        **os.environ,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    env.pop("PREFECT_API_URL", None)
    prefect = str(Path(sys.executable).with_name("prefect"))
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"prefect server exited with code {process.returncode}; see {log_path}"
            )
        if healthy(url, timeout=1.0):
            server = LocalServer(url, process.pid)
            state_file().write_text(json.dumps({"url": url, "pid": process.pid}))
            return server
        time.sleep(0.5)
    process.terminate()
    raise RuntimeError(f"prefect server did not answer within {wait_seconds:.0f} s; see {log_path}")


def stop() -> bool:
    """Stop the recorded server; False if none was recorded or it was already gone."""
    server = recorded()
    state_file().unlink(missing_ok=True)
    if server is None:
        return False
    try:
        os.killpg(server.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return False
    return True
