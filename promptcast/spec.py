"""The task file: YAML frontmatter between `---` lines, then a Jinja template, read into a `TaskSpec`.

Everything that can be checked without calling a model is checked here, at load time, and every
error names the file and the line. `check_task_file` lists every problem of a file (what
`promptcast check` prints); `parse_task_file` raises the first one.

The frontmatter is read with a YAML loader that refuses aliases (`*name`, so no "billion laughs"),
nesting deeper than `MAX_YAML_DEPTH` and files larger than `MAX_TASK_FILE_BYTES`, so loading a file
takes bounded time and memory whatever it holds.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import stat
import warnings
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model
from pydantic import field_validator as _field_validator

from promptcast._files import decode_text
from promptcast._typeexpr import TypeExprError, parse_type
from promptcast._yaml import BoundedLoader
from promptcast.errors import TaskDefinitionError

__all__ = [
    "MAX_TASK_FILE_BYTES",
    "MAX_YAML_DEPTH",
    "TASK_FILE_SUFFIXES",
    "Budget",
    "Example",
    "InputSpec",
    "TaskSpec",
    "check_task_file",
    "parse_task_file",
    "parse_task_text",
]

#: A task file larger than this is refused before it is parsed.
MAX_TASK_FILE_BYTES = 1024 * 1024
#: Frontmatter nested deeper than this (mappings and lists inside each other) is refused.
MAX_YAML_DEPTH = 64

# \Z, not $: `$` also matches before a final line break, so `name: "ok\n"` passed
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*\Z")
_FIELD_KEYS = ("type", "description", "default", "items", "fields")
_LIST_TYPES = ("list", "array")
_OBJECT_TYPES = ("object", "dict")


def _no_yes_no(value: Any) -> Any:
    """A number written as yes/no/on/off/true/false (a boolean to YAML) is refused: pydantic
    read `max_tokens: yes` as 1 and `temperature: on` as 1.0."""
    if isinstance(value, bool):
        raise ValueError(
            "got a boolean (YAML reads an unquoted yes/no/on/off/true/false as one); write a number"
        )
    return value


class Budget(BaseModel):
    """Limits for one call; enforced by the backends that support them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_cost_usd: float | None = Field(default=None, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)

    _numbers = _field_validator("max_cost_usd", "timeout_s", mode="before")(_no_yes_no)


