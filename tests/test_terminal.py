"""A model's reply never drives the user's terminal: escape sequences in an output or in an error
that quotes one reach the terminal spelled out, and JSON output stays the same JSON value."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import promptcast as pc
from promptcast._cli_stream import show_stream
from promptcast._terminal import json_line, visible
from promptcast.cli import app
from promptcast.testing import ScriptedBackend

runner = CliRunner()

# clipboard write (OSC 52), clear screen, a window title, an 8-bit CSI, a line hidden by CR, DEL
HOSTILE = "ok\x1b]52;c;cHduZWQ=\x07 \x1b[2J \x1b]0;pwned\x1b\\ \x9b31m \rhidden\x7f"
HOSTILE += " urgency: \u202ehgih\u202c \u2067isolated\u2069"  # reads "urgency: high" reversed
RAW = ("\x1b", "\x07", "\x9b", "\r", "\x7f", "\u202e", "\u2067")

TEXT_TASK = "---\ninputs: {q: str}\noutput: str\n---\n{{ q }}\n"
FIELD_TASK = "---\ninputs: {q: str}\noutput: {answer: str}\n---\n{{ q }}\n"
COUNT_TASK = "---\ninputs: {q: str}\noutput: {n: int}\n---\n{{ q }}\n"


@pytest.mark.parametrize("code", [*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)])
def test_every_control_character_is_spelled_out(code: int) -> None:
    assert visible(f"a{chr(code)}b") == f"a\\u{code:04x}b"


@pytest.mark.parametrize("code", [*range(0x202A, 0x202F), *range(0x2066, 0x206A)])
def test_every_bidirectional_override_is_spelled_out(code: int) -> None:
    """U+202E shows what follows it right to left ("Trojan Source"): `low` reads `wol`."""
    assert visible(f"a{chr(code)}b") == f"a\\u{code:04x}b"


def test_tab_newline_and_other_text_pass_unchanged() -> None:
    text = "tab\there\nnext line: café, 日本語, emoji 🎉, U+2028 \u2028 and NBSP \u00a0"
    assert visible(text) == text
    # right-to-left text and its marks, and emoji joined by ZWJ, are text
    text = "שלום \u200fעולם\u200e, مرحبا\u061c, 👨\u200d👩\u200d👧"  # noqa: RUF001
    assert visible(text) == text


def test_a_json_log_line_spells_out_bidirectional_overrides() -> None:
    value = {"issue": "\u202ehgih\u202c \u2066x\u2069", "rtl": "שלום\u200f"}
    line = json_line(json.dumps(value, ensure_ascii=False))
    assert "\u202e" not in line and "\u2066" not in line and "\u200f" in line
    assert json.loads(line) == value


def test_json_text_stays_the_same_json_value() -> None:
    value = {"k\x9b": "".join(chr(code) for code in range(0xA1)) + "\u2028"}
    text = visible(json.dumps(value, ensure_ascii=False))
    assert not any(ch in text for ch in RAW)
    assert json.loads(text) == value


@pytest.mark.parametrize(
    ("task_text", "reply", "expected"),
    [
        (TEXT_TASK, HOSTILE, HOSTILE),
        (FIELD_TASK, json.dumps({"answer": HOSTILE}), {"answer": HOSTILE}),
    ],
    ids=["str output", "structured output"],
)
@pytest.mark.parametrize("stream", [[], ["--stream"]], ids=["run", "run --stream"])
def test_run_prints_no_control_character_and_the_same_json(
    write_task: Callable[..., Path],
    tmp_path: Path,
    task_text: str,
    reply: str,
    expected: object,
    stream: list[str],
) -> None:
    write_task("echo", task_text)
    backend = ScriptedBackend([reply], chunk_chars=5)
    args = ["run", "echo", *stream, "-p", str(tmp_path), "--model", "test/echo", "-i", "q=hi"]
    with pc.override(backends={"test/echo": backend}):
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert not any(ch in result.stdout for ch in RAW)
    last = result.stdout if not stream else result.stdout.splitlines()[-1]
    assert json.loads(last) == expected


def test_an_error_quoting_a_provider_is_one_inert_line(
    write_task: Callable[..., Path], tmp_path: Path
) -> None:
    """A provider's error message (a proxy's, a self-hosted server's) is quoted in the error."""
    write_task("count", COUNT_TASK)

    def refuse(request: object) -> str:
        raise pc.BackendError(f"400 from the server: {HOSTILE}", provider="test", status=400)

    args = ["run", "count", "-p", str(tmp_path), "--model", "test/count", "-i", "q=hi"]
    with pc.override(backends={"test/count": ScriptedBackend(refuse)}):
        result = runner.invoke(app, args)
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and "pwned" in line  # quoted, spelled out
    assert not any(ch in result.stderr for ch in RAW)


@pytest.mark.parametrize(
    ("task_text", "reply"),
    [(TEXT_TASK, HOSTILE), (FIELD_TASK, json.dumps({"answer": HOSTILE}))],
    ids=["str output", "structured output"],
)
def test_the_live_view_on_a_terminal_shows_escapes_spelled_out(
    write_task: Callable[..., Path], task_text: str, reply: str
) -> None:
    task = pc.Task.from_file(write_task("echo", task_text))
    screen = io.StringIO()
    out = Console(file=screen, force_terminal=True, width=200)
    err = Console(file=io.StringIO(), force_terminal=False)
    backend = ScriptedBackend([reply], chunk_chars=5)
    with pc.override(backends={"test/echo": backend}):
        show_stream(task.with_model("test/echo").stream(q="hi"), out, err)
    shown = screen.getvalue()
    # rich draws with its own CSI sequences (ESC [); none of the reply's reaches the screen
    for sequence in ("\x1b]52", "\x1b]0;", "\x1b[2J", "\x9b", "\x07", "\rhidden", "\x7f"):
        assert sequence not in shown
    assert "\\u001b]52;c;" in shown or "\\\\u001b]52;c;" in shown
