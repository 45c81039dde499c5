"""Streaming for the Anthropic backend: the same `messages.create` parameters, sent through the
SDK's `messages.stream()`, whose events are read for the answer's deltas and whose final `Message`
becomes the `ModelReply` exactly as a non-streamed reply does.

Which deltas are the answer follows the request's output mode: the output tool's
`input_json_delta`s in tool mode, `text_delta`s otherwise (native and prompted JSON, free text).
Thinking deltas and other tools' input never reach the consumer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from promptcast.backends.base import ModelReply, ModelRequest, StreamDelta, malformed_reply
from promptcast.errors import BackendError

__all__ = ["Answer", "astream_reply", "stream_reply"]

_RETRYABLE_KINDS = frozenset({"overloaded_error", "api_error", "rate_limit_error", "timeout_error"})
_HTTP_MODULES = frozenset({"httpx", "httpx2", "httpcore", "httpcore2", "h11"})


class Answer:
    """Picks the answer's deltas out of the stream's events."""

    def __init__(self, request: ModelRequest, tool_name: str | None) -> None:
        self.tool_name = tool_name if request.output_model is not None else None
        self.tool_mode = self.tool_name is not None and request.output_mode == "tool"
        self.answer_blocks: set[int] = set()

    def delta(self, event: Any) -> StreamDelta | None:
        kind = event.type
        if kind == "content_block_start":
            block = event.content_block
            wanted = (
                block.type == "tool_use" and block.name == self.tool_name
                if self.tool_mode
                else block.type == "text"
            )
            if wanted:
                self.answer_blocks.add(event.index)
        elif kind == "content_block_delta" and event.index in self.answer_blocks:
            delta = event.delta
            if delta.type == "input_json_delta" and delta.partial_json:
                return StreamDelta(delta.partial_json)
            if delta.type == "text_delta" and delta.text:
                return StreamDelta(delta.text)
        return None


def stream_reply(
    sdk: Any,
    client: Any,
    kwargs: dict[str, Any],
    request: ModelRequest,
    answer: Answer,
    to_reply: Callable[[Any], ModelReply],
    mapped: Callable[[ModelRequest], Any],
) -> Iterator[StreamDelta | ModelReply]:
    """Stream one request on a sync client; `to_reply` turns the final `Message` into the reply
    and `mapped` is the backend's SDK-error mapping."""
    started = False
    with mapped(request), _stream_errors(sdk, request), client.messages.stream(**kwargs) as stream:
        for event in stream:
            started = started or event.type == "message_start"
            delta = answer.delta(event)
            if delta is not None:
                yield delta
        if not started:
            raise _no_message(request)
        message = stream.get_final_message()
    yield to_reply(message)


async def astream_reply(
    sdk: Any,
    client: Any,
    kwargs: dict[str, Any],
    request: ModelRequest,
    answer: Answer,
    to_reply: Callable[[Any], ModelReply],
    mapped: Callable[[ModelRequest], Any],
) -> AsyncIterator[StreamDelta | ModelReply]:
    """`stream_reply` on an async client."""
    started = False
    with mapped(request), _stream_errors(sdk, request):
        async with client.messages.stream(**kwargs) as stream:
            async for event in stream:
                started = started or event.type == "message_start"
                delta = answer.delta(event)
                if delta is not None:
                    yield delta
            if not started:
                raise _no_message(request)
            message = await stream.get_final_message()
    yield to_reply(message)


def _no_message(request: ModelRequest) -> BackendError:
    """A 200 stream that ended with no `message_start` (empty, a proxy's page, another API's
    events): the SDK's `get_final_message` then failed a bare `assert`."""
    return malformed_reply(
        "anthropic", request, ValueError("the event stream ended without a message")
    )


async def in_thread(items: Iterator[StreamDelta | ModelReply]) -> AsyncIterator[Any]:
    """A sync stream read in a worker thread (a backend given only a sync client)."""
    done = object()
    reading: asyncio.Future[Any] | None = None
    try:
        while True:
            reading = asyncio.ensure_future(asyncio.to_thread(next, items, done))
            item = await asyncio.shield(reading)
            if item is done:
                return
            yield item
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            if reading is not None and not reading.done():
                # cancelled while the thread reads: a generator cannot be closed while it runs
                # ("generator already executing"), so it is closed once that read returns
                reading.add_done_callback(lambda _: close())
            else:
                close()


@contextmanager
def _stream_errors(sdk: Any, request: ModelRequest) -> Iterator[None]:
    """Errors only a stream has: an `error` event after the 200 (the SDK raises it with the 200
    status), and the connection failing midway (httpx's own error, not wrapped by the SDK)."""
    context: dict[str, Any] = {"task": request.task, "model": f"anthropic/{request.model}"}
    try:
        yield
    except sdk.APIStatusError as exc:
        if exc.status_code >= 400:
            raise
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error") if isinstance(body.get("error"), dict) else body
        kind = str(error.get("type") or "error") if isinstance(error, dict) else "error"
        raise BackendError(
            f"Anthropic failed mid-stream ({kind}): {exc.message}",
            provider="anthropic",
            retryable=kind in _RETRYABLE_KINDS,
            **context,
        ) from exc
    except Exception as exc:
        if type(exc).__module__.partition(".")[0] not in _HTTP_MODULES:
            raise
        raise BackendError(
            f"the Anthropic stream broke off ({type(exc).__name__}); the call is retried",
            provider="anthropic",
            retryable=True,
            **context,
        ) from exc
