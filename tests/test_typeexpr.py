"""Types in task files resolve to data types only, and `module:Class` is found in the project."""

from __future__ import annotations

import datetime
import importlib.util
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import promptcast as pc
from promptcast._typeexpr import SAFE_TYPES, TypeExprError, check_data_type, parse_type
from promptcast.spec import parse_task_file, parse_task_text


def _input_error(type_text: str) -> pc.TaskDefinitionError:
    with pytest.raises(pc.TaskDefinitionError) as info:
        parse_task_text(f'---\ninputs:\n  x: "{type_text}"\n---\n{{{{ x }}}}\n', path="t.jinja")
    assert info.value.file == "t.jinja" and info.value.line == 3
    return info.value


@pytest.mark.parametrize(
    "ref",
    [
        "pydantic:ImportString",
        "pydantic:Json",
        "pydantic:InstanceOf",
        "pydantic:BaseModel",
        "pydantic.types:ImportString",
        "pydantic.networks:HttpUrl",
        "os:environ",
        "this:s",
        "antigravity:fly",
        "subprocess:Popen",
        "pathlib:Path",
        "typing:Any",
        "builtins:eval",
        "importlib:import_module",
        "collections:OrderedDict",
        "datetime:tzinfo",
    ],
)
def test_references_outside_the_allow_list_are_refused_before_import(ref: str) -> None:
    err = _input_error(ref)
    assert "inputs.x" in str(err) and ref in str(err)


@pytest.mark.parametrize(
    "ref",
    [
        "promptcast.tasks.ticket:Ticket.__class__",
        "promptcast.tasks.ticket:Ticket.__init__.__globals__",
        "promptcast.__init__:Task",
        "__main__:Thing",
        "promptcast.tasks:__builtins__",
    ],
)
def test_dunder_segments_are_refused(ref: str) -> None:
    assert "'__'" in str(_input_error(ref))


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        ("promptcast.errors:TaskDefinitionError", "not a data type"),
        ("promptcast.task:Task", "not a data type"),
        ("promptcast.tasks.ticket:Urgency", "not a class"),
        ("promptcast.task:load_tasks", "not a class"),
    ],
)
def test_imported_objects_that_are_not_data_classes_are_refused(ref: str, reason: str) -> None:
    assert reason in str(_input_error(ref))


