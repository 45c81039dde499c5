"""Streaming for the litellm backend: the same `completion` parameters plus `stream: true` (and
`stream_options.include_usage`, so the usage is the provider's own count); the chunks' deltas are
the answer, and litellm's `stream_chunk_builder` assembles the final response, which becomes the
`ModelReply` exactly as a non-streamed response does.

In tool mode the answer is the output function's argument deltas; otherwise (a `json_schema` or
`json_object` response format, prompted JSON, free text) the content deltas.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from promptcast.backends.base import ModelReply, ModelRequest, StreamDelta

__all__ = ["Answer", "astream_reply", "stream_reply"]


class Answer:
    """Picks the answer's deltas out of the stream's chunks."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        tools = kwargs.get("tools") or []
        self.function = tools[0]["function"]["name"] if tools else None
        self.indexes: set[int] = set()

    def delta(self, chunk: Any) -> StreamDelta | None:
        choices = getattr(chunk, "choices", None) or []
        if not choices:
            return None
        delta = choices[0].delta
        if self.function is None:
            text = getattr(delta, "content", None)
            return StreamDelta(text) if text else None
        pieces = []
        for call in getattr(delta, "tool_calls", None) or []:
            function = call.function
            index = call.index if call.index is not None else 0
            if function is not None and function.name == self.function:
                self.indexes.add(index)
            if index in self.indexes and function is not None and function.arguments:
                pieces.append(function.arguments)
        return StreamDelta("".join(pieces)) if pieces else None


def _streaming(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {**kwargs, "stream": True, "stream_options": {"include_usage": True}}


def stream_reply(
    litellm: Any,
    kwargs: dict[str, Any],
    request: ModelRequest,
    to_reply: Callable[[Any], ModelReply],
    mapped: Callable[[ModelRequest], Any],
) -> Iterator[StreamDelta | ModelReply]:
    """Stream one request; `to_reply` reads the assembled response, `mapped` maps litellm's
    errors as the backend does."""
    answer = Answer(kwargs)
    with mapped(request):
        response = litellm.completion(**_streaming(kwargs))
    try:
        chunks = []
        with mapped(request):
            for chunk in response:
                chunks.append(chunk)
                delta = answer.delta(chunk)
                if delta is not None:
                    yield delta
            built = litellm.stream_chunk_builder(chunks, messages=kwargs["messages"])
    finally:
        response.close()
    yield to_reply(built)


async def astream_reply(
    litellm: Any,
    kwargs: dict[str, Any],
    request: ModelRequest,
    to_reply: Callable[[Any], ModelReply],
    mapped: Callable[[ModelRequest], Any],
) -> AsyncIterator[StreamDelta | ModelReply]:
    """`stream_reply` without blocking the event loop."""
    answer = Answer(kwargs)
    with mapped(request):
        response = await litellm.acompletion(**_streaming(kwargs))
    try:
        chunks = []
        with mapped(request):
            async for chunk in response:
                chunks.append(chunk)
                delta = answer.delta(chunk)
                if delta is not None:
                    yield delta
            built = litellm.stream_chunk_builder(chunks, messages=kwargs["messages"])
    finally:
        await response.aclose()
    yield to_reply(built)
