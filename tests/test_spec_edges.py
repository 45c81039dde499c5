"""Task files and templates at their edges: odd characters, hostile templates, reserved names.

Each case either works or fails with a typed error that names the file and line; none hangs,
eats memory or escapes as a bare Python exception.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import promptcast as pc
from promptcast.spec import check_task_file

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
