"""Task files and templates at their edges: odd characters, hostile templates, reserved names.

Each case either works or fails with a typed error that names the file and line; none hangs,
eats memory or escapes as a bare Python exception.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import promptcast as pc
from promptcast import render
from promptcast._schema import frontmatter_schema
from promptcast.render import fence
from promptcast.spec import check_task_file, parse_task_text
from promptcast.testing import ScriptedBackend

# Characters Python's str.splitlines() and YAML 1.1 treat as line ends, but editors and Jinja do
# not: pasted text (an example's input, a description) can hold them.
NOT_LINE_ENDS = pytest.mark.parametrize(
    "separator", ["\u2028", "\u2029", "\x85"], ids=["U+2028", "U+2029", "U+0085"]
)


@NOT_LINE_ENDS
def test_template_lines_after_an_odd_separator_in_the_frontmatter(
    tmp_path: Path, separator: str
) -> None:
    path = tmp_path / "t.jinja"
    path.write_bytes(
        f"---\ndescription: 'a{separator}b'\ninputs: {{x: int}}\n---\nline5\n{{{{ y }}}}\n".encode()
    )
    assert [p.line for p in check_task_file(path)] == [6]
    path.write_bytes(
        f"---\ndescription: 'a{separator}b'\ninputs: {{x: int}}\n---\nline5\n{{{{ 1 / x }}}}\n".encode()
    )
    with pytest.raises(pc.TaskInputError, match=rf"{path}:6: ZeroDivisionError"):
        pc.Task.from_file(path).render(x=0)


@NOT_LINE_ENDS
def test_dotprompt_template_lines_after_an_odd_separator(tmp_path: Path, separator: str) -> None:
    path = tmp_path / "t.prompt"
    path.write_bytes(
        f"---\ndescription: 'a{separator}b'\ninput:\n  schema:\n    x: string\n---\n"
        "line7\n{{ y }}\n".encode()
    )
    assert [p.line for p in check_task_file(path)] == [8]


# A width, count or precision from the data makes text as large as `'a' * n` does; each is
# refused before it allocates, like `*` and `**` (MAX_SIZE). n = 10**10 would ask for 10 GB; the test uses 10**7, over the limit.
@pytest.mark.parametrize(
    "expression",
    [
        "x.ljust(n)",
        "x.rjust(n)",
        "x.center(n)",
        "x.zfill(n)",
        "('\\t' ~ x).expandtabs(n)",
        "x|center(n)",
        "x|indent(n)",
        "[x]|batch(n, 'pad')|list",
        "[x]|slice(n)|list",
        "'%*s'|format(n, x)",
        "('%' ~ n ~ 's')|format(x)",
        "('%' ~ n ~ 's') % x",
        "'%*s' % (n, x)",
        "'%.*f' % (n, 1.5)",
        "('%.' ~ n ~ 'f') % 1.5",
        "('%(a)' ~ n ~ 's')|format(a=x)",
        "('{:' ~ n ~ '}').format(x)",
        "'{:{w}}'.format(x, w=n)",
        "('{a:' ~ n ~ '}').format_map({'a': x})",
        "lipsum(n)",
        "lipsum(1, False, n, n)",
    ],
)
def test_widths_from_data_cannot_make_a_huge_prompt(tmp_path: Path, expression: str) -> None:
    path = tmp_path / "t.jinja"
    path.write_text(f"---\ninputs: {{x: str, n: int}}\n---\nfirst\n{{{{ {expression} }}}}\n")
    task = pc.Task.from_file(path)
    with pytest.raises(pc.TaskInputError, match=rf"{path}:5: the sandbox blocks .* more than"):
        task.render(x="ab", n=10**7)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("x.ljust(4) ~ '|'", "ab  |"),
        ("x.zfill(4)", "00ab"),
        ("'|' ~ x|center(6) ~ '|'", "|  ab  |"),
        ("('a\\nb')|indent(2)", "a\n  b"),
        ("[1, 2, 3]|batch(2, 0)|list", "[[1, 2], [3, 0]]"),
        ("[1, 2, 3]|slice(2)|list", "[[1, 2], [3]]"),
        ("'%-4s|%d' % (x, n)", "ab  |3"),
        ("'[%5.2f]'|format(1.5)", "[ 1.50]"),
        ("'%(a)s'|format(a=x)", "ab"),
        ("'[{:>4}|{:.{p}f}'.format(x, 1.5, p=n)", "[  ab|1.500"),
        ("'{a:_^6}'.format_map({'a': x})", "__ab__"),
        ("7 % n", "1"),
        ("lipsum(2, False, 5, 9).count('.') > 0", "True"),
    ],
)
def test_ordinary_widths_still_render(tmp_path: Path, expression: str, expected: str) -> None:
    path = tmp_path / "t.jinja"
    path.write_text(f"---\ninputs: {{x: str, n: int}}\n---\n{{{{ {expression} }}}}\n")
    assert pc.Task.from_file(path).render(x="ab", n=3).messages[0]["content"] == expected


@pytest.mark.parametrize(
    "loops",
    [
        "{% for i in range(n) %}{% for j in range(n) %}{% endfor %}{% endfor %}",
        "{% for i in range(n) %}{{ range(n)|length }}{% endfor %}",
        "{% macro m() %}{% for j in range(n) %}.{% endfor %}{% endmacro %}"
        "{% for i in range(n) %}{{ m() }}{% endfor %}",
        "{% role 'user' %}{% for i in range(n) %}{% for j in range(n) %}{% endfor %}"
        "{% endfor %}{% endrole %}",
    ],
)
def test_nested_range_loops_are_bounded_in_all(tmp_path: Path, loops: str) -> None:
    """Each range() is at most 100,000 items; nested, 10**10 iterations would hang the render."""
    path = tmp_path / "t.jinja"
    path.write_text(f"---\ninputs: {{n: int}}\n---\nfirst\n{loops}\n")
    task = pc.Task.from_file(path)
    with pytest.raises(pc.TaskInputError, match=rf"{path}:5: the sandbox blocks loops over range"):
        task.render(n=99_999)
    assert task.render(n=1000).messages  # a million iterations in all still render


@pytest.mark.parametrize("name", ["model_config", "model_dump", "model_fields", "Config"])
@pytest.mark.parametrize("where", ["inputs", "output"])
def test_names_pydantic_keeps_for_itself_are_refused_by_name(where: str, name: str) -> None:
    """`model_config` as an input loaded, then every call said it 'is not declared by the task
    (declared inputs: model_config)'; as an output field the error was "'FieldInfo' object is
    not iterable"."""
    with pytest.raises(pc.TaskDefinitionError, match=f"{name}' is a pydantic model's own") as info:
        parse_task_text(f"---\n{where}:\n  {name}: str\n---\nhi\n", path="t.jinja")
    assert info.value.line == 3


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("name", ["copy", "json", "schema", "dict", "validate", "construct"])
def test_field_names_shadowing_old_basemodel_methods_work(name: str) -> None:
    """`copy: str` (ad copy) warned "shadows an attribute in parent BaseModel", which a warnings
    filter set to error (a test run) turned into a refused task file."""
    text = f"---\ninputs:\n  {name}: str\noutput:\n  {name}: str\n---\n{{{{ {name} }}}}\n"
    task = pc.Task(parse_task_text(text, path="t.jinja"))
    with pc.override(backends={"test/m": ScriptedBackend(lambda request: {name: "out"})}):
        run = task.with_model("test/m").run(**{name: "in"})
    assert task.render(**{name: "in"}).messages[0]["content"] == "in"
    assert getattr(run.output, name) == "out"


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("{type: int, default: abc}", "valid integer"),
        ("{type: 'list[str]', default: 3}", "valid list"),
        ("{type: \"Literal['a', 'b']\", default: c}", "'a' or 'b'"),
        ("{type: str, default: null}", "valid string"),
        ("{type: 'list[int]', default: [1, x]}", "1: Input should be a valid integer"),
    ],
)
@pytest.mark.parametrize("where", ["inputs", "output"])
def test_a_default_that_is_not_of_its_type_is_a_load_error(
    where: str, field: str, message: str
) -> None:
    """Pydantic does not check defaults: an int input defaulting to 'abc' reached the template
    as text, and an output missing the field came back with the wrong type."""
    text = f"---\n{where}:\n  ok: str\n  x: {field}\n---\nhi\n"
    with pytest.raises(pc.TaskDefinitionError, match=message) as info:
        parse_task_text(text, path="t.jinja")
    assert info.value.line == 4 and "default" in str(info.value)


