"""Task files: what loads, and load-time errors that name the file and the line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Optional

import pytest

import promptcast as pc
from promptcast.spec import parse_task_text

GOOD = """
---
description: Summarize.
version: 2
inputs:
  text: str
  tags: "list[str]"
  tone: {type: "Literal['dry', 'warm']", default: dry}
output: {summary: str, bullets: "list[str]"}
examples:
  - inputs: {text: hi, tags: [a]}
    expect: {summary: hi}
---
{{ text }} {{ tags | join(",") }} {{ tone }}
"""


def _error(write_task: Callable[..., Path], text: str) -> pc.TaskDefinitionError:
    path = write_task("broken", text)
    with pytest.raises(pc.TaskDefinitionError) as info:
        pc.Task.from_file(path)
    assert info.value.file == str(path)
    return info.value


def test_a_good_file_loads_with_inline_output(write_task: Callable[..., Path]) -> None:
    task = pc.Task.from_file(write_task("summarize", GOOD))
    spec = task.spec
    assert (spec.name, spec.version, spec.description) == ("summarize", 2, "Summarize.")
    assert spec.inputs["tags"].type == list[str]
    assert spec.inputs["tone"].type == Literal["dry", "warm"]
    assert spec.inputs["tone"].default == "dry" and not spec.inputs["tone"].required
    assert spec.output_model is not None
    assert set(spec.output_model.model_fields) == {"summary", "bullets"}
    assert len(spec.template_hash) == 16


def test_yaml_error_names_the_line(write_task: Callable[..., Path]) -> None:
    err = _error(write_task, "---\ninputs:\n  text: str\n  bad: [unclosed\n---\n{{ text }}\n")
    assert "invalid YAML" in str(err) and err.line in (4, 5, 6)


def test_jinja_syntax_error_names_the_line(write_task: Callable[..., Path]) -> None:
    err = _error(write_task, "---\ninputs: {text: str}\n---\nline one\n{% if text %}\nno end\n")
    assert "Jinja syntax error" in str(err)
    assert err.line is not None and err.line >= 4


def test_undeclared_template_variable_names_it_and_its_line(
    write_task: Callable[..., Path],
) -> None:
    err = _error(write_task, "---\ninputs: {text: str}\n---\nfirst\n{{ text }} {{ txet }}\n")
    assert "'txet'" in str(err) and err.line == 5


def test_output_class_not_importable(write_task: Callable[..., Path]) -> None:
    err = _error(
        write_task, "---\ninputs: {text: str}\noutput: nowhere.models:Thing\n---\n{{ text }}\n"
    )
    assert "nowhere.models" in str(err) and err.line == 3


def test_output_class_that_is_not_a_model(write_task: Callable[..., Path]) -> None:
    err = _error(write_task, "---\noutput: pathlib:Path\n---\nx\n")
    assert "BaseModel" in str(err) and err.line == 2


def test_example_with_invalid_inputs(write_task: Callable[..., Path]) -> None:
    err = _error(
        write_task,
        """
        ---
        inputs: {n: int}
        examples:
          - inputs: {n: 1}
          - inputs: {n: many}
        ---
        {{ n }}
        """,
    )
    assert "examples[1]" in str(err) and err.line == 5


def test_example_expecting_an_unknown_output_field(write_task: Callable[..., Path]) -> None:
    err = _error(
        write_task,
        """
        ---
        output: {a: str}
        examples:
          - inputs: {}
            expect: {b: 1}
        ---
        x
        """,
    )
    assert "'b'" in str(err) and err.line == 4


def test_unquoted_flow_list_type_says_quote_it(write_task: Callable[..., Path]) -> None:
    err = _error(write_task, "---\ninputs:\n  tags: [str]\n---\n{{ tags }}\n")
    assert "quote it" in str(err) and err.line == 3


def test_unknown_frontmatter_key_names_its_line(write_task: Callable[..., Path]) -> None:
    err = _error(write_task, "---\ndescription: x\nmodle: anthropic/x\n---\nx\n")
    assert "modle" in str(err) and "unknown key" in str(err) and err.line == 3


def test_missing_frontmatter(write_task: Callable[..., Path]) -> None:
    err = _error(write_task, "just a template {{ x }}\n")
    assert err.line == 1 and "---" in str(err)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("str | None", Optional[str]),  # noqa: UP045
        ("dict[str, int]", dict[str, int]),
        ("Literal['a', 'b']", Literal["a", "b"]),
        ("list[int]", list[int]),
    ],
)
def test_type_expressions_are_parsed_without_eval(text: str, expected: Any) -> None:
    spec = parse_task_text(f'---\ninputs:\n  x: "{text}"\n---\n{{{{ x }}}}\n', name="t")
    assert spec.inputs["x"].type == expected


@pytest.mark.parametrize("text", ["__import__('os')", "list[os.system]", "str; x", "exec"])
def test_unsupported_type_expressions_are_rejected(text: str) -> None:
    with pytest.raises(pc.TaskDefinitionError, match=r"inputs\.x"):
        parse_task_text(f'---\ninputs:\n  x: "{text}"\n---\n{{{{ x }}}}\n', name="t")


def test_neighbour_spellings_are_accepted(write_task: Callable[..., Path]) -> None:
    task = pc.Task.from_file(
        write_task(
            "prompty",
            """
        ---
        model: "anthropic:claude-sonnet-4-6"
        inputs:
          q: {kind: str, description: the question}
        metadata: {authors: [me], tags: [demo]}
        ---
        {{ q }}
        """,
        )
    )
    assert task.spec.inputs["q"].type is str
    assert task.spec.metadata["tags"] == ["demo"]


def test_module_class_output_from_a_temp_module(
    write_task: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_schemas.py").write_text(
        "from pydantic import BaseModel\nclass Summary(BaseModel):\n    summary: str\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    task = pc.Task.from_file(
        write_task("s", "---\ninputs: {text: str}\noutput: my_schemas:Summary\n---\n{{ text }}\n")
    )
    assert task.output_model is sys.modules["my_schemas"].Summary
