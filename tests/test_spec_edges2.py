"""Edges of task files and rendering, second pass: text a template builds past any limit, empty
prompts, a large frontmatter, and task names the `promptcast.tasks` registry could shadow."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import promptcast as pc
from promptcast import render


def _task(tmp_path: Path, template: str, inputs: str = "{x: str}") -> pc.Task:
    path = tmp_path / "t.jinja"
    path.write_text(f"---\ninputs: {inputs}\n---\nfirst\n{template}\n", encoding="utf-8")
    return pc.Task.from_file(path)


# Each builds more than MAX_TEXT (16,000,000) characters or items from a 5,000-character input
# (about 20-25 million), by a way no earlier limit saw: `~`/`+` in a loop doubled to gigabytes.
_GROWING = [
    "{% set ns = namespace(s=x) %}{% for i in range(12) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}{{ ns.s|length }}",
    "{% set ns = namespace(s=x) %}{% for i in range(12) %}{% set ns.s = ns.s + ns.s %}"
    "{% endfor %}{{ ns.s|length }}",
    "{% set ns = namespace(s=[0] * 1000000) %}{% for i in range(5) %}"
    "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}",
    "{% macro d(s, n) %}{{ d(s ~ s, n - 1) if n else s|length }}{% endmacro %}{{ d(x, 12) }}",
    "{{ range(5000)|join(x) }}",
    "{{ ([x] * 5000)|map('upper')|join }}",
    "{{ ([{'a': x}] * 5000)|join(attribute='a') }}",
    "{{ x.join(range(5000)|map('string')) }}",
    "{{ x|replace('a', x) }}",
    "{{ x.replace('a', x) }}",
    "{{ x.translate({97: x}) }}",
    "{{ ('%(a)s' * 5000) % {'a': x} }}",
    "{{ ('%(a)s' * 5000)|format(a=x) }}",
    "{{ ('{0}' * 5000).format(x) }}",
    "{{ ('{a}' * 5000).format_map({'a': x}) }}",
    "{% for i in range(5000) %}{{ x }}{% endfor %}",
    "{% set s %}{% for i in range(5000) %}{{ x }}{% endfor %}{% endset %}{{ s|length }}",
    "{% filter upper %}{% for i in range(5000) %}{{ x }}{% endfor %}{% endfilter %}",
    "{% macro m() %}{{ caller()|length }}{% endmacro %}"
    "{% call m() %}{% for i in range(5000) %}{{ x }}{% endfor %}{% endcall %}",
    "{{ [x] * 5000 }}",
    "{{ ([x] * 5000)|string|length }}",
    "{{ ([x] * 5000)|pprint|length }}",
    "{{ ([x] * 5000)|tojson|length }}",
    "{{ (([x] * 5000) ~ '')|length }}",
    "{{ x|wordwrap(1, wrapstring=x) }}",
    "{{ ([[1]] * 10000)|sum(start=[])|length }}",
]


@pytest.mark.parametrize("template", _GROWING)
def test_text_grown_past_the_render_limit_is_refused_before_it_is_made(
    tmp_path: Path, template: str
) -> None:
    task = _task(tmp_path, template)
    with pytest.raises(
        pc.TaskInputError, match=r"'t'.*t\.jinja:5: the sandbox blocks .* more than"
    ):
        task.render(x="a" * 5000)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ x ~ '|' ~ x|length }}", None),
        ("{{ (x + '!')|length }}", "10000001"),
        ("{{ [x, 'b']|join('\\n')|length }}", "10000002"),
        ("{{ x|replace('a', 'bb', 5)|length }}", "10000005"),
        ("{{ x.replace('a', 'b')|length }}", "10000000"),
        ("{{ '%s|%s' % (x|length, 2) }}", "10000000|2"),
        ("{{ '{}:{}'.format(x|length, 'y') }}", "10000000:y"),
        ("{% set s %}{{ x }}{% endset %}{{ s|length }}", "10000000"),
    ],
)
def test_a_ten_megabyte_input_still_renders(
    tmp_path: Path, template: str, expected: str | None
) -> None:
    """The limit is on what a render makes, far above what any model takes: a 10 MB input,
    joined, replaced or formatted, renders as before."""
    prompt = _task(tmp_path, template).render(x="a" * 10_000_000)
    text = prompt.messages[0]["content"]
    assert isinstance(text, str)
    if expected is None:
        assert text == "first\n" + "a" * 10_000_000 + "|10000000"
    else:
        assert text == f"first\n{expected}"


def test_the_render_limit_is_public_and_above_the_size_limit() -> None:
    assert render.MAX_TEXT > render.MAX_SIZE


# Templates that, for some inputs, leave nothing to ask: only whitespace, only a system or
# assistant block, a user block that renders blank, a lone cache point.
_EMPTY = [
    ("{{ x }}", "rendered only whitespace (empty inputs: x)"),
    ("{% if x %}{{ x }}{% endif %}\n\n   \n", "rendered only whitespace"),
    ('{% role "system" %}Be brief.{% endrole %}{{ x }}', "no user message, only system"),
    ('{% role "assistant" %}Sure.{% endrole %}{{ x }}', "no user message, only assistant"),
    (
        '{% role "system" %}S{% endrole %}{% role "assistant" %}A{% endrole %}{{ x }}',
        "no user message, only system and assistant",
    ),
    ('{% role "user" %}{{ x }}{% endrole %}', "rendered only whitespace"),
    ("{% cachepoint %}{{ x }}", "rendered"),
]


@pytest.mark.parametrize(("template", "said"), _EMPTY)
@pytest.mark.parametrize("blank", ["", "  \n\t ", "\u2028"])
def test_a_prompt_with_no_user_message_is_refused_before_any_request(
    template: str, said: str, blank: str
) -> None:
    """Providers answer an empty prompt with a 400, after the retries were paid for."""
    from promptcast.spec import parse_task_text
    from promptcast.testing import ScriptedBackend

    sent: list[object] = []
    task = pc.Task(parse_task_text(f"---\ninputs: {{x: str}}\n---\n{template}\n", path="t.jinja"))
    backend = ScriptedBackend(lambda request: sent.append(request) or "answer")
    with pc.override(backends={"test/m": backend}):
        with pytest.raises(pc.TaskInputError, match=r"Task 't'.*" + re.escape(said)):
            task.with_model("test/m")(x=blank)
        with pytest.raises(pc.TaskInputError, match="nothing to send"):
            task.render(x=blank)
        assert task.with_model("test/m")(x="hello") == "answer"
    assert len(sent) == 1


def test_a_template_without_inputs_that_renders_empty_is_refused_on_every_call() -> None:
    from promptcast.spec import parse_task_text

    task = pc.Task(parse_task_text("---\n---\n{% if false %}never{% endif %}\n", path="e.jinja"))
    for _ in range(2):
        with pytest.raises(pc.TaskInputError, match=r"Task 'e'.*only whitespace"):
            task.render()


@pytest.mark.parametrize(
    "entry",
    ["  x{i}: notatype{i}\n", "  x-{i}: str\n", "  x{i}: {{type: int, default: a}}\n"],
)
def test_a_megabyte_of_bad_inputs_is_checked_in_linear_time(entry: str) -> None:
    """Each problem looked its key up through the whole `inputs:` mapping: 40,000 bad inputs
    (a 1 MB file) took about 40 s; each mapping's keys are now indexed once."""
    import time

    from promptcast.spec import MAX_TASK_FILE_BYTES, parse_task_text

    count = 40_000 if "default" not in entry else 15_000
    text = "---\ninputs:\n" + "".join(entry.format(i=i) for i in range(count)) + "---\nhi\n"
    assert len(text) < MAX_TASK_FILE_BYTES
    started = time.perf_counter()
    with pytest.raises(pc.TaskDefinitionError, match=rf"t\.jinja:3: .*{count - 1} more problem"):
        parse_task_text(text, path="t.jinja")
    assert time.perf_counter() - started < 20


