"""`promptcast serve`: the bind-address guard, the wiring into uvicorn, and one real run in a child
process answering a task call and logging it as one JSON line."""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

import promptcast as pc
from promptcast.cli import app
from promptcast.server import runner
from promptcast.server.runner import MAX_HEADER_BYTES, AppFactory
from promptcast.testing import FakeAnthropic
from tests.conftest import ROOT, TEST_KEY
from tests.serving import AUTH, TOKEN

cli = CliRunner()
KEEP_ALIVE_S = 5  # the default of PROMPTCAST_KEEP_ALIVE_S


@pytest.fixture
def uvicorn_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record what `serve` would hand uvicorn instead of serving."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(runner, "run", lambda app, **kw: calls.append({"app": app, **kw}))
    monkeypatch.delenv("PROMPTCAST_API_TOKENS", raising=False)
    return calls


def test_serve_refuses_a_public_address_without_tokens(uvicorn_calls: list[dict[str, Any]]) -> None:
    result = cli.invoke(app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert "PROMPTCAST_API_TOKENS" in result.output and "--insecure" in result.output
    assert "Traceback" not in result.output
    assert uvicorn_calls == []


def test_serve_binds_a_public_address_with_tokens_or_insecure(
    uvicorn_calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli.invoke(app, ["serve", "--host", "0.0.0.0", "--insecure"]).exit_code == 0
    monkeypatch.setenv("PROMPTCAST_API_TOKENS", TOKEN)
    pc.reset_defaults()
    result = cli.invoke(app, ["serve", "--host", "0.0.0.0", "--port", "9001", "--workers", "2"])
    assert result.exit_code == 0, result.output
    first, second = uvicorn_calls
    assert first["host"] == "0.0.0.0" and first["port"] == 8000 and first["workers"] == 1
    assert isinstance(first["app"], FastAPI) and first["factory"] is False  # built once, here
    # several workers: a picklable factory that every spawned worker calls
    assert second["app"] == AppFactory(prompts=None) and second["factory"] is True
    assert pickle.loads(pickle.dumps(second["app"])) == second["app"]
    assert (second["host"], second["port"], second["workers"]) == ("0.0.0.0", 9001, 2)
    assert second["access_log"] is False  # the app logs each request itself, as JSON


def test_serve_bounds_connections_and_idle_time(
    uvicorn_calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli.invoke(app, ["serve"]).exit_code == 0
    monkeypatch.setenv("PROMPTCAST_KEEP_ALIVE_S", "2.5")
    monkeypatch.setenv("PROMPTCAST_MAX_CONNECTIONS", "64")
    pc.reset_defaults()
    assert cli.invoke(app, ["serve"]).exit_code == 0
    default, configured = uvicorn_calls
    assert (default["timeout_keep_alive"], default["limit_concurrency"]) == (KEEP_ALIVE_S, 512)
    assert (configured["timeout_keep_alive"], configured["limit_concurrency"]) == (2.5, 64)
    assert default["h11_max_incomplete_event_size"] == MAX_HEADER_BYTES
    assert default["proxy_headers"] is False and default["server_header"] is False


def test_serve_passes_prompts_to_workers_without_touching_the_environment(
    uvicorn_calls: list[dict[str, Any]], write_task: Callable[..., Path], tmp_path: Path
) -> None:
    write_task("shout", "---\ninputs: {text: str}\n---\nShout {{ text }}\n")
    before = dict(os.environ)
    result = cli.invoke(app, ["serve", "--prompts", str(tmp_path), "--workers", "3"])
    assert result.exit_code == 0, result.output
    assert dict(os.environ) == before
    (options,) = uvicorn_calls
    factory = options["app"]
    assert factory == AppFactory(prompts=(str(tmp_path),))
    built = factory()  # what each worker runs
    assert "/v1/tasks/shout" in built.openapi()["paths"]


def test_serve_has_help() -> None:
    result = cli.invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--prompts", "--host", "--port", "--workers", "--insecure"):
        assert option in result.output


def test_serve_loopback_needs_no_tokens(uvicorn_calls: list[dict[str, Any]]) -> None:
    assert cli.invoke(app, ["serve"]).exit_code == 0
    assert uvicorn_calls[0]["host"] == "127.0.0.1"


def test_serve_checks_task_files_first(
    uvicorn_calls: list[dict[str, Any]], write_task: Callable[..., Path], tmp_path: Path
) -> None:
    bad = write_task("bad", "---\ninputs: {text: str}\n---\n{{ missing }}\n")
    result = cli.invoke(app, ["serve", "--prompts", str(tmp_path)])
    assert result.exit_code == 1 and f"{bad}:4:" in result.output
    assert uvicorn_calls == []


def start_serve(
    args: list[str], env: dict[str, str]
) -> tuple[subprocess.Popen[str], str, list[Any]]:
    """`promptcast serve --port 0 ARGS` in a child process; returns it, its URL and the JSON lines
    it wrote until it was listening."""
    child = subprocess.Popen(
        [sys.executable, "-m", "promptcast.cli", "serve", "--port", "0", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stderr is not None
    lines: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = child.stderr.readline()
        if not line:
            break
        lines.append(json.loads(line))  # every line the server writes is JSON
        message = lines[-1].get("message", "")
        if "running on http://" in message:
            return child, message.split("running on ", 1)[1].split()[0], lines
    child.kill()
    raise AssertionError(f"promptcast serve did not start: {lines}")


def stop_serve(child: subprocess.Popen[str], lines: list[Any]) -> None:
    """SIGINT, then the rest of its JSON lines; it must exit 0."""
    child.send_signal(signal.SIGINT)
    _, rest = child.communicate(timeout=60)
    assert child.returncode == 0, rest
    lines += [json.loads(line) for line in rest.splitlines() if line.strip()]


def test_serve_runs_the_tasks_and_logs_json_lines(
    fake_anthropic: FakeAnthropic, write_task: Callable[..., Path], tmp_path: Path
) -> None:
    write_task(
        "shout",
        '---\ninputs: {text: str}\noutput: {loud: str}\n---\nShout "{{ text }}"\n',
    )
    env = {**os.environ, "PROMPTCAST_API_TOKENS": TOKEN, "PROMPTCAST_MAX_CONCURRENCY": "4"}
    child, base_url, lines = start_serve(["--prompts", str(tmp_path)], env)
    try:
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
        # an idle keep-alive connection is closed by the server after KEEP_ALIVE_S
        host, port = base_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            received = b""
            while not received.endswith(b'{"status":"ok"}'):
                received += sock.recv(65536)
            assert received.startswith(b"HTTP/1.1 200")
            idle_since = time.monotonic()
            assert sock.recv(65536) == b""  # closed by the server, not by us
            idle = time.monotonic() - idle_since
        assert KEEP_ALIVE_S - 1 <= idle <= KEEP_ALIVE_S + 5, idle
    finally:
        stop_serve(child, lines)
    (request,) = [line for line in lines if line.get("request_id") == "cli-1"]
    assert request["task"] == "shout" and request["status"] == 200 and request["attempts"] == 1
    text = json.dumps(lines)
    assert "quiet secret words" not in text and TEST_KEY not in text and TOKEN not in text
    assert "Traceback" not in text


def test_serve_with_two_workers_serves_the_given_prompts(
    fake_anthropic: FakeAnthropic, write_task: Callable[..., Path], tmp_path: Path
) -> None:
    """The --prompts folder reaches workers that uvicorn spawns (not forks), with no variable set
    in the environment for them."""
    write_task("shout", '---\ninputs: {text: str}\n---\nShout "{{ text }}"\n')
    env = {**os.environ, "PROMPTCAST_API_TOKENS": TOKEN}
    env.pop("PROMPTCAST_PROMPTS", None)
    child, base_url, lines = start_serve(["--prompts", str(tmp_path), "--workers", "2"], env)
    try:
        with httpx.Client(base_url=base_url, timeout=30) as http:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            for i in range(6):  # new connections, spread over both workers
                with httpx.Client(base_url=base_url, timeout=30) as fresh:
                    ran = fresh.post("/v1/tasks/shout", json={"text": f"hi {i}"}, headers=AUTH)
                assert ran.status_code == 200, ran.text
    finally:
        stop_serve(child, lines)
    started = {
        line["message"] for line in lines if "Started server process" in line.get("message", "")
    }
    assert len(started) == 2


@pytest.mark.parametrize("port", ["-1", "65536", "99999"])
def test_a_port_out_of_range_is_a_usage_error_before_anything_starts(
    port: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[object] = []
    import promptcast.server

    monkeypatch.setattr(promptcast.server, "serve", lambda **kwargs: started.append(kwargs))
    assert CliRunner().invoke(app, ["serve", "--port", "8001"]).exit_code == 0 and started
    started.clear()
    result = CliRunner().invoke(app, ["serve", "--port", port])
    assert result.exit_code == 2
    assert "--port" in result.stderr and not started