class Thinking(BaseModel):
    """Extended thinking: how many tokens the model may think for before it answers."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    budget_tokens: int = Field(ge=1024)

    _numbers = _field_validator("budget_tokens", mode="before")(_no_yes_no)


class _InputForm(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    type: Any = Field(default="str", alias="type")
    kind: Any = None
    default: Any = None
    description: str | None = None
    max_bytes: int | None = Field(default=None, gt=0, strict=True)  # image/document inputs


class _ExampleForm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: dict[str, Any] = Field(default_factory=dict)
    expect: dict[str, Any] | None = None
    expect_contains: dict[str, str] | str | None = None
    name: str | None = None


class _Frontmatter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    description: str = ""
    version: int | str = 1
    inputs: dict[str, Any] = Field(default_factory=dict)
    output: Any = "str"
    model: str | None = None
    fallbacks: list[str] = Field(default_factory=list)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int = Field(default=1024, gt=0)
    max_attempts: int | None = Field(default=None, ge=1)
    budget: Budget | None = None
    examples: list[_ExampleForm] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    output_mode: Literal["auto", "native", "tool", "prompted"] = "auto"
    prompt_caching: Literal["auto", "off"] | bool = "auto"  # YAML reads a bare off as false
    thinking: Thinking | None = None

    _numbers = _field_validator(
        "version", "temperature", "max_tokens", "max_attempts", mode="before"
    )(_no_yes_no)

    @_field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        if isinstance(value, float):  # said 'version.int: ... fractional part' and 'version.str'
            raise ValueError(
                f"YAML read a decimal number ({value!r}; it reads 1.10 as 1.1); write the "
                "version in quotes, e.g. version: '1.10'"
            )
        return value

    @_field_validator("model")
    @classmethod
    def _model_string(cls, value: str | None) -> str | None:
        # no spacing anywhere (\S, \Z): "anthropic/claude\n" and "x/a b" loaded and were sent
        if value is not None and not re.match(r"^[\w.-]+[/:]\S+\Z", value):
            raise ValueError(
                "must look like 'provider/model' with no spaces or line breaks, e.g. "
                "'anthropic/claude-sonnet-4-6'"
            )
        return value

    @_field_validator("fallbacks")
    @classmethod
    def _fallback_strings(cls, value: list[str]) -> list[str]:
        """Each fallback is a model string too (they went unchecked until a call failed over)."""
        for model in value:
            try:
                cls._model_string(model)
            except ValueError as exc:
                raise ValueError(f"{model!r} {exc}") from None
        return value


_KNOWN_KEYS: dict[Any, Sequence[str]] = {
    None: tuple(_Frontmatter.model_fields),
    "budget": tuple(Budget.model_fields),
    "thinking": tuple(Thinking.model_fields),
    "examples": tuple(_ExampleForm.model_fields),
}


@dataclass(frozen=True)
class InputSpec:
    """One declared input: its type as written and as a Python type, default and description."""

    name: str
    type_text: str
    type: Any
    default: Any = ...
    description: str | None = None
    max_bytes: int | None = None  # an image/document input's own, lower size limit

    @property
    def required(self) -> bool:
        return self.default is ...


@dataclass(frozen=True)
class Example:
    """A worked example from the frontmatter: inputs and the expected (partial) output."""

    inputs: dict[str, Any]
    expect: dict[str, Any] | None = None
    expect_contains: dict[str, str] | str | None = None
    name: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class TaskSpec:
    """A parsed task file. `output_model` is `None` when the output is free text."""

    name: str
    path: str
    description: str
    version: int | str
    inputs: dict[str, InputSpec]
    output_text: str
    output_model: type[BaseModel] | None
    template: str
    template_line: int
    model: str | None = None
    fallbacks: tuple[str, ...] = ()
    temperature: float | None = None
    max_tokens: int = 1024
    max_attempts: int | None = None
    budget: Budget | None = None
    examples: tuple[Example, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    source_hash: str = ""
    input_model: type[BaseModel] = field(default=BaseModel, repr=False, compare=False)
    output_mode: str = "auto"  # auto | native | tool | prompted (promptcast._modes)
    prompt_caching: bool = True  # cache breakpoints at the end of the static prefix
    thinking_budget: int | None = None

    @property
    def template_hash(self) -> str:
        """A short hash of the whole file; changes whenever the prompt or its schema does."""
        return self.source_hash


#: The task files `load_tasks` and `promptcast check` read: ours, Prompty's and Dotprompt's.
TASK_FILE_SUFFIXES = (".jinja", ".prompty", ".prompt")


def parse_task_file(path: str | Path) -> TaskSpec:
    """Read and check one task file; raises the first problem as a `TaskDefinitionError`.

    A `.prompty` or `.prompt` file is read as the task file it converts to (`promptcast
    convert`), and its problems point at the original file."""
    from promptcast._convert import convert, is_foreign

    text = _read(Path(path))
    if not is_foreign(path):
        return parse_task_text(text, path=str(path))
    converted = convert(text, str(path))
    try:
        spec = parse_task_text(converted.text, path=str(path))
    except TaskDefinitionError as exc:
        raise converted.remap(exc, str(path)) from None
    source_hash = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return replace(spec, template_line=converted.body_line, source_hash=source_hash)


def parse_task_text(text: str, *, path: str = "<string>", name: str | None = None) -> TaskSpec:
    """Check one task file's text; `path` is only used in error messages, to find the project's
    modules for `module:Class` types, and for the default name."""
    parsed = _parse(text, path, name)
    if parsed.problems or parsed.spec is None:
        raise _first(parsed.problems)
    return parsed.spec


def check_task_file(path: str | Path) -> list[TaskDefinitionError]:
    """Every problem of one task file, frontmatter and template, in file order; empty when it
    loads."""
    from promptcast._convert import convert, is_foreign
    from promptcast.render import template_problems

    converted = None
    try:
        text = _read(Path(path))
        if is_foreign(path):
            converted = convert(text, str(path))
            text = converted.text
    except TaskDefinitionError as exc:
        return [exc]
    parsed = _parse(text, str(path), None)
    problems = list(parsed.problems)
    if parsed.template is not None:
        from promptcast.media import media_inputs

        problems += template_problems(
            parsed.template,
            declared=parsed.declared,
            path=str(path),
            first_line=parsed.template_line,
            media=media_inputs(parsed.spec) if parsed.spec is not None else frozenset(),
        )
    if converted is not None:
        problems = [converted.remap(p, str(path)) for p in problems]
    return sorted(problems, key=lambda p: p.line or 0)


def _read(path: Path) -> str:
    try:
        # non-blocking: opening a named pipe (a FIFO called x.jinja) for reading waited forever
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(descriptor, "rb") as handle:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                raise TaskDefinitionError(
                    "task file is not a regular file (but a pipe, device or socket)",
                    file=str(path),
                )
            raw = handle.read(MAX_TASK_FILE_BYTES + 1)
    except OSError as exc:
        raise TaskDefinitionError(
            f"cannot read task file ({exc.strerror})", file=str(path)
        ) from None
    if len(raw) > MAX_TASK_FILE_BYTES:
        raise TaskDefinitionError(
            f"task file is larger than {MAX_TASK_FILE_BYTES} bytes; split it or move data out",
            file=str(path),
        )
    try:
        return decode_text(raw)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise TaskDefinitionError(
            f"task file is not UTF-8 (byte {exc.start}); save it as UTF-8",
            file=str(path),
            line=line,
        ) from None


@dataclass
class _Parsed:
    spec: TaskSpec | None
    problems: list[TaskDefinitionError]
    template: str | None = None
    template_line: int = 1
    declared: set[str] = field(default_factory=set)


class _Problems:
    """Collects the problems of one file, each with the line of the frontmatter key it is about."""

    def __init__(self, path: str, node: yaml.Node | None) -> None:
        self.path = path
        self.node = node
        self.found: list[TaskDefinitionError] = []
        self.keys: dict[int, dict[str, tuple[Any, yaml.Node]]] = {}  # see `_line_of`

    def line(self, *keys: str | int) -> int:
        return _line_of(self.node, keys, self.keys)

    def add(self, message: str, *keys: str | int, line: int | None = None) -> None:
        self.found.append(
            TaskDefinitionError(message, file=self.path, line=line or self.line(*keys))
        )


def _parse(text: str, path: str, name: str | None) -> _Parsed:
    text = text.removeprefix("\ufeff")  # text read with open(): a file's own BOM, as _read drops
    if len(text) > MAX_TASK_FILE_BYTES:
        error = TaskDefinitionError(
            f"task file is larger than {MAX_TASK_FILE_BYTES} bytes; split it or move data out",
            file=path,
        )
        return _Parsed(None, [error])
    try:
        front, template, template_line = _split(text, path)
        node, data = _load_yaml(front, path)
    except TaskDefinitionError as exc:
        return _Parsed(None, [exc])
    parsed = _Parsed(None, [], template, template_line)
    data = data or {}
    if not isinstance(data, dict):
        error = TaskDefinitionError("frontmatter must be a YAML mapping of keys", file=path, line=2)
        return _Parsed(None, [error], template, template_line)
    problems = _Problems(path, node)
    _duplicate_keys(node, problems)
    if isinstance(data.get("inputs"), dict):
        parsed.declared = {str(key) for key in data["inputs"]}
    parsed.spec = _build(text, data, path, name, template, template_line, problems)
    parsed.problems = problems.found
    return parsed


def _build(
    text: str,
    data: dict[Any, Any],
    path: str,
    name: str | None,
    template: str,
    template_line: int,
    problems: _Problems,
) -> TaskSpec | None:
    front = _frontmatter(data, problems)
    task_name = name or front.name or Path(path).stem
    name_problem = _task_name_problem(task_name)
    if name_problem is not None:
        problems.add(
            f"task name {task_name!r} {name_problem}; rename the file or set `name:`",
            line=problems.line("name") if front.name else 1,
        )
    search = _search_folders(path)
    inputs: dict[str, InputSpec] = {}
    for key, value in front.inputs.items():
        spec = _input_spec(key, value, problems, search)
        if spec is not None:
            inputs[key] = spec
    failed = set(front.inputs) - set(inputs)
    builder = _OutputBuilder(_camel(task_name), problems, search)
    output_text, output_model, output_ok = builder.output(front.output)
    if output_model is not None:
        output_fields: set[str] | None = set(output_model.model_fields)
    elif isinstance(front.output, dict):  # inline fields with a problem: their names still count
        output_fields = {str(key) for key in front.output}
    else:
        output_fields = None
    input_model = _input_model(task_name, inputs, problems)

    examples = []
    for i, ex in enumerate(front.examples):
        line = problems.line("examples", i)
        if input_model is not None:  # inputs that failed to load are left out, not reported again
            try:
                input_model.model_validate({k: v for k, v in ex.inputs.items() if k not in failed})
            except ValidationError as exc:
                for err in exc.errors():
                    where = ".".join(str(p) for p in err["loc"])
                    problems.add(
                        f"examples[{i}].inputs do not validate: {where}: {err['msg']}",
                        "examples",
                        i,
                        "inputs",
                        *err["loc"][:1],
                    )
        for key, named in (("expect", ex.expect), ("expect_contains", ex.expect_contains)):
            if isinstance(named, dict) and output_fields is not None:
                unknown = sorted(set(named) - output_fields)
                if unknown:  # the example could never pass, on any model
                    problems.add(
                        f"examples[{i}].{key} names field(s) {unknown} that the output has not",
                        line=line,
                    )
        expect = ex.expect
        if expect and output_model is not None:
            expect = _expected(output_model, expect, i, problems)
        examples.append(Example(ex.inputs, expect, ex.expect_contains, ex.name, line))

    if problems.found or input_model is None or not output_ok:
        return None
    return TaskSpec(
        name=task_name,
        path=path,
        description=front.description.strip(),
        version=front.version,
        inputs=inputs,
        output_text=output_text,
        output_model=output_model,
        template=template,
        template_line=template_line,
        model=front.model,
        fallbacks=tuple(front.fallbacks),
        temperature=front.temperature,
        max_tokens=front.max_tokens,
        max_attempts=front.max_attempts,
        budget=front.budget,
        examples=tuple(examples),
        metadata=front.metadata,
        source_hash=hashlib.sha256(text.encode("utf-8")).hexdigest()[:16],
        input_model=input_model,
        output_mode=front.output_mode,
        prompt_caching=front.prompt_caching not in ("off", False),
        thinking_budget=front.thinking.budget_tokens if front.thinking else None,
    )


# what `promptcast.task.TaskRegistry` (a Mapping) answers itself: a task of that name would be
# shadowed (spec sits below task, so the names are listed here; a test keeps them in step)
REGISTRY_NAMES = frozenset(name for name in dir(Mapping) if not name.startswith("_")) | {"add"}


def _task_name_problem(name: str) -> str | None:
    """Why `name` cannot name a task, or None. A task is reached as `tasks.<name>` and
    `tasks["<name>"]` (`load_tasks`, `promptcast.tasks`), so a name the registry holds itself
    (`items`, `get`, ...; `_private`, `__init__`) would be silently shadowed."""
    if not _NAME.match(name):
        if name.isidentifier():  # café: NFC and NFD spellings would be one Python attribute
            return "is not ASCII letters, digits and '_' (not starting with a digit)"
        return "is not a Python identifier"
    if name.startswith("_"):
        return "starts with '_': `tasks.<name>` does not look such names up"
    if name in REGISTRY_NAMES:
        return f"is a method of the task registry (`tasks.{name}` would be it, not the task)"
    return None


def _frontmatter(data: dict[Any, Any], problems: _Problems) -> _Frontmatter:
    """Validate the top-level keys, reporting each bad one and going on without it."""
    try:
        return _Frontmatter.model_validate(data)
    except ValidationError as exc:
        bad = set()
        for err in exc.errors():
            loc = tuple(err["loc"])
            bad.add(loc[0] if loc else None)
            where = ".".join(str(p) for p in loc)
            if err["type"] == "extra_forbidden":
                known = _KNOWN_KEYS.get(loc[0] if len(loc) > 1 else None, ())
                message = _unknown_key(str(loc[-1]), known)
            elif loc and loc[-1] == "[key]":  # pydantic shows a key `no` (False) as 0
                where = ".".join(str(p) for p in loc[:-2])
                message = f"a key is not text{_NOT_TEXT}"
            else:
                message = err["msg"]
                if err["type"] == "string_type" and not isinstance(err["input"], (dict, list)):
                    message += _NOT_TEXT
            problems.add(f"{where}: {message}", *loc)
    try:
        return _Frontmatter.model_validate({k: v for k, v in data.items() if k not in bad})
    except ValidationError:
        return _Frontmatter()


_NOT_TEXT = (
    "; YAML reads an unquoted yes/no/on/off/true/false as a boolean, null or ~ as nothing, "
    "and digits or a date as a number or date: put the text in quotes"
)


def _split_lines(text: str) -> list[str]:
    """`text` cut after each LF, CRLF or lone CR, the ends kept: the lines Jinja numbers its
    errors by. (`str.splitlines` also cuts at U+0085, U+2028, form feeds, ..., so a pasted
    text holding one in the frontmatter shifted every template line after it.)"""
    return [line for line in _EDITOR_LINES.split(text) if line]


_EDITOR_LINES = re.compile(r"(?<=\n)|(?<=\r)(?!\n)")


def _split(text: str, path: str) -> tuple[str, str, int]:
    lines = _split_lines(text)
    if not lines or lines[0].strip() != "---":
        raise TaskDefinitionError(
            "a task file starts with a '---' line, then YAML frontmatter, then '---' and the template",
            file=path,
            line=1,
        )
    for i in range(1, len(lines)):
        if lines[i].strip() == "---":
            return "".join(lines[1:i]), "".join(lines[i + 1 :]), i + 2
    raise TaskDefinitionError("frontmatter is not closed by a '---' line", file=path, line=1)


class _Loader(BoundedLoader):
    """Frontmatter: no aliases, nested at most `MAX_YAML_DEPTH` levels."""

    document = "a task file"
    part = "frontmatter"
    max_depth = MAX_YAML_DEPTH


def _load_yaml(front: str, path: str) -> tuple[yaml.Node | None, Any]:
    loader: _Loader | None = None
    try:
        loader = _Loader(front)  # its reader refuses control characters here, at once
        node = loader.get_single_node()
        if node is not None and _SURROGATE_ESCAPE.search(front):
            _join_surrogates(node, path)
        data = loader.construct_document(node) if node is not None else None
    except yaml.reader.ReaderError as exc:  # no mark: a character offset into `front`
        raise TaskDefinitionError(
            f"character U+{exc.character:04X} is not allowed in frontmatter (YAML takes no "
            "control characters as they are); write it as an escape in a double-quoted string: "
            f'"\\u{exc.character:04x}"',
            file=path,
            line=front.count("\n", 0, exc.position) + 2,
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = _file_line(mark) if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise TaskDefinitionError(
            f"invalid YAML in frontmatter: {problem}", file=path, line=line
        ) from None
    except (ValueError, OverflowError) as exc:  # e.g. an int of 5000 digits, a 13th month
        raise TaskDefinitionError(
            f"invalid value in frontmatter: {exc}", file=path, line=2
        ) from None
    finally:
        if loader is not None:
            loader.dispose()
    return node, data


# a "\ud83d" escape: PyYAML makes a lone surrogate of each half of a JSON-style pair
_SURROGATE_ESCAPE = re.compile(r"\\(?:u|U0000)[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _join_surrogates(root: yaml.Node, path: str) -> None:
    """Join `"\ud83d\ude00"` (a JSON-style pair of escapes) into the one character it means,
    as JSON does; a half without the other is a problem at its line: the text could never be
    sent (UTF-8 cannot encode it; the request failed as a 'malformed reply')."""
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.ScalarNode):
            if isinstance(node.value, str) and _SURROGATE.search(node.value):
                try:
                    node.value = node.value.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
                except UnicodeDecodeError:
                    lone = _SURROGATE.search(node.value)
                    assert lone is not None
                    raise TaskDefinitionError(
                        f"\\u{ord(lone.group()):04x} is half of a UTF-16 surrogate pair without "
                        "its other half; write the character itself, or its whole code point as "
                        "\\U0001xxxx",
                        file=path,
                        line=_file_line(node.start_mark),
                    ) from None
        elif isinstance(node, yaml.MappingNode):
            stack += [part for pair in node.value for part in pair]
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value


def _duplicate_keys(node: yaml.Node | None, problems: _Problems) -> None:
    """PyYAML keeps the last of two equal keys silently; a task file with one is wrong."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in current.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        problems.add(
                            f"key {key.value!r} appears twice in the same mapping",
                            line=_file_line(key.start_mark),
                        )
                    seen.add(key.value)
                stack.append(value)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)


