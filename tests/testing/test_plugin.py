"""The pytest plugin end to end: a sample project records, replays, drifts and loses a cassette.

Each step runs pytest in a subprocess inside a temp project with its own prompts/ and cassettes/;
the loopback fake servers stand in for the live APIs while recording. Every "record it with" hint
is run as printed, by a shell, to show that it works.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from promptcast.testing import FakeAnthropic, FakeOpenAI, FakeReply, error_reply
from promptcast.testing._fake_anthropic import _auto

SECRET_KEY = "sk-ant-test-SECRET-0123456789"
COOKIE = "session=SECRETCOOKIE42"

GREET = """\
---
description: Greet someone.
inputs: {name: str}
output: {greeting: str}
examples:
  - inputs: {name: Ada}
    expect: {greeting: example}
---
{% role "system" %}You greet people warmly.{% endrole %}
Greet {{ name | fence("name") }}.
"""

TESTS = """\
import socket
from pathlib import Path

import pytest

import promptcast as pc

tasks = pc.load_tasks(Path(__file__).parent.parent / "prompts")


@pytest.mark.promptcast
def test_greet():
    assert tasks.greet(name="Grace").greeting == "example"


@pytest.mark.promptcast
def test_no_internet_during_replay():
    with socket.socket() as sock, pytest.raises(Exception, match="(?i)network"):
        sock.connect(("203.0.113.7", 443))
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]\naddopts = '-p no:cacheprovider'\n"
    )
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "greet.jinja").write_text(GREET)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_greet.py").write_text(TESTS)
    return tmp_path


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    def with_cookie(request: dict[str, Any]) -> FakeReply:
        return FakeReply(_auto(request), headers={"set-cookie": COOKIE})

    with FakeAnthropic(handler=with_cookie) as server:
        yield server


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without provider settings; `pytest` on PATH is this venv's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ANTHROPIC_", "OPENAI_", "PROMPTCAST_"))
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **extra}


def pytest_run(
    project: Path,
    fake: FakeAnthropic | None,
    *args: str,
    key: str | None = None,
    cwd: Path | None = None,
    examples: bool = True,
) -> subprocess.CompletedProcess[str]:
    env = clean_env()
    if fake is not None:
        env["ANTHROPIC_BASE_URL"] = fake.base_url
    if key:
        env["ANTHROPIC_API_KEY"] = key
    flags = ["--promptcast-examples"] if examples else []
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-v", *flags, *args],
        cwd=cwd or project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def hint(output: str) -> str:
    """The command a NoRecordingError or PromptDriftError tells the user to run."""
    found = sorted(hints(output))
    assert len(found) == 1, output
    return found[0]


def hints(output: str) -> set[str]:
    """Every distinct record command in a pytest run's output."""
    found = set()
    for line in output.splitlines():
        for marker in ("key set: ", "Re-record: "):
            if marker in line:
                found.add(line.split(marker, 1)[1].strip())
    return found


def run_hint(
    command: str, cwd: Path, fake: FakeAnthropic, key: str = SECRET_KEY
) -> subprocess.CompletedProcess[str]:
    """Run a hint as a user would: in a shell, from where pytest was run, with the key set."""
    env = clean_env(ANTHROPIC_BASE_URL=fake.base_url, ANTHROPIC_API_KEY=key)
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def record_all(project: Path, fake: FakeAnthropic) -> tuple[Path, Path]:
    recorded = pytest_run(
        project,
        fake,
        "--record-mode=once",
        "-k",
        "not internet",
        "tests",
        "prompts",
        key=SECRET_KEY,
    )
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    cassette = project / "cassettes" / "test_greet" / "test_greet.yaml"
    example = project / "cassettes" / "examples" / "greet" / "example-0.yaml"
    return cassette, example


def test_record_replay_drift_and_missing_recording(project: Path, fake: FakeAnthropic) -> None:
    recorded = pytest_run(
        project,
        fake,
        "--record-mode=once",
        "-k",
        "not internet",
        "tests",
        "prompts",
        key=SECRET_KEY,
    )
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    assert "greet[example-0] PASSED" in recorded.stdout
    cassette = project / "cassettes" / "test_greet" / "test_greet.yaml"
    example = project / "cassettes" / "examples" / "greet" / "example-0.yaml"
    for path in (cassette, example):
        text = path.read_text()
        assert SECRET_KEY not in text and "SECRETCOOKIE" not in text, path
        assert "REDACTED" in text
    sent = len(fake.requests)
    assert sent == 2

    replayed = pytest_run(project, fake, "tests", "prompts")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "3 passed" in replayed.stdout
    assert len(fake.requests) == sent, "a replay reached the server"

    template = project / "prompts" / "greet.jinja"
    template.write_text(GREET.replace("warmly", "briefly"))
    drifted = pytest_run(project, fake, "tests")
    assert drifted.returncode == 1
    assert "Prompt drift in task 'greet': template hash " in drifted.stdout
    assert "-You greet people warmly." in drifted.stdout
    assert "+You greet people briefly." in drifted.stdout
    assert hint(drifted.stdout) == "pytest tests/test_greet.py::test_greet --record-mode=rewrite"

    template.write_text(GREET)
    cassette.unlink()
    missing = pytest_run(project, fake, "tests")
    assert missing.returncode == 1
    assert "No recording for task 'greet'" in missing.stdout
    assert "test_greet.yaml" in missing.stdout
    assert hint(missing.stdout) == "pytest tests/test_greet.py::test_greet --record-mode=once"
    assert len(fake.requests) == sent


