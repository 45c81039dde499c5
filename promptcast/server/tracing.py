"""Trace context for the server: a request that carries `traceparent` continues that trace.

When an OpenTelemetry instrumentation of the app already made a server span (e.g.
`opentelemetry-instrument promptcast serve`, which instruments FastAPI), it has continued the
incoming trace and this layer only passes the request on: one HTTP span per request, never two.
Otherwise it extracts the incoming context with the configured propagators (W3C `traceparent`
and baggage by default) and opens a SERVER span `{method} {route}` around the request, so the
task and provider spans land in the caller's trace.

Plain ASGI (like the gate), and added only when the OpenTelemetry API is installed.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["TraceContext", "available"]


def available() -> bool:
    """Whether the OpenTelemetry API can be imported (nothing is imported when it cannot)."""
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        return False
    return True


class TraceContext:
    """Continues an incoming trace; the server span it opens ends when the answer is sent."""

    def __init__(self, app: ASGIApp) -> None:
        from opentelemetry import context, propagate, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        from promptcast import __version__

        self.app = app
        self._context = context
        self._propagate = propagate
        self._trace = trace
        self._server = SpanKind.SERVER
        self._error = Status(StatusCode.ERROR)
        self._tracer = trace.get_tracer("promptcast.server", __version__)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._trace.get_current_span().get_span_context().is_valid:
            await self.app(scope, receive, send)  # not HTTP, or instrumented already
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope.get("headers", ())
            if name in (b"traceparent", b"tracestate", b"baggage")
        }
        parent = self._propagate.extract(carrier) if carrier else None
        method = str(scope.get("method", "HTTP"))
        span = self._tracer.start_span(
            method,
            parent,
            kind=self._server,
            attributes={
                "http.request.method": method,
                "url.path": str(scope.get("path", "")),
                "url.scheme": str(scope.get("scheme", "http")),
            },
        )
        status = 0

        async def traced_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        token = self._context.attach(self._trace.set_span_in_context(span, parent))
        try:
            await self.app(scope, receive, traced_send)
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(self._error)
            raise
        finally:
            self._context.detach(token)
            _finish(span, scope, status, self._error)
            span.end()


def _finish(span: Any, scope: Scope, status: int, error: Any) -> None:
    if not span.is_recording():
        return
    route = getattr(scope.get("route"), "path", None)
    if isinstance(route, str):
        span.set_attribute("http.route", route)
        span.update_name(f"{scope.get('method', 'HTTP')} {route}")
    if status:
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_attribute("error.type", str(status))
            span.set_status(error)
