"""How user text reaches the terminal: the one place that makes it safe for rich.

Everything a user wrote (field and arm names, paths, rules, error messages that quote them) goes
through :func:`safe` before it is put inside rich markup, so ``[/bold]`` cannot crash the output,
``[link=...]`` cannot become a terminal hyperlink, a regex keeps its brackets and a control
character cannot move the cursor.
"""

from __future__ import annotations

import re

from rich.markup import escape

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def safe(value: object) -> str:
    """``str(value)`` shown literally by rich: markup escaped, control characters as ``\\xNN``."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))
    return escape(text)
