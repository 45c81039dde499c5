"""Task files: what loads, and load-time errors that name the file and the line."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Optional

import pytest
from pydantic import ValidationError

import promptcast as pc
from promptcast.spec import MAX_TASK_FILE_BYTES, check_task_file, parse_task_file, parse_task_text

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


# 2: the frontmatter loads in bounded time and memory

LAUGHS = """
  a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
  h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
  i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]"""


@pytest.mark.parametrize(
    "where",
    [
        "metadata:{laughs}",
        "inputs:\n  x:\n    type: str\n    default:\n{laughs_deeper}",
        "examples:\n  - inputs:{laughs_deeper}",
        "description: &x hello\nversion: *x",
        "budget: &b {{timeout_s: 3}}\nmetadata: {{<<: *b}}",
    ],
)
def test_yaml_aliases_are_refused_fast(where: str) -> None:
    deeper = LAUGHS.replace("\n  ", "\n      ")
    front = where.format(laughs=LAUGHS, laughs_deeper=deeper)
    started = time.perf_counter()
    with pytest.raises(pc.TaskDefinitionError, match="aliases") as info:
        parse_task_text(f"---\n{front}\n---\nx\n", name="t")
    assert time.perf_counter() - started < 0.5
    assert info.value.line is not None and info.value.line > 1


def test_a_task_file_over_the_size_cap_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "big.jinja"
    path.write_text("---\ndescription: x\n---\n" + "x" * MAX_TASK_FILE_BYTES)
    with pytest.raises(pc.TaskDefinitionError, match="larger than"):
        parse_task_file(path)
    with pytest.raises(pc.TaskDefinitionError, match="larger than"):
        parse_task_text(path.read_text(), name="t")


@pytest.mark.parametrize(
    ("front", "message"),
    [
        ("metadata: " + "[" * 5000 + "]" * 5000, "nested more than"),
        ("metadata: {n: " + "9" * 5000 + "}", "invalid value"),
        ("metadata: {d: 2024-13-45}", "invalid value"),
        ("metadata: !!python/object:os.system x", "invalid YAML"),
        ("description: a\ndescription: b", "appears twice"),
    ],
)
def test_hostile_yaml_values_are_definition_errors(front: str, message: str) -> None:
    with pytest.raises(pc.TaskDefinitionError, match=message):
        parse_task_text(f"---\n{front}\n---\nx\n", name="t")


def test_a_file_that_is_not_utf8_is_a_definition_error(tmp_path: Path) -> None:
    path = tmp_path / "latin.jinja"
    path.write_bytes(b"---\ndescription: caf\xe9\n---\nx\n")
    with pytest.raises(pc.TaskDefinitionError, match="UTF-8") as info:
        parse_task_file(path)
    assert info.value.line == 2


# 15: nested inline outputs

NESTED = """
---
output:
  owner: {name: str, email: str}
  tags: [{label: str, score: float}]
  steps:
    type: list
    description: What to do, in order.
    items: {title: str, done: {type: bool, default: false}}
  deep: {a: {b: {c: "list[int]"}}}
  typed: {type: object, fields: {type: str, value: int}}
  note: {type: str, default: none given}
