"""The server's outer ASGI layer: request ids, the Host check, bearer tokens, the body size limit,
the last-resort 500, client disconnects (499) and one JSON log line per request.

It is plain ASGI rather than a Starlette `BaseHTTPMiddleware` so it adds little per request, and
it runs before routing, so a misdirected, unauthenticated or oversized request never reaches body
parsing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import time
import traceback
import uuid
from collections.abc import Iterable
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from promptcast.server.context import INFO_KEY, REQUEST_ID_KEY
from promptcast.server.hosts import HostPolicy
from promptcast.server.metrics import Metrics
from promptcast.server.problems import PROBLEM_MEDIA_TYPE, problem, problem_bytes, scrub

__all__ = ["CLIENT_CLOSED", "Gate", "logger"]

logger = logging.getLogger("promptcast.server")

CLIENT_CLOSED = 499
"""The status logged and counted for a request whose client went away before its answer (nginx's
"client closed request"); nothing is sent."""

SEND_TIMEOUT_S = 30.0
"""How long one write to a client may wait for it to read: a client that stops reading a stream
is dropped after this, so it cannot hold a concurrency slot or a stopping server for ever."""

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=@-]{1,128}$")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})
_Refusal = tuple[int, dict[str, Any], dict[str, str]]


class Gate:
    """Wraps the app: checks Host, token and body size first, always answers, logs one line."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: Iterable[str],
        hosts: HostPolicy,
        max_body_bytes: int,
        metrics: Metrics,
        open_paths: frozenset[str],
        open_prefix: str,
        probe_paths: frozenset[str],
    ) -> None:
        self.app = app
        self.tokens = [t.encode() for t in tokens]
        self.hosts = hosts
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.open_paths = open_paths
        self.open_prefix = open_prefix
        self.probe_paths = probe_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = _headers(scope)
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        if given:  # a key sent as a request id (by mistake) must not reach the log
            given = scrub(given[:200])
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        info: dict[str, Any] = {}
        scope[INFO_KEY] = info
        scope[REQUEST_ID_KEY] = request_id
        path: str = scope.get("path", "")
        method = scope.get("method")
        status = 0
        logged = False
        gone = False  # the client disconnected

        def log() -> None:
            nonlocal logged
            logged = True
            final = status or (CLIENT_CLOSED if gone else 500)
            self.metrics.http.labels(str(final)).inc()
            if logger.isEnabledFor(logging.INFO):
                line = {
                    "event": "request",
                    "request_id": request_id,
                    "method": method if method in _METHODS else scrub(str(method)[:20]),
                    "path": path if final < 300 else scrub(path[:1000]),  # 2xx: a route's own
                    "status": final,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                    **info,
                }
                # fields as `extra=`: server.logs renders them as JSON; another logging
                # config gets a plain message and the fields as record attributes
                logger.info("request %s %s %s", line["method"], line["path"], final, extra=line)

        async def watched_receive() -> Message:
            nonlocal gone
            message = await receive()
            if message["type"] == "http.disconnect":
                gone = True
            return message

        async def tagged_send(message: Message) -> None:
            nonlocal status, gone
            if gone:  # nobody is listening: the answer is dropped, the request counted as 499
                return
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {
                    **message,
                    "headers": [
                        *message.get("headers", ()),
                        (b"x-request-id", request_id.encode()),
                    ],
                }
            elif not message.get("more_body", False) and not logged:
                log()  # before the last byte goes out, so the line exists once the client has it
            try:
                async with asyncio.timeout(SEND_TIMEOUT_S):
                    await send(message)
            except TimeoutError:
                gone = True  # logged and counted as a client that went away (499)
                raise ClientDisconnect() from None

        receive_from: Receive = watched_receive
        try:
            refused = self._check(scope, headers, request_id)
            if refused is not None:
                await _answer(tagged_send, *refused)
                if refused[0] == 413:
                    await _drain(receive_from, limit=8 * self.max_body_bytes)
                return
            if b"content-length" not in headers and scope.get("method") not in ("GET", "HEAD"):
                body = await _read_body(receive_from, self.max_body_bytes)
                if body is None:
                    await _answer(tagged_send, *self._too_large(path, request_id))
                    await _drain(receive_from, limit=8 * self.max_body_bytes)
                    return
                receive_from = _replay(body, receive_from)
            await self.app(scope, receive_from, tagged_send)
        except Exception as exc:  # the last resort: one line, no stack trace, never the input
            if gone or isinstance(exc, ClientDisconnect):
                gone = True
                info["error"] = "client-disconnected"
            else:
                info["error"] = type(exc).__name__
                info["error_detail"] = scrub(_one_line(exc))
                if status == 0:
                    body500 = problem(
                        500,
                        "internal-error",
                        "the server failed to answer; the request id is in its log",
                        instance=path,
                        request_id=request_id,
                        task=info.get("task"),  # set once a task's route took the request
                    )
                    await _answer(tagged_send, 500, body500, {})
        except asyncio.CancelledError:
            # the server is stopping and its graceful timeout is over: a caller still waiting
            # gets a retryable 503 rather than uvicorn's plain-text 500 (a stream already begun
            # is cut off; its client sees the stream end without `final`)
            info["error"] = "server-shutting-down"
            if status == 0 and not gone:
                body503 = problem(
                    503,
                    "server-shutting-down",
                    "the server stopped before this call finished; retry it",
                    instance=path,
                    request_id=request_id,
                    task=info.get("task"),
                    retryable=True,
                )
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    async with asyncio.timeout(1):  # a client that does not read cannot hold it
                        await _answer(tagged_send, 503, body503, {"retry-after": "1"})
            raise
        finally:
            if gone and not status:
                info.setdefault("error", "client-disconnected")
            if not logged:
                log()

    def _check(self, scope: Scope, headers: dict[bytes, bytes], request_id: str) -> _Refusal | None:
        path: str = scope.get("path", "")
        if path not in self.probe_paths and self.hosts.applies(
            scope.get("server"), bool(self.tokens)
        ):
            # two Host headers (a proxy may route by the first) are one value no host matches
            sent = [value for name, value in scope.get("headers", ()) if name.lower() == b"host"]
            shown = b", ".join(sent).decode("latin-1") if sent else None
            if not self.hosts.allows(shown):
                body = problem(
                    421,
                    "host-not-allowed",
                    "this server answers only to loopback names (localhost, 127.0.0.1, [::1]) "
                    "and the hosts in PROMPTCAST_ALLOWED_HOSTS; "
                    + (
                        f"the Host header was {shown[:100]!r}"
                        if shown is not None
                        else "no Host header was sent"
                    ),
                    instance=path,
                    request_id=request_id,
                )
                return 421, body, {"connection": "close"}
        if (
            self.tokens
            and path not in self.open_paths
            and not path.startswith(self.open_prefix)
            and not self._authorized(scope, headers)
        ):
            # worded so that the scrubber, which redacts whatever follows "Authorization: ",
            # leaves the instruction readable
            body = problem(
                401,
                "unauthorized",
                "send one Authorization header with the value 'Bearer <token>', the token one "
                "of PROMPTCAST_API_TOKENS",
                instance=path,
                request_id=request_id,
            )
            return 401, body, {"www-authenticate": 'Bearer realm="promptcast"'}
        length = headers.get(b"content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                size = -1
            if size < 0:
                body = problem(
                    400,
                    "bad-request",
                    "invalid Content-Length",
                    instance=path,
                    request_id=request_id,
                )
                return 400, body, {"connection": "close"}
            if size > self.max_body_bytes:
                return self._too_large(path, request_id)
        return None

    def _too_large(self, path: str, request_id: str) -> _Refusal:
        body = problem(
            413,
            "body-too-large",
            f"the request body is larger than this server's limit of {self.max_body_bytes} bytes",
            instance=path,
            request_id=request_id,
            limit_bytes=self.max_body_bytes,
        )
        return 413, body, {"connection": "close"}

    def _authorized(self, scope: Scope, headers: dict[bytes, bytes]) -> bool:
        sent = sum(name.lower() == b"authorization" for name, _ in scope.get("headers", ()))
        if sent > 1:  # a proxy may have checked another one than the last, kept here
            return False
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        token = token.strip()
        matched = False
        for known in self.tokens:  # compare with every token: timing says nothing about which
            matched |= hmac.compare_digest(token, known)
        return matched


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {name.lower(): value for name, value in scope.get("headers", ())}


async def _answer(send: Send, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
    payload = problem_bytes(body)
    raw = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(payload)).encode()),
        *((k.encode(), v.encode()) for k, v in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


async def _read_body(receive: Receive, limit: int) -> list[Message] | None:
    """A body sent without Content-Length (chunked), read up to `limit`; `None` when larger."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages
        size += len(message.get("body", b""))
        if size > limit:
            return None
        if not message.get("more_body", False):
            return messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


async def _drain(receive: Receive, *, limit: int) -> None:
    """Read and drop the rest of a refused body (up to `limit`), so the client can read the 413
    instead of meeting a reset connection while it is still sending."""
    seen = 0
    while seen <= limit:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        seen += len(message.get("body", b""))


def _one_line(exc: BaseException) -> str:
    """`Type: message at file:line` of the innermost frame; never a whole stack trace."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}{where}"
