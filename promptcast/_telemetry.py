"""OpenTelemetry traces and metrics of task calls, in the GenAI semantic conventions.

Only the OpenTelemetry API is used: the SDK, exporters and sampling are the application's choice
(`opentelemetry-instrument`, Logfire, their own `TracerProvider`). `import promptcast` never
imports it, and a call imports it only once something else has (setting up an SDK does, and so
does the anthropic SDK); where it is not installed, not imported yet, or imported with no tracer
or meter provider set, every entry point hands back a shared do-nothing object: no span is
started and no attribute built.

What a call emits:

- a task span `task {name}` (INTERNAL) around the whole call, current while it runs, with the
  `promptcast.*` attributes (task, version, template hash, output mode, cache hit, attempts, cost);
- under it one CLIENT span `chat {model}` per provider request: transport retries and validation
  re-asks are siblings, each with the GenAI attributes (`gen_ai.provider.name`,
  `gen_ai.request.model`, `gen_ai.response.*`, `gen_ai.usage.*`, `server.address`, `error.type`
  on failure) and `promptcast.attempt` / `promptcast.retry`;
- the `gen_ai.client.token.usage` and `gen_ai.client.operation.duration` histograms per request.

Prompt and reply text go into spans only when the application opts in with the conventions'
switch, `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true` (credentials scrubbed even
then). The anthropic SDK's own `anthropic.messages.create` span is switched off on the clients
promptcast creates: ours carries the same attributes, and two CLIENT spans per request would count
every token twice. A client handed in (`AnthropicBackend(client=...)`) keeps its own setting, and
its span then nests under ours.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from promptcast.errors import BackendError

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from promptcast.backends.base import Backend, ModelReply, ModelRequest
    from promptcast.result import Run, Usage
    from promptcast.spec import TaskSpec

__all__ = [
    "CAPTURE_CONTENT_ENV",
    "NO_REQUEST_SPAN",
    "NO_TASK_SPAN",
    "RequestSpan",
    "RunSpan",
    "TaskSpan",
    "capture_content",
    "request_span",
    "run_span",
    "task_span",
]

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""The GenAI conventions' content-capture switch: prompt and reply text in spans only when set."""

SCOPE = "promptcast"

# The conventions' bucket advice for the two GenAI client histograms.
_TOKEN_BUCKETS = [4**i for i in range(14)]
_DURATION_BUCKETS = [0.01 * 2**i for i in range(14)]

# litellm's provider prefixes spelled as the conventions' `gen_ai.provider.name` values
_PROVIDER_NAMES = {
    "azure": "azure.ai.openai",
    "azure_ai": "azure.ai.inference",
    "bedrock": "aws.bedrock",
    "gemini": "gcp.gemini",
    "vertex_ai": "gcp.vertex_ai",
    "mistral": "mistral_ai",
    "watsonx": "ibm.watsonx.ai",
    "xai": "x_ai",
}


def capture_content() -> bool:
    """Whether the application opted in to prompt and reply text in spans."""
    value = os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower()
    return value in {"true", "1", "yes", "span_only", "span_and_event"}


class _Otel:
    """The API's modules and promptcast's tracer, meter and instruments, made once."""

    def __init__(self) -> None:
        from opentelemetry import context, metrics, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self.context = context
        self.trace = trace
        self.client = SpanKind.CLIENT
        self.internal = SpanKind.INTERNAL
        self.error_code = StatusCode.ERROR
        self.status = Status
        version = _version()
        self.tracer = trace.get_tracer(SCOPE, version)
        meter = metrics.get_meter(SCOPE, version or "")
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )

        self.metrics = metrics
        self.idle_tracing = trace.ProxyTracerProvider
        try:  # the API's stand-in until an SDK is set; private, so looked up defensively
            from opentelemetry.metrics._internal import _ProxyMeterProvider

            self.idle_metrics: type = _ProxyMeterProvider
        except ImportError:  # pragma: no cover - another API version: always record
            self.idle_metrics = type(None)

    def active(self) -> bool:
        """Whether an SDK (or any real provider) is set for traces or metrics: without one,
        spans and measurements would be dropped, so none is started (two type checks a call)."""
        return not isinstance(
            self.trace.get_tracer_provider(), self.idle_tracing
        ) or not isinstance(self.metrics.get_meter_provider(), self.idle_metrics)

    def fail(self, span: Span, error: BaseException, kind: str) -> None:
        span.set_attribute("error.type", kind)
        span.set_status(self.status(self.error_code, f"{type(error).__name__}"))


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("promptcast")
    except PackageNotFoundError:
        return None


logger = logging.getLogger("promptcast.telemetry")
_reported: set[str] = set()
F = TypeVar("F", bound=Callable[..., Any])


