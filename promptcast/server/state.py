"""What one app's handlers share: its tasks, metrics, result models and the limit on provider
calls in flight. Stored on `app.state.promptcast`; handlers get it with the `State` dependency."""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import BaseModel
from starlette.routing import BaseRoute

from promptcast.server.metrics import Metrics
from promptcast.server.models import result_model
from promptcast.task import TaskRegistry

__all__ = ["CallLimit", "ServerState", "State", "state_of"]


class CallLimit:
    """At most `max_concurrency` provider calls at once; more wait in line. One semaphore per event
    loop, as an app may be served by several loops (tests, threads)."""

    def __init__(self, max_concurrency: int) -> None:
        self.max_concurrency = max_concurrency
        self._semaphores: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Semaphore
        ] = weakref.WeakKeyDictionary()

    def semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        semaphore = self._semaphores.get(loop)
        if semaphore is None:
            semaphore = self._semaphores[loop] = asyncio.Semaphore(self.max_concurrency)
        return semaphore


@dataclass
class ServerState:
    registry: TaskRegistry
    limit: CallLimit
    metrics: Metrics = field(default_factory=Metrics)
    results: dict[str, type[BaseModel]] = field(init=False)
    routes: list[BaseRoute] = field(default_factory=list)
    """Every route of the app, flat (FastAPI keeps included routers nested)."""

    def __post_init__(self) -> None:
        self.results = {name: result_model(task) for name, task in self.registry.items()}

    @property
    def max_concurrency(self) -> int:
        return self.limit.max_concurrency


def state_of(request: Request) -> ServerState:
    state: Any = request.app.state.promptcast
    assert isinstance(state, ServerState)
    return state


State = Annotated[ServerState, Depends(state_of)]
