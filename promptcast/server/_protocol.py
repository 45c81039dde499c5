"""uvicorn's HTTP protocols with a deadline on reading each request.

uvicorn arms its keep-alive timer only after a response and cancels it at the first byte, and it
has no read timeout: a connection that sends nothing, or a request a byte at a time, stayed open
for ever. `max_connections` of them made uvicorn answer every other request, `/healthz` too,
with 503. `PROTOCOL` is the class `serve` runs: httptools' when installed (uvicorn's own choice),
else h11's.
"""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["PROTOCOL", "REQUEST_READ_TIMEOUT_S", "ReadDeadlineH11"]

REQUEST_READ_TIMEOUT_S = 30.0
"""How long a client has to send a whole request (head and body) once it connects or once the
previous answer is sent; the connection is closed after it."""


class _Deadline:
    """The read deadline of one connection: closes `transport` unless disarmed in time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: asyncio.BaseTransport) -> None:
        self.loop = loop
        self.transport = transport
        self.timer: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        self.disarm()
        self.timer = self.loop.call_later(REQUEST_READ_TIMEOUT_S, self._expired)

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expired(self) -> None:
        self.timer = None
        if not self.transport.is_closing():
            self.transport.close()  # an app reading the body sees the client gone (499)


class _ReadDeadline:
    """What both protocols add: the keep-alive timer armed at connect too, and a read deadline
    armed at connect and after each answer (each protocol disarms it once a request is in)."""

    deadline: _Deadline | None = None

    def connection_made(self: Any, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )
        self.deadline = _Deadline(self.loop, transport)
        self.deadline.arm()

    def on_response_complete(self: Any) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if self.deadline:
            self.deadline.arm()

    def connection_lost(self: Any, exc: Exception | None) -> None:
        if self.deadline:
            self.deadline.disarm()
        super().connection_lost(exc)  # type: ignore[misc]


class ReadDeadlineH11(_ReadDeadline, H11Protocol):
    """h11's protocol; closes a connection whose next request is not wholly received within
    `REQUEST_READ_TIMEOUT_S`, or that sends nothing within the keep-alive timeout."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.deadline and self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            self.deadline.disarm()  # the whole request is in


PROTOCOL: type[asyncio.Protocol] = ReadDeadlineH11

if importlib.util.find_spec("httptools") is not None:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class ReadDeadlineHttpTools(_ReadDeadline, HttpToolsProtocol):
        """httptools' protocol with the same deadlines as `ReadDeadlineH11`."""

        def on_message_complete(self) -> None:
            super().on_message_complete()
            if self.deadline:
                self.deadline.disarm()  # the whole request is in

    PROTOCOL = ReadDeadlineHttpTools