def test_defaults_of_their_type_still_load() -> None:
    text = (
        "---\ninputs:\n  a: {type: 'str | None', default: null}\n  b: {type: float, default: 3}\n"
        "  c: {type: 'list[str]', default: []}\n  d: {type: date, default: 2024-01-02}\n"
        "output:\n  e: {type: int, default: 0}\n---\n{{ a }}{{ b }}{{ c }}{{ d }}\n"
    )
    spec = parse_task_text(text, path="t.jinja")
    assert [spec.inputs[k].default for k in "abc"] == [None, 3, []]


@pytest.mark.parametrize("name", ["self", "loop", "caller", "varargs", "kwargs", "none", "None"])
def test_input_names_jinja_reads_as_something_else_are_refused(name: str) -> None:
    """An input `self` rendered as '<TemplateReference None>', `none` as 'None', `loop` inside a
    for loop as the loop state: the value given was silently not used."""
    text = f"---\ninputs:\n  {name}: str\n---\n{{{{ {name} }}}}\n"
    with pytest.raises(pc.TaskDefinitionError, match=f"input name '{name}' means") as info:
        parse_task_text(text, path="t.jinja")
    assert info.value.line == 3


@pytest.mark.parametrize(
    ("where", "word"),
    [
        *(
            (where, word)
            for where in ("model: {}", "name: {}", "inputs:\n  {}: str")
            for word in ("no", "on", "off", "yes", "true", "1", "2024-01-02")
        ),
        ("inputs:\n  {}: str", "null"),
        ("inputs:\n  {}: str", "~"),
    ],
)
def test_yaml_words_that_are_not_text_say_to_quote_them(where: str, word: str) -> None:
    """`inputs: {no: str}` said 'inputs.0.[key]: Input should be a valid string' (pydantic
    shows the key False as 0); `model: no` did not say why a model name is not text."""
    text = f"---\n{where.format(word)}\n---\nhi\n"
    with pytest.raises(pc.TaskDefinitionError, match="put the text in quotes") as info:
        parse_task_text(text, path="t.jinja")
    assert ".0." not in str(info.value) and ".1." not in str(info.value)
    assert info.value.line in (2, 3)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_called_like_a_task_file_does_not_hang_check(tmp_path: Path) -> None:
    """Opening a FIFO for reading waits for a writer: `promptcast check prompts/` and
    `load_tasks` hung forever on one."""
    os.mkfifo(tmp_path / "pipe.jinja")
    (tmp_path / "ok.jinja").write_text("---\n---\nhi\n")
    found: list[list[pc.TaskDefinitionError]] = []
    worker = threading.Thread(target=lambda: found.append(check_task_file(tmp_path / "pipe.jinja")))
    worker.start()
    worker.join(timeout=10)
    if worker.is_alive():  # unblock the reader so the test run can end
        with open(tmp_path / "pipe.jinja", "w"):
            pass
        worker.join()
        pytest.fail("reading a named pipe blocked")
    assert [str(p) for p in found[0]] == [
        f"{tmp_path / 'pipe.jinja'}: task file is not a regular file (but a pipe, device or socket)"
    ]
    with pytest.raises(pc.TaskDefinitionError, match="not a regular file"):
        pc.load_tasks(tmp_path)


