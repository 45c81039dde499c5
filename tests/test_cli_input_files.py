"""`-i key=@path` on the command line: curl's convention for every input. A `str` input gets the
file's text as written, any other non-media input takes the file's content as its VALUE (checked
as strictly as `-i key=VALUE`), image and document inputs still read the file as media, and
`@@` passes a literal value that starts with `@`."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

import promptcast as pc
from promptcast.cli import app
from promptcast.testing import ScriptedBackend

runner = CliRunner()

TASK = """\
---
inputs:
  text: {type: str, default: "-"}
  n: {type: int, default: 0}
  labels: {type: "list[str]", default: []}
  counts: {type: "dict[str, int]", default: {}}
  label: {type: "Literal['billing', 'bug', '@team']", default: billing}
  note: {type: "str | None", default: null}
output: str
---
{{ text }}|{{ n }}|{{ labels }}|{{ counts }}|{{ label }}|{{ note }}
"""
SHOUT = "---\ninputs: {text: str, labels: 'list[str]'}\noutput: {loud: str}\n---\n<{{ text }}>{{ labels }}"


@pytest.fixture
def typed(write_task: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_task("typed", TASK)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _render(folder: Path, *pairs: str) -> Result:
    args = ["render", "typed", "-p", str(folder)]
    for pair in pairs:
        args += ["-i", pair]
    return runner.invoke(app, args)


# one case per kind of input: the file's content, and what the render shows for it
FILE_VALUES = [
    pytest.param("text", "Charged twice\n  @ and {{ not a template }}\n", id="str"),
    pytest.param("n", "3\n", id="int"),
    pytest.param("labels", '["billing", "bug"]\n', id="list[str]"),
    pytest.param("counts", '{"a": 1, "b": 2}', id="object"),
    pytest.param("label", "bug", id="Literal"),
    pytest.param("note", "42\n", id="str|None"),
]


@pytest.mark.parametrize(("key", "content"), FILE_VALUES)
def test_at_path_reads_the_value_from_a_file_for_every_input_type(
    typed: Path, key: str, content: str
) -> None:
    (typed / "value.txt").write_text(content, encoding="utf-8")
    from_file = _render(typed, f"{key}=@value.txt")
    assert from_file.exit_code == 0, from_file.output
    if key == "text":  # a str input is the file's text, as written
        assert from_file.stdout.startswith(f"[user]\n{content}|0|")
        return
    inline = _render(typed, f"{key}={content}")  # the same VALUE as -i key=VALUE
    assert inline.exit_code == 0, inline.output
    assert from_file.stdout == inline.stdout


def test_a_file_value_keeps_every_byte_of_a_str_input(typed: Path) -> None:
    task = pc.load_tasks(typed)["typed"]
    text = "line one\r\nline two\r\n\n  \t"
    (typed / "mail.txt").write_bytes(text.encode("utf-8"))
    backend = ScriptedBackend(["ok"])
    with pc.override(backends={"test/echo": backend}):
        task.with_model("test/echo").run(**_inputs(task, "text=@mail.txt"))
    assert backend.requests[0].prompt.messages[-1]["content"] == f"{text}|0|[]|{{}}|billing|None"


def _inputs(task: pc.Task[object], *pairs: str) -> dict[str, object]:
    from promptcast.cli import _inputs as parse

    return parse(task, list(pairs), None)


def test_a_literal_from_a_file_may_end_with_a_newline(typed: Path) -> None:
    (typed / "label.txt").write_text("@team\n", encoding="utf-8")  # as `echo @team > label.txt`
    result = _render(typed, "label=@label.txt")
    assert result.exit_code == 0, result.output
    assert "|@team|" in result.stdout


@pytest.mark.parametrize(
    ("pair", "field"),
    [
        pytest.param("n=@value.txt", "n", id="int"),
        pytest.param("labels=@value.txt", "labels", id="list[str]"),
        pytest.param("counts=@value.txt", "counts", id="object"),
        pytest.param("label=@value.txt", "label", id="Literal"),
    ],
)
def test_a_file_value_is_checked_as_strictly_as_an_inline_one(
    typed: Path, pair: str, field: str
) -> None:
    (typed / "value.txt").write_text("true\n", encoding="utf-8")  # JSON true fits none of them
    result = _render(typed, pair)
    assert result.exit_code == 1, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: Task 'typed' input '{field}': ")
    inline = _render(typed, f"{field}=true")
    assert inline.exit_code == 1 and inline.stderr == result.stderr


@pytest.mark.parametrize(
    ("pair", "shown"),
    [
        pytest.param("text=@@bob", "\n@bob|0|", id="str"),
        pytest.param("label=@@team", "|@team|", id="Literal"),
        pytest.param('labels=["@@bob"]', "['@@bob']", id="not-at-the-start"),
        pytest.param("note=@@@x", "|@@x", id="str|None"),
    ],
)
def test_a_double_at_passes_a_literal_value_that_starts_with_at(
    typed: Path, pair: str, shown: str
) -> None:
    (typed / "bob").write_text("the file, not the value", encoding="utf-8")
    (typed / "team").write_text("the file, not the value", encoding="utf-8")
    result = _render(typed, pair)
    assert result.exit_code == 0, result.output
    assert shown in result.stdout and "the file" not in result.stdout


@pytest.mark.parametrize("key", ["text", "n", "labels", "counts", "label", "note"])
@pytest.mark.parametrize(
    ("make", "problem"),
    [
        pytest.param(None, "no such file 'in/value.txt'", id="missing"),
        pytest.param(lambda p: p.mkdir(), "'in/value.txt' is a folder, not a file", id="folder"),
        pytest.param(
            lambda p: p.write_bytes(b"caf\xe9 latin-1"),
            "'in/value.txt' is not UTF-8 text (byte 0xe9 at offset 3); save it as UTF-8",
            id="not-utf8",
        ),
    ],
)
def test_an_unreadable_file_is_one_error_line_naming_task_input_and_path(
    typed: Path, key: str, make: Callable[[Path], object] | None, problem: str
) -> None:
    (typed / "in").mkdir()
    if make is not None:
        make(typed / "in" / "value.txt")
    result = _render(typed, f"{key}=@in/value.txt")
    assert result.exit_code == 1, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: Task 'typed' input '{key}': {problem}")
    if make is None or "folder" in problem:
        assert line.endswith(
            f"to pass a value that starts with @, write @@ (-i {key}=@@in/value.txt)"
        )
    assert "Traceback" not in result.output and result.stdout == ""


def test_an_at_value_for_an_undeclared_input_is_refused_as_undeclared(typed: Path) -> None:
    (typed / "value.txt").write_text("3", encoding="utf-8")
    for value in ["@value.txt", "@missing.txt"]:
        result = _render(typed, f"bogus={value}")
        assert result.exit_code == 1
        [line] = result.stderr.splitlines()
        assert "'bogus'" in line and "is not declared" in line and "file" not in line


def test_dash_i_from_a_file_still_wins_over_input_json(typed: Path) -> None:
    (typed / "inputs.json").write_text(json.dumps({"n": 1, "labels": ["json"]}))
    (typed / "labels.json").write_text('["file"]')
    args = ["render", "typed", "-p", str(typed), "--input-json", "inputs.json"]
    result = runner.invoke(app, [*args, "-i", "labels=@labels.json"])
    assert result.exit_code == 0, result.output
    assert "|1|['file']|" in result.stdout


@pytest.mark.parametrize("prefix", [b"", b"\xef\xbb\xbf"], ids=["plain", "BOM"])
def test_input_json_dash_reads_standard_input(typed: Path, prefix: bytes) -> None:
    body = json.dumps({"n": 7, "text": "caf\u00e9 \u2028 ok"}, ensure_ascii=False).encode()
    args = ["render", "typed", "-p", str(typed), "--input-json", "-"]
    result = runner.invoke(app, args, input=prefix + body)
    assert result.exit_code == 0, result.output
    assert "caf\u00e9 \u2028 ok|7|" in result.stdout


@pytest.mark.parametrize(
    ("body", "problem"),
    [(b"[1]", "must hold a JSON object"), (b"\xff{}", "cannot read --input-json -"), (b"", "-")],
    ids=["array", "not UTF-8", "empty"],
)
def test_input_json_dash_with_bad_input_is_one_error_line(
    typed: Path, body: bytes, problem: str
) -> None:
    args = ["render", "typed", "-p", str(typed), "--input-json", "-"]
    result = runner.invoke(app, args, input=body)
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and "'typed'" in line and problem in line


@pytest.mark.parametrize("stream", [[], ["--stream"]], ids=["run", "run --stream"])
def test_run_and_stream_read_file_values(
    write_task: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stream: list[str],
) -> None:
    write_task("shout", SHOUT)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mail.txt").write_text("Charged twice\n", encoding="utf-8")
    (tmp_path / "labels.json").write_text('["billing", "bug"]', encoding="utf-8")
    backend = ScriptedBackend([{"loud": "CHARGED TWICE"}])
    args = ["run", "shout", *stream, "-p", str(tmp_path), "--model", "test/shout"]
    with pc.override(backends={"test/shout": backend}):
        result = runner.invoke(app, [*args, "-i", "text=@mail.txt", "-i", "labels=@labels.json"])
    assert result.exit_code == 0, result.output
    final = result.stdout.splitlines()[-1] if stream else result.stdout  # piped: one line each
    assert json.loads(final) == {"loud": "CHARGED TWICE"}
    assert (
        backend.requests[0].prompt.messages[-1]["content"] == "<Charged twice\n>['billing', 'bug']"
    )


@pytest.mark.parametrize("command", [["run"], ["run", "--stream"], ["record"], ["render"]])
def test_every_command_taking_inputs_reports_a_missing_file_as_one_line(
    write_task: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
) -> None:
    write_task("shout", SHOUT)
    monkeypatch.chdir(tmp_path)
    backend = ScriptedBackend([])  # never asked: nothing is sent
    args = [*command[:1], "shout", *command[1:], "-p", str(tmp_path)]
    with pc.override(model="test/shout", backends={"test/shout": backend}):
        result = runner.invoke(app, [*args, "-i", "text=@mail.txt", "-i", "labels=[]"])
    assert result.exit_code == 1, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("error: Task 'shout' input 'text': no such file 'mail.txt'; ")
    assert backend.requests == [] and "Traceback" not in result.output
    assert not (tmp_path / "cassettes").exists()


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\x00\x80"))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + idat + chunk(b"IEND", b"")


def test_image_inputs_still_read_the_file_as_media(
    write_task: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_task("look", "---\ninputs: {shot: image, caption: str}\noutput: str\n---\n{{ shot }}")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "crash.png").write_bytes(_png())
    task = pc.load_tasks(tmp_path)["look"]
    inputs = _inputs(task, "shot=@crash.png", "caption=@@crash.png")
    assert inputs == {"shot": Path("crash.png"), "caption": "@crash.png"}
    args = ["render", "look", "-p", str(tmp_path), "-i", "shot=@crash.png", "-i", "caption=c"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "[image]" in result.stdout


def test_help_describes_at_path_and_the_escape() -> None:
    result = runner.invoke(app, ["run", "--help"], terminal_width=200)
    help_text = " ".join(result.output.split())
    assert "@path takes VALUE from a file" in help_text and "@@" in help_text
