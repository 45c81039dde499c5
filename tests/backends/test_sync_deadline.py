"""A sync call's timeout_s bounds the whole reply, not each socket read.

The SDKs' timeout is per read: a server (or proxy) that sends its status line, its headers, its
body or its stream's events a byte at a time, each byte well within that timeout, held
`task.run(...)` and `task.stream(...)` for as long as it kept sending. These tests start a loopback
server that does exactly that for each sync route (the native Anthropic backend, litellm's
`completion` for `openai/` and `anthropic/` models, streams on both) and check that the call ends
with the async path's typed timeout error at about its timeout_s.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import promptcast as pc
from promptcast.errors import BackendError

KEY = "sk-sync-deadline-0123456789abcdef"
TIMEOUT_S = 1.0
MARGIN_S = 1.5  # the imports and the first connection are warmed up before anything is timed
DRIP_S = 0.05  # one byte every 50 ms: far inside any read timeout, never a complete reply
DRIP_FOR_S = 12.0  # how long the server keeps dripping: what the old code waited

Reply = Callable[[BaseHTTPRequestHandler, int], None]  # (handler, request number from 0)


class _Server:
    """A loopback HTTP/1.1 server whose every request is answered by `reply(handler, n)`."""

    def __init__(self, reply: Reply) -> None:
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                number, outer.requests = outer.requests, outer.requests + 1
                reply(self, number)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _drip(handler: BaseHTTPRequestHandler, head: bytes, byte: bytes, seconds: float) -> None:
    """Send `head` at once, then `byte` every DRIP_S for `seconds`; stop when the client left."""
    try:
        handler.wfile.write(head)
        handler.wfile.flush()
        ends = time.monotonic() + seconds
        while time.monotonic() < ends:
            handler.wfile.write(byte)
            handler.wfile.flush()
            time.sleep(DRIP_S)
    except OSError:  # the client gave up: what the fix makes it do
        pass
    handler.close_connection = True


def _headers(content_type: str, length: int | None = None) -> bytes:
    sized = f"content-length: {length}\r\n" if length is not None else ""
    return f"HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\n{sized}".encode()


# What the server trickles, per phase of the reply. Each never completes within DRIP_FOR_S.
TRICKLES: dict[str, Callable[[bool], tuple[bytes, bytes]]] = {
    # the status line itself, a byte at a time
    "status line": lambda stream: (b"", b"H"),
    # a header line that never ends
    "headers": lambda stream: (
        _headers("text/event-stream" if stream else "application/json") + b"x-slow: ",
        b"a",
    ),
    # complete headers, then a body of whitespace that never reaches its content-length
    "body": lambda stream: (
        _headers("text/event-stream" if stream else "application/json", 100_000) + b"\r\n",
        b" " if not stream else b":",
    ),
}


def _sse_keepalive(handler: BaseHTTPRequestHandler, number: int) -> None:
    """A stream whose events are only keep-alive comments: each one a complete SSE line, none an
    event the SDK hands on, so no chunk ever reaches the caller."""
    _drip(handler, _headers("text/event-stream") + b"\r\n", b": ping\n\n", DRIP_FOR_S)


def _trickling(phase: str, stream: bool) -> Reply:
    head, byte = TRICKLES[phase](stream)
    if phase == "status line":
        return lambda handler, n: _drip(handler, b"", byte, DRIP_FOR_S)
    return lambda handler, n: _drip(handler, head, byte, DRIP_FOR_S)


# The sync routes: (model, how its endpoint is configured at `base`)
ROUTES: dict[str, tuple[str, Callable[[str], dict[str, Any]]]] = {
    "anthropic": (
        "anthropic/claude-sonnet-4-6",
        lambda base: {"providers": {"anthropic": {"api_key": KEY, "base_url": base}}},
    ),
    "litellm-openai": (
        "openai/gpt-4o-mini",
        lambda base: {"providers": {"openai": {"api_key": KEY, "base_url": base + "/v1"}}},
    ),
    "litellm-anthropic": (
        "litellm/anthropic/claude-sonnet-4-6",
        lambda base: {
            "models": {"litellm/anthropic/claude-sonnet-4-6": {"api_key": KEY, "base_url": base}}
        },
    ),
}


def _ok_body(route: str) -> bytes:
    """A complete, valid non-streamed reply of `route`'s API saying `hello`."""
    if route == "litellm-openai":
        body: dict[str, Any] = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "hello"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        }
    else:
        body = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-6",
            "content": [{"type": "text", "text": "hello"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 5, "output_tokens": 1},
        }
    return json.dumps(body).encode()


def _answer(route: str) -> Reply:
    def answer(handler: BaseHTTPRequestHandler, number: int) -> None:
        body = _ok_body(route)
        handler.send_response(200)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return answer


@pytest.fixture
def serve() -> Iterator[Callable[[Reply], _Server]]:
    servers: list[_Server] = []

    def start(reply: Reply) -> _Server:
        servers.append(_Server(reply))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _task(write_task: Callable[..., Path], route: str, base: str, **settings: Any) -> pc.Task[Any]:
    model, endpoint = ROUTES[route]
    pc.configure(**endpoint(base), **settings)
    text = f"---\ninputs: {{text: str}}\nmodel: {model}\n---\n{{{{ text }}}}\n"
    return pc.Task.from_file(write_task("deadline", text))


def _warm(route: str) -> None:
    """Import what a first call imports, so that only the call is timed."""
    import anthropic  # noqa: F401

    from promptcast.backends.litellm import _litellm

    if route.startswith("litellm"):
        _litellm()


def _assert_timed_out(caught: pytest.ExceptionInfo[pc.BudgetExceededError], took: float) -> None:
    assert took < TIMEOUT_S + MARGIN_S, f"took {took:.1f}s with timeout_s={TIMEOUT_S}"
    assert caught.value.limit == "timeout_s"
    assert "no complete reply within 1 s" in str(caught.value)
    cause = caught.value.__cause__
    assert isinstance(cause, BackendError) and cause.timed_out and cause.retryable


# keep-alive comments are a stream's; a plain reply's endless body is the "body" case
CASES = [("run", phase) for phase in TRICKLES] + [
    ("stream", phase) for phase in [*TRICKLES, "keep-alive events"]
]


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize(("call", "phase"), CASES, ids=[f"{c}-{p}" for c, p in CASES])
def test_a_reply_that_trickles_in_ends_a_sync_call_at_its_timeout(
    write_task: Callable[..., Path],
    serve: Callable[[Reply], _Server],
    call: str,
    route: str,
    phase: str,
) -> None:
    """Every phase of the reply trickling in, on every sync route, run and stream: the call
    ends with BudgetExceededError (limit timeout_s, caused by the async path's timed-out
    BackendError) at about timeout_s; it used to run for as long as the server kept sending."""
    stream = call == "stream"
    reply = _sse_keepalive if phase == "keep-alive events" else _trickling(phase, stream)
    server = serve(reply)
    task = _task(write_task, route, server.base, timeout_s=TIMEOUT_S, max_retries=2)
    _warm(route)
    started = time.perf_counter()
    with pytest.raises(pc.BudgetExceededError) as caught:
        if stream:
            task.stream(text="hi").run  # noqa: B018 - reads the stream to its end
        else:
            task.run(text="hi")
    _assert_timed_out(caught, time.perf_counter() - started)
    assert server.requests == 1  # no time was left for a retry
