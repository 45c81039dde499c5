"""The task file: YAML frontmatter between `---` lines, then a Jinja template, read into a `TaskSpec`.

Everything that can be checked without calling a model is checked here, at load time, and every
error names the file and the line.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic import field_validator as _field_validator

from promptcast._typeexpr import TypeExprError, parse_type
from promptcast.errors import TaskDefinitionError

__all__ = ["Budget", "Example", "InputSpec", "TaskSpec", "parse_task_file", "parse_task_text"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Budget(BaseModel):
    """Limits for one call; enforced by the backends that support them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_cost_usd: float | None = Field(default=None, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)


class _InputForm(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    type: Any = Field(default="str", alias="type")
    kind: Any = None
    default: Any = None
    description: str | None = None


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

    @_field_validator("model")
    @classmethod
    def _model_string(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[\w.-]+[/:].+", value):
            raise ValueError("must look like 'provider/model', e.g. 'anthropic/claude-sonnet-4-6'")
        return value


@dataclass(frozen=True)
class InputSpec:
    """One declared input: its type as written and as a Python type, default and description."""

    name: str
    type_text: str
    type: Any
    default: Any = ...
    description: str | None = None

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

    @property
    def template_hash(self) -> str:
        """A short hash of the whole file; changes whenever the prompt or its schema does."""
        return self.source_hash


def parse_task_file(path: str | Path) -> TaskSpec:
    """Read and check one task file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TaskDefinitionError(
            f"cannot read task file ({exc.strerror})", file=str(path)
        ) from exc
    return parse_task_text(text, path=str(path))


def parse_task_text(text: str, *, path: str = "<string>", name: str | None = None) -> TaskSpec:
    """Check one task file's text; `path` is only used in error messages and the default name."""
    front, template, template_line = _split(text, path)
    try:
        node = yaml.compose(front, Loader=yaml.SafeLoader)
        data = yaml.safe_load(front)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise TaskDefinitionError(
            f"invalid YAML in frontmatter: {problem}", file=path, line=line
        ) from None
    data = data or {}
    if not isinstance(data, dict):
        raise TaskDefinitionError("frontmatter must be a YAML mapping of keys", file=path, line=2)

    def line_of(*keys: str | int) -> int:
        return _line_of(node, keys)

    try:
        front_model = _Frontmatter.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        where = ".".join(str(p) for p in loc)
        raise TaskDefinitionError(f"{where}: {msg}", file=path, line=line_of(*loc)) from None

    task_name = name or front_model.name or Path(path).stem
    if not _NAME.match(task_name):
        raise TaskDefinitionError(
            f"task name {task_name!r} is not a Python identifier; rename the file or set `name:`",
            file=path,
            line=line_of("name") if front_model.name else 1,
        )

    inputs = {
        key: _input_spec(key, value, path, line_of("inputs", key))
        for key, value in front_model.inputs.items()
    }
    output_text, output_model = _output(task_name, front_model.output, path, line_of("output"))
    input_model = _input_model(task_name, inputs)

    examples = []
    for i, ex in enumerate(front_model.examples):
        line = line_of("examples", i)
        try:
            input_model.model_validate(ex.inputs)
        except ValidationError as exc:
            raise TaskDefinitionError(
                f"examples[{i}].inputs do not validate: {_first_error(exc)}", file=path, line=line
            ) from None
        if ex.expect and output_model is not None:
            unknown = sorted(set(ex.expect) - set(output_model.model_fields))
            if unknown:
                raise TaskDefinitionError(
                    f"examples[{i}].expect names field(s) {unknown} that the output has not",
                    file=path,
                    line=line,
                )
        examples.append(Example(ex.inputs, ex.expect, ex.expect_contains, ex.name, line))

    return TaskSpec(
        name=task_name,
        path=path,
        description=front_model.description.strip(),
        version=front_model.version,
        inputs=inputs,
        output_text=output_text,
        output_model=output_model,
        template=template,
        template_line=template_line,
        model=front_model.model,
        fallbacks=tuple(front_model.fallbacks),
        temperature=front_model.temperature,
        max_tokens=front_model.max_tokens,
        max_attempts=front_model.max_attempts,
        budget=front_model.budget,
        examples=tuple(examples),
        metadata=front_model.metadata,
        source_hash=hashlib.sha256(text.encode("utf-8")).hexdigest()[:16],
        input_model=input_model,
    )


def _split(text: str, path: str) -> tuple[str, str, int]:
    lines = text.splitlines(keepends=True)
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


def _line_of(node: yaml.Node | None, keys: tuple[str | int, ...]) -> int:
    """1-based file line of the deepest node found along `keys` (frontmatter starts at line 2)."""
    line = node.start_mark.line if node is not None else 0
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(key):
                    line, node = k.start_mark.line, v
                    break
            else:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line
        else:
            break
    return line + 2


def _input_spec(name: str, value: Any, path: str, line: int) -> InputSpec:
    if not _NAME.match(name):
        raise TaskDefinitionError(
            f"input name {name!r} is not a Python identifier", file=path, line=line
        )
    if not isinstance(value, dict):
        value = {"type": value}
    try:
        form = _InputForm.model_validate(value)
    except ValidationError as exc:
        raise TaskDefinitionError(
            f"inputs.{name}: {_first_error(exc)}", file=path, line=line
        ) from None
    type_text = form.kind if form.kind is not None and "type" not in value else form.type
    try:
        parsed = parse_type(type_text)
    except TypeExprError as exc:
        raise TaskDefinitionError(f"inputs.{name}: {exc}", file=path, line=line) from None
    default = form.default if "default" in value else ...
    return InputSpec(name, str(type_text), parsed, default, form.description)


def _output(task: str, value: Any, path: str, line: int) -> tuple[str, type[BaseModel] | None]:
    if isinstance(value, str) and value.strip() == "str":
        return "str", None
    if isinstance(value, str):
        try:
            model = parse_type(value)
        except TypeExprError as exc:
            raise TaskDefinitionError(f"output: {exc}", file=path, line=line) from None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TaskDefinitionError(
                f"output {value!r} is not a pydantic BaseModel subclass", file=path, line=line
            )
        return value.strip(), model
    if isinstance(value, dict) and value:
        fields: dict[str, Any] = {}
        for key, spec in value.items():
            form = spec if isinstance(spec, dict) else {"type": spec}
            try:
                parsed = parse_type(form.get("type", "str"))
            except TypeExprError as exc:
                raise TaskDefinitionError(f"output.{key}: {exc}", file=path, line=line) from None
            default = form.get("default", ...)
            fields[str(key)] = (parsed, Field(default, description=form.get("description")))
        model_name = "".join(part.capitalize() for part in task.split("_")) + "Output"
        try:
            return "inline", create_model(model_name, **fields)
        except (TypeError, ValueError) as exc:
            raise TaskDefinitionError(f"output: {exc}", file=path, line=line) from None
    raise TaskDefinitionError(
        "output must be 'str', 'module:Class' or a mapping of field: type", file=path, line=line
    )


def _input_model(task: str, inputs: dict[str, InputSpec]) -> type[BaseModel]:
    fields: dict[str, Any] = {
        spec.name: (spec.type, Field(spec.default, description=spec.description))
        for spec in inputs.values()
    }
    model_name = "".join(part.capitalize() for part in task.split("_")) + "Inputs"
    return create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}" if loc else str(err["msg"])