def _line_of(
    node: yaml.Node | None,
    keys: tuple[str | int, ...],
    index: dict[int, dict[str, tuple[Any, yaml.Node]]] | None = None,
) -> int:
    """1-based file line of the deepest node found along `keys` (frontmatter starts at line 2).

    `index` keeps each mapping's keys (the first of equal ones) once looked up: a search per
    problem through 20,000 bad inputs took seconds, quadratic in the file."""
    if node is None:
        return 2
    index = {} if index is None else index
    mark = node.start_mark
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            known = index.get(id(node))
            if known is None:
                known = index[id(node)] = {}
                for k, v in node.value:
                    known.setdefault(str(k.value), (k.start_mark, v))
            if str(key) not in known:
                break
            mark, node = known[str(key)]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            mark = node.start_mark
        else:
            break
    return _file_line(mark)


# PyYAML reads YAML 1.1, where U+0085, U+2028 and U+2029 end a line too; a task file's lines end
# at LF, CRLF or a lone CR only (as `_split_lines` cuts them and Jinja numbers its errors)
_YAML_ONLY_BREAKS = re.compile("[\x85\u2028\u2029]")
_LINE_BREAK = re.compile("\r\n?|\n")


@lru_cache(maxsize=8)
def _newlines(front: str) -> tuple[int, ...] | None:
    """Offsets of the line breaks of a frontmatter that holds a YAML-only one, else `None`."""
    if _YAML_ONLY_BREAKS.search(front) is None:
        return None
    return tuple(match.start() for match in _LINE_BREAK.finditer(front))


