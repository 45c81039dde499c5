"""`POST /v1/tasks/{name}`: the JSON body validated in strict mode, the task called under the
app's concurrency limit, and its result, or a problem detail, counted in the metrics.

A call whose client disconnects is cancelled (no more provider spend for an answer nobody will
read) and counted with status 499.
"""

from __future__ import annotations

import asyncio
import codecs
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from fastapi import Body, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from promptcast.errors import PromptcastError
from promptcast.media import MediaTooLargeError, described
from promptcast.result import Attempt, Run
from promptcast.server import context
from promptcast.server.gate import CLIENT_CLOSED, logger
from promptcast.server.models import CallUsage
from promptcast.server.problems import (
    invalid_input,
    problem,
    problem_for_error,
    problem_response,
    scrub,
)
from promptcast.server.state import ServerState
from promptcast.task import Task

__all__ = ["TaskEndpoint", "dump_json", "utf8"]

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class TaskEndpoint:
    """The run route of one task: what FastAPI documents, and the handler that serves it."""

    def __init__(self, task: Task[Any], state: ServerState) -> None:
        self.task = task
        self.state = state
        self.required = any(spec.required for spec in task.spec.inputs.values())
        self.declared = ", ".join(task.spec.inputs) or "none"

    def documented(self) -> Callable[..., Awaitable[Response]]:
        """A function whose body parameter is typed with the task's input model, so the OpenAPI
        document shows that model. `route_class` serves it with `handle` instead."""

        async def run_task(request: Request, inputs: BaseModel | None = None) -> Response:
            return await self.handle(request)  # pragma: no cover - never called, see route_class

        body = inspect.Parameter(
            "inputs",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=self.task.spec.input_model,
            default=inspect.Parameter.empty if self.required else Body(None),
        )
        request = inspect.Parameter(
            "request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request
        )
        run_task.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [request, body], return_annotation=Response
        )
        run_task.__name__ = f"run_{self.task.name}"
        return run_task

    def route_class(self) -> type[APIRoute]:
        """A route class whose handler validates the body itself, straight from the JSON bytes in
        strict mode: JSON types must match the schema (`false` is not an int, `"3"` is not one
        either), as the OpenAPI document promises. FastAPI's own handler would validate the
        parsed body in Python's lax mode."""
        handler: Handler = self.handle

        class TaskRoute(APIRoute):
            def get_route_handler(self) -> Handler:
                return handler

        return TaskRoute

    async def handle(self, request: Request) -> Response:
        task = self.task
        model = task.spec.input_model
        # a leading byte-order mark (a file saved by Notepad, sent with curl -d @file) is not
        # part of the JSON: dropped, as for the files promptcast reads
        raw = (await request.body()).removeprefix(codecs.BOM_UTF8)
        if not raw.strip():
            if self.required:
                missing = [{"type": "missing", "loc": (), "msg": "body is empty"}]
                return self._invalid(request, missing, 1)
            return await self.call(request, model())
        # JSON only: a browser page cannot send it cross-site without a CORS preflight
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        coding = request.headers.get("content-encoding", "").strip().lower()
        refused = None
        if media != "application/json" and not (
            media.startswith("application/") and media.endswith("+json")
        ):
            refused = "send the inputs as a JSON object with 'Content-Type: application/json'"
        elif coding not in ("", "identity"):  # gzip bytes would be read as (not UTF-8) JSON
            refused = f"send the body uncompressed (Content-Encoding {coding[:40]!r} is not read)"
        if refused is not None:
            body = problem(
                415,
                "unsupported-media-type",
                refused,
                instance=request.url.path,
                request_id=context.request_id(request),
                task=task.name,
            )
            # counted and logged as the task's, like its 422s
            context.log_info(request).update(
                task=task.name,
                model=task.model,
                version=task.spec.version,
                error="unsupported-media-type",
            )
            self.state.metrics.calls.labels(task.name, task.model, "415").inc()
            # RFC 7694: a 415 for a content coding says which ones are read
            return problem_response(body, {"accept-encoding": "identity"} if coding else None)
        try:
            inputs = model.model_validate_json(raw, strict=True)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False, include_context=False)
            if errors[0]["type"] == "json_invalid" and not _is_utf8(raw):  # UTF-16, Latin-1, …
                errors[0]["msg"] = "the body is not UTF-8; send the JSON encoded as UTF-8"
            large = next((e for e in errors if e["type"] == "media_too_large"), None)
            if large is not None:  # an image or document over its limit: 413, as for the body
                field = ".".join(str(p) for p in large["loc"])
                error = MediaTooLargeError(task.name, field, large["msg"])
                return self._too_large(request, error)
            return self._invalid(request, errors, exc.error_count())
        return await self.call(request, inputs)

    def _too_large(self, request: Request, error: MediaTooLargeError) -> Response:
        task = self.task
        context.log_info(request).update(
            task=task.name, model=task.model, version=task.spec.version, error="media-too-large"
        )
        self._count_error(task.model, error, 413)
        body, _ = problem_for_error(
            error, instance=request.url.path, request_id=context.request_id(request)
        )
        return problem_response(body)

    def _invalid(self, request: Request, errors: list[Any], total: int) -> Response:
        task = self.task
        info = context.log_info(request)
        info.update(task=task.name, model=task.model, version=task.spec.version)
        info["error"] = "invalid-input"
        self.state.metrics.errors.labels(task.name, task.model, "TaskInputError").inc()
        self.state.metrics.calls.labels(task.name, task.model, "422").inc()
        body = invalid_input(request, errors, task=task.name, declared=self.declared, total=total)
        return problem_response(body)

    async def call(self, request: Request, inputs: BaseModel) -> Response:
        """Run the task, unless and until the client disconnects."""
        running = asyncio.ensure_future(self._call(request, inputs))
        watching = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait((running, watching), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in (running, watching):
                if not future.done():
                    future.cancel()
        if running.cancelled() or not running.done():
            await asyncio.gather(running, return_exceptions=True)
            task = self.task
            self.state.metrics.calls.labels(task.name, task.model, str(CLIENT_CLOSED)).inc()
            context.log_info(request)["error"] = "client-disconnected"
            return Response(status_code=CLIENT_CLOSED)  # dropped by the gate: nobody listens
        return running.result()

    async def _call(self, request: Request, inputs: BaseModel) -> Response:
        task = self.task
        spec = task.spec
        state = self.state
        metrics = state.metrics
        info = context.log_info(request)
        model = task.model
        info.update(task=spec.name, model=model, version=spec.version)
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
        try:
            metrics.in_flight.inc()
            run = await task.arun(**values)
        except PromptcastError as exc:
            return problem_response(*self._failed(request, exc, model, info))
        except Exception as exc:
            self._count_error(model, exc, 500)
            raise
        finally:
            metrics.in_flight.dec()
            limit.release()
        return self._answer(run, time.perf_counter() - started, info)

    def _answer(self, run: Run[Any], elapsed: float, info: dict[str, Any]) -> Response:
        name = self.task.name
        metrics = self.state.metrics
        usage = run.usage
        cost = usage.cost_usd
        metrics.calls.labels(name, run.model, "200").inc()
        metrics.latency.labels(name, run.model).observe(elapsed)
        self._count_attempts(run.attempt_log)
        info.update(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=cost,
            attempts=run.attempts,
            output_mode=run.output_mode,
        )
        if usage.cache_read_tokens or usage.cache_write_tokens:
            info.update(
                cache_read_tokens=usage.cache_read_tokens,
                cache_write_tokens=usage.cache_write_tokens,
            )
        result = self.state.results[name](
            output=run.output,
            usage=CallUsage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_tokens=usage.cache_read_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                cost_usd=cost,
            ),
            model=run.model,
            task=name,
            task_version=run.task_version,
            template_hash=run.template_hash,
            attempts=run.attempts,
        )
        return Response(utf8(dump_json(result)), media_type="application/json")

    def _failed(
        self, request: Request, exc: PromptcastError, model: str, info: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """The problem document (and headers) for a failed call, with its error and whatever
        tokens it spent counted in the metrics and the log line."""
        body, headers = problem_for_error(
            exc,
            instance=request.url.path,
            request_id=context.request_id(request),
            task=self.task.name,
        )
        self._count_error(getattr(exc, "model", None) or model, exc, body["status"])
        usage = getattr(exc, "usage", None)
        attempts: tuple[Attempt, ...] = getattr(exc, "attempt_log", ())
        self._count_attempts(attempts)  # a failed call may still have made requests and spent
        if usage is not None:
            spent = usage.cost_usd
            if not attempts:
                self._count_usage(model, usage.input_tokens, usage.output_tokens, spent)
            info.update(
                input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, cost_usd=spent
            )
        info.update(error=type(exc).__name__, error_detail=scrub(str(exc)))
        return body, headers

    def _count_attempts(self, attempts: Sequence[Attempt]) -> None:
        """Each provider request, with its tokens and cost, under the model it went to: a
        fallback's answer comes after the first model's failed or invalid attempts."""
        for attempt in attempts:
            spent = attempt.usage
            self.state.metrics.provider_requests.labels(self.task.name, attempt.model).inc()
            self._count_usage(
                attempt.model,
                spent.input_tokens,
                spent.output_tokens,
                spent.cost_usd,
                cache_read=spent.cache_read_tokens,
                cache_write=spent.cache_write_tokens,
            )

    def _count_error(self, model: str, exc: Exception, status: int) -> None:
        metrics = self.state.metrics
        metrics.errors.labels(self.task.name, model, type(exc).__name__).inc()
        metrics.calls.labels(self.task.name, model, str(status)).inc()

    def _count_usage(
        self,
        model: str,
        tokens_in: int,
        tokens_out: int,
        cost: float | None = None,
        *,
        cache_read: int = 0,
        cache_write: int = 0,
    ) -> None:
        metrics = self.state.metrics
        name = self.task.name
        if tokens_in:
            metrics.tokens.labels(name, model, "input").inc(tokens_in)
        if tokens_out:
            metrics.tokens.labels(name, model, "output").inc(tokens_out)
        if cache_read:
            metrics.tokens.labels(name, model, "cache_read").inc(cache_read)
        if cache_write:
            metrics.tokens.labels(name, model, "cache_write").inc(cache_write)
        if cost:
            metrics.cost.labels(name, model).inc(cost)


async def _disconnected(request: Request) -> None:
    """Return when the client goes away. The body has been read, so the next ASGI message is the
    disconnect (or nothing, until the answer is sent and this is cancelled)."""
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.01)  # a server that answers at once must not make this spin


def dump_json(model: BaseModel, **options: Any) -> str:
    """`model.model_dump_json(**options)`, or the same JSON from `json` when a string holds a
    lone surrogate (a model's cut-off emoji escape, which pydantic's serializer refuses)."""
    try:
        return model.model_dump_json(**options)
    except PydanticSerializationError:
        data = model.model_dump(mode="json", **options)
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def utf8(text: str) -> bytes:
    """JSON `text` as UTF-8; a lone surrogate, only ever inside a JSON string, is written as its
    JSON escape (`\\ud83d`), so the client reads back the value the model gave."""
    return text.encode("utf-8", "backslashreplace")


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _scrubbed(data: Any) -> Any:
    """`data` (JSON-able inputs, for a DEBUG log line) with anything credential-shaped removed."""
    return json.loads(scrub(json.dumps(data, ensure_ascii=False)))
