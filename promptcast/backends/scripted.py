"""The scripted test double: replies come from a handler or a list, never from the network.

Wire it to a `test/<name>` model string for one block with
`pc.override(model="test/x", backends={"test/x": ScriptedBackend(...)})`.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from pydantic import BaseModel

from promptcast.backends.base import Backend, ModelReply, ModelRequest

__all__ = ["ScriptedBackend"]

Reply = ModelReply | BaseModel | dict[str, Any] | str | Exception
Handler = Callable[[ModelRequest], Reply | Awaitable[Reply]]


class ScriptedBackend(Backend):
    """Answers from `handler(request)` (sync or async) or, given a list, from its items in order.

    An item may be a `ModelReply`, a pydantic model or dict (a structured answer), a string (the
    raw answer text, parsed as JSON when the task wants structure) or an exception to raise.
    Every request is kept in `requests`.
    """

    __test__ = False
    provider = "test"

    def __init__(self, handler: Handler | Iterable[Reply], *, tokens: tuple[int, int] = (10, 5)):
        if callable(handler):
            self._handler: Handler = handler
        else:
            replies = list(handler)

            def scripted(request: ModelRequest) -> Reply:
                if not replies:
                    raise AssertionError(
                        f"ScriptedBackend ran out of replies at request {len(self.requests)}"
                    )
                return replies.pop(0)

            self._handler = scripted
        self._tokens = tokens
        self.requests: list[ModelRequest] = []

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

    def _to_reply(self, request: ModelRequest, item: Reply) -> ModelReply:
        if isinstance(item, Exception):
            raise item
        if isinstance(item, ModelReply):
            return item
        if isinstance(item, BaseModel):
            item = item.model_dump(mode="json")
        data: Any = item
        if isinstance(item, str):
            text = item
            if request.output_model is not None:
                try:
                    data = json.loads(item)
                except ValueError:
                    data = None
        else:
            text = json.dumps(item, ensure_ascii=False)
        return ModelReply(data, text, self._tokens[0], self._tokens[1])
