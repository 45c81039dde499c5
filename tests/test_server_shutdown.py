"""`promptcast serve` stopped by SIGTERM or SIGINT with requests in flight: a real child process
on 127.0.0.1 calling a loopback fake provider."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from promptcast.cli import app as cli_app
from promptcast.server import _protocol, create_app, gate, runner
from promptcast.server._protocol import PROTOCOL, ReadDeadlineH11
from promptcast.testing import FakeAnthropic, FakeReply, message, tool_use_block
from tests.serving import metric, running
from tests.test_server_cli import start_serve

GRACE_S = 2.0
BODY = {"message": "order #7 is late"}


def _stop(child: subprocess.Popen[str], sig: signal.Signals) -> tuple[float, list[Any]]:
    """Send `sig`; the seconds the server took to exit (it must exit 0) and its last log lines."""
    started = time.monotonic()
    child.send_signal(sig)
    try:
        _, rest = child.communicate(timeout=GRACE_S + 30)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        raise AssertionError("the server did not exit after its graceful timeout") from None
    took = time.monotonic() - started
    assert child.returncode == 0, rest
    return took, [json.loads(line) for line in rest.splitlines() if line.strip()]


def _env(**settings: str) -> dict[str, str]:
    return {**os.environ, **settings}


@contextlib.contextmanager
def _stream_left_unread(base_url: str) -> Iterator[socket.socket]:
    """A stream request on a raw socket whose answer is never read: the server's writes to it
    block once the socket's buffers are full."""
    host, port = base_url.removeprefix("http://").split(":")
    payload = json.dumps(BODY).encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/tasks/extract_ticket/stream HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(payload), payload)
        )
        yield sock


def _reached_the_provider(fake: FakeAnthropic) -> None:
    """Wait until a call is in flight at the provider."""
    deadline = time.monotonic() + 30
    while fake.in_flight < 1:
        assert time.monotonic() < deadline, "the call did not reach the provider"
        time.sleep(0.02)


def _call_in_flight(
    base_url: str, fake: FakeAnthropic
) -> tuple[threading.Thread, list[httpx.Response]]:
    """A call in its own thread, once it is in flight at the provider; its answer lands in the
    list when it comes."""
    answers: list[httpx.Response] = []
    caller = threading.Thread(
        target=lambda: answers.append(
            httpx.post(f"{base_url}/v1/tasks/extract_ticket", json=BODY, timeout=60)
        )
    )
    caller.start()
    _reached_the_provider(fake)
    return caller, answers


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stream_whose_client_stopped_reading_does_not_keep_a_stopped_server_running(
    fake_anthropic: FakeAnthropic, sig: signal.Signals
) -> None:
    """The client never reads a large stream, so the server's writes block: it still exits once
    its graceful timeout is over (it waited for that stream for ever), without a stack trace."""
    fake_anthropic.stream_interval_s = 0.01
    fake_anthropic.stream_chunk_chars = 100_000
    answer = {"issue": "x" * 4_000_000, "urgency": "low", "product": None}
    fake_anthropic.handler = lambda body: message(
        [tool_use_block("Ticket", answer)], model=body["model"]
    )
    child, base_url, _ = start_serve(["--graceful-timeout", str(GRACE_S)], _env())
    with _stream_left_unread(base_url):
        deadline = time.monotonic() + 30
        while not (fake_anthropic.streams and fake_anthropic.streams[0].done.is_set()):
            assert time.monotonic() < deadline, "the provider's stream did not end"
            time.sleep(0.05)
        time.sleep(0.5)  # the server's writes to this socket are now blocked
        took, lines = _stop(child, sig)
    assert took < GRACE_S + 10, took
    assert "Traceback" not in json.dumps(lines)


