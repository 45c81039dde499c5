"""The routes: `ops` (health, readiness, metrics), `catalog` (the task list), `task_router(state)`
with each task's own GET and POST, and `unknown` (any other task name), included in that order.

Whether a route needs a token, and the 401 and 421 it may answer, are added to the OpenAPI
document by `promptcast.server._openapi`, since they depend on how the app is configured.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from promptcast._config import get_config
from promptcast.backends import resolve
from promptcast.errors import ConfigurationError, TaskNotFoundError
from promptcast.server import context
from promptcast.server.calls import TaskEndpoint
from promptcast.server.gate import logger
from promptcast.server.models import Health, Ready, TaskDetail, TaskList, TaskSummary, detail
from promptcast.server.problems import (
    MAX_LISTED_ERRORS,
    PROBLEM_MEDIA_TYPE,
    invalid_input,
    problem,
    problem_for_error,
    problem_response,
    scrub,
)
from promptcast.server.state import ServerState, State, state_of
from promptcast.server.streaming import StreamEndpoint, stream_responses
from promptcast.task import Task, TaskRegistry

__all__ = [
    "CALL_ERRORS",
    "catalog",
    "not_ready",
    "on_http_error",
    "on_invalid_request",
    "ops",
    "problem_doc",
    "task_router",
    "unknown",
]


def problem_doc(description: str, *, retry: bool = False) -> dict[str, Any]:
    """An OpenAPI response whose body is a problem detail."""
    doc: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    if retry:
        doc["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before retrying, when retrying may help.",
                "schema": {"type": "integer"},
            }
        }
    return doc


CALL_ERRORS: dict[int | str, dict[str, Any]] = {
    402: problem_doc("The call would exceed the task's budget."),
    413: problem_doc(
        "The body is larger than the server's limit, or an image or document over its own."
    ),
    415: problem_doc("The body is not sent as application/json."),
    422: problem_doc(
        "An input is missing, undeclared or of the wrong type, or the body is not JSON."
    ),
    502: problem_doc("The provider failed or gave no valid output.", retry=True),
    503: problem_doc("The provider is rate limited or overloaded, or not configured.", retry=True),
    504: problem_doc("The provider did not answer in time.", retry=True),
}

# operations

ops = APIRouter(tags=["ops"])


# HEAD too: uptime monitors probe with it (RFC 9110: every server supports GET and HEAD)
@ops.head("/healthz", include_in_schema=False)
@ops.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:
    return Health(status="ok")


@ops.head("/readyz", response_model=Ready, include_in_schema=False)
@ops.get(
    "/readyz",
    response_model=Ready,
    summary="Readiness: tasks loaded and their models configured",
    responses={503: problem_doc("Not ready; `detail` says why.")},
)
async def readyz(request: Request, state: State) -> Ready | Response:
    reason = await asyncio.to_thread(not_ready, state.registry)
    if reason is None:
        return Ready(status="ready", tasks=len(state.registry))
    logger.warning("not ready: %s", scrub(reason))
    body = problem(
        503,
        "not-ready",
        "the server cannot call its tasks' models yet; see its log",
        instance=request.url.path,
        request_id=context.request_id(request),
    )
    return problem_response(body)


@ops.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(state: State) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def not_ready(registry: TaskRegistry) -> str | None:
    """Why the tasks cannot be called now (no tasks, a model without its key or base URL), or
    `None`. Asks each backend's `check`, which does no I/O."""
    if not len(registry):
        return "no tasks are loaded"
    fallbacks = get_config().fallbacks
    # every model a call may need: a call checks its fallbacks' too before its first request
    models = {
        model
        for task in registry.values()
        for model in (task.model, *(task.spec.fallbacks or fallbacks))
    }
    try:
        for model in sorted(models):
            backend, model_name = resolve(model)
            backend.check(model_name)
    except ConfigurationError as exc:
        return str(exc)
    return None


# the catalog

catalog = APIRouter(tags=["tasks"])


