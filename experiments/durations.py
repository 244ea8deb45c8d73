"""Durations as marketers write them: ``0d``, ``3d``, ``12h``, ``30m``, ``2w``."""

from __future__ import annotations

import re
from datetime import timedelta

from experiments.limits import MAX_DURATION

# ASCII digits only (``\d`` would take full-width and other Unicode digits), a bounded count of
# them so that ``int()`` stays cheap; the size is checked against MAX_DURATION below.
_DURATION = re.compile(r"^\s*([0-9]{1,12})\s*([mhdw])\s*$", re.ASCII)
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """Parse ``<number><unit>`` with unit m, h, d or w, at most ``MAX_DURATION`` (3650 days);
    ValueError says what is accepted."""
    match = _DURATION.match(str(text))
    if not match:
        shown = str(text) if len(str(text)) <= 40 else str(text)[:40] + "..."
        raise ValueError(
            f"{shown!r} is not a duration; write a whole number and a unit, e.g. 0d, 3d, 12h, 2w"
        )
    value, unit = match.groups()
    if int(value) * _SECONDS[unit] > MAX_DURATION.total_seconds():
        raise ValueError(
            f"{value}{unit} is too long; durations are at most {MAX_DURATION.days}d (10 years)"
        )
    return timedelta(**{_UNITS[unit]: int(value)})


def format_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