def test_problem_lines_still_point_at_their_keys(tmp_path: Path) -> None:
    from promptcast.spec import check_task_file

    path = tmp_path / "t.jinja"
    text = "---\ninputs:\n  a: str\n  b: nope\n  c: str\n  d: nope2\n---\n{{ a }}\n"
    path.write_text(text, encoding="utf-8")
    assert sorted(problem.line for problem in check_task_file(path)) == [4, 6]


_SHADOWED = ["items", "get", "keys", "values", "add", "__init__", "__class__", "_private", "_tasks"]
_NOT_NAMES = ["my-task", "caf\u00e9", "cafe\u0301", "x\u200dy", "\u202eevil", "1st"]


@pytest.mark.parametrize("name", _SHADOWED + _NOT_NAMES)
def test_a_task_name_the_registry_would_shadow_or_cannot_reach_is_refused_at_load(
    tmp_path: Path, name: str
) -> None:
    """`items.jinja` loaded, and `tasks.items` was the Mapping method (`_private`: an
    AttributeError, `__init__`: the registry's own); `café` said 'not a Python identifier'."""
    (tmp_path / f"{name}.jinja").write_text("---\n---\nhello\n", encoding="utf-8")
    with pytest.raises(pc.TaskDefinitionError, match=rf"task name {re.escape(repr(name))} "):
        pc.load_tasks(tmp_path)
    named = tmp_path / "named"
    named.mkdir()
    (named / "ok.jinja").write_text(f"---\nname: {name!r}\n---\nhello\n", encoding="utf-8")
    with pytest.raises(pc.TaskDefinitionError, match=r"ok\.jinja:2: task name .*set `name:`"):
        pc.load_tasks(named)


