"""The pytest plugin end to end: a sample project records, replays, drifts and loses a cassette.

Each step runs pytest in a subprocess inside a temp project with its own prompts/ and cassettes/;
the loopback fake Anthropic server stands in for the live API while recording.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from promptcast.testing import FakeAnthropic, FakeReply
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

import pytest

import promptcast as pc

tasks = pc.load_tasks("prompts")


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


def pytest_run(
    project: Path, fake: FakeAnthropic, *args: str, key: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "PROMPTCAST_"))}
    env["ANTHROPIC_BASE_URL"] = fake.base_url
    if key:
        env["ANTHROPIC_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "--promptcast-examples", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


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
    assert "--record-mode=rewrite" in drifted.stdout

    template.write_text(GREET)
    cassette.unlink()
    missing = pytest_run(project, fake, "tests")
    assert missing.returncode == 1
    assert "No recording for task 'greet'" in missing.stdout
    assert "test_greet.yaml" in missing.stdout
    assert "pytest 'tests/test_greet.py::test_greet' --record-mode=once" in missing.stdout
    assert len(fake.requests) == sent
