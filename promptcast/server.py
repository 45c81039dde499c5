"""Every task an HTTP endpoint: `create_app(registry)` builds a FastAPI app, `promptcast serve`
runs it on uvicorn.

Routes are generated from the task specs, so `/openapi.json` shows each task's own input and output
schemas and any language can call a task:

- `POST /v1/tasks/{name}` with the inputs as a JSON object → the output, usage, model, version,
  template hash and attempts;
- `GET /v1/tasks`, `GET /v1/tasks/{name}` (spec and JSON schemas), `GET /healthz`, `GET /readyz`,
  `GET /metrics` (Prometheus), `/docs`.

Errors are RFC 9457 problem details (see `promptcast._server_problem` for the statuses). Needs the
`server` extra: `pip install 'promptcast[server]'`.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import ipaddress
import json
import logging
import os
import signal
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from promptcast._config import get_config
from promptcast._server_gate import INFO_KEY, REQUEST_ID_KEY, Gate, logger
from promptcast._server_metrics import Metrics
from promptcast._server_problem import (
    PROBLEM_MEDIA_TYPE,
    PROBLEM_SCHEMA,
    problem,
    problem_bytes,
    problem_for_error,
    scrub,
)
from promptcast.backends import resolve
from promptcast.errors import ConfigurationError, PromptcastError, TaskNotFoundError
from promptcast.task import Task, TaskRegistry, builtin_tasks, load_tasks

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_CONCURRENCY",
    "app_from_env",
    "create_app",
    "is_loopback",
    "serve",
    "tokens_from_env",
]

DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_CONCURRENCY = 64
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/openapi.json"})
_SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}]


# response models: what the OpenAPI document shows besides each task's own schemas


class CallUsage(BaseModel):
    """Tokens and cost of one task call, summed over its provider requests."""

    input_tokens: int
    output_tokens: int
    cost_usd: float | None = Field(description="US dollars; null when the price is unknown.")


class TaskSummary(BaseModel):
    name: str
    description: str
    version: int | str
    output: str = Field(description="The output type as written in the task file.")
    url: str = Field(description="Where to POST the inputs.")


class TaskList(BaseModel):
    tasks: list[TaskSummary]


class InputInfo(BaseModel):
    type: str
    required: bool
    default: Any = None
    description: str | None = None


class ExampleInfo(BaseModel):
    inputs: dict[str, Any]
    expect: dict[str, Any] | None = None
    expect_contains: dict[str, str] | str | None = None


class TaskDetail(BaseModel):
    name: str
    description: str
    version: int | str
    template_hash: str
    model: str
    output: str
    url: str
    inputs: dict[str, InputInfo]
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    examples: list[ExampleInfo]


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    tasks: int


# settings


def tokens_from_env() -> list[str]:
    """Bearer tokens from `PROMPTCAST_API_TOKENS` (comma-separated); empty means no auth."""
    raw = os.environ.get("PROMPTCAST_API_TOKENS", "")
    return [token.strip() for token in raw.split(",") if token.strip()]


def _env_int(var: str, default: int) -> int:
    raw = os.environ.get(var, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigurationError(
            f"{var} must be a whole number of at least 1, got {raw!r}", env_var=var
        )
    return value


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _default_registry() -> TaskRegistry:
    registry = TaskRegistry(builtin_tasks())
    folders = [Path(p) for p in get_config().prompts]
    for task in load_tasks(*folders).values() if folders else ():
        registry.add(task)
    return registry


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


# the app


def create_app(
    registry: TaskRegistry | None = None,
    *,
    tokens: Iterable[str] | None = None,
    max_body_bytes: int | None = None,
    max_concurrency: int | None = None,
) -> FastAPI:
    """A FastAPI app with one typed route per task of `registry`.

    `registry` defaults to the built-ins plus `PROMPTCAST_PROMPTS`; `tokens` to
    `PROMPTCAST_API_TOKENS` (no tokens: no auth, so bind to loopback only); `max_body_bytes` to
    `PROMPTCAST_MAX_BODY_BYTES` or 1 MiB; `max_concurrency` (provider calls in flight in this
    process; more requests wait in line) to `PROMPTCAST_MAX_CONCURRENCY` or 64.
    """
    registry = _default_registry() if registry is None else registry
    token_list = tokens_from_env() if tokens is None else [t for t in tokens if t]
    body_limit = max_body_bytes or _env_int("PROMPTCAST_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)
    limit = max_concurrency or _env_int("PROMPTCAST_MAX_CONCURRENCY", DEFAULT_MAX_CONCURRENCY)
    service = _Service(registry, limit)
    secured = bool(token_list)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(_warm_up, registry)
        yield
        await _close_clients(registry)

    app = FastAPI(
        title="promptcast",
        version=_version(),
        description="Prompt-file tasks as typed HTTP endpoints. Errors are RFC 9457 problem "
        "details (application/problem+json).",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        exception_handlers={
            RequestValidationError: service.on_invalid_request,
            StarletteHTTPException: service.on_http_error,
        },
    )
    app.state.promptcast = service
    extra = {"security": _SECURITY} if secured else None
    auth: dict[int | str, dict[str, Any]] = (
        {401: _problem_doc("Missing or wrong bearer token.")} if secured else {}
    )

    app.add_api_route(
        "/v1/tasks",
        service.list_tasks,
        methods=["GET"],
        response_model=TaskList,
        summary="List the tasks",
        tags=["tasks"],
        responses={**auth},
        openapi_extra=extra,
    )
    for task in registry.values():
        # GET and POST on each task's own path: OpenAPI matches a concrete path before a template,
        # so a template GET /v1/tasks/{name} beside concrete POSTs would leave GET undocumented.
        app.add_api_route(
            f"/v1/tasks/{task.name}",
            service.describer(task),
            methods=["GET"],
            response_model=TaskDetail,
            summary=f"The spec and JSON schemas of {task.name}",
            operation_id=f"describe_{task.name}",
            tags=["tasks"],
            responses={**auth},
            openapi_extra=extra,
        )
        app.router.add_api_route(
            f"/v1/tasks/{task.name}",
            service.documented_endpoint(task),
            route_class_override=service.route_class(task),
            methods=["POST"],
            response_model=service.results[task.name],
            summary=task.description or f"Run {task.name}",
            description=f"Run task `{task.name}` v{task.spec.version}: the inputs as a JSON "
            "object in, the validated output with its usage out.",
            operation_id=f"run_{task.name}",
            tags=["run"],
            responses={**auth, **_CALL_ERRORS},
            openapi_extra=extra,
        )
    for method in ("GET", "POST"):  # any other name: 404 with the closest task names
        app.add_api_route(
            "/v1/tasks/{name}", service.unknown_task, methods=[method], include_in_schema=False
        )
    app.add_api_route(
        "/healthz",
        _healthz,
        methods=["GET"],
        response_model=Health,
        summary="Liveness",
        tags=["ops"],
    )
    app.add_api_route(
        "/readyz",
        service.readyz,
        methods=["GET"],
        response_model=Ready,
        summary="Readiness: tasks loaded and their models configured",
        tags=["ops"],
        responses={503: _problem_doc("Not ready; `detail` says why.")},
    )
    app.add_api_route(
        "/metrics",
        service.metrics_endpoint,
        methods=["GET"],
        summary="Prometheus metrics",
        tags=["ops"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **auth},
        openapi_extra=extra,
    )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            _drop_fastapi_422(schema)
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
            if secured:
                components["securitySchemes"] = {"bearerAuth": {"type": "http", "scheme": "bearer"}}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(
        Gate,
        tokens=token_list,
        max_body_bytes=body_limit,
        metrics=service.metrics,
        open_paths=OPEN_PATHS,
    )
    return app


def _drop_fastapi_422(schema: dict[str, Any]) -> None:
    """Remove the 422 `HTTPValidationError` FastAPI documents for path parameters: a path
    parameter here is any string, and the real 422s are problem details, documented as such."""
    fastapi_ref = "#/components/schemas/HTTPValidationError"
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            responses = operation.get("responses", {})
            content = responses.get("422", {}).get("content", {})
            if content.get("application/json", {}).get("schema", {}).get("$ref") == fastapi_ref:
                del responses["422"]
    schemas = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        if f'"#/components/schemas/{name}"' not in json.dumps(schema):
            schemas.pop(name, None)


def _version() -> str:
    from promptcast import __version__

    return __version__


def _problem_doc(description: str, *, retry: bool = False) -> dict[str, Any]:
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


_CALL_ERRORS: dict[int | str, dict[str, Any]] = {
    402: _problem_doc("The call would exceed the task's budget."),
    413: _problem_doc("The body is larger than the server's limit."),
    415: _problem_doc("The body is not sent as application/json."),
    422: _problem_doc(
        "An input is missing, undeclared or of the wrong type, or the body is not JSON."
    ),
    502: _problem_doc("The provider failed or gave no valid output.", retry=True),
    503: _problem_doc("The provider is rate limited or overloaded, or not configured.", retry=True),
    504: _problem_doc("The provider did not answer in time.", retry=True),
}


def _result_model(task: Task[Any]) -> type[BaseModel]:
    output: Any = task.spec.output_model or str
    model: type[BaseModel] = create_model(
        f"{_camel(task.name)}Result",
        __config__=ConfigDict(title=f"{_camel(task.name)}Result"),
        output=(output, Field(description=f"The validated output of {task.name}.")),
        usage=(CallUsage, ...),
        model=(str, Field(description="The model string the call used.")),
        task=(str, ...),
        task_version=(int | str, ...),
        template_hash=(str, Field(description="Changes whenever the task file does.")),
        attempts=(int, Field(description="Provider requests made, re-asks included.")),
    )
    return model


async def _healthz() -> Health:
    return Health(status="ok")


def _problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(
        problem_bytes(body),
        status_code=int(body["status"]),
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


class _Service:
    """The route handlers, sharing the registry, the metrics and the per-loop call limit."""

    def __init__(self, registry: TaskRegistry, max_concurrency: int) -> None:
        self.registry = registry
        self.max_concurrency = max_concurrency
        self.metrics = Metrics()
        self._limits: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self.results = {name: _result_model(task) for name, task in registry.items()}

    def _limit(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        semaphore = self._limits.get(loop)
        if semaphore is None:
            semaphore = self._limits[loop] = asyncio.Semaphore(self.max_concurrency)
        return semaphore

    # running a task

    def documented_endpoint(self, task: Task[Any]) -> Callable[..., Awaitable[Response]]:
        """What FastAPI documents for a task: a function whose body parameter is typed with the
        task's input model, so the OpenAPI document shows that model. `route_class` serves it."""

        async def run_task(request: Request, inputs: BaseModel | None = None) -> Response:
            return await self.call(task, request, inputs)

        required = any(spec.required for spec in task.spec.inputs.values())
        body = inspect.Parameter(
            "inputs",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=task.spec.input_model,
            default=inspect.Parameter.empty if required else Body(None),
        )
        request = inspect.Parameter(
            "request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request
        )
        run_task.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [request, body], return_annotation=Response
        )
        run_task.__name__ = f"run_{task.name}"
        return run_task

    def route_class(self, task: Task[Any]) -> type[APIRoute]:
        """A route class whose handler validates the body itself, straight from the JSON bytes in
        strict mode: JSON types must match the schema (`false` is not an int, `"3"` is not one
        either), as the OpenAPI document promises. FastAPI's own handler would validate the parsed
        body in Python's lax mode."""
        handler = self.handler(task)

        class TaskRoute(APIRoute):
            def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
                return handler

        return TaskRoute

    def handler(self, task: Task[Any]) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        model = task.spec.input_model
        required = any(spec.required for spec in task.spec.inputs.values())

        async def handle(request: Request) -> Response:
            raw = await request.body()
            if not raw.strip():
                if required:
                    missing = [{"type": "missing", "loc": (), "msg": "body is empty"}]
                    return self.invalid(request, task, missing)
                return await self.call(task, request, model())
            # JSON only: a browser page cannot send it cross-site without a CORS preflight
            media = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if media != "application/json" and not (
                media.startswith("application/") and media.endswith("+json")
            ):
                body = problem(
                    415,
                    "unsupported-media-type",
                    "send the inputs as a JSON object with 'Content-Type: application/json'",
                    instance=request.url.path,
                    request_id=request.scope.get(REQUEST_ID_KEY),
                    task=task.name,
                )
                return _problem_response(body)
            try:
                inputs = model.model_validate_json(raw, strict=True)
            except ValidationError as exc:
                return self.invalid(
                    request, task, exc.errors(include_url=False, include_input=False)
                )
            return await self.call(task, request, inputs)

        return handle

    async def call(self, task: Task[Any], request: Request, inputs: BaseModel | None) -> Response:
        spec = task.spec
        info: dict[str, Any] = request.scope.get(INFO_KEY, {})
        model = task.model
        info.update(task=spec.name, model=model, version=spec.version)
        values = {name: getattr(inputs, name) for name in spec.inputs} if inputs is not None else {}
        if logger.isEnabledFor(logging.DEBUG):
            info["inputs"] = inputs.model_dump(mode="json") if inputs is not None else {}
        metrics = self.metrics
        started = time.perf_counter()
        limit = self._limit()
        metrics.waiting.inc()
        try:
            await limit.acquire()
        finally:
            metrics.waiting.dec()
        try:
            metrics.in_flight.inc()
            run = await task.arun(**values)
        except PromptcastError as exc:
            body, headers = problem_for_error(
                exc, instance=request.url.path, request_id=request.scope.get(REQUEST_ID_KEY)
            )
            self._count_error(spec.name, getattr(exc, "model", None) or model, exc, body["status"])
            usage = getattr(exc, "usage", None)
            if usage is not None:  # a failed call may still have spent tokens: count them
                spent = usage.cost_usd
                self._count_usage(spec.name, model, usage.input_tokens, usage.output_tokens, spent)
                info.update(
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    cost_usd=spent,
                )
            info.update(error=type(exc).__name__, error_detail=scrub(str(exc)))
            return _problem_response(body, headers)
        except Exception as exc:
            self._count_error(spec.name, model, exc, 500)
            raise
        finally:
            metrics.in_flight.dec()
            limit.release()
        elapsed = time.perf_counter() - started
        usage = run.usage
        cost = usage.cost_usd
        metrics.calls.labels(spec.name, run.model, "200").inc()
        metrics.latency.labels(spec.name, run.model).observe(elapsed)
        metrics.provider_requests.labels(spec.name, run.model).inc(run.attempts)
        self._count_usage(spec.name, run.model, usage.input_tokens, usage.output_tokens, cost)
        info.update(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=cost,
            attempts=run.attempts,
        )
        result = self.results[spec.name](
            output=run.output,
            usage=CallUsage(
                input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, cost_usd=cost
            ),
            model=run.model,
            task=spec.name,
            task_version=run.task_version,
            template_hash=run.template_hash,
            attempts=run.attempts,
        )
        return Response(result.model_dump_json().encode(), media_type="application/json")

    def _count_error(self, task: str, model: str, exc: Exception, status: int) -> None:
        self.metrics.errors.labels(task, model, type(exc).__name__).inc()
        self.metrics.calls.labels(task, model, str(status)).inc()

    def _count_usage(
        self, task: str, model: str, tokens_in: int, tokens_out: int, cost: float | None = None
    ) -> None:
        metrics = self.metrics
        if tokens_in:
            metrics.tokens.labels(task, model, "input").inc(tokens_in)
        if tokens_out:
            metrics.tokens.labels(task, model, "output").inc(tokens_out)
        if cost:
            metrics.cost.labels(task, model).inc(cost)

    async def unknown_task(self, request: Request, name: str) -> Response:
        exc = TaskNotFoundError(name, known=list(self.registry))
        body, _ = problem_for_error(
            exc, instance=request.url.path, request_id=request.scope.get(REQUEST_ID_KEY)
        )
        return _problem_response(body)

    # describing tasks

    async def list_tasks(self) -> TaskList:
        return TaskList(
            tasks=[
                TaskSummary(
                    name=name,
                    description=task.description,
                    version=task.spec.version,
                    output=task.spec.output_text,
                    url=f"/v1/tasks/{name}",
                )
                for name, task in sorted(self.registry.items())
            ]
        )

    def describer(self, task: Task[Any]) -> Callable[[], Awaitable[TaskDetail]]:
        async def describe_task() -> TaskDetail:
            return _detail(task)  # per request: the model may change with the configuration

        describe_task.__name__ = f"describe_{task.name}"
        return describe_task

    # operations

    async def readyz(self, request: Request) -> Ready | Response:
        reason = await asyncio.to_thread(_not_ready, self.registry)
        if reason is None:
            return Ready(status="ready", tasks=len(self.registry))
        logger.warning("not ready: %s", scrub(reason))
        body = problem(
            503,
            "not-ready",
            "the server cannot call its tasks' models yet; see its log",
            instance=request.url.path,
            request_id=request.scope.get(REQUEST_ID_KEY),
        )
        return _problem_response(body)

    async def metrics_endpoint(self) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # errors raised before a handler runs

    async def on_invalid_request(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {**err, "loc": [p for p in err.get("loc", ()) if p != "body"]} for err in exc.errors()
        ]
        return self.invalid(request, None, errors)

    def invalid(self, request: Request, task: Task[Any] | None, errors: Sequence[Any]) -> Response:
        """A 422 naming the field at fault (`body` for malformed JSON), without the value sent."""
        declared = ", ".join(task.spec.inputs) if task and task.spec.inputs else "none"
        items = [_validation_item(err, declared) for err in errors]
        first = items[0] if items else {"field": "body", "message": "invalid request"}
        info: dict[str, Any] = request.scope.get(INFO_KEY, {})
        if task is not None:
            info.update(task=task.name, model=task.model, version=task.spec.version)
            self.metrics.errors.labels(task.name, task.model, "TaskInputError").inc()
            self.metrics.calls.labels(task.name, task.model, "422").inc()
        info["error"] = "invalid-input"
        body = problem(
            422,
            "invalid-input",
            f"input {first['field']!r}: {first['message']}",
            title="Invalid input",
            instance=request.url.path,
            request_id=request.scope.get(REQUEST_ID_KEY),
            task=task.name if task else None,
            field=first["field"],
            errors=items,
        )
        return _problem_response(body)

    async def on_http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        kinds = {404: "not-found", 405: "method-not-allowed"}
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() != "allow"}
        if exc.status_code == 405:  # every method of every route on this path, not just the first
            allowed = {
                method
                for route in request.app.router.routes
                if isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE
                for method in route.methods or ()
            }
            headers["allow"] = ", ".join(sorted(allowed))
        body = problem(
            exc.status_code,
            kinds.get(exc.status_code, "http-error"),
            detail,
            instance=request.url.path,
            request_id=request.scope.get(REQUEST_ID_KEY),
        )
        return _problem_response(body, headers)


