"""Exactly once under SIGKILL: the short version of ``bench/crash_dispatch.py`` (real dispatcher
child processes with the real provider clients, killed mid-send and restarted)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "crash_dispatch.py"


def harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("crash_dispatch", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["crash_dispatch"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_killed_dispatchers_send_every_message_exactly_once(database_url: str) -> None:
    crash = harness()
    lines: list[str] = []
    result = crash.run(database_url, messages=160, kills=3, seed=4, log=lines.append)
    assert result.kills == 3, lines
    assert result.messages == 160
    assert result.accepted == {"sendgrid": 80, "twilio": 80}
    assert (result.duplicates, result.missing, result.wrong_provider_id) == (0, 0, 0)
    assert result.not_sent == {}
    # Every acceptance is recorded as exactly one attempt that ended "sent" or was "found".
    assert result.attempts.get("sent", 0) + result.attempts.get("found", 0) == 160
    assert result.ok
