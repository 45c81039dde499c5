"""The README's task file and its offline-testing snippet work as written."""

from __future__ import annotations

import re
from pathlib import Path

import promptcast as pc
from promptcast.testing import ScriptedBackend
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_task_file_loads_renders_and_runs_on_a_scripted_backend(tmp_path: Path) -> None:
    [source] = re.findall(r"```jinja\n(.*?)```", README, re.DOTALL)
    (tmp_path / "summarize_review.jinja").write_text(source, encoding="utf-8")
    tasks = pc.load_tasks(tmp_path)
    prompt = tasks.summarize_review.render(text="Great blender, a bit loud.")
    assert prompt.system == "Summarize reviews in one sentence and at most 3 points."
    assert prompt.messages[0]["content"] == "<review>\nGreat blender, a bit loud.\n</review>"

    script = ScriptedBackend(
        [
            {"summary": "wrong type", "points": "not a list"},
            {"summary": "A loud but great blender.", "points": ["great", "loud"]},
        ]
    )
    with pc.override(model="test/reviews", backends={"test/reviews": script}):
        run = tasks.summarize_review.run(text="Great blender, a bit loud.")
    assert run.attempts == 2 and run.output.points == ["great", "loud"]  # type: ignore[attr-defined]


def test_readme_commands_are_the_ones_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_command = re.search(r"Run the tests.*?```bash\n(.*?)\n```", README, re.DOTALL)
    assert test_command and test_command.group(1) == "bash .ci/run"
    assert 'pip install -q -e ".[dev]"' in ci and ".venv/bin/pytest" in ci
    first = re.search(r"```bash\n(.*?)\n```", README, re.DOTALL)
    assert first and first.group(1).endswith("promptcast demo")
