"""Load experiment files and report every mistake with the file, the line and a plain fix.

The YAML is read with ruamel.yaml's round-trip loader, which remembers where each key and list item
sits, so a pydantic error at ``arms[1].weight`` points at the line the marketer wrote it on.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    ScalarEvent,
)
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

from experiments.assignment import layer_share_problems
from experiments.limits import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES
from experiments.rules import RuleError
from experiments.spec import ExperimentSpec, FieldProblem

TemplateExists = Callable[[str, str], bool]
"""``(channel, template) -> bool``: whether messaging has that template (injected, to stay pure)."""
TemplateVariables = Callable[[str, str], frozenset[str]]
"""``(channel, template) -> names``: the variables a template uses (injected, to stay pure)."""

# What YAML 1.2 does not allow in a stream (as ruamel's reader), named for the message.
_NON_PRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)
_CHARACTER_NAMES = {0: "NUL", 0x1B: "ESC", 0x7F: "DEL", 0xFFFE: "a byte-order mark out of place"}


@dataclass(frozen=True)
class SpecProblem:
    path: str
    line: int | None
    message: str
    context: tuple[str, ...] = ()  # lines shown under the problem (a rule with a caret)

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


def load_spec(
    path: str | Path,
    template_exists: TemplateExists | None = None,
    template_variables: TemplateVariables | None = None,
) -> LoadedSpec:
    """Read and validate one experiment file; raise :class:`SpecError` on any problem."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise SpecError([SpecProblem(str(path), None, "file not found")]) from None
    except IsADirectoryError:
        raise SpecError(
            [SpecProblem(str(path), None, "is a folder; give the experiment's YAML file")]
        ) from None
    except OSError as error:
        reason = error.strerror or str(error)
        raise SpecError([SpecProblem(str(path), None, f"cannot read the file: {reason}")]) from None
    if len(data) > MAX_FILE_BYTES:
        raise SpecError(
            [
                SpecProblem(
                    str(path),
                    None,
                    f"the file is larger than {MAX_FILE_BYTES:,} bytes, the limit for an "
                    "experiment file; is it the right file?",
                )
            ]
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise SpecError(
            [
                SpecProblem(
                    str(path),
                    line,
                    f"byte 0x{data[error.start]:02x} is not UTF-8; save the file as UTF-8 text",
                )
            ]
        ) from None
    return parse_spec(text, str(path), template_exists, template_variables)


def load_specs(
    paths: Iterable[str | Path],
    template_exists: TemplateExists | None = None,
    template_variables: TemplateVariables | None = None,
) -> list[LoadedSpec]:
    """Load several files, collecting the problems of all of them before raising; keys must be
    unique across the files."""
    loaded: list[LoadedSpec] = []
    problems: list[SpecProblem] = []
    for path in paths:
        try:
            loaded.append(load_spec(path, template_exists, template_variables))
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
    text: str,
    path: str = "<string>",
    template_exists: TemplateExists | None = None,
    template_variables: TemplateVariables | None = None,
) -> LoadedSpec:
    """Validate the YAML ``text`` of an experiment; ``path`` is only used in messages.

    The text is checked against :mod:`experiments.limits` (size, characters, nesting, values with
    aliases expanded) before it is parsed, so no input makes this slow, and every problem is a
    :class:`SpecError`. With ``template_variables``, a step whose template uses ``offer`` needs an
    arm with an ``offer:`` block."""
    document = _read_yaml(text, path)
    key = document.get("key")
    label = f"experiment {key!r}: " if isinstance(key, str) and len(key) <= 100 else ""
    key_problems = list(_non_text_keys(document, path, label))
    if key_problems:
        raise SpecError(key_problems)
    try:
        spec = ExperimentSpec.model_validate(_plain(document))
    except ValidationError as error:
        raise SpecError(
            [
                SpecProblem(
                    path, _line_of(document, _loc(err)), label + _describe(err), _context(err)
                )
                for err in error.errors()
            ]
        ) from None
    template_problems: list[SpecProblem] = []
    if template_exists is not None:
        template_problems = [
            SpecProblem(
                path,
                _template_line(document, channel, template),
                f"{label}unknown {channel} template {template!r}; add it under "
                f"messaging/templates/{template}/ or fix the name",
            )
            for channel, template in sorted(spec.templates())
            if not template_exists(channel, template)
        ]
    if template_variables is not None and not template_problems:
        template_problems = list(_offer_problems(spec, document, path, label, template_variables))
    if template_problems:
        raise SpecError(template_problems)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return LoadedSpec(spec=spec, path=path, text=text, sha256=digest)