def test_calls_still_running_when_the_graceful_timeout_ends_get_a_retryable_503(
    fake_anthropic: FakeAnthropic,
) -> None:
    """One call waits on a slow provider, one waits in line behind it (max_concurrency 1): both
    get a problem document saying to retry (uvicorn answered a plain-text 500), and the call in
    line never reaches the provider."""
    fake_anthropic.handler = lambda body: FakeReply(fake_anthropic.auto(body), delay_s=30)
    env = _env(PROMPTCAST_MAX_CONCURRENCY="1")
    child, base_url, _ = start_serve(["--graceful-timeout", str(GRACE_S)], env)
    answers: dict[str, httpx.Response] = {}

    def call(name: str) -> None:
        answers[name] = httpx.post(f"{base_url}/v1/tasks/extract_ticket", json=BODY, timeout=60)

    callers = [threading.Thread(target=call, args=(name,)) for name in ("running", "waiting")]
    for caller in callers:
        caller.start()
        time.sleep(0.3)
    _reached_the_provider(fake_anthropic)
    took, lines = _stop(child, signal.SIGTERM)
    for caller in callers:
        caller.join(timeout=30)
    assert took < GRACE_S + 10, took
    assert set(answers) == {"running", "waiting"}
    for answer in answers.values():
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["retry-after"] == "1"
        body = answer.json()
        assert body["type"].endswith(":server-shutting-down") and body["retryable"] is True
        assert body["task"] == "extract_ticket"
    assert len(fake_anthropic.requests) == 1
    assert "Traceback" not in json.dumps(lines)
    logged = [line for line in lines if line.get("event") == "request"]
    assert [line["status"] for line in logged] == [503, 503]


def test_calls_that_finish_within_the_graceful_timeout_are_answered(
    fake_anthropic: FakeAnthropic,
) -> None:
    """SIGTERM lets a call in flight finish and answer 200 before the server exits."""
    fake_anthropic.handler = lambda body: FakeReply(fake_anthropic.auto(body), delay_s=1)
    child, base_url, _ = start_serve(["--graceful-timeout", "20"], _env())
    caller, answers = _call_in_flight(base_url, fake_anthropic)
    took, _ = _stop(child, signal.SIGTERM)
    caller.join(timeout=30)
    assert answers and answers[0].status_code == 200, answers
    assert took < 15, took


