"""Atomic writes: a kill (here an interrupt) at any moment leaves the old file or the new one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from promptcast import _files
from promptcast._files import write_atomic
from promptcast.cli import app

PROMPTY = """\
---
name: chat
model:
  api: chat
  configuration: {type: openai, name: gpt-4o}
inputs:
  question: {type: string}
---
system:
You answer questions.

user:
{{question}}
"""


def _interrupt_at(monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(_files.os, step, interrupted)


def test_write_atomic_writes_utf8_including_odd_characters(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    text = "line\u2028separator, zero\u200bwidth, \U0001f600\n"
    write_atomic(path, text)
    assert path.read_text(encoding="utf-8") == text
    assert os.listdir(tmp_path) == ["out.txt"]


@pytest.mark.parametrize("step", ["fsync", "replace"])
def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(
    step: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old", encoding="utf-8")
    _interrupt_at(monkeypatch, step)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, "new " * 100_000)
    assert path.read_text(encoding="utf-8") == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


@pytest.mark.parametrize("command", ["typegen", "convert"])
def test_generated_files_survive_an_interrupted_rewrite(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "legacy"
    source.mkdir()
    (source / "chat.prompty").write_text(PROMPTY, encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    target = out / ("tasks.py" if command == "typegen" else "chat.jinja")
    target.write_text("# the previous version\n", encoding="utf-8")
    args = (
        ["typegen", str(source), "-o", str(target)]
        if command == "typegen"
        else ["convert", str(source / "chat.prompty"), "-o", str(out), "--force"]
    )
    _interrupt_at(monkeypatch, "replace")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 130  # the interrupt, as the command line reports it
    assert target.read_text(encoding="utf-8") == "# the previous version\n"
    assert sorted(os.listdir(out)) == [target.name]
    monkeypatch.undo()
    assert CliRunner().invoke(app, args).exit_code == 0
    assert target.read_text(encoding="utf-8") != "# the previous version\n"
