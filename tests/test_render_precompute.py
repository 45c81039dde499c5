"""A template without inputs is rendered once, at load; one that can render differently is not."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jinja2
import pytest

import promptcast as pc

STATIC = """---
output: str
---
{% role "system" %}You write haiku.{% endrole %}
{% for season in ["spring", "autumn"] %}One about {{ season | upper }}.
{% endfor %}
"""


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every Jinja render from here on (templates are compiled before it is installed)."""
    seen: list[str] = []
    original = jinja2.Template.render

    def counted(self: jinja2.Template, *args: object, **kwargs: object) -> str:
        seen.append(self.name or "")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(jinja2.Template, "render", counted)
    return seen


def test_an_input_free_template_is_rendered_once_at_load(
    write_task: Callable[..., Path], renders: list[str]
) -> None:
    task = pc.Task.from_file(write_task("haiku", STATIC))
    renders.clear()
    first, second = task.render(), task.render()
    assert renders == []
    assert first == second
    assert first.system == "You write haiku."
    assert first.messages == [{"role": "user", "content": "One about SPRING.\nOne about AUTUMN."}]
    first.messages[0]["content"] = "changed by a caller"
    first.messages.append({"role": "assistant", "content": "more"})
    assert task.render() == second  # each call gets its own copy


@pytest.mark.parametrize(
    "body",
    [
        "{{ range(100000) | random }}",
        "{% filter random %}abcdefghijklmnopqrstuvwxyz0123456789{% endfilter %}",
        "{{ [range(100000)] | map('random') | join }}",
        "{{ lipsum(1) }}",
        "{% set words = lipsum %}{{ words(1) }}",
        "{{ cycler(1) }}",
        "{{ namespace(a=1) }}",
        "{{ joiner() }}",
    ],
    ids=[
        "random-filter",
        "filter-block",
        "random-by-name",
        "lipsum",
        "lipsum-aliased",
        "cycler",
        "namespace",
        "joiner",
    ],
)
def test_a_template_that_may_render_differently_is_rendered_per_call(
    write_task: Callable[..., Path], renders: list[str], body: str
) -> None:
    task = pc.Task.from_file(write_task("varied", f"---\noutput: str\n---\n{body}\n"))
    renders.clear()
    prompts = [task.render() for _ in range(10)]
    assert len(renders) == 10
    if "random" in body or "lipsum" in body:
        assert len({p.messages[0]["content"] for p in prompts}) > 1


def test_a_template_with_inputs_is_rendered_per_call(
    write_task: Callable[..., Path], renders: list[str]
) -> None:
    task = pc.Task.from_file(
        write_task("hello", "---\ninputs: {name: str}\noutput: str\n---\nHello {{ name }}.\n")
    )
    renders.clear()
    assert task.render(name="a").messages[0]["content"] == "Hello a."
    assert task.render(name="b").messages[0]["content"] == "Hello b."
    assert len(renders) == 2


def test_an_input_free_template_that_fails_to_render_fails_every_call(
    write_task: Callable[..., Path],
) -> None:
    task = pc.Task.from_file(write_task("broken", "---\noutput: str\n---\n{{ 1 // 0 }}\n"))
    for _ in range(2):
        with pytest.raises(pc.TaskInputError, match="ZeroDivisionError"):
            task.render()