def test_the_names_spec_refuses_are_the_registrys_own_public_attributes() -> None:
    """spec sits below task, so it lists the names instead of importing TaskRegistry."""
    from promptcast.spec import REGISTRY_NAMES
    from promptcast.task import TaskRegistry

    assert {name for name in dir(TaskRegistry) if not name.startswith("_")} == REGISTRY_NAMES


def test_task_names_differing_in_case_are_two_tasks_by_attribute_and_by_name(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.jinja").write_text("---\nname: Foo\n---\nupper\n", encoding="utf-8")
    (tmp_path / "b.jinja").write_text("---\nname: foo\n---\nlower\n", encoding="utf-8")
    tasks = pc.load_tasks(tmp_path)
    assert tasks.Foo is tasks["Foo"] and tasks.foo is tasks["foo"] and tasks.Foo is not tasks.foo
    assert tasks.foo.render().messages[0]["content"] == "lower"


@pytest.mark.parametrize(
    "frontmatter",
    ['name: "ok\\n"', 'inputs:\n  "x\\n": str', 'output:\n  "a\\n": str'],
)
def test_a_name_ending_in_a_line_break_is_not_an_identifier(frontmatter: str) -> None:
    """`$` matched before a final line break, so a task, input or output field was named
    'ok\\n' (an input the template could never use)."""
    from promptcast.spec import parse_task_text

    with pytest.raises(pc.TaskDefinitionError, match=r"\\n"):
        parse_task_text(f"---\n{frontmatter}\n---\nhi\n", path="t.jinja")


def test_a_fence_tag_ending_in_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError, match="fence tag"):
        render.fence("x", "data\n")


_TASK = "---\ninputs: {x: str, xs: 'list[str]'}\n---\n{% role \"system\" %}S{% endrole %}"


@pytest.mark.parametrize("char", ["\ud800", "\udbff", "\udc80", "\udfff"])
@pytest.mark.parametrize(
    ("template", "inputs", "field"),
    [
        ("Say {{ x }}", {"x": "a{c}b", "xs": []}, "x"),
        ("{{ xs|join(', ') }}", {"x": "a", "xs": ["ok", "{c}"]}, "xs"),
        ('{% role "user" %}{{ x }}{% endrole %}', {"x": "{c}", "xs": []}, "x"),
        ('{% role "system" %}{{ x }}{% endrole %}Hi', {"x": "{c}", "xs": []}, "x"),
    ],
)
def test_a_lone_surrogate_is_an_input_error_naming_the_input_before_any_request(
    fake_anthropic: object, char: str, template: str, inputs: dict[str, object], field: str
) -> None:
    """A lone surrogate (a JSON '\\ud800', bytes decoded with surrogateescape) cannot be
    encoded: the call failed as 'Anthropic sent a malformed reply (UnicodeEncodeError)'."""
    from promptcast.spec import parse_task_text
    from promptcast.testing import FakeAnthropic

    assert isinstance(fake_anthropic, FakeAnthropic)
    task = pc.Task(parse_task_text(f"{_TASK}{template}\n", path="t.jinja"))
    given = {
        key: value.format(c=char) if isinstance(value, str) else [i.format(c=char) for i in value]
        for key, value in inputs.items()
        if isinstance(value, (str, list))
    }
    with pytest.raises(pc.TaskInputError, match=rf"input '{field}': holds U\+{ord(char):04X}"):
        task.with_model("anthropic/claude-sonnet-4-6")(**given)
    assert fake_anthropic.requests == []