def _detail(task: Task[Any]) -> TaskDetail:
    spec = task.spec
    return TaskDetail(
        name=spec.name,
        description=spec.description,
        version=spec.version,
        template_hash=spec.template_hash,
        model=task.model,
        output=spec.output_text,
        url=f"/v1/tasks/{spec.name}",
        inputs={
            n: InputInfo(
                type=i.type_text,
                required=i.required,
                default=None if i.required else i.default,
                description=i.description,
            )
            for n, i in spec.inputs.items()
        },
        input_schema=spec.input_model.model_json_schema(),
        output_schema=spec.output_model.model_json_schema()
        if spec.output_model
        else {"type": "string"},
        examples=[
            ExampleInfo(inputs=e.inputs, expect=e.expect, expect_contains=e.expect_contains)
            for e in spec.examples
        ],
    )


def _validation_item(err: Any, declared: str) -> dict[str, str]:
    """One pydantic error as {field, pointer, message, type}, without the input value."""
    loc = [str(p) for p in err.get("loc", ())]
    kind = str(err.get("type", "value_error"))
    if kind == "json_invalid":
        reason = (err.get("ctx") or {}).get("error") or err.get("msg", "not valid JSON")
        return {
            "field": "body",
            "pointer": "",
            "message": f"malformed JSON: {reason}",
            "type": kind,
        }
    field = loc[0] if loc else "body"
    if kind == "missing" and not loc:
        message = f"a JSON object of the inputs is required (declared inputs: {declared})"
    elif kind == "missing":
        message = f"is required (declared inputs: {declared})"
    elif kind == "extra_forbidden":
        message = f"is not declared by the task (declared inputs: {declared})"
    elif not loc and kind in ("model_type", "model_attributes_type", "dict_type"):
        message = "the body must be a JSON object of the inputs"
    else:
        message = str(err.get("msg", "invalid"))
    return {"field": field, "pointer": "/" + "/".join(loc), "message": message, "type": kind}


