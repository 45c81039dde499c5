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
