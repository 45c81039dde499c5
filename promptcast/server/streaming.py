"""`POST /v1/tasks/{name}/stream`: the JSON route's call as server-sent events.

The body is validated exactly as on the JSON route (same 415 and 422), behind the same gate
(token, Host, body size, one log line) and under the same concurrency limit. Then:

- `event: partial`: the output so far, as JSON (only the fields known so far);
- `event: restart`: `{"attempt", "model", "reason"}`, when an attempt is voided (a re-ask or a
  fallback follows): earlier partials no longer count;
- `event: final`: the JSON route's body (output, usage with cost, model, attempts, …) plus
  `output_mode`;
- `event: error`: the problem document the JSON route would answer, when the call fails after
  the stream began. A call that fails before its first event gets the JSON route's status and
  problem body instead of a stream.

A client that disconnects cancels the call: the provider's stream is closed at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel
from pydantic_core import to_jsonable_python
from starlette.types import Receive, Scope, Send

from promptcast._terminal import json_line
from promptcast.errors import PromptcastError
from promptcast.media import described
from promptcast.server import context
from promptcast.server.calls import TaskEndpoint, _disconnected, _scrubbed, dump_json, utf8
from promptcast.server.gate import CLIENT_CLOSED, _one_line, logger
from promptcast.server.problems import problem, problem_response, scrub
from promptcast.stream import AsyncStream, Final, Partial, Restart

__all__ = ["EVENT_STREAM", "StreamEndpoint", "stream_responses"]

EVENT_STREAM = "text/event-stream"


_EVENT_SCHEMA: dict[str, Any] = {
    "title": "TaskStreamEvent",
    "description": "One server-sent event; `data` is one line of JSON.",
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["partial", "restart", "final", "error"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}


def stream_responses(errors: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI responses of a stream route: the event stream, and the JSON route's errors."""
    return {
        200: {
            "description": "Server-sent events: `partial` (the output so far, JSON), `restart` "
            '(`{"attempt", "model", "reason"}`: earlier partials are void), `final` (the JSON '
            "route's result plus `output_mode`) or `error` (a problem document).",
            "content": {EVENT_STREAM: {"schema": _EVENT_SCHEMA}},
        },
        **errors,
    }


def sse(event: str, data: str) -> bytes:
    """One server-sent event; `data` is one line of JSON, whatever line breaks its values hold."""
    return utf8(f"event: {event}\ndata: {json_line(data)}\n\n")


class _Failed(Exception):
    """The call failed before its first event: answer as the JSON route would."""

    def __init__(self, response: Response) -> None:
        self.response = response


class StreamEndpoint(TaskEndpoint):
    """The stream route of one task: the JSON route's validation, then events instead of a body."""

    def documented(self) -> Callable[..., Any]:
        function = super().documented()
        function.__name__ = f"stream_{self.task.name}"
        return function

    async def call(self, request: Request, inputs: BaseModel) -> Response:
        events = self._events(request, inputs)
        # until the first event, watch the client as the JSON route does: one that leaves while
        # waiting in line or for the first token cancels its call (no provider spend for it)
        first_event = asyncio.ensure_future(anext(events))
        watching = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait((first_event, watching), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in (first_event, watching):
                if not future.done():
                    future.cancel()
        if first_event.cancelled() or not first_event.done():
            await asyncio.gather(first_event, return_exceptions=True)
            await events.aclose()
            info = context.log_info(request)
            if not info.get("error"):  # not counted yet: it left while waiting in line
                task = self.task
                self.state.metrics.calls.labels(task.name, task.model, str(CLIENT_CLOSED)).inc()
                info["error"] = "client-disconnected"
            return Response(status_code=CLIENT_CLOSED)  # dropped by the gate: nobody listens
        try:
            first = first_event.result()
        except _Failed as failed:
            return failed.response
        except StopAsyncIteration:  # pragma: no cover - a stream always ends with `final`
            return Response(status_code=204)
        return _ClosingStream(
            _chain(first, events),
            media_type=EVENT_STREAM,
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    async def _events(self, request: Request, inputs: BaseModel) -> AsyncGenerator[bytes]:
        task = self.task
        spec = task.spec
        state = self.state
        metrics = state.metrics
        info = context.log_info(request)
        model = task.model
        info.update(task=spec.name, model=model, version=spec.version, stream=True)
        values = {name: getattr(inputs, name) for name in spec.inputs}
        if logger.isEnabledFor(logging.DEBUG):
            # media as a short description (type, size, hash), never its base64
            info["inputs"] = _scrubbed(to_jsonable_python(described(values)))
        started = time.perf_counter()
        limit = state.limit.semaphore()
        metrics.waiting.inc()
        try:
            await limit.acquire()
        finally:
            metrics.waiting.dec()
        sent = 0
        stream: AsyncStream[Any] | None = None
        finished = False
        try:
            metrics.in_flight.inc()
            # inside the try: its own input checks (the media of a whole call over their
            # limit) may refuse the call, and the slot taken above must be given back
            stream = task.astream(**values)
            async for event in stream.events():
                if isinstance(event, Partial):
                    data = _json(event.output)
                    sent += 1
                    yield sse("partial", data)
                elif isinstance(event, Restart):
                    restart = {"attempt": event.attempt, "model": event.model}
                    sent += 1
                    yield sse("restart", json.dumps({**restart, "reason": event.reason}))
                elif isinstance(event, Final):
                    answer = self._answer(event.run, time.perf_counter() - started, info)
                    final = json.loads(bytes(answer.body))
                    final.setdefault("output_mode", event.run.output_mode)
                    finished = True
                    yield sse("final", json.dumps(final, ensure_ascii=False))
        except PromptcastError as exc:
            body, headers = self._failed(request, exc, model, info)
            if not sent:
                raise _Failed(problem_response(body, headers)) from None
            yield sse("error", json.dumps(body, ensure_ascii=False))
        except Exception as exc:
            self._count_error(model, exc, 500)
            info["error"] = type(exc).__name__  # counted once: not also as a 499 below
            if not sent:
                raise  # the gate's last resort answers 500
            # the stream began: end it with a problem, not a torn chunked body
            info["error_detail"] = scrub(_one_line(exc))
            body = problem(
                500,
                "internal-error",
                "the call failed; the request id is in the server's log",
                instance=request.url.path,
                request_id=context.request_id(request),
                task=task.name,
            )
            yield sse("error", json.dumps(body, ensure_ascii=False))
        finally:
            if not finished and not info.get("error"):  # the client went away mid-stream
                metrics.calls.labels(task.name, model, str(CLIENT_CLOSED)).inc()
                info["error"] = "client-disconnected"
            if stream is not None:
                await stream.aclose()
            metrics.in_flight.dec()
            limit.release()


class _ClosingStream(StreamingResponse):
    """Closes its events however the response ends: Starlette leaves them suspended when a write
    fails (a client dropped for not reading), and they hold a concurrency slot until closed."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()


async def _chain(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()


def _json(output: Any) -> str:
    """A partial output as JSON: a model's known fields only (its unknown ones are not `null`
    yet, they are not there yet); text as a JSON string."""
    if isinstance(output, BaseModel):
        return dump_json(output, exclude_unset=True, warnings=False)
    return json.dumps(output, ensure_ascii=False, default=str)
