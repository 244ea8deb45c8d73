"""Durations as marketers write them: ``0d``, ``3d``, ``12h``, ``30m``, ``2w``."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """Parse ``<number><unit>`` with unit m, h, d or w; ValueError says what is accepted."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(
            f"{text!r} is not a duration; write a whole number and a unit, e.g. 0d, 3d, 12h, 2w"
        )
    value, unit = match.groups()
    return timedelta(**{_UNITS[unit]: int(value)})


def format_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