def _file_line(mark: Any) -> int:
    """1-based task-file line of a YAML mark (the frontmatter starts at line 2)."""
    buffer = getattr(mark, "buffer", None)  # the frontmatter, for a mark of a str stream
    newlines = _newlines(buffer) if isinstance(buffer, str) else None
    return mark.line + 2 if newlines is None else bisect_left(newlines, mark.index) + 2


def _search_folders(path: str) -> tuple[Path, ...]:
    """Where a task file's `module:Class` is looked for when it is not importable as is: the
    project (the folder holding pyproject.toml, and its src/), then the prompts folder's parent."""
    if path.startswith("<"):
        return ()
    file = Path(path).resolve()
    folders: list[Path] = []
    for parent in file.parents:
        if (parent / "pyproject.toml").is_file():
            folders += [parent, parent / "src"]
            break
    folders.append(file.parent.parent)
    unique = dict.fromkeys(f for f in folders if f.is_dir())
    return tuple(unique)


def _input_spec(
    name: str, value: Any, problems: _Problems, search: tuple[Path, ...]
) -> InputSpec | None:
    keys = ("inputs", name)
    if not _NAME.match(name):
        problems.add(f"input name {name!r} is not a Python identifier", *keys)
        return None
    if _reserved(name):
        problems.add(f"input name {name!r} {_RESERVED}", *keys)
        return None
    if name in _JINJA_NAMES:
        problems.add(
            f"input name {name!r} means {_JINJA_NAMES[name]} in a Jinja template, so the "
            "template would never see the input; rename it",
            *keys,
        )
        return None
    if not isinstance(value, dict):
        value = {"type": value}
    try:
        form = _InputForm.model_validate(value)
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                known = ("type", "default", "description", "max_bytes")
                message = _unknown_key(where, known, "in an input")
            else:
                message = f"{where}: {err['msg']}"
            problems.add(f"inputs.{name}: {message}", *keys, *err["loc"][:1])
        return None
    type_text = form.kind if form.kind is not None and "type" not in value else form.type
    try:
        parsed = parse_type(type_text, search=search)
    except TypeExprError as exc:
        problems.add(f"inputs.{name}: {exc}", *keys)
        return None
    if form.max_bytes is not None:
        from promptcast.media import max_bytes_problem

        problem = max_bytes_problem(parsed, form.max_bytes)
        if problem is not None:
            problems.add(f"inputs.{name}: {problem}", *keys, "max_bytes")
            return None
    default = form.default if "default" in value else ...
    if default is not ...:
        from promptcast.media import is_media_type

        problem = None if is_media_type(parsed) else _default_problem(parsed, default)
        if problem is not None:
            problems.add(
                f"inputs.{name}.default: {problem} (the type is {type_text})", *keys, "default"
            )
            return None
    return InputSpec(name, str(type_text), parsed, default, form.description, form.max_bytes)


