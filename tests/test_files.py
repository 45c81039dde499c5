"""Files people write are read alike everywhere (a byte-order mark is not text); atomic writes:
a kill (here an interrupt) at any moment leaves the old file or the new one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

import promptcast as pc
from promptcast import _files
from promptcast._files import decode_text, write_atomic
from promptcast.cli import app
from promptcast.evals import load_cases

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


BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (BOM + b"hello", "hello"),
        (b"hello", "hello"),
        (BOM, ""),
        (BOM + BOM + b"x", "\ufeffx"),  # only the mark at the start: a second one is text
        (b"a\xef\xbb\xbfb", "a\ufeffb"),  # a zero-width no-break space inside stays
        ("line\u2028sep \U0001f600".encode(), "line\u2028sep \U0001f600"),
    ],
)
def test_decode_text_drops_a_leading_byte_order_mark_only(raw: bytes, text: str) -> None:
    assert decode_text(raw) == text


def test_decode_text_reports_offsets_into_the_file_bytes() -> None:
    with pytest.raises(UnicodeDecodeError) as caught:
        decode_text(BOM + b"ok\xff")
    assert caught.value.start == 5


TASK = """---
inputs: {text: str, labels: "list[str]"}
output: str
---
{{ text }} {{ labels | join(",") }}
"""


@pytest.mark.parametrize("bom", [b"", BOM], ids=["plain", "bom"])
def test_every_file_a_user_writes_may_start_with_a_byte_order_mark(
    bom: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Task files, eval cases, --input-json and -i KEY=@path read the same text with or without
    the mark Windows editors write (batch input files already did)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tag.jinja").write_bytes(bom + TASK.encode())
    task = pc.Task.from_file(tmp_path / "tag.jinja")
    assert list(task.spec.inputs) == ["text", "labels"]

    (tmp_path / "cases.jsonl").write_bytes(
        bom + b'{"inputs": {"text": "hi"}, "expect_contains": "x"}\n'
    )
    assert [case.inputs for case in load_cases(tmp_path / "cases.jsonl")] == [{"text": "hi"}]

    (tmp_path / "inputs.json").write_bytes(bom + json.dumps({"labels": ["a", "b"]}).encode())
    (tmp_path / "text.txt").write_bytes(bom + "caf\u00e9".encode())
    (tmp_path / "labels.json").write_bytes(bom + b'["c"]')
    for args in (
        ["--input-json", "inputs.json", "-i", "text=@text.txt"],
        ["-i", "text=@text.txt", "-i", "labels=@labels.json"],
    ):
        result = CliRunner().invoke(app, ["render", "tag", "--prompts", str(tmp_path), *args])
        assert result.exit_code == 0, result.output
        assert "caf\u00e9 " in result.stdout and "\ufeff" not in result.stdout


LONG_NAMES = ["a" * 250 + ".py", "é" * 124 + ".py", "🐱" * 62 + ".py"]  # 253 to 251 bytes


@pytest.mark.parametrize("name", LONG_NAMES, ids=["ascii", "two-byte", "four-byte"])
def test_a_file_whose_name_is_near_the_limit_is_written_atomically(
    tmp_path: Path, name: str
) -> None:
    """The temporary copy's name added 13 characters to a name the file system takes: writing
    `typegen -o <250 characters>.py` failed with "File name too long"."""
    path = tmp_path / name
    write_atomic(path, "first\n")
    write_atomic(path, "second\n")
    assert path.read_text() == "second\n"
    assert [p.name for p in tmp_path.iterdir()] == [name]


@pytest.mark.parametrize("name", LONG_NAMES, ids=["ascii", "two-byte", "four-byte"])
def test_a_cassette_whose_name_is_near_the_limit_is_staged_and_replaced(
    tmp_path: Path, name: str
) -> None:
    from promptcast.testing.cassettes import staged

    path = tmp_path / name.replace(".py", ".yaml")
    path.write_text("old\n")
    with staged(path, copy=True) as temporary:
        assert temporary.read_text() == "old\n" and len(temporary.name.encode()) <= 255
        temporary.write_text("new\n")
    assert path.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
