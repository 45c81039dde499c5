"""The `promptcast` command: demo offline, check for CI, the inspect/run commands, and output
that is literal, whole, plain when piped and free of secrets."""

from __future__ import annotations

import importlib.metadata
import json
import os
import pty
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

import promptcast as pc
from promptcast.cli import app
from promptcast.testing import FakeAnthropic, error_reply

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)


def test_demo_replays_three_validated_results_without_a_key() -> None:
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert "Replayed" in result.output and "example recordings" in result.output
    for name, typ in [
        ("extract_ticket", "Ticket"),
        ("answer_product_question", "ProductAnswer"),
        ("translate", "Translation"),
    ]:
        assert name in result.output and f"output ({typ})" in result.output
    assert '"urgency": "high"' in result.output
    assert "3 tasks ran" in result.output


def test_demo_live_without_a_key_says_which_variable_to_set() -> None:
    result = runner.invoke(app, ["demo", "--live"])
    assert result.exit_code == 1
    assert "ANTHROPIC_API_KEY" in result.output
    assert "Traceback" not in result.output


def test_check_passes_on_the_builtins() -> None:
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 0, result.output
    assert "5 task file(s) checked" in result.output


def test_check_fails_with_file_and_line(write_task: Callable[..., Path], tmp_path: Path) -> None:
    write_task("good", "---\ninputs: {text: str}\n---\n{{ text }}\n")
    bad = write_task("bad", "---\ninputs: {text: str}\n---\nfine\n{{ missing }}\n")
    result = runner.invoke(app, ["check", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{bad}:5:" in result.output and "'missing'" in result.output
    assert "1 problem(s) in 2 task file(s)" in result.output


def test_list_and_show() -> None:
    listed = runner.invoke(app, ["list"])
    assert listed.exit_code == 0 and "extract_ticket" in listed.output
    shown = runner.invoke(app, ["show", "extract_ticket"])
    assert shown.exit_code == 0
    info = json.loads(shown.output)
    assert info["inputs"]["customer_tier"] == {
        "type": "str",
        "required": False,
        "default": "standard",
        "description": "The customer's support plan (standard, business, enterprise).",
    }
    assert info["output_schema"]["properties"]["urgency"]["enum"][0] == "low"


def test_show_unknown_task_suggests_close_names() -> None:
    result = runner.invoke(app, ["show", "extract_tickets"])
    assert result.exit_code == 1 and "extract_ticket" in result.output


def test_render_with_key_value_and_json_inputs(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["render", "classify", "-i", "text=Charged twice", "-i", 'labels=["billing", "bug"]']
    )
    assert result.exit_code == 0, result.output
    assert "- billing\n- bug" in result.output and "Charged twice" in result.output
    inputs = tmp_path / "in.json"
    inputs.write_text(json.dumps({"text": "Hallo", "target_language": "French"}))
    result = runner.invoke(app, ["render", "translate", "--input-json", str(inputs)])
    assert result.exit_code == 0 and "into French" in result.output


def test_render_with_a_missing_input_names_it() -> None:
    result = runner.invoke(app, ["render", "translate"])
    assert result.exit_code == 1
    assert "'text'" in result.output and "is required" in result.output


def test_run_prints_json_output_and_usage(
    write_task: Callable[..., Path], tmp_path: Path, fake_anthropic: object
) -> None:
    write_task("shout", "---\ninputs: {text: str}\noutput: {loud: str}\n---\n{{ text }}\n")
    result = runner.invoke(app, ["run", "shout", "-p", str(tmp_path), "-i", "text=hi"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"loud": "example"}
    assert "1 attempt(s)" in result.stderr


# --- what a newcomer and an attacker broke (issue 11, items 4 and 25) ---

LONG_NAME = "summarize_customer_feedback_for_the_quarterly_product_review"
BOX_DRAWING = set("│─┃━┏┓┗┛┡┩╇┳┻╭╮╰╯")


def _commands() -> dict[str, Any]:
    """The click commands behind the app, by name."""
    commands: dict[str, Any] = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    return commands


@pytest.mark.parametrize(
    "name", ["[/oops]", "[bold]loud[/bold]", "promptcast[server]", "[link=http://x.test]y[/link]"]
)
def test_error_messages_are_printed_literally(name: str) -> None:
    result = runner.invoke(app, ["show", name])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # no MarkupError
    [line] = result.stderr.splitlines()
    assert line.startswith("error: No task named") and repr(name) in line


def test_missing_server_extra_keeps_the_brackets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "promptcast.server", None)  # import fails as without fastapi
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 1
    assert "pip install 'promptcast[server]'" in result.stderr


def test_list_prints_markup_and_long_names_literally_when_piped(
    write_task: Callable[..., Path], tmp_path: Path
) -> None:
    description = "Uses [bold]markup[/bold], [/oops] and a description long enough to wrap " * 2
    write_task(LONG_NAME, f"---\ndescription: {json.dumps(description)}\n---\nhi\n")
    result = runner.invoke(app, ["list", "-p", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert not BOX_DRAWING & set(result.stdout) and "\x1b" not in result.stdout
    [row] = [line for line in result.stdout.splitlines() if line.startswith(LONG_NAME)]
    assert description.strip() in row and str(tmp_path / f"{LONG_NAME}.jinja") in row
    assert result.stdout.splitlines()[0].split() == [
        "task",
        "version",
        "output",
        "description",
        "file",
    ]


def _cli(args: list[str], *, terminal: bool, columns: int = 100) -> str:
    """Run the real command in a subprocess, its stdout a pipe or a pseudo-terminal."""
    env = {k: v for k, v in os.environ.items() if k not in _COLOUR_VARS}
    env.update(COLUMNS=str(columns), LINES="40", TERM="xterm-256color")
    command = [sys.executable, "-m", "promptcast.cli", *args]
    if not terminal:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout
    leader, follower = pty.openpty()
    proc = subprocess.Popen(command, env=env, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=120) == 0
    return b"".join(chunks).decode().replace("\r\n", "\n")


_COLOUR_VARS = {"FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "CLICOLOR_FORCE"}


@pytest.mark.parametrize(("terminal", "columns"), [(False, 80), (True, 200), (True, 80)])
def test_list_never_cuts_a_task_name(
    write_task: Callable[..., Path], tmp_path: Path, terminal: bool, columns: int
) -> None:
    write_task(LONG_NAME, "---\ndescription: A task whose name is longer than most.\n---\nhi\n")
    shown = _cli(["list", "-p", str(tmp_path)], terminal=terminal, columns=columns)
    assert "…" not in shown
    assert any(LONG_NAME in line for line in shown.splitlines())
    boxed = bool(BOX_DRAWING & set(shown))
    # a pipe and a terminal too narrow for a box get plain lines; a wide terminal a table
    assert boxed == (terminal and columns == 200)


def test_eval_table_keeps_model_names_whole_when_piped(
    fake_anthropic: object, fake_openai: object
) -> None:
    models = "anthropic/claude-sonnet-4-6,openai/gpt-4o-mini"
    result = runner.invoke(app, ["eval", "translate", "--models", models])
    assert not BOX_DRAWING & set(result.stdout) and "…" not in result.stdout
    lines = result.stdout.splitlines()
    assert lines[0] == "translate v1" and lines[1].split()[:2] == ["model", "passed"]
    assert [line.split()[0] for line in lines[2:]] == models.split(",")


@pytest.mark.parametrize("mode", [[], ["--json"], ["--markdown"]])
def test_eval_exits_1_when_a_case_errored(fake_anthropic: FakeAnthropic, mode: list[str]) -> None:
    pc.configure(max_attempts=1, max_retries=0)
    fake_anthropic.handler = lambda request: error_reply(400, "invalid_request_error", "no")
    result = runner.invoke(app, ["eval", "translate", *mode])
    assert result.exit_code == 1
    assert "translate" in result.stdout  # the report is still printed
    [line] = result.stderr.splitlines()
    assert line.startswith("error: 2 of 2 case(s) errored") and "HTTP 400" in line


def test_eval_schema_needs_no_task_name() -> None:
    result = runner.invoke(app, ["eval", "--schema"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["title"] == "EvalReport"
    assert runner.invoke(app, ["eval"]).exit_code == 2


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"promptcast {importlib.metadata.version('promptcast')}\n"


@pytest.mark.parametrize("command", ["", *sorted(_commands())])
def test_help_has_no_bool_metavars_and_literal_text(command: str) -> None:
    result = runner.invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0
    assert "<bool>" not in result.stdout and "\x1b" not in result.stdout
    assert "--help  " in result.stdout or "--help " in result.stdout


def test_prompts_is_spelled_the_same_on_every_command() -> None:
    spellings = {
        name: (tuple(sorted(param.opts)), param.metavar, param.help)
        for name, command in _commands().items()
        for param in command.params
        if param.name == "prompts"
    }
    assert {"list", "show", "render", "run", "record", "batch", "serve", "eval"} <= set(spellings)
    assert set(spellings.values()) == {
        (
            ("--prompts", "-p"),
            "DIR",
            "A folder of task files (repeatable). Default: built-ins plus PROMPTCAST_PROMPTS.",
        )
    }


TYPED_TASK = """---
inputs:
  n: int
  ratio: {type: float, default: 1.0}
  flag: {type: bool, default: false}
  counts: {type: "dict[str, int]", default: {}}
  label: {type: "Literal['true', 'billing']", default: billing}
  note: {type: "str | None", default: null}
---
{{ n }}|{{ ratio }}|{{ flag }}|{{ counts }}|{{ label }}|{{ note }}
"""


@pytest.mark.parametrize(
    ("pair", "field"),
    [
        ("n=true", "n"),  # a JSON bool is not an int, as over HTTP
        ('n="3"', "n"),  # nor is a JSON string
        ("n=3.0", "n"),
        ("n=three", "n"),
        ("ratio=true", "ratio"),
        ("flag=1", "flag"),
        ("flag=yes", "flag"),
        ('counts={"a": "1"}', "counts"),
        ("label=other", "label"),
    ],
)
def test_typed_inputs_are_checked_as_strictly_as_over_http(
    write_task: Callable[..., Path], tmp_path: Path, pair: str, field: str
) -> None:
    write_task("typed", TYPED_TASK)
    args = ["render", "typed", "-p", str(tmp_path), "-i", "n=1", "-i", pair]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: Task 'typed' input '{field}': ")


@pytest.mark.parametrize(
    ("pair", "shown"),
    [
        ("n=3", "3|1.0|False|{}|billing|None"),
        ("ratio=2", "1|2.0|False|{}|billing|None"),
        ("flag=true", "1|1.0|True|{}|billing|None"),
        ('counts={"a": 1}', "1|1.0|False|{'a': 1}|billing|None"),
        ("label=true", "1|1.0|False|{}|true|None"),  # not JSON true: the string is a valid label
        ("note=42", "1|1.0|False|{}|billing|42"),  # str | None: 42 as text
        ("note=null", "1|1.0|False|{}|billing|None"),
    ],
)
def test_typed_inputs_accept_json_or_a_plain_string(
    write_task: Callable[..., Path], tmp_path: Path, pair: str, shown: str
) -> None:
    write_task("typed", TYPED_TASK)
    args = ["render", "typed", "-p", str(tmp_path), "-i", "n=1", "-i", pair]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert shown in result.stdout


def test_input_json_is_checked_as_strictly_as_over_http(
    write_task: Callable[..., Path], tmp_path: Path
) -> None:
    write_task("typed", TYPED_TASK)
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"n": True}))
    result = runner.invoke(
        app, ["render", "typed", "-p", str(tmp_path), "--input-json", str(inputs)]
    )
    assert result.exit_code == 1
    assert "input 'n'" in result.stderr and "valid integer" in result.stderr


def test_provider_errors_on_stderr_are_scrubbed(
    write_task: Callable[..., Path], tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    key = "sk-" + "ant-api03-" + "Zq7Lm9" * 8
    token = "eyJhbGciOi" + "Jx9kP2" * 6
    fake_anthropic.handler = lambda request: error_reply(
        401, "authentication_error", f"invalid x-api-key {key}; sent: bearer {token}"
    )
    write_task("shout", "---\ninputs: {text: str}\noutput: {loud: str}\n---\n{{ text }}\n")
    result = runner.invoke(app, ["run", "shout", "-p", str(tmp_path), "-i", "text=hi"])
    assert result.exit_code == 1
    assert "HTTP 401" in result.stderr and "[REDACTED]" in result.stderr
    assert key[12:] not in result.stderr and token[8:] not in result.stderr


def test_render_prints_long_lines_as_they_are_sent() -> None:
    text = "word " * 40 + "[bold]end[/bold]"
    result = runner.invoke(app, ["render", "translate", "-i", f"text={text}"])
    assert result.exit_code == 0, result.output
    assert f"\n{text}\n" in result.stdout


@pytest.mark.parametrize("encoding", ["ascii", "latin-1", "cp1252"])
def test_a_stdout_that_cannot_encode_a_character_gets_an_escape_not_a_traceback(
    write_task: Callable[..., Path], tmp_path: Path, encoding: str
) -> None:
    """A Windows pipe (cp1252), a Latin-1 locale or PYTHONIOENCODING=ascii: the command still
    finishes and prints what it can, the rest as backslash escapes."""
    write_task(
        "greet", '---\ninputs: {name: str}\ndescription: "Grüße … 日本"\n---\nHi {{ name }}\n'
    )
    env = {**os.environ, "PYTHONIOENCODING": encoding}
    folder = str(tmp_path)
    for args, code in [
        (["render", "greet", "-i", "name=日本語", "-p", folder], 0),
        (["list", "-p", folder], 0),  # a rich table or aligned text
        (["check", "nowhere…"], 1),  # an error line on stderr
    ]:
        command = [sys.executable, "-m", "promptcast.cli", *args]
        done = subprocess.run(command, env=env, capture_output=True, timeout=120)
        assert b"Traceback" not in done.stderr, done.stderr.decode(encoding, "replace")
        assert done.returncode == code, args
        done.stdout.decode(encoding)  # all of it in the stream's encoding
        if args[0] == "render":
            assert b"Hi \\u65e5\\u672c\\u8a9e" in done.stdout


def test_json_output_through_an_ascii_stdout_is_the_same_json_value(
    write_task: Callable[..., Path], tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    """Escapes, surrogate pairs beyond U+FFFF included, keep `run`'s output valid JSON."""
    from promptcast.testing import message, text_block

    answer = "日本 🎉 café \U0001f600 end"
    fake_anthropic.reply(message([text_block(answer)]))
    write_task("echo", "---\ninputs: {q: str}\noutput: str\n---\n{{ q }}\n")
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "PROMPTCAST_CACHE": "off"}
    command = [sys.executable, "-m", "promptcast.cli", "run", "echo", "-p", str(tmp_path)]
    done = subprocess.run([*command, "-i", "q=hi"], env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode("ascii", "replace")
    assert json.loads(done.stdout.decode("ascii")) == answer