def _not_ready(registry: TaskRegistry) -> str | None:
    """Why the tasks cannot be called now (no tasks, a model without its key), or `None`."""
    if not len(registry):
        return "no tasks are loaded"
    try:
        for model in sorted({task.model for task in registry.values()}):
            backend, _ = resolve(model)
            settings = getattr(backend, "_settings", None)  # the Anthropic backend's key check
            if callable(settings):
                settings()
    except ConfigurationError as exc:
        return str(exc)
    return None


def _warm_up(registry: TaskRegistry) -> None:
    """Import the provider SDK, build tool schemas and load prices before the first request, so
    the first callers do not pay for it."""
    from promptcast.backends.anthropic import AnthropicBackend, tool_for
    from promptcast.pricing import _calculator

    for task in registry.values():
        try:
            backend, _ = resolve(task.model)
            if isinstance(backend, AnthropicBackend):
                importlib.import_module("anthropic")
                if task.spec.output_model is not None:
                    tool_for(task.spec.output_model)
        except Exception as exc:  # a failed warm-up only makes the first call slower
            logger.warning(
                "warm-up of %s skipped: %s", task.name, scrub(f"{type(exc).__name__}: {exc}")
            )
    try:
        _calculator()
    except Exception as exc:
        logger.warning("warm-up of prices skipped: %s", scrub(f"{type(exc).__name__}: {exc}"))


