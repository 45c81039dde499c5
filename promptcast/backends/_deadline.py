"""A whole-reply deadline for sync HTTP calls, which httpx and httpcore do not have.

A `timeout` given to httpx (and so to the anthropic and openai SDKs, and to litellm) bounds each
socket operation: httpcore takes the read timeout once per phase and hands the full value to every
`recv`. A server or proxy that sends its reply a byte at a time, each byte within that timeout,
holds a sync call for as long as it keeps sending (encode/httpx#1450 is the open request for a
total timeout). The async path bounds the whole await with `asyncio.timeout`; a thread blocked in
`recv` has no such thing, so the bound has to sit where the reads are made.

`within(seconds)` puts a deadline in a context variable: the sync drivers in `promptcast.task`
and `promptcast.stream` enter it around a backend's request and around each read of a stream
(never while the caller's code runs), the async ones too, so that a sync client a backend runs in
a worker thread (`asyncio.to_thread` copies the context) stops reading when the call has ended.
`install()` wraps the streams that httpcore's `SyncBackend` (and the `httpcore2` fork the SDKs
use) connects, with the public `NetworkStream` interface: every connect, read and write waits at
most the time left before the deadline, and once it has passed raises the library's own timeout
error, which the SDKs map as they map any timeout. Outside `within()` the wrapper only passes
calls through (one context-variable read per socket operation). This covers every client the
calls use, ours and the ones litellm or a caller builds, since they all connect through
`SyncBackend`. When a library's `SyncBackend` is not as expected it is left alone: calls then keep
the per-read timeout, as before. The drivers install it at their first call (not at import: the
libraries are not imported before a backend needs them), so a connection a caller opened before
that keeps the per-read timeout.
"""

from __future__ import annotations

import contextvars
import importlib
import threading
import time
from collections.abc import Callable
from types import ModuleType, TracebackType
from typing import Any, TypeVar

__all__ = ["Deadline", "install", "within"]

_LIBRARIES = ("httpcore", "httpcore2")
_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "promptcast_deadline", default=None
)
installed = False  # whether install() ran
_install_lock = threading.Lock()
T = TypeVar("T")


class Deadline:
    """The deadline of one request (`time.perf_counter()` based, `None` for none) while it is
    current; `expired` tells afterwards whether it cut a socket operation short. One request's,
    entered by one thread at a time (a stream enters it around each of its reads)."""

    __slots__ = ("_token", "at", "expired")

    def __init__(self, at: float | None) -> None:
        self.at = at
        self.expired = False
        self._token: contextvars.Token[Deadline | None] | None = None

    def __enter__(self) -> Deadline:
        if self.at is not None:
            self._token = _current.set(self)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None


def _bounded(
    operation: Callable[[float | None], T], timeout: float | None, error: type[Exception]
) -> T:
    """`operation(timeout)`, waiting at most the time left before the current deadline; raises
    `error` (and marks the deadline expired) when that time is what runs out."""
    deadline = _current.get()
    if deadline is None or deadline.at is None:
        return operation(timeout)
    left = deadline.at - time.perf_counter()
    if left <= 0:
        deadline.expired = True
        raise error("the call's timeout_s ran out")
    if timeout is not None and timeout < left:  # the caller's own, shorter timeout
        return operation(timeout)
    try:
        return operation(left)
    except error:
        deadline.expired = True
        raise


def within(seconds: float) -> Deadline:
    """A deadline `seconds` from now, current inside `with`; installs the stream wrapper first."""
    if not installed:
        install()
    return Deadline(time.perf_counter() + seconds)


def install() -> None:
    """Wrap the streams of `SyncBackend` in each httpcore library present (once per process;
    threads making their first calls at once wrap it once)."""
    global installed
    with _install_lock:
        if installed:
            return
        for name in _LIBRARIES:
            try:
                library = importlib.import_module(name)
            except ImportError:
                continue
            _wrap_backend(library)
        installed = True


def _wrap_backend(library: ModuleType) -> None:
    backend = getattr(library, "SyncBackend", None)
    base = getattr(library, "NetworkStream", None)
    errors = [getattr(library, n, None) for n in ("ConnectTimeout", "ReadTimeout", "WriteTimeout")]
    connect_tcp = getattr(backend, "connect_tcp", None)
    if (
        backend is None
        or base is None
        or connect_tcp is None
        or getattr(connect_tcp, "_promptcast_deadline", False)
        or not all(isinstance(e, type) and issubclass(e, Exception) for e in errors)
    ):
        return  # not the httpcore this was written for: leave it as it is
    connect_timeout, read_timeout, write_timeout = errors
    stream_class = _stream_class(base, read_timeout, write_timeout)  # type: ignore[arg-type]

    def connect(self: Any, host: str, port: int, timeout: float | None = None, **kw: Any) -> Any:
        def opened(wait: float | None) -> Any:
            return connect_tcp(self, host, port, wait, **kw)

        return stream_class(_bounded(opened, timeout, connect_timeout))  # type: ignore[arg-type]

    connect._promptcast_deadline = True  # type: ignore[attr-defined]
    backend.connect_tcp = connect


def _stream_class(
    base: type, read_timeout: type[Exception], write_timeout: type[Exception]
) -> type:
    """A `NetworkStream` that hands each operation the time left before the current deadline."""

    class DeadlineStream(base):  # type: ignore[misc]
        def __init__(self, stream: Any) -> None:
            self._stream = stream

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            if _current.get() is None:  # the common case, kept to one lookup
                return self._stream.read(max_bytes, timeout)  # type: ignore[no-any-return]
            data: bytes = _bounded(
                lambda wait: self._stream.read(max_bytes, wait), timeout, read_timeout
            )
            return data

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            if _current.get() is None:
                self._stream.write(buffer, timeout)
                return
            _bounded(lambda wait: self._stream.write(buffer, wait), timeout, write_timeout)

        def close(self) -> None:
            self._stream.close()

        def start_tls(self, *args: Any, **kwargs: Any) -> Any:
            return DeadlineStream(self._stream.start_tls(*args, **kwargs))

        def get_extra_info(self, info: str) -> Any:
            return self._stream.get_extra_info(info)

    return DeadlineStream