def _expected(
    model: type[BaseModel], expect: dict[str, Any], index: int, problems: _Problems
) -> dict[str, Any]:
    """`expect` with each value as the output's JSON form has it, which is what a run is
    compared with: YAML's `when: 2024-01-02` is a date, the output's `when` the text
    '2024-01-02', and they never compared equal. A value its field cannot hold is a problem:
    no output could ever match it."""
    out = dict(expect)
    for key, value in expect.items():
        field = model.model_fields.get(key)
        if field is None:
            continue  # reported as an unknown field
        try:
            adapter: TypeAdapter[Any] = TypeAdapter(field.rebuild_annotation())
            out[key] = adapter.dump_python(adapter.validate_python(value), mode="json")
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in (key, *err["loc"]))
            problems.add(
                f"examples[{index}].expect.{where}: {err['msg']}; no output could match it",
                "examples",
                index,
                "expect",
                key,
            )
        except Exception:  # a type pydantic cannot build an adapter for: compared as written
            continue
    return out


def _default_problem(tp: Any, default: Any) -> str | None:
    """Why `default` is not a valid `tp` (pydantic does not check defaults), or None."""
    try:
        TypeAdapter(tp).validate_python(default)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        return f"{where + ': ' if where else ''}{err['msg']}"
    except Exception:  # a type pydantic cannot build: the model build reports it
        return None
    return None