@pytest.mark.parametrize("name", ["x\udcff", "\ud800", "", "x\u2028", " x", "x\x00"])
def test_an_undeclared_input_of_any_name_is_an_input_error_naming_it(name: str) -> None:
    """A name with a lone surrogate (an argv or JSON key decoded with surrogateescape) made
    pydantic's error carry no field, and the call crashed with `KeyError: 'None'`; an empty name
    was reported without it."""
    from promptcast.spec import parse_task_text

    task = pc.Task(parse_task_text(f"{_TASK}{{{{ x }}}}\n", path="t.jinja"))
    with pytest.raises(pc.TaskInputError) as info:
        task.render(**{"x": "a", "xs": [], name: "b"})
    assert info.value.field == name
    expected = f"input {name!r}: is not declared by the task (declared inputs: x, xs)"
    assert expected in str(info.value)


def test_an_undeclared_input_name_with_invalid_utf8_is_one_error_line_at_the_cli() -> None:
    import os
    import subprocess
    import sys

    argv = [sys.executable, "-m", "promptcast.cli", "render", "translate"]
    argv += [b"-i", b"te\xffxt=hi", b"-i", b"text=hi", b"-i", b"target_language=fr"]  # type: ignore[list-item]
    done = subprocess.run(
        argv, capture_output=True, env={**os.environ, "COLUMNS": "200"}, timeout=60
    )
    assert done.returncode == 1, done.stderr
    assert b"Traceback" not in done.stderr
    assert b"input 'te\\udcffxt': is not declared by the task" in done.stderr, done.stderr


@pytest.mark.parametrize(
    "text",
    [
        "a\x00b",
        "a\u2029b\u2028c",
        "a\u202eb\u202c",
        "a\u200db",
        "\ufeffa",
        "a\U0001f600",
        "a\x85\x7f",
    ],
)
def test_other_unusual_characters_reach_the_model_unchanged(
    fake_anthropic: object, text: str
) -> None:
    from promptcast.spec import parse_task_text
    from promptcast.testing import FakeAnthropic

    assert isinstance(fake_anthropic, FakeAnthropic)
    task = pc.Task(parse_task_text("---\ninputs: {x: str}\n---\nSay {{ x }}\n", path="t.jinja"))
    task.with_model("anthropic/claude-sonnet-4-6")(x=text)
    assert fake_anthropic.requests[-1]["messages"][0]["content"] == f"Say {text}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"smile \\ud83d\\ude00"', "smile \U0001f600"),
        ('"\\uD83D\\uDE00\\ud83d\\ude00!"', "\U0001f600\U0001f600!"),
        ('"\\U0001F600"', "\U0001f600"),
        ("'\\ud800'", "\\ud800"),  # single quotes: no escapes, the text as written
    ],
)
def test_a_json_style_surrogate_pair_in_frontmatter_is_the_character_it_means(
    value: str, expected: str
) -> None:
    """PyYAML made two lone surrogates of `"\\ud83d\\ude00"`: no request could carry them."""
    from promptcast.spec import parse_task_text

    spec = parse_task_text(f"---\ndescription: {value}\n---\nhi\n", path="t.jinja")
    assert spec.description == expected


@pytest.mark.parametrize(
    "frontmatter",
    [
        'description: "x\\ud800"',
        'description: "\\ude00 first"',
        'description: "\\U0000DC00"',
        'metadata:\n  "k\\ud800": 1',
        'inputs:\n  x: {type: str, default: "\\udfff"}',
        'output:\n  a: {type: str, description: "\\udbff"}',
    ],
)
def test_a_lone_surrogate_escape_in_frontmatter_is_refused_at_its_line(frontmatter: str) -> None:
    from promptcast.spec import parse_task_text

    line = 2 + frontmatter.count("\n")
    with pytest.raises(pc.TaskDefinitionError, match=rf"t\.jinja:{line}: \\u[0-9a-f]{{4}} is half"):
        parse_task_text(f"---\n{frontmatter}\n---\nhi\n", path="t.jinja")