@pytest.mark.parametrize("kind", ["drift", "missing"])
def test_each_hint_is_a_command_that_records_what_is_missing(
    project: Path, fake: FakeAnthropic, kind: str
) -> None:
    cassette, example = record_all(project, fake)
    if kind == "drift":
        (project / "prompts" / "greet.jinja").write_text(GREET.replace("warmly", "briefly"))
        mode = "rewrite"
    else:
        cassette.unlink()
        example.unlink()
        mode = "once"
    failed = pytest_run(project, fake, "-k", "not internet", "tests", "prompts")
    assert failed.returncode == 1
    assert hints(failed.stdout) == {
        f"pytest tests/test_greet.py::test_greet --record-mode={mode}",
        f"pytest 'prompts/greet.jinja::greet[example-0]' --promptcast-examples --record-mode={mode}",
    }
    sent = len(fake.requests)
    for command in sorted(hints(failed.stdout)):
        fixed = run_hint(command, project, fake)
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        assert "1 passed" in fixed.stdout
    assert len(fake.requests) == sent + 2
    replayed = pytest_run(project, None, "-k", "not internet", "tests", "prompts")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr


def test_a_hint_from_a_subfolder_changes_to_the_rootdir_first(
    project: Path, fake: FakeAnthropic
) -> None:
    failed = pytest_run(project, fake, "test_greet.py", "-k", "not internet", cwd=project / "tests")
    assert failed.returncode == 1
    command = hint(failed.stdout)
    assert command == (
        f"cd {shlex.quote(str(project))} && "
        "pytest tests/test_greet.py::test_greet --record-mode=once"
    )
    fixed = run_hint(command, project / "tests", fake)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert (project / "cassettes" / "test_greet" / "test_greet.yaml").is_file()


@pytest.mark.parametrize("failure", ["no key", "provider 400"])
def test_re_recording_that_fails_keeps_the_old_cassettes(
    project: Path, fake: FakeAnthropic, failure: str
) -> None:
    cassette, example = record_all(project, fake)
    before = {path: path.read_bytes() for path in (cassette, example)}
    key = None
    if failure == "no key":
        key = None
    else:
        key = SECRET_KEY
        for _ in range(2):
            fake.reply(error_reply(400, "invalid_request_error", "max_tokens: too large"))
    run = pytest_run(
        project, fake, "--record-mode=rewrite", "-k", "not internet", "tests", "prompts", key=key
    )
    assert run.returncode == 1
    assert "2 failed" in run.stdout, run.stdout
    assert {path: path.read_bytes() for path in before} == before
    leftovers = [p for p in (project / "cassettes").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    replayed = pytest_run(project, None, "tests", "prompts", "-k", "not internet")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr


ELSEWHERE = ["", "https://llm-gateway.internal:8443/anthropic"]


@pytest.mark.parametrize("base_url", ELSEWHERE)
def test_replay_needs_no_key_and_ignores_the_base_url(
    project: Path, fake: FakeAnthropic, base_url: str
) -> None:
    record_all(project, fake)
    env = clean_env(**({"ANTHROPIC_BASE_URL": base_url} if base_url else {}))
    replayed = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "--promptcast-examples", "tests", "prompts"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "3 passed" in replayed.stdout


SHOUT_OPENAI = """\
---
model: openai/gpt-4o-mini
inputs: {text: str}
output: {loud: str}
examples:
  - inputs: {text: hi}
---
Shout {{ text }}.
"""


def test_an_openai_project_replays_without_its_key(project: Path) -> None:
    (project / "prompts" / "greet.jinja").unlink()
    (project / "prompts" / "shout.jinja").write_text(SHOUT_OPENAI)
    with FakeOpenAI() as fake:
        env = clean_env(OPENAI_API_KEY="sk-test-openai-0123456789", OPENAI_BASE_URL=fake.base_url)
        recorded = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "--promptcast-examples",
                "prompts",
                "--record-mode=once",
            ],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert recorded.returncode == 0, recorded.stdout + recorded.stderr
        sent = len(fake.requests)
        replayed = subprocess.run(
            [sys.executable, "-m", "pytest", "--promptcast-examples", "prompts"],
            cwd=project,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        assert len(fake.requests) == sent


def test_promptcast_record_writes_where_the_plugin_replays_from(
    project: Path, fake: FakeAnthropic
) -> None:
    (project / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]\naddopts = '-p no:cacheprovider'\n"
        "promptcast_cassette_dir = 'recordings'\n"
    )
    env = clean_env(ANTHROPIC_BASE_URL=fake.base_url, ANTHROPIC_API_KEY=SECRET_KEY)
    recorded = subprocess.run(
        ["promptcast", "record", "greet", "--example", "0", "-p", "../prompts"],
        cwd=project / "tests",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    assert (project / "recordings" / "examples" / "greet" / "example-0.yaml").is_file()
    replayed = pytest_run(project, None, "prompts")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "greet[example-0] PASSED" in replayed.stdout