def test_the_stdlib_modules_named_are_never_imported() -> None:
    """`this` prints the Zen of Python on import; `check` must not run it."""
    code = textwrap.dedent(
        """
        import sys
        from promptcast.spec import parse_task_text
        for ref in ("this:s", "antigravity:fly", "subprocess:Popen", "os:environ"):
            try:
                parse_task_text('---\\ninputs: {x: "%s"}\\n---\\n{{ x }}\\n' % ref)
            except Exception as exc:
                assert type(exc).__name__ == "TaskDefinitionError", exc
        print(sorted(m for m in ("this", "antigravity") if m in sys.modules))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("ref", sorted(SAFE_TYPES))
def test_the_safe_types_are_accepted_by_name(ref: str) -> None:
    text = f'---\ninputs:\n  x: "{ref}"\n---\n{{{{ x }}}}\n'
    if ref == "pydantic:EmailStr" and importlib.util.find_spec("email_validator") is None:
        with pytest.raises(pc.TaskDefinitionError, match=r"pip install 'pydantic\[email\]'"):
            parse_task_text(text, name="t")
        return
    assert parse_task_text(text, name="t").inputs["x"].type is SAFE_TYPES[ref]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("date", datetime.date),
        ("list[UUID]", list[uuid.UUID]),
        ("dict[str, datetime]", dict[str, datetime.datetime]),
        ("frozenset[int]", frozenset[int]),
        ("Literal['a:b', 'c']", Any),
    ],
)
def test_builtin_names_and_colons_inside_literals(text: str, expected: Any) -> None:
    parsed = parse_type(text)
    if expected is Any:
        assert parsed.__args__ == ("a:b", "c")
    else:
        assert parsed == expected


DATA_MODULE = """
from __future__ import annotations
import dataclasses, enum
from typing import Optional
from typing_extensions import TypedDict
from pydantic import BaseModel, ImportString, HttpUrl, PositiveInt
from pathlib import Path
from pydantic_settings import BaseSettings

class Colour(enum.Enum):
    RED = "red"

class Point(TypedDict):
    x: int
    y: int

@dataclasses.dataclass
class Box:
    corner: Point
    colour: Colour

class Node(BaseModel):
    name: str
    url: Optional[HttpUrl] = None
    size: PositiveInt = 1
    children: list[Node] = []
    box: Optional[Box] = None

class Smuggler(BaseModel):
    name: str
    target: ImportString

class Outer(BaseModel):
    inner: list[dict[str, Smuggler]]

@dataclasses.dataclass
class Reader:
    where: Path

class Env(BaseSettings):
    home: str = ""

class Holder(BaseModel):
    env: Env

class Plain:
    pass
"""


@pytest.fixture
def data_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"datamod_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(DATA_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


@pytest.mark.parametrize("cls", ["Colour", "Point", "Box", "Node"])
def test_data_classes_are_accepted_with_their_fields(data_module: str, cls: str) -> None:
    spec = parse_task_text(
        f'---\ninputs:\n  x: "{data_module}:{cls}"\n---\n{{{{ x }}}}\n', name="t"
    )
    assert spec.inputs["x"].type is getattr(sys.modules[data_module], cls)


@pytest.mark.parametrize(
    ("cls", "culprit"),
    [
        ("Smuggler", "ImportString"),
        ("Outer", "ImportString"),
        ("Reader", "Path"),
        ("Env", "settings class"),
        ("Holder", "settings class"),
        ("Plain", "not a data type"),
    ],
)
def test_a_data_class_is_checked_all_the_way_down(data_module: str, cls: str, culprit: str) -> None:
    err = _input_error(f"{data_module}:{cls}")
    assert culprit in str(err)


def test_an_output_model_with_a_smuggled_field_is_refused(data_module: str) -> None:
    with pytest.raises(pc.TaskDefinitionError, match="ImportString") as info:
        parse_task_text(f"---\noutput: {data_module}:Smuggler\n---\nx\n", path="t.jinja")
    assert info.value.line == 2


def test_check_data_type_accepts_typing_constructs_over_data() -> None:
    class Item(BaseModel):
        tags: set[str] | None = None

    check_data_type(dict[str, list[Item | int]])
    with pytest.raises(TypeExprError, match="not a data type"):
        check_data_type(list[Callable[[], None]])


def test_a_module_that_fails_to_import_is_a_definition_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"broken_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text("raise SystemExit('no')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "SystemExit" in str(_input_error(f"{name}:Thing"))


# 24: `module:Class` from the project


def _project(root: Path, module_dir: Path, name: str, *, pyproject: bool) -> Path:
    if pyproject:
        (root / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    module_dir.mkdir(parents=True, exist_ok=True)
    (module_dir / f"{name}.py").write_text(
        "from pydantic import BaseModel\nclass Thing(BaseModel):\n    name: str\n"
    )
    prompts = root / "prompts"
    prompts.mkdir(exist_ok=True)
    task = prompts / "thing.jinja"
    task.write_text(f"---\noutput: {name}:Thing\n---\nname a thing\n")
    return task


@pytest.mark.parametrize(
    ("layout", "pyproject"),
    [("root", True), ("src", True), ("root", False)],
)
def test_output_module_is_found_in_the_project(
    tmp_path: Path, layout: str, pyproject: bool
) -> None:
    root = tmp_path / "proj" / "deeper" if not pyproject else tmp_path / "proj"
    root.mkdir(parents=True)
    name = f"models_{layout}_{pyproject}_{tmp_path.name.replace('-', '_')}"
    task = _project(root, root / "src" if layout == "src" else root, name, pyproject=pyproject)
    before = list(sys.path)
    try:
        spec = parse_task_file(task)
        assert spec.output_model is sys.modules[name].Thing
        assert sys.path == before
    finally:
        sys.modules.pop(name, None)


def test_an_output_module_nowhere_says_which_folder_to_put_on_pythonpath(
    tmp_path: Path, write_task: Callable[..., Path]
) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    (tmp_path / "prompts").mkdir()
    task = tmp_path / "prompts" / "t.jinja"
    task.write_text("---\noutput: nowhere_models_xyz:Thing\n---\nx\n")
    with pytest.raises(pc.TaskDefinitionError) as info:
        parse_task_file(task)
    assert f"PYTHONPATH={tmp_path.resolve()}" in str(info.value) and info.value.line == 2


def test_type_size_bounds_are_our_own_not_the_interpreters() -> None:
    """Whether the parser runs out of recursion depends on the interpreter: the bounds do not."""
    from promptcast._typeexpr import MAX_TYPE_DEPTH, MAX_TYPE_UNION, TypeExprError, parse_type

    assert parse_type("list[" * MAX_TYPE_DEPTH + "str" + "]" * MAX_TYPE_DEPTH)
    assert parse_type(" | ".join(["str", "int"] * (MAX_TYPE_UNION // 2)))
    for text in (
        "list[" * (MAX_TYPE_DEPTH + 1) + "str" + "]" * (MAX_TYPE_DEPTH + 1),
        "(" * (MAX_TYPE_DEPTH + 1) + "str" + ")" * (MAX_TYPE_DEPTH + 1),
        " | ".join(["str"] * (MAX_TYPE_UNION + 1)),
    ):
        with pytest.raises(TypeExprError, match="write a module:Class"):
            parse_type(text)
