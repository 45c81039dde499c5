"""uvicorn's h11 protocol with a deadline on reading each request.

uvicorn arms its keep-alive timer only after a response and cancels it at the first byte, and it
has no read timeout: a connection that sends nothing, or a request a byte at a time, stayed open
for ever. `max_connections` of them made uvicorn answer every other request, `/healthz` too,
with 503.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["REQUEST_READ_TIMEOUT_S", "ReadDeadlineH11"]

REQUEST_READ_TIMEOUT_S = 30.0
"""How long a client has to send a whole request (head and body) once it connects or once the
previous answer is sent; the connection is closed after it."""


class ReadDeadlineH11(H11Protocol):
    """Closes a connection whose next request is not wholly received within
    `REQUEST_READ_TIMEOUT_S`; a connection that sends nothing is closed after the keep-alive
    timeout, as an idle one is after an answer."""

    _read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE and self.conn.their_state is not h11.SEND_BODY:
            self._disarm()  # the whole request is in

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._read_deadline = self.loop.call_later(REQUEST_READ_TIMEOUT_S, self._too_slow)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _too_slow(self) -> None:
        self._read_deadline = None
        if not self.transport.is_closing():
            self.transport.close()  # an app reading the body sees the client gone (499)