@pytest.mark.parametrize(
    ("field", "shown"),
    [
        ("str = Field(min_length=5, max_length=2)", "minLength 5 and maxLength 2"),
        ("list[int] = Field(min_length=3, max_length=1)", "minItems 3 and maxItems 1"),
        ("int = Field(ge=10, le=1)", "minimum 10 and maximum 1"),
        ("float = Field(gt=1, lt=1)", "exclusiveMinimum 1 and exclusiveMaximum 1"),
        ("int = Field(ge=1, lt=1)", "minimum 1 and exclusiveMaximum 1"),
        ("Inner", "Inner.x: minimum 2 and maximum 1"),
        ("list[Inner]", "Inner.x: minimum 2 and maximum 1"),
    ],
)
def test_output_bounds_no_value_can_meet_are_a_load_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str, shown: str
) -> None:
    """Pydantic accepts `min_length=5, max_length=2`; every reply then failed validation and
    each call paid for all its attempts first."""
    module = f"bounds_{abs(hash(field))}"
    (tmp_path / f"{module}.py").write_text(
        "from pydantic import BaseModel, Field\n"
        "class Inner(BaseModel):\n    x: int = Field(ge=2, le=1)\n"
        f"class Out(BaseModel):\n    ok: str = Field(min_length=1, max_length=1)\n    a: {field}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(pc.TaskDefinitionError, match="bounds no value can meet") as info:
        parse_task_text(f"---\ndescription: d\noutput: {module}:Out\n---\nhi\n", path="t.jinja")
    assert shown in str(info.value) and info.value.line == 3
    assert "Out.ok" not in str(info.value)  # equal bounds are one allowed value


def test_a_template_with_many_undeclared_names_is_checked_in_bounded_time(tmp_path: Path) -> None:
    """Each undeclared name walked the whole template for its line: 60,000 names under the
    1 MB cap did not finish in a minute."""
    path = tmp_path / "t.jinja"
    names = 20_000
    path.write_text("---\n---\n" + "\n".join(f"{{{{ v{i} }}}}" for i in range(names)) + "\n")
    started = time.perf_counter()
    problems = check_task_file(path)
    assert time.perf_counter() - started < 20
    assert len(problems) == names and problems[-1].line == names + 2
    assert "'v19999'" in str(problems[-1])


@pytest.mark.parametrize(
    "type_text",
    [
        " | ".join(["str", "int"] * 5000),
        "Optional[" * 2000 + "str" + "]" * 2000,
        "list[" * 3000 + "str" + "]" * 3000,
        "(" * 3000 + "str" + ")" * 3000,
    ],
)
def test_a_type_too_deep_to_parse_is_a_definition_error(type_text: str) -> None:
    """A union of 10,000 types raised a bare RecursionError out of the Python parser."""
    with pytest.raises(pc.TaskDefinitionError, match=r"inputs\.x: ") as info:
        parse_task_text(f"---\ninputs:\n  x: '{type_text}'\n---\n{{{{ x }}}}\n", path="t.jinja")
    assert info.value.line == 3


@pytest.mark.parametrize(
    ("type_text", "value"), [("Literal[-1, 0, 1]", -1), ("Literal[-0.5, 'a']", -0.5)]
)
def test_negative_numbers_are_literal_values(type_text: str, value: float) -> None:
    """`Literal[-1]` is a constant to a reader, but Python parses the sign as an operator: it
    was refused with 'Literal[...] takes constants only'."""
    spec = parse_task_text(f'---\ninputs:\n  x: "{type_text}"\n---\n{{{{ x }}}}\n', path="t.jinja")
    assert pc.Task(spec).render(x=value).messages[0]["content"] == str(value)
    with pytest.raises(pc.TaskInputError):
        pc.Task(spec).render(x=5)


@NOT_LINE_ENDS
def test_a_prompty_role_line_starts_only_after_a_real_line_end(
    tmp_path: Path, separator: str
) -> None:
    """`Be nice.<U+2028>user:` is one line to an editor and to Prompty; the converter cut it with
    str.splitlines and started a user message at the 'user:' inside it."""
    path = tmp_path / "c.prompty"
    path.write_bytes(
        f"---\nname: c\ninputs:\n  q:\n    type: string\n---\nsystem:\nBe nice.{separator}user:\n"
        "user:\n{{q}}\n".encode()
    )
    prompt = pc.Task.from_file(path).render(q="hi")
    assert prompt.system == f"Be nice.{separator}user:"
    assert prompt.messages == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("word", ["yes", "on", "true", "no", "off"])
@pytest.mark.parametrize(
    "where",
    [
        "max_tokens: {}",
        "temperature: {}",
        "max_attempts: {}",
        "version: {}",
        "budget: {{timeout_s: {}}}",
        "budget: {{max_cost_usd: {}}}",
        "thinking: {{budget_tokens: {}}}",
    ],
)
def test_a_yes_no_word_where_a_number_goes_is_refused(where: str, word: str) -> None:
    """`max_tokens: yes` loaded as max_tokens=1 and `temperature: on` as 1.0: YAML reads the
    word as a boolean and pydantic turned the boolean into a number."""
    with pytest.raises(pc.TaskDefinitionError, match="got a boolean") as info:
        parse_task_text(f"---\n{where.format(word)}\n---\nhi\n", path="t.jinja")
    assert info.value.line == 2


def _whole_text_neutralise(text: str, tag: str) -> str:
    """The fence's check over the whole text at once (as before it went piece by piece)."""
    skeleton = render._visible(
        render._Skeleton(list(text), list(range(len(text))), list(range(1, len(text) + 1)))
    )
    for _ in range(4):
        decoded = render._decode_entities(skeleton)
        if decoded is None:
            break
        skeleton = render._visible(decoded)
    found = render._closing(tag).finditer("".join(skeleton.chars))
    spans = sorted({(skeleton.starts[m.start()], skeleton.ends[m.start()]) for m in found})
    out, position = [], 0
    for start, end in spans:
        if start >= position:
            out += [text[position:start], render._STAND_IN]
            position = end
    out.append(text[position:])
    return "".join(out)


PIECES = [
    *"<>/&#;x3c6ltdaDATA _.-!,:\"'=é\t\n ",
    "\u200b", "\u00ad", "\uff1c", "\ufe64", "\uff06", "\uff0f", "\x00", "\u2028",
    "</data>", "</ data >", "&lt;", "&#60;", "&#x3c;", "&amp;lt;", "&#116;", "&sol;", "data",
]  # fmt: skip


def test_the_fence_check_piece_by_piece_matches_the_whole_text_check() -> None:
    rng = random.Random(20261124)
    for _ in range(3000):
        text = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 40)))
        assert render._neutralise(text, "data") == _whole_text_neutralise(text, "data"), text