_RESERVED = "is a pydantic model's own attribute and cannot be a field; rename it"
# Names a template reads as something else than a variable the render passes in.
_JINJA_NAMES = {
    "self": "the template itself",
    "loop": "the loop state inside {% for %}",
    "caller": "the calling block inside a {% macro %}",
    "varargs": "a macro's extra arguments",
    "kwargs": "a macro's extra keyword arguments",
    **dict.fromkeys(("true", "false", "none", "True", "False", "None"), "a constant"),
}


def _reserved(name: str) -> bool:
    """`model_config`, `model_dump`, `Config`, ...: names pydantic refuses or breaks on (other
    BaseModel attributes, `json`, `copy`, `schema`, work as field names)."""
    return name == "Config" or (name.startswith("model_") and hasattr(BaseModel, name))


def reserved_names() -> tuple[str, ...]:
    """Every name `_reserved` refuses (for the editor schema)."""
    return ("Config", *sorted(n for n in dir(BaseModel) if n.startswith("model_")))


def _create_model(model_name: str, /, **fields: Any) -> type[BaseModel]:
    """`create_model`, quiet about fields that shadow deprecated BaseModel methods (`json`,
    `copy`, `schema`, `validate`, ...): they work, and a warning made an error (as in a
    test run) refused the task file."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"Field name .* shadows an attribute", UserWarning)
        return create_model(model_name, **fields)


class _OutputBuilder:
    """Turns `output:` into a pydantic model: a `module:Class`, or inline fields, nested at will.

    A field is a type string (`str`, `list[int]`, `mod:Class`), a mapping of fields (a nested
    object), a one-item list (`[str]`, `[{name: str}]`: a list of that), or a field spec: a mapping
    with a `type` key and optionally `description`, `default`, `items` (with `type: list`) and
    `fields` (with `type: object`, for a nested object that has a field called `type`).
    """

    def __init__(self, prefix: str, problems: _Problems, search: tuple[Path, ...]) -> None:
        self.prefix = prefix
        self.problems = problems
        self.search = search

    def output(self, value: Any) -> tuple[str, type[BaseModel] | None, bool]:
        """`(output_text, model or None for free text, ok)`."""
        if isinstance(value, str) and value.strip() == "str":
            return "str", None, True
        if isinstance(value, str):
            try:
                model = parse_type(value, search=self.search)
            except TypeExprError as exc:
                self.problems.add(
                    f"output: {exc}; `output:` is 'str', a pydantic BaseModel subclass as "
                    "'module:Class', or a mapping of fields",
                    "output",
                )
                return value.strip(), None, False
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                self.problems.add(
                    f"output {value!r} is not a pydantic BaseModel subclass; use a model or "
                    "inline fields",
                    "output",
                )
                return value.strip(), None, False
            from promptcast._constraints import impossible_bounds

            bounds = impossible_bounds(model)
            if bounds:
                self.problems.add(
                    f"output {value.strip()} has bounds no value can meet, so every reply would "
                    f"fail validation: {'; '.join(bounds)}; fix them in the model",
                    "output",
                )
                return value.strip(), None, False
            return value.strip(), model, True
        if isinstance(value, dict) and value:
            model = self._model(f"{self.prefix}Output", value, ("output",))
            return "inline", model, model is not None
        self.problems.add(
            "output must be 'str', 'module:Class' or a mapping of field: type", "output"
        )
        return "inline", None, False

    def _model(
        self, name: str, fields: dict[Any, Any], keys: tuple[str | int, ...]
    ) -> type[BaseModel] | None:
        built: dict[str, Any] = {}
        ok = True
        for key, spec in fields.items():
            here = (*keys, key)
            if not isinstance(key, str) or not _FIELD_NAME.match(key):
                self._add(f"field name {key!r} must be letters, digits and '_'", here)
                ok = False
                continue
            if _reserved(key):
                self._add(f"field name {key!r} {_RESERVED}", here)
                ok = False
                continue
            result = self._field(f"{name}{_camel(key)}", spec, here)
            if result is None:
                ok = False
            else:
                built[key] = result
        if not ok:
            return None
        try:
            return _create_model(name, **built)
        except Exception as exc:  # pydantic's schema errors are TypeErrors, NameErrors, ...
            self._add(f"cannot build the output model: {exc}", keys)
            return None

    def _field(self, name: str, spec: Any, keys: tuple[str | int, ...]) -> tuple[Any, Any] | None:
        if isinstance(spec, dict) and "type" in spec:
            unknown = [k for k in spec if k not in _FIELD_KEYS]
            for key in unknown:
                hint = (
                    "; for a nested object with a field called 'type', write "
                    "{type: object, fields: {...}}"
                    if len(unknown) == 1 and not difflib.get_close_matches(str(key), _FIELD_KEYS)
                    else ""
                )
                self._add(_unknown_key(str(key), _FIELD_KEYS, "in a field spec") + hint, keys)
            description = spec.get("description")
            if description is not None and not isinstance(description, str):
                self._add("'description' must be text", (*keys, "description"))
                return None
            tp = self._spec_type(name, spec, keys)
            if tp is None or unknown:
                return None
            problem = _default_problem(tp, spec["default"]) if "default" in spec else None
            if problem is not None:
                self._add(problem, (*keys, "default"))
                return None
            return tp, Field(spec.get("default", ...), description=description)
        tp = self._type(spec, keys, name)
        return None if tp is None else (tp, Field(...))

    def _spec_type(self, name: str, spec: dict[Any, Any], keys: tuple[str | int, ...]) -> Any:
        kind = spec["type"]
        kind_text = kind.strip() if isinstance(kind, str) else None
        if "fields" in spec:
            if kind_text not in _OBJECT_TYPES:
                self._add("'fields' goes with 'type: object'", (*keys, "fields"))
                return None
            if not isinstance(spec["fields"], dict) or not spec["fields"]:
                self._add("'fields' must be a mapping of field: type", (*keys, "fields"))
                return None
            return self._model(name, spec["fields"], (*keys, "fields"))
        if "items" in spec:
            if kind_text not in _LIST_TYPES:
                self._add(
                    f"'items' goes with 'type: list', not {kind!r}; write the element type "
                    "under items:",
                    (*keys, "items"),
                )
                return None
            item = self._type(spec["items"], (*keys, "items"), f"{name}Item")
            return None if item is None else list[item]  # type: ignore[valid-type]
        return self._type(kind, (*keys, "type"), name)

    def _type(self, spec: Any, keys: tuple[str | int, ...], name: str = "") -> Any:
        """A field's type, in any of the forms; None (with a problem reported) when it is wrong."""
        if isinstance(spec, dict):
            if not spec:
                self._add("a nested object needs at least one field", keys)
                return None
            if "type" in spec:
                result = self._field(name, spec, keys)
                return None if result is None else result[0]
            return self._model(name, spec, keys)
        if isinstance(spec, list):
            if len(spec) != 1:
                self._add(
                    "a list type is a one-item list: the type of its elements, e.g. [str] or "
                    "[{name: str}]",
                    keys,
                )
                return None
            item = self._type(spec[0], (*keys, 0), f"{name}Item")
            return None if item is None else list[item]  # type: ignore[valid-type]
        try:
            return parse_type(spec, search=self.search)
        except TypeExprError as exc:
            self._add(str(exc), keys)
            return None

    def _add(self, message: str, keys: tuple[str | int, ...]) -> None:
        where = ".".join(str(k) for k in keys)
        self.problems.add(f"{where}: {message}", *keys)