def _read_yaml(text: str, path: str) -> CommentedMap:
    """The document as ruamel's round-trip mapping, or SpecError for anything that is not a
    mapping of fields within the limits."""

    def fail(line: int | None, message: str) -> NoReturn:
        raise SpecError([SpecProblem(path, line, message)])

    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > MAX_FILE_BYTES:
        fail(
            None,
            f"the file is {size:,} bytes; an experiment file may be at most "
            f"{MAX_FILE_BYTES:,} bytes (split it, or remove what is not needed)",
        )
    bad = _NON_PRINTABLE.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        code = ord(bad.group())
        name = _CHARACTER_NAMES.get(code, "a control character")
        fail(
            line,
            f"column {column}: the file contains U+{code:04X} ({name}), which YAML does not "
            "allow; remove it (save the file as plain UTF-8 text)",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ruamel's style warnings are not the user's problem
            _check_shape(text, path)
            document = YAML(typ="rt").load(text)
    except MarkedYAMLError as error:
        fail(*_yaml_problem(error))
    except YAMLError as error:
        fail(None, f"this is not valid YAML: {_one_line(str(error))}")
    except (ValueError, TypeError, OverflowError) as error:
        # A scalar that ruamel resolves to a type and cannot build (2026-13-45, a 5,000-digit
        # integer, !!int x): find which one, for its line.
        fail(
            _unconstructable_line(text),
            f"this is not valid YAML: a value cannot be read ({_one_line(str(error))}); "
            "quote it if it is meant as text",
        )
    if document is None:
        fail(None, "the file is empty; an experiment file is a mapping of fields (key: ...)")
    if not isinstance(document, CommentedMap):
        fail(1, "an experiment file must be a mapping of fields (key: ...)")
    return document


def _check_shape(text: str, path: str) -> None:
    """Walk the YAML events once (no objects built) and enforce MAX_DEPTH and MAX_NODES, counting
    each alias as the full size of what it refers to."""
    sizes: dict[str, int] = {}  # anchor -> number of values it stands for
    open_: list[tuple[str | None, int]] = []  # collections being read: anchor, values so far
    total = 0

    def add(count: int, mark: Any) -> None:
        nonlocal total
        total += count
        if total > MAX_NODES:
            line = mark.line + 1 if mark is not None else None
            raise SpecError(
                [
                    SpecProblem(
                        path,
                        line,
                        f"the file holds more than {MAX_NODES:,} values (YAML aliases counted "
                        "in full); an experiment needs far fewer: remove repeated aliases",
                    )
                ]
            )

    for event in YAML(typ="rt").parse(text):
        mark = event.start_mark
        if isinstance(event, AliasEvent):
            count = sizes.get(event.anchor, 1)
            add(count, mark)
            if open_:
                anchor, inner = open_[-1]
                open_[-1] = (anchor, inner + count)
        elif isinstance(event, ScalarEvent):
            add(1, mark)
            if event.anchor:
                sizes[event.anchor] = 1
            if open_:
                anchor, inner = open_[-1]
                open_[-1] = (anchor, inner + 1)
        elif isinstance(event, CollectionStartEvent):
            add(1, mark)
            open_.append((event.anchor, 1))
            if len(open_) > MAX_DEPTH:
                raise SpecError(
                    [
                        SpecProblem(
                            path,
                            mark.line + 1 if mark is not None else None,
                            f"mappings and lists are nested more than {MAX_DEPTH} levels deep; "
                            "an experiment needs a few levels: check the brackets and indentation",
                        )
                    ]
                )
        elif isinstance(event, CollectionEndEvent):
            anchor, inner = open_.pop()
            if anchor:
                sizes[anchor] = inner
            if open_:
                parent, count = open_[-1]
                open_[-1] = (parent, count + inner)


def _yaml_problem(error: MarkedYAMLError) -> tuple[int | None, str]:
    mark = error.problem_mark or error.context_mark
    line = mark.line + 1 if mark is not None else None
    problem = _one_line(error.problem or error.context or "invalid YAML")
    if isinstance(error, DuplicateKeyError):
        found = re.search(r'duplicate key "(.*?)" with value', problem)
        name = repr(found.group(1)) if found else "a key"
        return line, (
            f"{name} is given twice in the same mapping; a field may appear once: "
            "remove or merge the repeated one"
        )
    if "another document" in problem:
        return line, (
            "a second YAML document starts here (after '---' or '...'); an experiment file holds "
            "one experiment: move the other to its own file"
        )
    opened = error.context_mark
    if opened is not None and line is not None and opened.line + 1 != line:
        problem += f" (the construct opened on line {opened.line + 1} is not closed properly)"
    return line, f"this is not valid YAML: {problem} (check indentation)"


def _unconstructable_line(text: str) -> int | None:
    yaml = YAML(typ="rt")
    try:
        root = yaml.compose(text)
    except Exception:  # pragma: no cover - the same text was just parsed
        return None
    pending = [root]
    while pending:
        node = pending.pop()
        if isinstance(node, ScalarNode):
            try:
                yaml.constructor.construct_object(node, deep=True)
            except Exception:
                return int(node.start_mark.line) + 1
        elif isinstance(node, SequenceNode):
            pending.extend(reversed(node.value))
        elif isinstance(node, MappingNode):
            pending.extend(reversed([part for pair in node.value for part in pair]))
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _non_text_keys(node: Any, path: str, label: str) -> Iterator[SpecProblem]:
    """A problem for every mapping key that is not text (``1:``, ``true:``, ``? [a, b]``)."""
    if isinstance(node, CommentedMap):
        for key, value in node.items():
            if not isinstance(key, str):
                line = node.lc.key(key)[0] + 1 if key in node.lc.data else None
                shown = _one_line(str(key))[:40]
                yield SpecProblem(
                    path,
                    line,
                    f"{label}{shown!r} is not a field name; field names are text such as "
                    "'weight' (quote it if it is meant as one)",
                )
            else:
                yield from _non_text_keys(value, path, label)
    elif isinstance(node, CommentedSeq):
        for item in node:
            yield from _non_text_keys(item, path, label)


def _offer_problems(
    spec: ExperimentSpec,
    document: CommentedMap,
    path: str,
    label: str,
    template_variables: TemplateVariables,
) -> Iterator[SpecProblem]:
    for i, arm in enumerate(spec.arms):
        if arm.offer is not None:
            continue
        for j, step in enumerate(arm.steps):
            if "offer" in template_variables(step.channel, step.template):
                yield SpecProblem(
                    path,
                    _line_of(document, ("arms", i, "steps", j, "template")),
                    f"{label}arms[{i}].steps[{j}]: template {step.template!r} shows an offer "
                    f"but arm {arm.name!r} has none; add an offer block to the arm "
                    "(e.g. offer: {kind: discount, percent: 30, months: 3}) or use another "
                    "template",
                )


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _loc(error: Any) -> tuple[Any, ...]:
    """Where a pydantic error is, including the place a :class:`FieldProblem` names."""
    loc = tuple(part for part in error["loc"] if not str(part).startswith("function-"))
    cause = (error.get("ctx") or {}).get("error")
    return loc + cause.loc if isinstance(cause, FieldProblem) else loc


def _describe(error: Any) -> str:
    loc = list(_loc(error))
    field = _dotted(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        parent = _dotted(loc[:-1]) or "the top level"
        name = str(loc[-1]) if len(str(loc[-1])) <= 60 else str(loc[-1])[:60] + "..."
        return f"unknown field {name!r} in {parent}; remove it or fix the spelling"
    if kind == "missing":
        return f"missing required field {field!r}; add it"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{field}: {message}" if field else message


def _context(error: Any) -> tuple[str, ...]:
    cause = (error.get("ctx") or {}).get("error")
    return tuple(cause.pointer()) if isinstance(cause, RuleError) else ()


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
