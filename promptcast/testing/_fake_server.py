"""The loopback HTTP server behind the fake provider APIs, with scripted fault injection.

Replies come from a queue, then a handler, then the provider's automatic answer. Each reply can
be delayed, carry any status and headers (e.g. `retry-after`), a malformed body, or drop the
connection without answering. The server counts requests in flight, so tests can check limits.

A request with `"stream": true` is answered as the provider streams: its reply body is cut into
the provider's server-sent events (`FakeServer.sse`), sent `stream_interval_s` apart (50 ms by
default); `streams` records when each event went out and whether the client hung up early.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeReply", "FakeServer", "StreamLog"]


@dataclass
class FakeReply:
    """One scripted HTTP reply.

    `body` is sent as JSON; `raw` replaces it with exact bytes (a malformed or truncated body);
    `drop=True` closes the connection without any response; `delay_s` waits first.
    `events` (server-sent event frames) makes it a streamed reply; with `drop=True` too, the
    connection is closed after the events, without ending the stream.
    """

    body: dict[str, Any] | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    raw: bytes | None = None
    drop: bool = False
    events: list[bytes] | None = None


@dataclass
class StreamLog:
    """One streamed reply as the fake sent it: when each event went out (`perf_counter` times),
    how many there were, and whether the client closed the connection before the end."""

    total: int
    sent_at: list[float] = field(default_factory=list)
    closed_by_client: bool = False
    done: threading.Event = field(default_factory=threading.Event, repr=False)


Handler = Callable[[dict[str, Any]], "FakeReply | dict[str, Any]"]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # bursts of concurrent clients must queue, not be refused

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (timeout, dropped test) is expected here; anything else is not."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, ConnectionError):
            super().handle_error(request, client_address)


class FakeServer:
    """Base of the fake provider APIs: an HTTP/1.1 server on 127.0.0.1 at a random port.

    `requests` holds every JSON request body, `request_headers` their headers (lower-case
    names), `peak_in_flight` the most requests handled at once.
    """

    __test__ = False
    paths: tuple[str, ...] = ()
    name = "fake"

    def __init__(self, handler: Handler | None = None) -> None:
        self.handler = handler
        self.replies: list[FakeReply | dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.stream_interval_s = 0.05
        self.stream_chunk_chars = 8
        self.streams: list[StreamLog] = []

    # provider-specific parts

    def auto(self, request: dict[str, Any]) -> dict[str, Any]:
        """The answer when nothing is scripted."""
        raise NotImplementedError

    def error(self, status: int, kind: str, text: str) -> FakeReply:
        """An error reply in the provider's format."""
        return FakeReply({"error": {"type": kind, "message": text}}, status)

    def sse(self, request: dict[str, Any], body: dict[str, Any]) -> list[bytes]:
        """The reply `body` as the provider streams it: server-sent event frames."""
        raise NotImplementedError

    def get(self, path: str) -> FakeReply:
        """Answer a GET; none by default."""
        return self.error(404, "not_found_error", f"Not found: {path}")

    # the server

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started; use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def reply(self, *items: FakeReply | dict[str, Any]) -> None:
        """Queue replies, answered in order before the handler is consulted."""
        with self._lock:
            self.replies.extend(items)

    def _next(self, body: dict[str, Any], headers: dict[str, str]) -> FakeReply:
        with self._lock:
            self.requests.append(body)
            self.request_headers.append(headers)
            queued = self.replies.pop(0) if self.replies else None
        if queued is not None:
            item = queued
        else:
            item = self.handler(body) if self.handler else self.auto(body)
        reply = item if isinstance(item, FakeReply) else FakeReply(item)
        if (
            body.get("stream") is True
            and reply.events is None
            and reply.status == 200
            and reply.body is not None
            and reply.raw is None
        ):
            reply = replace(reply, events=self.sse(body, reply.body))
        return reply

    def _answer(self, path: str, raw: bytes, headers: dict[str, str]) -> FakeReply:
        if path.split("?")[0] not in self.paths:
            return self.error(404, "not_found_error", f"Not found: {path}")
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return self.error(400, "invalid_request_error", "the request body is not a JSON object")
        return self._next(body, headers)

    def start(self) -> FakeServer:
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with fake._lock:
                    fake.in_flight += 1
                    fake.peak_in_flight = max(fake.peak_in_flight, fake.in_flight)
                try:
                    reply = fake._answer(self.path, raw, headers)
                    if reply.delay_s:
                        time.sleep(reply.delay_s)
                finally:
                    with fake._lock:
                        fake.in_flight -= 1
                if reply.events is not None:
                    self._stream(reply, reply.events)
                    return
                if reply.drop:
                    self.close_connection = True
                    return
                self._send(reply)

            def _stream(self, reply: FakeReply, events: list[bytes]) -> None:
                log = StreamLog(len(events))
                with fake._lock:
                    fake.streams.append(log)
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "text/event-stream; charset=utf-8")
                    self.send_header("cache-control", "no-cache")
                    self.send_header("transfer-encoding", "chunked")
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    for number, event in enumerate(events):
                        if number:
                            time.sleep(fake.stream_interval_s)
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                        self.wfile.flush()
                        log.sent_at.append(time.perf_counter())
                    if reply.drop:
                        self.close_connection = True
                    else:
                        self.wfile.write(b"0\r\n\r\n")
                        self.wfile.flush()
                except OSError:  # the client hung up (a closed stream): what tests look for
                    log.closed_by_client = True
                    self.close_connection = True
                finally:
                    log.done.set()

            def do_GET(self) -> None:
                self._send(fake.get(self.path))

            def _send(self, reply: FakeReply) -> None:
                payload = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def version_string(self) -> str:
                return f"promptcast-{fake.name}"

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _QuietServer(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