---
x
"""


def test_nested_inline_outputs_build_nested_models() -> None:
    model = parse_task_text(NESTED.lstrip(), name="plan").output_model
    assert model is not None
    value = model.model_validate(
        {
            "owner": {"name": "Ana", "email": "a@x"},
            "tags": [{"label": "bug", "score": 0.5}],
            "steps": [{"title": "fix"}],
            "deep": {"a": {"b": {"c": [1, 2]}}},
            "typed": {"type": "t", "value": 1},
        }
    )
    dumped = value.model_dump()
    assert dumped["owner"] == {"name": "Ana", "email": "a@x"}
    assert dumped["steps"] == [{"title": "fix", "done": False}]
    assert dumped["deep"]["a"]["b"]["c"] == [1, 2]
    assert dumped["note"] == "none given"
    schema = model.model_json_schema()
    assert schema["properties"]["steps"]["description"] == "What to do, in order."
    owner = schema["$defs"][schema["properties"]["owner"]["$ref"].rsplit("/", 1)[1]]
    assert owner["required"] == ["name", "email"] and owner["type"] == "object"
    with pytest.raises(ValidationError):
        model.model_validate({**value.model_dump(), "owner": "Ana"})


@pytest.mark.parametrize(
    ("output", "line", "message"),
    [
        ("  a: {type: str, descripton: x}", 3, "did you mean 'description'"),
        ("  a:\n    b: {type: int, defualt: 1}", 4, "did you mean 'default'"),
        ("  a: {type: str, owner: str}", 3, "{type: object, fields:"),
        ("  a: {type: str, items: str}", 3, "'items' goes with 'type: list'"),
        ("  a: {type: str, fields: {b: str}}", 3, "'fields' goes with 'type: object'"),
        ("  a: [str, int]", 3, "one-item list"),
        ("  a: {}", 3, "at least one field"),
        ("  a:\n    b:\n      c: nosuchtype", 5, "output.a.b.c: unknown type"),
        ("  a: {type: list, items: {b: {type: wrong}}}", 3, "unknown type 'wrong'"),
        ("  a: {type: str, description: [x]}", 3, "'description' must be text"),
    ],
)
def test_wrong_field_specs_name_the_field_and_line(output: str, line: int, message: str) -> None:
    with pytest.raises(pc.TaskDefinitionError) as info:
        parse_task_text(f"---\noutput:\n{output}\n---\nx\n", name="t")
    assert message in str(info.value) and info.value.line == line


def test_every_problem_in_a_file_is_collected(write_task: Callable[..., Path]) -> None:
    path = write_task(
        "many",
        """
        ---
        descripton: x
        inputs:
          a: "subprocess:Popen"
          b: int
        output:
          c: {type: str, descripton: y}
        examples:
          - inputs: {b: many}
          - inputs: {b: 1}
            expect: {nope: 1}
        ---
        {% include "other.jinja" %}
        {{ a }} {{ b }} {{ missing }}
        """,
    )
    problems = check_task_file(path)
    assert [p.line for p in problems] == [2, 4, 7, 9, 10, 13, 14]
    with pytest.raises(pc.TaskDefinitionError, match=r"and 4 more problem\(s\)") as info:
        parse_task_file(path)
    assert info.value.line == 2


# YAML 1.1 also ends a line at U+0085, U+2028 and U+2029; a task file's lines end at LF, CRLF, CR
YAML_ONLY_BREAKS = pytest.mark.parametrize(
    "separator", ["\u2028", "\u2029", "\x85"], ids=["U+2028", "U+2029", "U+0085"]
)


@YAML_ONLY_BREAKS
def test_problem_lines_count_only_newlines(tmp_path: Path, separator: str) -> None:
    path = tmp_path / "t.jinja"
    text = f"---\ndescription: 'a{separator}b'\nmodle: x\ninputs: {{q: str}}\ninputs: {{q: str}}\n---\n{{{{ q }}}}\n"
    path.write_bytes(text.encode())
    problems = check_task_file(path)
    assert [(p.line, str(p).split(": ")[1]) for p in problems] == [
        (3, "modle"),
        (5, "key 'inputs' appears twice in the same mapping"),
    ]


@YAML_ONLY_BREAKS
def test_a_yaml_syntax_error_line_counts_only_newlines(tmp_path: Path, separator: str) -> None:
    path = tmp_path / "t.jinja"
    path.write_bytes(
        f"---\ndescription: 'a{separator}b'\nmodel: [x\ninputs: {{}}\n---\nhi\n".encode()
    )
    with pytest.raises(pc.TaskDefinitionError, match="invalid YAML") as caught:
        parse_task_file(path)
    assert caught.value.line == 4


@pytest.mark.parametrize("character", ["\x00", "\x01", "\x0c", "\x1b", "\x7f", "\x9f", "\ufffe"])
def test_a_control_character_in_frontmatter_is_a_definition_error(
    tmp_path: Path, character: str
) -> None:
    path = tmp_path / "t.jinja"
    path.write_bytes(f"---\ndescription: x\nmodel: 'a{character}b'\n---\nhi\n".encode())
    with pytest.raises(pc.TaskDefinitionError) as caught:
        parse_task_file(path)
    error = caught.value
    assert error.line == 3 and error.file == str(path)
    assert f"U+{ord(character):04X} is not allowed in frontmatter" in str(error)
    assert f'"\\u{ord(character):04x}"' in str(error)  # the escape to write instead


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_frontmatter_and_template_lines_agree_whatever_the_line_ends(
    tmp_path: Path, newline: str
) -> None:
    """A file's lines end at LF, CRLF or a lone CR, in the frontmatter as in the template."""
    path = tmp_path / "t.jinja"
    lines = ["---", "description: 'a\u2028b'", "modle: x", "---", "{{ q", ""]
    path.write_bytes(newline.join(lines).encode())
    problems = check_task_file(path)
    assert [p.line for p in problems] == [3, 5]


@pytest.mark.parametrize("key", ["expect", "expect_contains"])
def test_an_example_naming_a_field_the_output_lacks_is_a_load_error(
    tmp_path: Path, key: str
) -> None:
    """Such an example could never pass an eval, on any model."""
    path = tmp_path / "t.jinja"
    path.write_text(
        "---\ninputs: {q: str}\noutput: {answer: str}\nexamples:\n"
        f"  - inputs: {{q: hi}}\n    {key}: {{answr: hello}}\n---\n{{{{ q }}}}\n"
    )
    [problem] = check_task_file(path)
    assert problem.line == 5
    assert f"examples[0].{key} names field(s) ['answr'] that the output has not" in str(problem)