@pytest.mark.parametrize(
    "frontmatter",
    [
        'model: "anthropic/claude-sonnet-4-6\\n"',
        'model: "anthropic/claude sonnet"',
        'model: "anthropic/claude\\u2028x"',
        "fallbacks: [no model here]",
        'fallbacks: [openai/gpt-4o, "anthropic/x\\n"]',
        'fallbacks: [""]',
    ],
)
def test_a_model_or_fallback_that_is_not_a_model_string_is_refused_at_load(
    frontmatter: str,
) -> None:
    """They loaded: a fallback was never checked, and `$`/`.+` let a line break or a space
    through, to fail only when a call reached that model."""
    from promptcast.spec import parse_task_text

    with pytest.raises(pc.TaskDefinitionError, match=r"t\.jinja:2: .*'provider/model'"):
        parse_task_text(f"---\n{frontmatter}\n---\nhi\n", path="t.jinja")


def test_model_strings_with_slashes_colons_and_dots_still_load() -> None:
    from promptcast.spec import parse_task_text

    text = (
        "---\nmodel: openrouter/meta-llama/llama-3.1-8b-instruct:free\nfallbacks: "
        "[ollama/llama3.1:8b, 'bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0']\n---\nhi\n"
    )
    spec = parse_task_text(text, path="t.jinja")
    assert spec.fallbacks == (
        "ollama/llama3.1:8b",
        "bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0",
    )


def test_task_text_with_a_byte_order_mark_loads_like_the_file(tmp_path: Path) -> None:
    """`parse_task_text(open(path).read())` kept Notepad's BOM and said the file does not
    start with '---'; `parse_task_file` drops it."""
    from promptcast.spec import parse_task_file, parse_task_text

    text = "---\ninputs: {x: str}\n---\n{{ x }}\n"
    path = tmp_path / "t.jinja"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    spec = parse_task_text(path.read_text(encoding="utf-8"), path=str(path))
    assert spec == parse_task_file(path)


@pytest.mark.parametrize(
    "template",
    [
        '{% for i in range(20) %}{% role "user" %}{{ x }}{% endrole %}{% endfor %}',
        '{% for i in range(10) %}{% role "user" %}{{ x }}!{% endrole %}'
        '{% role "assistant" %}{{ x }}{% endrole %}{% endfor %}',
        '{% for i in range(20) %}{% role "system" %}{{ x }}{% endrole %}{% endfor %}hi',
        '{% role "user" %}{% for i in range(9) %}{{ x }}{% endfor %}{% endrole %}'
        "{% for i in range(9) %}{{ x }}{% endfor %}",
    ],
)
def test_role_blocks_in_a_loop_are_bounded_in_all(tmp_path: Path, template: str) -> None:
    """Each role block's body was bounded, all of them together not: 200 blocks of a 1 MB
    input made a 200 MB prompt (and took 23 s, each block added to the text so far)."""
    task = _task(tmp_path, template)
    with pytest.raises(pc.TaskInputError, match=r"'t'.*more than 16000000 characters"):
        task.render(x="a" * 1_000_000)


def test_many_small_role_blocks_are_assembled_in_linear_time(tmp_path: Path) -> None:
    import time

    template = '{% for i in range(100000) %}{% role "user" %}{{ i }}{% endrole %}{% endfor %}'
    started = time.perf_counter()
    prompt = _task(tmp_path, template).render(x="")
    assert len(prompt.messages) == 1
    content = prompt.messages[0]["content"]
    assert isinstance(content, str) and content.endswith("\n\n99999")
    assert time.perf_counter() - started < 20


@pytest.mark.parametrize(
    "template",
    [
        "{% for i in range(9) %}{{ img }}{% endfor %}",
        "{{ [img] * 9 }}",
        '{% for i in range(9) %}{% role "user" %}{{ img }}{% endrole %}'
        '{% role "assistant" %}ok{% endrole %}{% endfor %}',
    ],
)
def test_one_image_placed_many_times_counts_each_time_against_the_request_limit(
    tmp_path: Path, template: str
) -> None:
    """The per-request media limit counted the inputs once: a 4 MB image placed 50 times made
    a 200 MB request."""
    from promptcast.media import MAX_REQUEST_MEDIA_BYTES, Image, MediaTooLargeError

    png = bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
    image = Image(png + b"\0" * (MAX_REQUEST_MEDIA_BYTES // 8))
    task = _task(tmp_path, template, inputs="{img: image}")
    with pytest.raises(MediaTooLargeError, match=r"Task 't'.*places 9 images and documents"):
        task.render(img=image)
    once = _task(tmp_path, "{{ img }} and {{ img }}", inputs="{img: image}").render(img=image)
    assert [part["type"] for part in once.messages[0]["content"]].count("media") == 2