@catalog.get("/v1/tasks", response_model=TaskList, summary="List the tasks")
async def list_tasks(state: State) -> TaskList:
    return TaskList(
        tasks=[
            TaskSummary(
                name=name,
                description=task.description,
                version=task.spec.version,
                output=task.spec.output_text,
                url=f"/v1/tasks/{name}",
            )
            for name, task in sorted(state.registry.items())
        ]
    )


unknown = APIRouter()


@unknown.api_route("/v1/tasks/{name}", methods=["GET", "POST"], include_in_schema=False)
@unknown.api_route("/v1/tasks/{name}/stream", methods=["POST"], include_in_schema=False)
async def unknown_task(request: Request, name: str, state: State) -> Response:
    """Any name that is not a task: 404 with the closest task names."""
    exc = TaskNotFoundError(name, known=list(state.registry))
    body, _ = problem_for_error(
        exc, instance=request.url.path, request_id=context.request_id(request)
    )
    return problem_response(body)


# each task's own routes


def task_router(state: ServerState) -> APIRouter:
    """GET and POST on each task's own path. OpenAPI matches a concrete path before a template, so
    a template GET /v1/tasks/{name} beside concrete POSTs would leave GET undocumented."""
    router = APIRouter()
    for task in state.registry.values():
        router.add_api_route(
            f"/v1/tasks/{task.name}",
            _describer(task),
            methods=["GET"],
            response_model=TaskDetail,
            summary=f"The spec and JSON schemas of {task.name}",
            operation_id=f"describe_{task.name}",
            tags=["tasks"],
        )
        endpoint = TaskEndpoint(task, state)
        router.add_api_route(
            f"/v1/tasks/{task.name}",
            endpoint.documented(),
            route_class_override=endpoint.route_class(),
            methods=["POST"],
            response_model=state.results[task.name],
            summary=task.description or f"Run {task.name}",
            description=f"Run task `{task.name}` v{task.spec.version}: the inputs as a JSON "
            "object in, the validated output with its usage out.",
            operation_id=f"run_{task.name}",
            tags=["run"],
            responses=CALL_ERRORS,
        )
        streamer = StreamEndpoint(task, state)
        router.add_api_route(
            f"/v1/tasks/{task.name}/stream",
            streamer.documented(),
            route_class_override=streamer.route_class(),
            methods=["POST"],
            response_class=StreamingResponse,
            summary=f"Stream {task.name}: partial outputs as server-sent events",
            description=f"Run task `{task.name}` v{task.spec.version} as the JSON route does, "
            "answering with server-sent events: `partial`, `restart`, `final`, `error`.",
            operation_id=f"stream_{task.name}",
            tags=["run"],
            responses=stream_responses(CALL_ERRORS),
        )
    return router


def _describer(task: Task[Any]) -> Any:
    async def describe_task() -> TaskDetail:
        return detail(task)

    describe_task.__name__ = f"describe_{task.name}"
    return describe_task


# errors raised before a handler runs


async def on_invalid_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    found = exc.errors()
    errors = [
        {**err, "loc": [p for p in err.get("loc", ()) if p != "body"]}
        for err in found[:MAX_LISTED_ERRORS]
    ]
    body = invalid_input(request, errors, task=None, declared="none", total=len(found))
    return problem_response(body)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    kinds = {404: "not-found", 405: "method-not-allowed"}
    detail = exc.detail if isinstance(exc.detail, str) else "request refused"
    headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() != "allow"}
    if exc.status_code == 405:  # every method of every route on this path, not just the first
        allowed = {
            method
            for route in state_of(request).routes
            if isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE
            for method in route.methods or ()
        }
        headers["allow"] = ", ".join(sorted(allowed))
    body = problem(
        exc.status_code,
        kinds.get(exc.status_code, "http-error"),
        detail,
        instance=request.url.path,
        request_id=context.request_id(request),
    )
    return problem_response(body, headers)