def _never_fails(fallback: Callable[..., Any] = lambda *args: None) -> Callable[[F], F]:
    """Telemetry never fails a call: the SDK runs the application's span processors, exporters
    and metric readers inside `start_span`, `end` and `record`, and one that raises would end
    every task call (after the provider was paid) or replace the call's own error. Such a
    failure is logged once per entry point and the call goes on; `fallback(*args)` is returned."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def guarded(*args: Any) -> Any:
            try:
                return function(*args)
            except Exception as exc:
                where = function.__qualname__.lstrip("_")
                if where not in _reported:
                    _reported.add(where)
                    logger.warning(
                        "OpenTelemetry raised %s in promptcast's %s: %s; the call goes on, and "
                        "its spans or metrics may be incomplete (logged once)",
                        type(exc).__name__,
                        where,
                        exc,
                    )
                return fallback(*args)

        return guarded  # type: ignore[return-value]

    return decorate


_loaded: list[_Otel | None] = []
_loading = threading.Lock()


def _otel() -> _Otel | None:
    """The API, loaded on first use; `None` when it is not installed (checked once), and while
    nothing has imported it: setting up an SDK imports it, so until then there is nothing to
    record and no reason to import it (a scripted or local call stays free of it)."""
    if not _loaded:
        if "opentelemetry" not in sys.modules:
            return None
        with _loading:  # one set of instruments, whichever thread calls first
            if not _loaded:
                try:
                    _loaded.append(_Otel())
                except ImportError:
                    _loaded.append(None)
    return _loaded[0]


def error_type(error: BaseException) -> str:
    """A low-cardinality `error.type`: the provider's HTTP status, else the exception's class."""
    status = getattr(error, "status", None)
    return str(status) if isinstance(status, int) and status else type(error).__name__


class _Current:
    """Makes a span the current one for a `with` block (spans started inside nest under it)."""

    __slots__ = ("_otel", "_span", "_token")

    def __init__(self, otel: _Otel | None, span: Span | None) -> None:
        self._otel = otel
        self._span = span
        self._token: object = None

    def __enter__(self) -> None:
        if self._span is not None and self._otel is not None:
            self._token = self._otel.context.attach(
                self._otel.trace.set_span_in_context(self._span)
            )

    def __exit__(self, kind: object, error: object, tb: object) -> None:
        if self._token is not None and self._otel is not None:
            self._otel.context.detach(self._token)
            self._token = None


class TaskSpan:
    """The span of one task call. The call's plan owns it (so a stream's span ends when the
    stream does): `finish(run)` or `fail(error)` ends it; provider spans name it as their parent
    explicitly, since a plan's steps run in its driver's context."""

    __slots__ = ("_cost", "_otel", "_parent", "_span")

    def __init__(self, otel: _Otel | None, span: Span | None) -> None:
        self._otel = otel
        self._span = span
        self._parent: Any = None
        self._cost: float | None = 0.0

    def spent(self, cost: float | None) -> None:
        """Add one request's cost (`None`: unknown, so the total is unknown)."""
        if self._cost is not None:
            self._cost = None if cost is None else self._cost + cost

    def parent(self) -> Any:
        """The context whose current span is this one (for its children)."""
        if self._parent is None and self._otel is not None and self._span is not None:
            self._parent = self._otel.trace.set_span_in_context(self._span)
        return self._parent

    @_never_fails(lambda self, run: run)
    def finish(self, run: Run[Any]) -> Run[Any]:
        span = self._span
        if span is None:
            return run
        if span.is_recording():
            attributes = {
                "promptcast.model": run.model,
                "promptcast.cache_hit": run.cached,
                "promptcast.attempts": run.attempts,
                **self._total(),
            }
            mode = getattr(run, "output_mode", None)
            if mode:
                attributes["promptcast.output_mode"] = mode
            span.set_attributes(attributes)
        span.end()
        return run

    @_never_fails()
    def fail(self, error: BaseException) -> None:
        span, otel = self._span, self._otel
        if span is None or otel is None:
            return
        if span.is_recording():
            if isinstance(error, GeneratorExit):  # a stream closed before its end: no error
                span.set_attribute("promptcast.closed_early", True)
            else:
                otel.fail(span, error, type(error).__name__)
            span.set_attributes(self._total())
        span.end()

    def _total(self) -> dict[str, Any]:
        """The call's cost: the sum of its client spans' (so the call is not priced twice).
        Tokens stay on the client spans only (`gen_ai.usage.*`), so a backend that sums them
        over spans counts each token once."""
        return {} if self._cost is None else {"promptcast.cost_usd": round(self._cost, 10)}


