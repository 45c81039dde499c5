"""`promptcast check`: every problem in every file, the configured folders by default, and a failure
when there is nothing to check."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

import promptcast as pc
from promptcast.cli import app

runner = CliRunner()

BAD_TYPES = [
    "subprocess:Popen",
    "pydantic:ImportString",
    "this:s",
    "os:environ",
    "promptcast.tasks.ticket:Ticket.__class__",
    "nowhere_at_all:Thing",
]


def test_every_problem_of_every_file_is_printed(
    write_task: Callable[..., Path], tmp_path: Path
) -> None:
    first = write_task(
        "first",
        """
        ---
        descripton: x
        inputs: {n: int}
        output: {a: {type: str, descripton: y}}
        examples:
          - inputs: {n: many}
        ---
        {% include "x.jinja" %}
        {{ n }} {{ missing }}
        """,
    )
    second = write_task("second", "---\ninputs: {q: str}\nmodle: x/y\n---\n{{ q }} {{ other }}\n")
    write_task("fine", "---\ninputs: {q: str}\n---\n{{ q }}\n")
    result = runner.invoke(app, ["check", str(tmp_path)])
    assert result.exit_code == 1
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert [line.split(": ", 1)[0] for line in lines] == [
        f"{first}:2",
        f"{first}:4",
        f"{first}:6",
        f"{first}:8",
        f"{first}:9",
        f"{second}:3",
        f"{second}:5",
    ]
    assert "did you mean 'description'" in result.stdout
    assert "7 problem(s) in 3 task file(s)" in result.output


@pytest.mark.parametrize("bad_type", BAD_TYPES)
def test_a_bad_type_is_a_problem_not_a_crash(
    write_task: Callable[..., Path], tmp_path: Path, bad_type: str
) -> None:
    bad = write_task("bad", f'---\ninputs:\n  x: "{bad_type}"\n---\n{{{{ x }}}}\n')
    later = write_task("later", "---\ninputs: {q: str}\n---\n{{ q }} {{ nope }}\n")
    result = runner.invoke(app, ["check", str(tmp_path)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert f"{bad}:3: inputs.x" in result.stdout and f"{later}:4:" in result.stdout


def test_no_argument_checks_the_builtins_and_the_configured_prompts_folders(
    write_task: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = write_task("mine", "---\ninputs: {q: str}\n---\n{{ q }} {{ typo }}\n")
    monkeypatch.setenv("PROMPTCAST_PROMPTS", str(tmp_path))
    pc.reset_defaults()
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 1
    assert f"{broken}:4:" in result.stdout
    assert "1 problem(s) in 6 task file(s)" in result.output


def test_no_argument_finds_a_name_clash_with_a_builtin(
    write_task: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = write_task("classify", "---\ninputs: {q: str}\n---\n{{ q }}\n")
    pc.configure(prompts=[str(tmp_path)])
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 1
    assert f"{mine}:1: task name 'classify' is already used by" in result.stdout


def test_the_prompts_option_is_accepted_too(
    write_task: Callable[..., Path], tmp_path: Path
) -> None:
    write_task("fine", "---\ninputs: {q: str}\n---\n{{ q }}\n")
    result = runner.invoke(app, ["check", "--prompts", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"1 task file(s) checked in {tmp_path}" in result.output


@pytest.mark.parametrize("where", ["empty", "missing"])
def test_no_task_file_at_all_fails(tmp_path: Path, where: str) -> None:
    folder = tmp_path / where
    if where == "empty":
        folder.mkdir()
        (folder / "notes.txt").write_text("not a task")
    result = runner.invoke(app, ["check", str(folder)])
    assert result.exit_code == 1
    assert "no task files (*.jinja) found" in result.output


def test_an_empty_folder_next_to_a_good_one_is_a_problem(
    write_task: Callable[..., Path], tmp_path: Path
) -> None:
    write_task("fine", "---\ninputs: {q: str}\n---\n{{ q }}\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["check", str(tmp_path), str(empty)])
    assert result.exit_code == 1
    assert f"{empty}: no task files (*.jinja) in this folder" in result.stdout


def test_an_alias_bomb_fails_check_at_once(write_task: Callable[..., Path], tmp_path: Path) -> None:
    laughs = "\n".join(
        f"  {chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)
    )
    write_task("bomb", f"---\nmetadata:\n  a: &a [lol, lol, lol]\n{laughs}\n---\nx\n")
    result = runner.invoke(app, ["check", str(tmp_path)])
    assert result.exit_code == 1 and "aliases" in result.stdout
