"""The limits of an experiment file, checked by ``retain validate`` before anything runs.

An experiment file is a few kilobytes written by hand; these bounds are far above any real one and
far below what would make validation slow or a later stage fail. The README lists them (section
"Limits"); keep the two in step.
"""

from __future__ import annotations

from datetime import timedelta

MAX_FILE_BYTES = 65_536
"""Size of one experiment file, in bytes (UTF-8)."""

MAX_DEPTH = 32
"""Nesting of mappings and lists (the top-level mapping is depth 1)."""

MAX_NODES = 10_000
"""Values in one file, counting every use of a YAML alias (``*name``) as a full copy, so that an
alias bomb ("billion laughs") is rejected before it is expanded."""

MAX_TEXT_CHARS = 10_000
"""Length of one text value (a segment rule, a hypothesis, ...), in characters."""

MAX_ARMS = 20
"""Arms of one experiment."""

MAX_STEPS = 20
"""Message steps of one arm."""

MAX_METRICS = 20
"""Entries of ``metrics.secondary``, and of ``metrics.guardrails``."""

MAX_DURATION = timedelta(days=3650)
"""A step's ``at`` and a frequency cap's ``per``: at most 3650 days (10 years)."""

MIN_WEIGHT = 1e-6
MAX_WEIGHT = 1e6
"""An arm's ``weight`` lies in ``[MIN_WEIGHT, MAX_WEIGHT]``."""

MAX_COUNT = 1_000_000_000
"""Whole-number settings without a narrower bound (``sequential_tuning_n``, a cap's ``max``)."""

MAX_MONEY = 1e9
"""Costs per message or per accepted offer, in currency units."""