NO_TASK_SPAN = TaskSpan(None, None)


@_never_fails(lambda spec: NO_TASK_SPAN)
def task_span(spec: TaskSpec) -> TaskSpan:
    """Start the span of a call of the task `spec`; its parent is the current span."""
    otel = _otel()
    if otel is None or not otel.active():
        return NO_TASK_SPAN
    span = otel.tracer.start_span(
        f"task {spec.name}",
        kind=otel.internal,
        attributes={
            "promptcast.task": spec.name,
            "promptcast.task.version": str(spec.version),
            "promptcast.template_hash": spec.template_hash,
        },
    )
    return TaskSpan(otel, span)


class RunSpan(_Current):
    """A span around bulk work (a batch or eval run, or one of its items). `with span:` makes it
    current and ends it; a run whose items run as their own asyncio tasks instead names it as
    their `parent` and calls `end()` (an async generator must not leave a span current)."""

    __slots__ = ()

    def __enter__(self) -> RunSpan:  # type: ignore[override]
        super().__enter__()
        return self

    def __exit__(self, kind: object, error: object, tb: object) -> None:
        super().__exit__(kind, error, tb)
        self.end(error if isinstance(error, BaseException) else None)

    @_never_fails()
    def end(self, error: BaseException | None = None) -> None:
        span, otel = self._span, self._otel
        if span is None or otel is None:
            return
        if error is not None and span.is_recording():
            otel.fail(span, error, type(error).__name__)
        span.end()

    @_never_fails()
    def set(self, name: str, value: Any) -> None:
        """Set an attribute (when the span records)."""
        if self._span is not None and self._span.is_recording():
            self._span.set_attribute(name, value)

    def context(self) -> Any:
        if self._otel is None or self._span is None:
            return None
        return self._otel.trace.set_span_in_context(self._span)


_NO_RUN_SPAN = RunSpan(None, None)


def run_span(name: str, attributes: dict[str, Any], *, parent: RunSpan | None = None) -> RunSpan:
    """Start a span around bulk work: a child of `parent`, else of the current span."""
    return _run_span(name, attributes, parent)


@_never_fails(lambda name, attributes, parent: _NO_RUN_SPAN)
def _run_span(name: str, attributes: dict[str, Any], parent: RunSpan | None) -> RunSpan:
    otel = _otel()
    if otel is None or not otel.active():
        return _NO_RUN_SPAN
    context = parent.context() if parent is not None else None
    span = otel.tracer.start_span(name, context, kind=otel.internal, attributes=attributes)
    return RunSpan(otel, span)


class RequestSpan(_Current):
    """The CLIENT span and the metrics of one provider request; `ok(reply, usage)` or
    `failed(error)` ends it. Current inside `with` (the driver sends the request there)."""

    __slots__ = ("_content", "_metric", "_parent", "_started")

    def __init__(
        self,
        otel: _Otel | None,
        span: Span | None,
        metric: dict[str, Any],
        parent: TaskSpan | None = None,
        content: bool = False,
    ) -> None:
        super().__init__(otel, span)
        self._metric = metric
        self._parent = parent
        self._content = content  # the content-capture switch, read once per request
        self._started = time.perf_counter()

    def __exit__(self, kind: object, error: object, tb: object) -> None:
        super().__exit__(kind, error, tb)
        # a `BackendError` goes back to the plan, which calls `failed`; anything else ends the
        # call here, so the span ends here
        if isinstance(error, Exception) and not isinstance(error, BackendError):
            self.failed(error)

    @_never_fails()
    def ok(self, reply: ModelReply, usage: Usage) -> None:
        """End the span of a reply; `usage` is the reply's own `Usage`, priced here for the
        span's cost (it keeps the price, so the call's total is not priced again)."""
        otel = self._otel
        if otel is None:
            return
        elapsed = time.perf_counter() - self._started
        read, write = reply.cache_read_tokens, reply.cache_write_tokens
        input_tokens = reply.input_tokens + read + write  # the conventions count cached input too
        metric = self._metric
        if reply.response_model:
            metric["gen_ai.response.model"] = reply.response_model  # this request's own dict
        otel.duration.record(elapsed, metric)
        otel.tokens.record(input_tokens, {**metric, "gen_ai.token.type": "input"})
        otel.tokens.record(reply.output_tokens, {**metric, "gen_ai.token.type": "output"})
        span = self._span
        if span is None:
            return
        if span.is_recording():
            attributes: dict[str, Any] = {
                "gen_ai.usage.input_tokens": input_tokens,
                "gen_ai.usage.output_tokens": reply.output_tokens,
            }
            if read or write:  # the cache attributes only where the provider reports them
                attributes["gen_ai.usage.cache_read.input_tokens"] = read
                attributes["gen_ai.usage.cache_creation.input_tokens"] = write
            if reply.response_id:
                attributes["gen_ai.response.id"] = reply.response_id
            if reply.response_model:
                attributes["gen_ai.response.model"] = reply.response_model
            if reply.finish_reason:
                attributes["gen_ai.response.finish_reasons"] = (reply.finish_reason,)
            cost = _cost(usage)
            if cost is not None:
                attributes["promptcast.cost_usd"] = cost
            if self._parent is not None:
                self._parent.spent(cost)
            if self._content:
                attributes["gen_ai.output.messages"] = _output_messages(reply)
            span.set_attributes(attributes)
        span.end()

    @_never_fails()
    def failed(self, error: BaseException) -> None:
        otel = self._otel
        if otel is None:
            return
        kind = error_type(error)
        otel.duration.record(
            time.perf_counter() - self._started, {**self._metric, "error.type": kind}
        )
        span = self._span
        if span is None:
            return
        if span.is_recording():
            otel.fail(span, error, kind)
        span.end()


