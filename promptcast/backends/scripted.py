"""The scripted test double: replies come from a handler or a list, never from the network.

Wire it to a `test/<name>` model string for one block with
`pc.override(model="test/x", backends={"test/x": ScriptedBackend(...)})`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

import pydantic_core
from pydantic import BaseModel

from promptcast import _json
from promptcast.backends.base import Backend, Capabilities, ModelReply, ModelRequest, StreamDelta

__all__ = ["ScriptedBackend"]

Reply = ModelReply | BaseModel | dict[str, Any] | str | Exception | type[Exception]
Handler = Callable[[ModelRequest], Reply | Awaitable[Reply]]


class ScriptedBackend(Backend):
    """Answers from `handler(request)` (sync or async) or, given a list, from its items in order.

    An item may be a `ModelReply`, a pydantic model or dict (a structured answer), a string (the
    raw answer text, parsed as JSON when the task wants structure) or an exception to raise.
    Every request is kept in `requests`.

    `stream()` sends each reply's text in pieces of `chunk_chars` characters, `chunk_delay_s`
    apart; `streams_closed` counts the streams their consumer closed before the end.
    """

    __test__ = False
    provider = "test"
    capabilities = Capabilities(streaming=True)

    def __init__(
        self,
        handler: Handler | Iterable[Reply],
        *,
        tokens: tuple[int, int] = (10, 5),
        chunk_chars: int = 8,
        chunk_delay_s: float = 0.0,
    ):
        if callable(handler):
            self._handler: Handler = handler
        else:
            replies = list(handler)

            def scripted(request: ModelRequest) -> Reply:
                if not replies:
                    raise AssertionError(
                        f"ScriptedBackend ran out of replies at request {len(self.requests)}"
                        f"{_which(request)}: it was given {len(self.requests) - 1}; add a reply to "
                        "its list (a retry or a repair also asks again), or pass a handler"
                    )
                return replies.pop(0)

            self._handler = scripted
        self._tokens = tokens
        self.requests: list[ModelRequest] = []
        self.chunk_chars = max(1, chunk_chars)
        self.chunk_delay_s = chunk_delay_s
        self.streams_closed = 0

    def request(self, request: ModelRequest) -> ModelReply:
        self.requests.append(request)
        result = self._handler(request)
        if inspect.isawaitable(result):
            raise TypeError(
                "this ScriptedBackend has an async handler; call the task with acall/arun"
            )
        return self._to_reply(request, result)

    async def arequest(self, request: ModelRequest) -> ModelReply:
        self.requests.append(request)
        result = self._handler(request)
        if inspect.isawaitable(result):
            result = await result
        return self._to_reply(request, result)

    def stream(self, request: ModelRequest) -> Iterator[StreamDelta | ModelReply]:
        reply = self.request(request)
        finished = False
        try:
            for start in range(0, len(reply.text), self.chunk_chars):
                if start and self.chunk_delay_s:
                    time.sleep(self.chunk_delay_s)
                yield StreamDelta(reply.text[start : start + self.chunk_chars])
            finished = True
            yield reply
        finally:
            self.streams_closed += not finished

    async def astream(self, request: ModelRequest) -> AsyncIterator[StreamDelta | ModelReply]:
        reply = await self.arequest(request)
        finished = False
        try:
            for start in range(0, len(reply.text), self.chunk_chars):
                if start and self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
                yield StreamDelta(reply.text[start : start + self.chunk_chars])
            finished = True
            yield reply
        finally:
            self.streams_closed += not finished

    def _to_reply(self, request: ModelRequest, item: Reply) -> ModelReply:
        if isinstance(item, Exception):
            raise item
        if isinstance(item, type) and issubclass(item, Exception):
            raise item
        if isinstance(item, ModelReply):
            return item
        if isinstance(item, BaseModel):
            item = item.model_dump(mode="json")
        elif not isinstance(item, str):
            item = _jsonable(item, request, len(self.requests))
        data: Any = item
        if isinstance(item, str):
            text = item
            if request.output_model is not None:
                try:
                    data = _json.loads(item)
                except ValueError:
                    data = None
        else:
            text = json.dumps(item, ensure_ascii=False)
        return ModelReply(
            data,
            text,
            self._tokens[0],
            self._tokens[1],
            response_id=f"scripted-{len(self.requests)}",
            response_model=request.model,
            finish_reason="stop",
        )


def _which(request: ModelRequest) -> str:
    return f" (task {request.task!r})" if request.task else ""


def _jsonable(item: Any, request: ModelRequest, number: int) -> Any:
    """A reply as JSON values (dates, sets, bytes as pydantic writes them), or a TypeError that
    names the request and what a reply may be: json.dumps said only "not JSON serializable"."""
    if inspect.isgenerator(item) or inspect.isasyncgen(item):
        problem = "a generator (a handler answers one request: return a reply, do not yield)"
    else:
        try:
            return pydantic_core.to_jsonable_python(item)
        except pydantic_core.PydanticSerializationError as exc:
            problem = f"not JSON ({exc})"
    raise TypeError(
        f"ScriptedBackend reply to request {number}{_which(request)} is {problem}; a reply is a "
        "ModelReply, a pydantic model, a dict or list of JSON values, a string, or an exception"
    )