@pytest.mark.parametrize("host", ["nonexistent.invalid", "no such host", ""])
def test_a_host_that_does_not_resolve_is_refused_naming_it_before_anything_starts(
    host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn logged '[Errno -2] Name or service not known' after the warm-up, naming no host."""
    started: list[object] = []
    monkeypatch.setattr(runner, "run", lambda app, **options: started.append(options))
    result = CliRunner().invoke(cli_app, ["serve", "--host", host, "--insecure"])
    assert result.exit_code == 1, result.output
    assert f"--host {host!r}" in result.output and "does not resolve" in result.output
    assert started == []
    for name in ("127.0.0.1", "localhost", "::1", "0.0.0.0"):  # still served
        assert CliRunner().invoke(cli_app, ["serve", "--host", name, "--insecure"]).exit_code == 0
    assert len(started) == 4


def test_a_client_that_stops_reading_a_stream_gives_its_concurrency_slot_back(
    fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With max_concurrency 1, a client that never reads a large stream held the only slot for
    as long as it kept its connection open: every other call waited in line for ever. A write
    that waits SEND_TIMEOUT_S for the client drops it (499) and frees the slot."""
    monkeypatch.setattr(gate, "SEND_TIMEOUT_S", 1.0)
    fake_anthropic.stream_interval_s = 0.01
    fake_anthropic.stream_chunk_chars = 100_000
    big = {"issue": "x" * 4_000_000, "urgency": "low", "product": None}
    small = {"issue": "ok", "urgency": "low", "product": None}
    fake_anthropic.reply(message([tool_use_block("Ticket", big)]))
    fake_anthropic.handler = lambda body: message([tool_use_block("Ticket", small)])
    app = create_app(max_concurrency=1)
    with running(app) as base_url:
        with _stream_left_unread(base_url):
            deadline = time.monotonic() + 30
            while not fake_anthropic.streams:
                assert time.monotonic() < deadline, "the stream did not start"
                time.sleep(0.05)
            answer = httpx.post(f"{base_url}/v1/tasks/extract_ticket", json=BODY, timeout=20)
            assert answer.status_code == 200, answer.text
            assert answer.json()["output"]["issue"] == "ok"
            metrics = httpx.get(f"{base_url}/metrics", timeout=10).text
        assert metric(metrics, "promptcast_calls_in_flight") == 0


HEAD = b"POST /v1/tasks/extract_ticket HTTP/1.1\r\nHost: localhost\r\n"
SLOW_REQUESTS = {
    "nothing": b"",
    "half a head": HEAD,
    "a head and half a body": HEAD
    + b'Content-Type: application/json\r\nContent-Length: 40\r\n\r\n{"message": ',
}


@pytest.mark.parametrize("protocol", sorted({PROTOCOL, ReadDeadlineH11}, key=str))
@pytest.mark.parametrize("sent", list(SLOW_REQUESTS), ids=list(SLOW_REQUESTS))
def test_connections_that_do_not_send_a_whole_request_are_closed(
    sent: str, protocol: type[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idle or slow connections (sending nothing, or a request a byte at a time) stayed open for
    ever; `max_connections` of them made uvicorn answer everything, /healthz too, with 503."""
    monkeypatch.setattr(_protocol, "REQUEST_READ_TIMEOUT_S", 1.5)
    app = create_app(max_concurrency=1)
    options = {"http": protocol, "limit_concurrency": 4, "timeout_keep_alive": 1}
    with running(app, **options) as base_url:
        host, port = base_url.removeprefix("http://").split(":")
        socks = [socket.create_connection((host, int(port)), timeout=10) for _ in range(4)]
        try:
            for sock in socks:
                sock.sendall(SLOW_REQUESTS[sent])
            started = time.monotonic()
            for sock in socks:  # one more byte each while they can: a trickle
                while time.monotonic() - started < 5:
                    try:
                        sock.sendall(b"x" if sent != "nothing" else b"")
                        if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                            break
                    except BlockingIOError:
                        time.sleep(0.2)
                    except OSError:
                        break
            assert time.monotonic() - started < 5, "a slow connection was not closed"
            answer = httpx.get(f"{base_url}/healthz", timeout=10)
            assert answer.status_code == 200, answer.text
        finally:
            for sock in socks:
                sock.close()


def test_serve_runs_uvicorn_with_the_read_deadline_and_the_graceful_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(runner, "run", lambda app, **options: calls.append(options))
    assert CliRunner().invoke(cli_app, ["serve", "--graceful-timeout", "7"]).exit_code == 0
    assert CliRunner().invoke(cli_app, ["serve"]).exit_code == 0
    assert [call["http"] for call in calls] == [PROTOCOL, PROTOCOL]
    assert [call["timeout_graceful_shutdown"] for call in calls] == [7.0, runner.GRACEFUL_TIMEOUT_S]


def test_a_second_signal_forces_the_exit_without_a_traceback_in_the_log(
    fake_anthropic: FakeAnthropic,
) -> None:
    """SIGTERM, then SIGINT while a call runs: uvicorn quits at once (exit 0), the caller gets
    the retryable 503, and the log holds no traceback (Starlette sent its lifespan's cancellation
    as a traceback in the message, which uvicorn logged as is)."""
    fake_anthropic.handler = lambda body: FakeReply(fake_anthropic.auto(body), delay_s=30)
    child, base_url, _ = start_serve([], _env())
    caller, answers = _call_in_flight(base_url, fake_anthropic)
    child.send_signal(signal.SIGTERM)
    time.sleep(1)
    took, lines = _stop(child, signal.SIGINT)
    caller.join(timeout=30)
    assert took < 10, took
    assert answers and answers[0].status_code == 503, answers
    assert "Traceback" not in json.dumps(lines)
    assert all(len(line["message"].splitlines()) <= 1 for line in lines)