NO_REQUEST_SPAN = RequestSpan(None, None, {})


def request_span(
    backend: Backend,
    request: ModelRequest,
    *,
    attempt: int,
    retry: int,
    parent: TaskSpan = NO_TASK_SPAN,
) -> RequestSpan:
    """Start the span of one provider request."""
    return _request_span(backend, request, attempt, retry, parent)


@_never_fails(lambda *args: NO_REQUEST_SPAN)
def _request_span(
    backend: Backend, request: ModelRequest, attempt: int, retry: int, parent: TaskSpan
) -> RequestSpan:
    otel = _otel()
    if otel is None or not otel.active():
        return NO_REQUEST_SPAN
    provider = provider_name(backend.provider, request.model)
    address, port = _server(backend.endpoint(request.model))
    metric: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": request.model,
    }
    if address:
        metric["server.address"] = address
        if port is not None:  # the conventions want the port wherever the address is
            metric["server.port"] = port
    attributes: dict[str, Any] = {
        **metric,
        "gen_ai.request.max_tokens": request.max_tokens,
        "gen_ai.output.type": "text" if request.output_model is None else "json",
        "promptcast.attempt": attempt,
        "promptcast.retry": retry,
    }  # the task, its version, template hash and output mode are on the parent task span
    if request.temperature is not None:
        attributes["gen_ai.request.temperature"] = request.temperature
    content = capture_content()
    if content:
        attributes.update(_input_messages(request))
    span = otel.tracer.start_span(
        f"chat {request.model}", parent.parent(), kind=otel.client, attributes=attributes
    )
    return RequestSpan(otel, span, metric, parent, content)


def provider_name(provider: str, model_name: str) -> str:
    """`gen_ai.provider.name` for a backend's provider (litellm's prefixes mapped to the
    conventions' names; a forced `litellm/<provider>/<model>` named by its provider)."""
    if provider == "litellm":
        provider = model_name.partition("/")[0]
    return _PROVIDER_NAMES.get(provider, provider)


@lru_cache(maxsize=256)
def _server(endpoint: str) -> tuple[str | None, int | None]:
    try:
        parts = urlsplit(endpoint)
        return parts.hostname, parts.port
    except ValueError:
        return None, None


def _cost(usage: Usage) -> float | None:
    try:
        return usage.cost_usd
    except Exception:  # a price lookup must never fail a call
        return None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", "")) if isinstance(part, dict) else str(part) for part in content
        )
    return str(content)


def _scrubbed_json(value: Any) -> str:
    from promptcast._secrets import scrub_data

    return json.dumps(scrub_data(value), ensure_ascii=False, default=str)


def _input_messages(request: ModelRequest) -> dict[str, str]:
    """The conventions' `gen_ai.system_instructions` and `gen_ai.input.messages` (opt-in only)."""
    prompt = request.prompt
    messages = [
        {"role": m["role"], "parts": [{"type": "text", "content": _text(m["content"])}]}
        for m in [*prompt.messages, *request.history]
        if isinstance(m, dict) and "role" in m
    ]
    attributes = {"gen_ai.input.messages": _scrubbed_json(messages)}
    if prompt.system:
        attributes["gen_ai.system_instructions"] = _scrubbed_json(
            [{"type": "text", "content": _text(prompt.system)}]
        )
    return attributes


def _output_messages(reply: ModelReply) -> str:
    message: dict[str, Any] = {
        "role": "assistant",
        "parts": [{"type": "text", "content": reply.text}],
    }
    if reply.finish_reason:
        message["finish_reason"] = reply.finish_reason
    return _scrubbed_json([message])
