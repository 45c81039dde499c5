"""What promptcast writes to disk under two writers at once and a kill at any moment: cassettes,
the response cache, batch outputs and the CLI's output files."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import promptcast as pc
from promptcast.cache import SQLiteCache, close_caches
from promptcast.cli import app
from promptcast.testing import FakeAnthropic, FakeReply, ScriptedBackend, message, text_block
from promptcast.testing._fake_anthropic import _auto
from promptcast.testing.cassettes import CassetteInUseError, recording_lock
from tests.testing.test_plugin import GREET, clean_env, hint, run_hint

# --- cassettes: two pytest processes (pytest-xdist workers) recording one shared cassette ------

SHARED_TEST = """\
from pathlib import Path

import pytest

import promptcast as pc

tasks = pc.load_tasks(Path(__file__).parent.parent / "prompts")


@pytest.mark.promptcast(path=str(Path(__file__).parent.parent / "cassettes" / "shared.yaml"))
def test_{who}():
    assert tasks.greet(name="{who}").greeting
"""


def recorded_names(cassette: Path) -> list[str]:
    """The `name` input of each request recorded in a cassette of the greet task."""
    data = yaml.safe_load(cassette.read_text())
    prompts = [i["request"]["parsed_body"]["messages"][0]["content"] for i in data["interactions"]]
    return [prompt.split("\n")[1] for prompt in prompts]


def shared_project(root: Path, who: list[str]) -> Path:
    (root / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]\naddopts = '-p no:cacheprovider'\n"
    )
    (root / "prompts").mkdir()
    (root / "prompts" / "greet.jinja").write_text(GREET)
    (root / "tests").mkdir()
    for name in who:
        (root / "tests" / f"test_{name}.py").write_text(SHARED_TEST.format(who=name))
    return root / "cassettes" / "shared.yaml"


def start_pytest(
    root: Path, fake: FakeAnthropic, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    env = clean_env(
        ANTHROPIC_BASE_URL=fake.base_url, ANTHROPIC_API_KEY="sk-ant-test-0123456789", **(env or {})
    )
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", *args],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


class Overlapping:
    """A provider whose first request waits (up to `window` s) for a second one to arrive: two
    recordings in flight at once, as two xdist workers calling at the same moment."""

    def __init__(self, window: float = 4.0) -> None:
        self.window = window
        self.count = 0
        self.second = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, request: dict[str, Any]) -> FakeReply:
        with self.lock:
            self.count += 1
            first = self.count == 1
        if first:
            self.second.wait(self.window)
        else:
            self.second.set()
        return FakeReply(_auto(request))


@pytest.mark.parametrize("mode", ["new_episodes", "once"])
def test_two_processes_recording_one_cassette_keep_both_recordings(
    tmp_path: Path, mode: str
) -> None:
    """Each worker copied the old cassette, added its request and replaced the file: one of the two
    recordings was lost. Now the second waits for the first and starts from its file, as a run one
    test at a time does (in `once` mode a cassette that exists takes no new request: the second
    test's miss names the shared cassette, not a temporary copy)."""
    cassette = shared_project(tmp_path, ["a", "b"])
    with FakeAnthropic(handler=Overlapping()) as fake:
        runs = [
            start_pytest(tmp_path, fake, f"tests/test_{w}.py", f"--record-mode={mode}")
            for w in "ab"
        ]
        outputs = [run.communicate(timeout=180)[0] for run in runs]
    text = cassette.read_text()
    if mode == "new_episodes":
        assert [run.returncode for run in runs] == [0, 0], outputs
        assert sorted(recorded_names(cassette)) == ["a", "b"], text
    else:
        assert sorted(run.returncode for run in runs) == [0, 1], outputs
        failed = outputs[[run.returncode for run in runs].index(1)]
        assert f"in {cassette}" in failed, failed
        assert ".tmp" not in failed.split("No recording", 1)[1].split("\n", 1)[0], failed
        assert len(recorded_names(cassette)) == 1, text
    assert sorted(p.name for p in cassette.parent.iterdir()) == ["shared.yaml"]


XDIST_WORKER = """\
import os


def pytest_configure(config):
    # what pytest-xdist gives each worker: the run's id, the same in all of them
    config.workerinput = {"testrunuid": os.environ["RUN_ID"], "workerid": os.environ["WORKER"]}
"""


def greetings(cassette: Path) -> list[str]:
    """The greeting each recorded reply of a greet cassette holds."""
    data = yaml.safe_load(cassette.read_text())
    return [
        json.loads(i["response"]["parsed_body"]["content"][0]["text"])["greeting"]
        for i in data["interactions"]
    ]


@pytest.mark.parametrize("how", ["one process", "two xdist workers"])
def test_rewriting_a_shared_cassette_keeps_every_test_s_new_recording(
    how: str, tmp_path: Path
) -> None:
    """--record-mode=rewrite started each test's cassette from nothing, so in a cassette that
    tests share only the last test's requests were left (in one process, and across the
    workers of one xdist run): it is started afresh once per run."""
    cassette = shared_project(tmp_path, ["a", "b"])
    with FakeAnthropic() as fake:
        first = start_pytest(tmp_path, fake, "tests", "--record-mode=new_episodes")
        output = first.communicate(timeout=120)[0]
        assert first.returncode == 0, output
    assert sorted(recorded_names(cassette)) == ["a", "b"]

    def v2(request: dict[str, Any]) -> FakeReply:
        return FakeReply(message([text_block(json.dumps({"greeting": "v2"}))]))

    with FakeAnthropic(handler=v2) as fake:
        if how == "one process":
            runs = [start_pytest(tmp_path, fake, "tests", "--record-mode=rewrite")]
        else:
            (tmp_path / "tests" / "conftest.py").write_text(XDIST_WORKER)
            runs = [
                start_pytest(
                    tmp_path,
                    fake,
                    f"tests/test_{w}.py",
                    "--record-mode=rewrite",
                    env={"RUN_ID": "run-1", "WORKER": f"gw{n}"},
                )
                for n, w in enumerate("ab")
            ]
        outputs = [run.communicate(timeout=180)[0] for run in runs]
    assert [run.returncode for run in runs] == [0] * len(runs), outputs
    assert sorted(recorded_names(cassette)) == ["a", "b"]
    assert greetings(cassette) == ["v2", "v2"]
    # the second test's copy came from mkstemp: the cassette was left owner-only (0600)
    assert stat.S_IMODE(cassette.stat().st_mode) == 0o666 & ~current_umask()


def test_the_record_hint_for_a_shared_cassette_keeps_the_other_tests_recordings(
    tmp_path: Path,
) -> None:
    """A miss in a cassette shared with path= said to run the test with --record-mode=rewrite,
    which started the cassette afresh for that one test: the other tests' recordings were gone
    and their next replay failed (and their hints did the same to this one)."""
    cassette = shared_project(tmp_path, ["a", "b"])
    with FakeAnthropic() as fake:
        first = start_pytest(tmp_path, fake, "tests", "--record-mode=new_episodes")
        output = first.communicate(timeout=120)[0]
        assert first.returncode == 0, output
        test_b = tmp_path / "tests" / "test_b.py"
        test_b.write_text(test_b.read_text().replace('name="b"', 'name="bee"'))
        replay = start_pytest(tmp_path, fake, "tests")
        output = replay.communicate(timeout=120)[0]
        assert replay.returncode == 1, output
        command = hint(output)
        assert command.endswith("tests/test_b.py::test_b --record-mode=new_episodes"), command
        recorded = run_hint(command, tmp_path, fake)
        assert recorded.returncode == 0, recorded.stdout + recorded.stderr
        again = start_pytest(tmp_path, fake, "tests")
        output = again.communicate(timeout=120)[0]
    assert again.returncode == 0, output
    assert "a" in recorded_names(cassette) and "bee" in recorded_names(cassette)


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("where", ["a folder", "under a file", "in a missing root folder"])
def test_record_into_a_path_that_cannot_be_a_cassette_is_refused_before_the_call(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live call was made (and paid for), then the write failed with a bare
    IsADirectoryError / FileExistsError traceback and the recording was lost."""
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "greet.jinja").write_text(GREET)
    (tmp_path / "folder.yaml").mkdir()
    (tmp_path / "plain").write_text("x")
    out = {
        "a folder": tmp_path / "folder.yaml",
        "under a file": tmp_path / "plain" / "c.yaml",
        "in a missing root folder": Path("/proc/no-such-folder/c.yaml"),
    }[where]
    with FakeAnthropic() as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789")
        result = CliRunner().invoke(
            app,
            ["record", "greet", "-i", "name=Ada", "-o", str(out), "-p", str(tmp_path / "prompts")],
        )
        assert fake.requests == []
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"error: cassette {out} cannot be written" in result.stderr


def test_a_recording_lock_held_too_long_is_a_typed_error_naming_the_cassette(
    tmp_path: Path,
) -> None:
    cassette = tmp_path / "c.yaml"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom pathlib import Path\n"
            "from promptcast.testing.cassettes import recording_lock\n"
            f"with recording_lock(Path({str(cassette)!r})):\n"
            "    print('held', flush=True)\n    time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(CassetteInUseError, match=r"c\.yaml.*another process"),
            recording_lock(cassette, timeout=0.3),
        ):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate()
    # a killed holder leaves no stale lock
    with recording_lock(cassette, timeout=5):
        pass


def test_a_kill_mid_record_keeps_the_old_cassette_whole(tmp_path: Path) -> None:
    cassette = shared_project(tmp_path, ["a", "b"])
    with FakeAnthropic() as fake:
        first = start_pytest(tmp_path, fake, "tests/test_a.py", "--record-mode=once")
        output = first.communicate(timeout=120)[0]
        assert first.returncode == 0, output
    before = cassette.read_bytes()
    arrived = threading.Event()

    def hang(request: dict[str, Any]) -> FakeReply:
        arrived.set()
        time.sleep(30)
        return FakeReply(_auto(request))

    with FakeAnthropic(handler=hang) as fake:
        run = start_pytest(tmp_path, fake, "tests/test_b.py", "--record-mode=new_episodes")
        try:
            assert arrived.wait(60)
        finally:
            run.send_signal(signal.SIGKILL)
            run.communicate()
    assert cassette.read_bytes() == before
    # the killed run's temporary copy goes with the next recording of that cassette
    with FakeAnthropic() as fake:
        again = start_pytest(tmp_path, fake, "tests/test_b.py", "--record-mode=new_episodes")
        output = again.communicate(timeout=120)[0]
    assert again.returncode == 0, output
    assert sorted(recorded_names(cassette)) == ["a", "b"]
    assert [p.name for p in cassette.parent.iterdir()] == ["shared.yaml"]


# --- CLI output files: atomic, permissions as open() gives them, a failing write names the file --

LABELS = """\
---
inputs: {text: str}
output: {label: str}
model: test/labels
---
Label {{ text }}
"""

PROMPTY = """\
---
name: billing
model:
  api: chat
  configuration: {type: openai, name: gpt-4o}
inputs:
  question: {type: string}
---
system:
You answer questions about billing.

user:
{{question}}
"""


def _typegen(root: Path) -> tuple[Path, list[str]]:
    return root / "out" / "ai_tasks.py", ["typegen", str(root / "prompts"), "-o"]


def _convert(root: Path) -> tuple[Path, list[str]]:
    source = root / "billing.prompty"
    source.write_text(PROMPTY)
    return root / "out" / "billing.jinja", ["convert", str(source), "--force", "-o"]


def _chart(root: Path) -> tuple[Path, list[str]]:
    cases = root / "cases.jsonl"
    cases.write_text(json.dumps({"inputs": {"text": "a"}, "expect": {"label": "ok"}}) + "\n")
    args = ["eval", "labels", "--cases", str(cases), "--json", "-p", str(root / "prompts")]
    return root / "out" / "chart.html", [*args, "--chart"]


WRITERS = {"typegen -o": _typegen, "convert -o": _convert, "eval --chart": _chart}


def run_writer(root: Path, writer: str) -> tuple[Path, Any]:
    """Run one CLI command that writes a file; the file and the CliRunner result."""
    (root / "prompts").mkdir(exist_ok=True)
    (root / "prompts" / "labels.jinja").write_text(LABELS)
    (root / "out").mkdir(exist_ok=True)
    target, args = WRITERS[writer](root)
    # convert -o takes the folder
    where = target.parent if writer == "convert -o" else target
    with pc.override(backends={"test/labels": ScriptedBackend(lambda request: {"label": "ok"})}):
        result = CliRunner().invoke(app, [*args, str(where)])
    return target, result


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("writer", list(WRITERS))
def test_cli_output_files_get_the_permissions_open_gives(
    writer: str, tmp_path: Path, umask_022: None
) -> None:
    """write_atomic's temporary file was mkstemp's 0600, so a chart, a generated module or a
    converted task file was readable by its owner only (a web server or a CI user could not
    read it), and replacing an existing 0755 or 0640 file changed its mode to 0600."""
    target, result = run_writer(tmp_path, writer)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    target.write_text("old\n")
    target.chmod(0o640)
    again, result = run_writer(tmp_path, writer)
    assert result.exit_code == 0, result.output
    assert again.read_text() != "old\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


@pytest.mark.parametrize("writer", list(WRITERS))
@pytest.mark.parametrize(
    ("code", "fails_in"),
    [(errno.ENOSPC, "fsync"), (errno.EDQUOT, "write"), (errno.EIO, "replace")],
)
def test_a_cli_output_that_cannot_be_written_names_the_file_and_keeps_the_old_one(
    writer: str, code: int, fails_in: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk said 'error: [Errno 28] No space left on device' without the file, and
    eval --chart wrote with a bare write_text: a kill or a full disk left a torn chart."""
    target, result = run_writer(tmp_path, writer)
    assert result.exit_code == 0, result.output
    target.write_text("old\n")  # typegen writes only a module that changed
    before = target.read_bytes()

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise OSError(code, os.strerror(code))

    if fails_in == "write":
        real_fdopen = os.fdopen

        def fdopen(*args: Any, **kwargs: Any) -> Any:
            handle = real_fdopen(*args, **kwargs)
            handle.write = failing
            return handle

        monkeypatch.setattr(os, "fdopen", fdopen)
    else:
        monkeypatch.setattr(os, fails_in, failing)
    _, result = run_writer(tmp_path, writer)
    monkeypatch.undo()
    assert result.exit_code == 1
    assert f"{os.strerror(code)}: '{target}'" in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir()] == [target.name]


# --- the response cache (SQLite): a full disk, a locked file, a kill mid-write ----------------

FREE = "---\ninputs: {text: str}\noutput: str\nmodel: test/echo\n---\n{{ text }}"


def _echo(request: Any) -> str:
    return "answer " + str(request.prompt.messages[0]["content"])


@pytest.fixture
def echo_task(tmp_path: Path) -> Iterator[pc.Task[Any]]:
    (tmp_path / "echo.jinja").write_text(FREE)
    with pc.override(backends={"test/echo": ScriptedBackend(_echo)}):
        yield pc.Task.from_file(tmp_path / "echo.jinja")
    close_caches()


WRITE_FAILURES = [
    OSError(errno.ENOSPC, "No space left on device"),
    sqlite3.OperationalError("database or disk is full"),
    sqlite3.OperationalError("attempt to write a readonly database"),
]


@pytest.mark.parametrize("failure", WRITE_FAILURES, ids=lambda e: str(e)[:24])
@pytest.mark.parametrize("asynchronous", [False, True], ids=["run", "arun"])
def test_a_cache_that_cannot_write_answers_every_call_and_says_so_once(
    failure: Exception,
    asynchronous: bool,
    echo_task: pc.Task[Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A full disk or a read-only file fails every write while reads work: each call logged
    'failed to write' and then, after the next read, 'works again' (two warnings a call, the
    second untrue)."""

    def full(self: SQLiteCache, *args: Any) -> None:
        raise failure

    monkeypatch.setattr(SQLiteCache, "set", full)
    outputs = []
    with (
        caplog.at_level(logging.WARNING, "promptcast.cache"),
        pc.override(cache=f"sqlite:///{tmp_path / 'cache.db'}"),
    ):
        for n in range(6):
            if asynchronous:
                run = asyncio.run(echo_task.arun(text=f"q{n}"))
            else:
                run = echo_task.run(text=f"q{n}")
            outputs.append((run.output, run.cached))
    assert outputs == [(f"answer q{n}", False) for n in range(6)]
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1 and "failed to write" in messages[0], messages
    assert str(failure) in messages[0]


def test_threads_against_a_locked_cache_file_each_wait_one_timeout_at_most(
    echo_task: pc.Task[Any], tmp_path: Path
) -> None:
    """The threads of a process share one SQLite connection under a lock: while another process
    held the file, the 16th thread waited for the 15 before it (4 s with a 0.25 s timeout)."""
    path = tmp_path / "cache.db"
    url = f"sqlite:///{path}"
    with pc.override(cache=url):
        echo_task.run(text="warm")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None);"
            "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    took: list[float] = []
    answers: list[str] = []

    def call(n: int) -> None:
        started = time.perf_counter()
        with pc.override(cache=url, backends={"test/echo": ScriptedBackend(_echo)}):
            answers.append(echo_task.run(text=f"t{n}").output)
        took.append(time.perf_counter() - started)

    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        threads = [threading.Thread(target=call, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        holder.kill()
        holder.communicate()
    assert sorted(answers) == sorted(f"answer t{n}" for n in range(16))
    assert max(took) < 2.0, took  # a read and a write, each bounded by about 2 x 0.25 s


CACHE_WRITER = """
import sys
from promptcast.cache import SQLiteCache
cache = SQLiteCache(sys.argv[1], timeout_s=5)
print("ready", flush=True)
n = 0
while True:
    cache.set(f"k{n % 50}", f"{n % 50}:" + "v" * (n % 5000), ttl_s=3600)
    n += 1
"""


def test_a_kill_mid_write_leaves_the_cache_file_whole(tmp_path: Path) -> None:
    """SIGKILL two writers of one key space at random moments, again and again: the file stays
    a valid database and every entry is one whole value, never a mix or a torn one."""
    path = tmp_path / "cache.db"
    rng = random.Random(7)
    for _ in range(5):
        writers = [
            subprocess.Popen(
                [sys.executable, "-c", CACHE_WRITER, str(path)], stdout=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ]
        for writer in writers:
            assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.4))
        for writer in writers:
            writer.send_signal(signal.SIGKILL)
            writer.communicate()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    cache = SQLiteCache(path)
    values = {key: cache.get(f"k{key}") for key in range(50)}
    cache.close()
    assert any(values.values())
    for key, value in values.items():
        if value is not None:
            head, _, tail = value.partition(":")
            assert head == str(key) and set(tail) <= {"v"}, value[:40]


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_cli_output_that_is_a_symlink_stays_a_link(writer: str, tmp_path: Path) -> None:
    """The atomic write replaced the link itself with a file; the file it points to is meant."""
    target, result = run_writer(tmp_path, writer)
    assert result.exit_code == 0, result.output
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    real = elsewhere / target.name
    real.write_text("old\n")
    target.unlink()
    target.symlink_to(real)
    _, result = run_writer(tmp_path, writer)
    assert result.exit_code == 0, result.output
    assert target.is_symlink() and target.resolve() == real
    assert real.read_text() != "old\n" and not list(target.parent.glob("*.tmp"))


@pytest.mark.parametrize("writer", ["typegen -o", "eval --chart"])
def test_a_cli_output_that_is_a_pipe_is_written_to_not_replaced(
    writer: str, tmp_path: Path
) -> None:
    """-o /dev/stdout, a named pipe, a device: there is no file to replace, so the text goes
    into it (as root, -o /dev/full replaced the device node with a regular file)."""
    target, result = run_writer(tmp_path, writer)
    assert result.exit_code == 0, result.output
    expected = target.read_text()
    target.unlink()
    os.mkfifo(target)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(target.read_bytes()), daemon=True)
    reader.start()
    _, result = run_writer(tmp_path, writer)
    reader.join(30)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(target.stat().st_mode)
    assert received == [expected.encode()]


@pytest.mark.parametrize("check", [False, True], ids=["write", "check"])
@pytest.mark.parametrize("old", [b"\xff\xfe junk", b"# \xe9t\xe9\n", b"\x00\x01binary"])
def test_typegen_over_a_module_that_is_not_utf8_is_stale_not_a_traceback(
    old: bytes, check: bool, tmp_path: Path
) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "labels.jinja").write_text(LABELS)
    module = tmp_path / "ai_tasks.py"
    module.write_bytes(old)
    args = ["typegen", str(tmp_path / "prompts"), "-o", str(module)]
    result = CliRunner().invoke(app, [*args, "--check"] if check else args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    if check:
        assert result.exit_code == 1 and "is stale" in result.stderr
        assert module.read_bytes() == old
    else:
        assert result.exit_code == 0, result.output
        assert module.read_text().startswith("# Generated by `promptcast typegen`")


def test_a_cache_file_held_locked_before_first_use_costs_one_timeout_per_operation(
    tmp_path: Path,
) -> None:
    """Opening the file waited the timeout to switch to WAL, then a second whole timeout on the
    schema (PRAGMA synchronous, CREATE TABLE): each read and write took twice cache_timeout_s."""
    path = tmp_path / "cache.db"
    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE other (a)")
    setup.close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None);"
            "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    cache = SQLiteCache(path, timeout_s=0.5)
    took = []
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        for operation in (lambda: cache.get("k"), lambda: cache.set("k", "v")):
            started = time.perf_counter()
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                operation()
            took.append(time.perf_counter() - started)
    finally:
        holder.kill()
        holder.communicate()
    assert max(took) < 0.9, took
    cache.set("k", "v")  # once the file is free, it works (and is switched to WAL)
    assert cache.get("k") == "v"
    cache.close()
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    check.close()


def test_recording_a_cassette_this_process_is_recording_fails_at_once(tmp_path: Path) -> None:
    """A marked test that calls recording() on its own cassette waited for itself (the lock's
    whole 10 minutes) before failing."""
    cassette = tmp_path / "c.yaml"
    with recording_lock(cassette):
        started = time.perf_counter()
        with (
            pytest.raises(CassetteInUseError, match="already being recorded in this process"),
            recording_lock(cassette, timeout=30),
        ):
            pass
        assert time.perf_counter() - started < 5
    with recording_lock(cassette, timeout=1):  # released: usable again
        pass
