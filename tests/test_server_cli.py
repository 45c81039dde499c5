"""`promptcast serve`: the bind-address guard, the wiring into uvicorn, and one real run in a child
process answering a task call and logging it as one JSON line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from promptcast.cli import app
from promptcast.testing import FakeAnthropic
from tests.conftest import ROOT, TEST_KEY
from tests.serving import AUTH, TOKEN

runner = CliRunner()


@pytest.fixture
def uvicorn_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record uvicorn.run instead of serving."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: calls.append({"target": target, **kw}))
    monkeypatch.delenv("PROMPTCAST_API_TOKENS", raising=False)
    return calls


def test_serve_refuses_a_public_address_without_tokens(uvicorn_calls: list[dict[str, Any]]) -> None:
    result = runner.invoke(app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert "PROMPTCAST_API_TOKENS" in result.output and "--insecure" in result.output
    assert "Traceback" not in result.output
    assert uvicorn_calls == []


def test_serve_binds_a_public_address_with_tokens_or_insecure(
    uvicorn_calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert runner.invoke(app, ["serve", "--host", "0.0.0.0", "--insecure"]).exit_code == 0
    monkeypatch.setenv("PROMPTCAST_API_TOKENS", TOKEN)
    result = runner.invoke(app, ["serve", "--host", "0.0.0.0", "--port", "9001", "--workers", "2"])
    assert result.exit_code == 0, result.output
    first, second = uvicorn_calls
    assert first["host"] == "0.0.0.0" and first["port"] == 8000 and first["workers"] == 1
    assert second["target"] == "promptcast.server:app_from_env" and second["factory"] is True
    assert (second["host"], second["port"], second["workers"]) == ("0.0.0.0", 9001, 2)
    assert second["access_log"] is False  # the app logs each request itself, as JSON


def test_serve_has_help() -> None:
    result = runner.invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--prompts", "--host", "--port", "--workers", "--insecure"):
        assert option in result.output


def test_serve_loopback_needs_no_tokens(uvicorn_calls: list[dict[str, Any]]) -> None:
    assert runner.invoke(app, ["serve"]).exit_code == 0
    assert uvicorn_calls[0]["host"] == "127.0.0.1"


def test_serve_checks_task_files_first(
    uvicorn_calls: list[dict[str, Any]], write_task: Callable[..., Path], tmp_path: Path
) -> None:
    bad = write_task("bad", "---\ninputs: {text: str}\n---\n{{ missing }}\n")
    result = runner.invoke(app, ["serve", "--prompts", str(tmp_path)])
    assert result.exit_code == 1 and f"{bad}:4:" in result.output
    assert uvicorn_calls == []


def test_serve_runs_the_tasks_and_logs_json_lines(
    fake_anthropic: FakeAnthropic, write_task: Callable[..., Path], tmp_path: Path
) -> None:
    write_task(
        "shout",
        '---\ninputs: {text: str}\noutput: {loud: str}\n---\nShout "{{ text }}"\n',
    )
    env = {**os.environ, "PROMPTCAST_API_TOKENS": TOKEN, "PROMPTCAST_MAX_CONCURRENCY": "4"}
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "promptcast.cli",
            "serve",
            "--port",
            "0",
            "--prompts",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stderr is not None
    lines: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 60
        base_url = None
        while base_url is None and time.monotonic() < deadline:
            line = child.stderr.readline()
            if not line:
                break
            lines.append(json.loads(line))  # every line the server writes is JSON
            message = lines[-1].get("message", "")
            if "running on http://" in message:
                base_url = message.split("running on ", 1)[1].split()[0]
        assert base_url, lines
        with httpx.Client(base_url=base_url, timeout=30) as http:
            answer = http.post(
                "/v1/tasks/shout",
                json={"text": "quiet secret words"},
                headers={**AUTH, "x-request-id": "cli-1"},
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["output"] == {"loud": "example"}
            assert http.get("/v1/tasks/extract_ticket", headers=AUTH).status_code == 200
            assert http.get("/v1/tasks", headers=AUTH).status_code == 200
            assert "server" not in answer.headers  # no server banner
    finally:
        child.send_signal(signal.SIGINT)
        _, rest = child.communicate(timeout=30)
    assert child.returncode == 0
    lines += [json.loads(line) for line in rest.splitlines() if line.strip()]
    (request,) = [line for line in lines if line.get("request_id") == "cli-1"]
    assert request["task"] == "shout" and request["status"] == 200 and request["attempts"] == 1
    text = json.dumps(lines)
    assert "quiet secret words" not in text and TEST_KEY not in text and TOKEN not in text
    assert "Traceback" not in text