def test_the_fence_check_is_linear_in_a_large_document() -> None:
    """A 4 MB document with one accented letter went through a per-character map of Python
    objects: about 120 bytes and 1 s per MB (a 10 MB one took 1.2 GB)."""
    text = "é" + "Some words, then a full stop. " * 130_000 + "</data>"
    started = time.perf_counter()
    fenced = fence(text, "data")
    assert time.perf_counter() - started < 1
    assert fenced.endswith(". \u2039/data>\n</data>")
    started = time.perf_counter()
    assert fence("é" * 2_000_000, "data") == "<data>\n" + "é" * 2_000_000 + "\n</data>"
    assert time.perf_counter() - started < 1


@pytest.mark.parametrize(
    "bad",
    [
        {"inputs": {"self": "str"}},
        {"inputs": {"loop": "str"}},
        {"inputs": {"model_config": "str"}},
        {"output": {"model_dump": "str"}},
        {"output": {"Config": "str"}},
    ],
    ids=lambda bad: json.dumps(bad),
)
def test_the_editor_schema_rejects_the_names_the_loader_refuses(bad: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(frontmatter_schema())
    assert list(validator.iter_errors(bad))
    with pytest.raises(pc.TaskDefinitionError, match="rename it"):
        parse_task_text("---\n" + json.dumps(bad) + "\n---\nhi\n", path="t.jinja")
    assert not list(validator.iter_errors({"inputs": {"copy": "str"}, "output": {"json": "str"}}))


def test_an_example_expecting_a_date_passes_when_the_output_has_it(tmp_path: Path) -> None:
    """YAML reads `due: 2024-01-02` as a date; the output is compared in its JSON form, where
    `due` is the text '2024-01-02': the example failed on every model, forever."""
    path = tmp_path / "due.jinja"
    path.write_text(
        "---\ninputs: {text: str}\noutput:\n  due: date\n  score: float\nmodel: test/due\n"
        "examples:\n  - inputs: {text: pay by Jan 2}\n    expect: {due: 2024-01-02, score: 1}\n"
        "---\n{{ text }}\n"
    )
    task = pc.Task.from_file(path)
    with pc.override(
        backends={"test/due": ScriptedBackend(lambda r: {"due": "2024-01-02", "score": 1.0})}
    ):
        report = pc.evaluate(task, ["test/due"])
    assert [r.passed for r in report.results] == [True], report.results


@pytest.mark.parametrize(
    ("expect", "message"),
    [
        ("{due: soon}", r"expect\.due: Input should be a valid date"),
        ("{level: urgent}", r"expect\.level: Input should be 'high' or 'low'"),
        ("{tags: [a, {b: 1}]}", r"expect\.tags\.1: Input should be a valid string"),
    ],
)
def test_an_example_expecting_a_value_no_output_can_hold_is_a_load_error(
    expect: str, message: str
) -> None:
    text = (
        "---\noutput:\n  due: date\n  level: Literal['high', 'low']\n  tags: list[str]\n"
        f"examples:\n  - expect: {expect}\n---\nhi\n"
    )
    with pytest.raises(pc.TaskDefinitionError, match=message) as info:
        parse_task_text(text, path="t.jinja")
    assert info.value.line == 7 and "no output could match it" in str(info.value)


@pytest.mark.parametrize("version", ["1.5", "1.10", "2.0"])
def test_a_decimal_version_says_to_quote_it(version: str) -> None:
    """`version: 1.5` said 'version.int: Input should be a valid integer, got a number with a
    fractional part (and 1 more problem(s)...)'; quoted it loads as written."""
    with pytest.raises(pc.TaskDefinitionError, match="write the version in quotes") as info:
        parse_task_text(f"---\nversion: {version}\n---\nhi\n", path="t.jinja")
    assert "more problem" not in str(info.value) and info.value.line == 2
    spec = parse_task_text(f"---\nversion: '{version}'\n---\nhi\n", path="t.jinja")
    assert spec.version == version


@pytest.mark.parametrize(
    ("body", "values", "message"),
    [
        (
            "{% role 'user' %}{% role 'system' %}a{% endrole %}{% endrole %}",
            {},
            ":5: role blocks cannot be nested",
        ),
        ("{% role x %}a{% endrole %}", {"x": "boss"}, ":5: role must be one of"),
        ("{{ img | fence }}", {}, ":5: fence() takes text"),
        ("{% role x %}{{ img }}{% endrole %}", {"x": "system"}, ": an image or document cannot"),
    ],
)
def test_render_errors_name_the_task_and_line(
    tmp_path: Path, body: str, values: dict[str, str], message: str
) -> None:
    """These said "Task 'template': role blocks cannot be nested": no task, no line."""
    path = tmp_path / "t.jinja"
    path.write_text(f"---\ninputs: {{x: str, img: 'image | None'}}\n---\nfirst\n{body}\n")
    image = pc.Image(b"\x89PNG\r\n\x1a\n" + bytes(30))
    text = "{{ img | fence }}"
    if body == text:  # refused at load when written out; reached here through a macro
        path.write_text(
            "---\ninputs: {x: str, img: 'image | None'}\n---\n{% macro f(v) %}\n"
            "{{ v | fence }}{% endmacro %}{{ f(img) }}\n"
        )
    with pytest.raises(pc.TaskInputError) as info:
        pc.Task.from_file(path).render(**{"x": "a", "img": image, **values})
    assert str(info.value).startswith("Task 't': template could not render")
    assert message in str(info.value)


@pytest.mark.parametrize(
    "body",
    [
        "{% filter upper %}{% role 'system' %}Be brief.{% endrole %}Hi{% endfilter %}",
        "{% filter upper %}Static docs{% cachepoint %}{% endfilter %}{{ x }}",
        "{% set s %}{% role 'system' %}Be brief.{% endrole %}{% endset %}{{ s | upper }}{{ x }}",
        "{% set s %}Static{% cachepoint %}{% endset %}{{ s | truncate(12) }}{{ x }}",
        "{% set s %}{% role 'system' %}Be brief.{% endrole %}{% endset %}"
        "{{ s | replace('0', 'x') | replace('1', 'x') | replace('2', 'x') }}{{ x }}",
        "{% set s %}{% role 'system' %}Be brief.{% endrole %}{% endset %}"
        + "{{ s"
        + "".join(f" | replace('{d}', '7')" for d in "012345689")
        + " }}{{ x }}",
    ],
)
def test_a_filter_that_changes_a_role_or_cache_marker_is_an_input_error(
    tmp_path: Path, body: str
) -> None:
    """The system block was lost and its marker (control characters and the render's nonce)
    went to the model as user text; a marker whose index a filter changed raised a bare
    IndexError or ValueError."""
    path = tmp_path / "t.jinja"
    path.write_text(f"---\ninputs: {{x: str}}\n---\n{body}\n")
    with pytest.raises(pc.TaskInputError, match="went through a filter that changed it"):
        pc.Task.from_file(path).render(x="data")


def test_control_characters_in_the_data_are_not_taken_for_markers(tmp_path: Path) -> None:
    path = tmp_path / "t.jinja"
    path.write_text("---\ninputs: {x: str}\n---\n{% role 'system' %}S{% endrole %}{{ x }}\n")
    prompt = pc.Task.from_file(path).render(x="a\x00b\x01c")
    assert prompt.system == "S" and prompt.messages[0]["content"] == "a\x00b\x01c"