async def _close_clients(registry: TaskRegistry) -> None:
    """Close this event loop's provider clients, so no connection outlives the server."""
    closed: set[int] = set()
    for task in registry.values():
        try:
            backend, _ = resolve(task.model)
        except ConfigurationError:
            continue
        aclose = getattr(backend, "aclose", None)
        if id(backend) not in closed and callable(aclose):
            closed.add(id(backend))
            await aclose()


# running it


def app_from_env() -> FastAPI:
    """The app as `promptcast serve` builds it in each worker: every setting from the environment."""
    return create_app()


LOG_LEVEL_VAR = "PROMPTCAST_LOG_LEVEL"


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging config: JSON lines on stderr, no access log (the app logs each request)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "promptcast._server_log.JsonFormatter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "promptcast": {"handlers": ["stderr"], "level": level, "propagate": False},
        },
    }


def serve(
    *,
    prompts: list[Path] | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    insecure: bool = False,
) -> None:
    """Check the tasks and the bind address, then run the app on uvicorn until stopped.

    Without tokens, only a loopback address is allowed unless `insecure` is set: an open server on
    a public interface would spend the provider key for anyone who finds it.
    """
    import uvicorn

    if prompts:
        os.environ["PROMPTCAST_PROMPTS"] = os.pathsep.join(str(p) for p in prompts)
        from promptcast._config import reset_defaults

        reset_defaults()
    registry = _default_registry()  # fail here, with file:line, not in each worker
    if not tokens_from_env() and not is_loopback(host) and not insecure:
        raise ConfigurationError(
            f"refusing to serve on {host} without bearer tokens: set PROMPTCAST_API_TOKENS "
            "(comma-separated), bind to 127.0.0.1, or pass --insecure to allow anyone to call",
            env_var="PROMPTCAST_API_TOKENS",
        )
    level = os.environ.get(LOG_LEVEL_VAR, "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigurationError(
            f"{LOG_LEVEL_VAR} must be DEBUG, INFO, WARNING or ERROR, got {level!r}",
            env_var=LOG_LEVEL_VAR,
        )
    _env_int("PROMPTCAST_MAX_CONCURRENCY", DEFAULT_MAX_CONCURRENCY)
    _env_int("PROMPTCAST_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)
    logger.debug("serving %d task(s)", len(registry))
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal: make that a
    # clean exit 0 rather than a KeyboardInterrupt traceback or a death by signal
    stop = signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        uvicorn.run(
            "promptcast.server:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=log_config(level),
            access_log=False,
            server_header=False,
            proxy_headers=False,
        )
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, stop)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)