def _input_model(
    task: str, inputs: dict[str, InputSpec], problems: _Problems
) -> type[BaseModel] | None:
    fields: dict[str, Any] = {
        spec.name: (_limited(spec), Field(spec.default, description=spec.description))
        for spec in inputs.values()
    }
    try:
        model: type[BaseModel] = _create_model(
            f"{_camel(task)}Inputs", __config__=ConfigDict(extra="forbid"), **fields
        )
        model.model_json_schema()
    except Exception as exc:  # a type pydantic cannot validate or describe
        problems.add(f"inputs: {exc}", "inputs")
        return None
    return model


def _limited(spec: InputSpec) -> Any:
    """The input's type, validated against its `max_bytes` when it has one."""
    if spec.max_bytes is None:
        return spec.type
    from promptcast.media import with_max_bytes

    return with_max_bytes(spec.type, spec.max_bytes)


def _unknown_key(key: str, known: Sequence[str], where: str = "") -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
    return f"unknown key {key!r}{' ' + where if where else ''}{hint}"


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _first(problems: list[TaskDefinitionError]) -> TaskDefinitionError:
    if not problems:  # not reached: a file without a spec always has a problem to say why
        return TaskDefinitionError("task file could not be loaded")
    first = min(problems, key=lambda p: p.line or 0)
    if len(problems) == 1:
        return first
    more = len(problems) - 1
    return TaskDefinitionError(
        f"{first.reason} (and {more} more problem(s); `promptcast check {first.file}` lists all)",
        file=first.file,
        line=first.line,
    )
