"""How user text reaches the terminal: the one place that makes it safe for rich.

Everything a user wrote (field and arm names, paths, rules, error messages that quote them) goes
through :func:`safe` before it is put inside rich markup, so ``[/bold]`` cannot crash the output,
``[link=...]`` cannot become a terminal hyperlink, a regex keeps its brackets and a control
character cannot move the cursor.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def safe(value: object) -> str:
    """``str(value)`` shown literally by rich: markup escaped, control characters as ``\\xNN``."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))
    return escape(text)


# The command line's two consoles: results on stdout, the one-line errors and warnings on stderr.
console = Console(soft_wrap=True)
if not console.is_terminal:  # piped or captured: do not squeeze the tables into 80 columns
    console.width = 160
errors = Console(stderr=True, soft_wrap=True, highlight=False)


def error(text: object) -> None:
    """One ``error ...`` line on stderr, the user's text escaped."""
    errors.print(f"[red]error[/red] {safe(text)}")


def warning(text: object) -> None:
    """One ``warning ...`` line on stderr, the user's text escaped."""
    errors.print(f"[yellow]warning[/yellow] {safe(text)}")


def fail(where: object, what: object = None, fix: object = None, *, code: int = 2) -> NoReturn:
    """The one error path of every command: ``error <where>: <what>; <fix>`` on stderr, then exit
    (code 2 unless told). ``fail(message)`` alone prints the message as it is."""
    text = str(where) if what is None else f"{where}: {what}"
    if fix is not None:
        text = f"{text}; {fix}"
    error(text)
    raise typer.Exit(code=code)


def fail_all(problems: Iterable[object]) -> NoReturn:
    """One ``error`` line per problem (a problem's ``context`` lines, such as a rule with a caret
    under the mistake, indented below it), then exit code 2."""
    for problem in problems:
        error(problem)
        for line in getattr(problem, "context", ()):
            errors.print(f"    {safe(line)}")
    raise typer.Exit(code=2)
