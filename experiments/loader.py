"""Load experiment files and report every mistake with the file, the line and a plain fix.

The YAML is read with ruamel.yaml's round-trip loader, which remembers where each key and list item
sits, so a pydantic error at ``arms[1].weight`` points at the line the marketer wrote it on.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from experiments.assignment import layer_share_problems
from experiments.spec import ExperimentSpec

TemplateExists = Callable[[str, str], bool]
"""``(channel, template) -> bool``: whether messaging has that template (injected, to stay pure)."""


@dataclass(frozen=True)
class SpecProblem:
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"


class SpecError(Exception):
    """One or more problems in experiment files; ``str()`` gives one line per problem."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class LoadedSpec:
    spec: ExperimentSpec
    path: str
    text: str
    sha256: str


def load_spec(path: str | Path, template_exists: TemplateExists | None = None) -> LoadedSpec:
    """Read and validate one experiment file; raise :class:`SpecError` on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([SpecProblem(str(path), None, "file not found")]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError([SpecProblem(str(path), None, f"cannot read the file: {error}")]) from None
    return parse_spec(text, str(path), template_exists)


def load_specs(
    paths: Iterable[str | Path], template_exists: TemplateExists | None = None
) -> list[LoadedSpec]:
    """Load several files, collecting the problems of all of them before raising; keys must be
    unique across the files."""
    loaded: list[LoadedSpec] = []
    problems: list[SpecProblem] = []
    for path in paths:
        try:
            loaded.append(load_spec(path, template_exists))
        except SpecError as error:
            problems.extend(error.problems)
    seen: dict[str, str] = {}
    for item in loaded:
        if item.spec.key in seen:
            problems.append(
                SpecProblem(
                    item.path,
                    None,
                    f"key {item.spec.key!r} is already used by {seen[item.spec.key]}; "
                    "give each experiment its own key",
                )
            )
        seen.setdefault(item.spec.key, item.path)
    problems.extend(_layer_problems(loaded))
    if problems:
        raise SpecError(problems)
    return loaded


def _layer_problems(loaded: list[LoadedSpec]) -> list[SpecProblem]:
    """Experiments of one layer whose shares add up to more than 1, each named at its share."""
    texts = {item.path: item.text for item in loaded}
    found = layer_share_problems(
        [(i.path, i.spec.key, i.spec.assignment.layer, i.spec.assignment.share) for i in loaded]
    )
    return [SpecProblem(path, _share_line(texts[path]), message) for path, message in found]


def _share_line(text: str) -> int | None:
    match = re.search(r"^.*\bshare\s*:", text, re.MULTILINE)
    return text.count("\n", 0, match.start()) + 1 if match else None


def parse_spec(
    text: str, path: str = "<string>", template_exists: TemplateExists | None = None
) -> LoadedSpec:
    """Validate the YAML ``text`` of an experiment; ``path`` is only used in messages."""
    try:
        document = YAML(typ="rt").load(text)
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = error.problem or error.context or "invalid YAML"
        opened = error.context_mark
        if opened is not None and line is not None and opened.line + 1 != line:
            problem += f" (the construct opened on line {opened.line + 1} is not closed properly)"
        raise SpecError(
            [SpecProblem(path, line, f"this is not valid YAML: {problem} (check indentation)")]
        ) from None
    if not isinstance(document, CommentedMap):
        raise SpecError(
            [SpecProblem(path, 1, "an experiment file must be a mapping of fields (key: ...)")]
        )
    key = document.get("key")
    label = f"experiment {key!r}: " if isinstance(key, str) else ""
    try:
        spec = ExperimentSpec.model_validate(_plain(document))
    except ValidationError as error:
        raise SpecError(
            [
                SpecProblem(path, _line_of(document, err["loc"]), label + _describe(err))
                for err in error.errors()
            ]
        ) from None
    if template_exists is not None:
        missing = [
            SpecProblem(
                path,
                _template_line(document, channel, template),
                f"{label}unknown {channel} template {template!r}; add it under "
                f"messaging/templates/{template}/ or fix the name",
            )
            for channel, template in sorted(spec.templates())
            if not template_exists(channel, template)
        ]
        if missing:
            raise SpecError(missing)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return LoadedSpec(spec=spec, path=path, text=text, sha256=digest)


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _describe(error: Any) -> str:
    loc = [part for part in error["loc"] if not str(part).startswith("function-")]
    field = _dotted(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        parent = _dotted(loc[:-1]) or "the top level"
        return f"unknown field {loc[-1]!r} in {parent}; remove it or fix the spelling"
    if kind == "missing":
        return f"missing required field {field!r}; add it"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{field}: {message}" if field else message


def _dotted(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(document: CommentedMap, loc: tuple[Any, ...]) -> int:
    """1-based line of the deepest node of ``loc`` present in the document."""
    node: Any = document
    line = 0
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            line = node.lc.key(part)[0]
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            line = node.lc.item(part)[0]
            node = node[part]
        else:
            break
    return line + 1


def _template_line(document: CommentedMap, channel: str, template: str) -> int | None:
    for i, arm in enumerate(document.get("arms") or []):
        for j, step in enumerate((arm or {}).get("steps") or []):
            if isinstance(step, dict) and (step.get("channel"), step.get("template")) == (
                channel,
                template,
            ):
                return _line_of(document, ("arms", i, "steps", j, "template"))
    return None
