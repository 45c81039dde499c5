"""Logging for `promptcast serve`: standard-library records with structured `extra=` fields,
rendered as one JSON object per line by python-json-logger, and uvicorn's logging configuration
that writes them.

The server logs through plain `logging` (`logger.info("request", extra={...})`), so under an
application's own logging configuration its records are ordinary records whose fields are
attributes, never JSON text inside a message. Every line goes through the shared scrubber;
exception info is reduced to the exception's type and message, so a traceback never reaches the
log. When an OpenTelemetry span is current, the line carries its `trace_id` and `span_id`, so a
log line leads to its trace.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

from promptcast import _json
from promptcast._terminal import json_line
from promptcast.server.problems import scrub

__all__ = ["JsonFormatter", "log_config"]

REQUEST_LOGGER = "promptcast.server"


_TRACEBACK = "Traceback (most recent call last):"


class JsonFormatter(_JsonFormatter):
    """One JSON object per line: `ts`, `level`, `logger`, `message`, then the record's extras."""

    def __init__(self) -> None:
        super().__init__(
            ["asctime", "levelname", "name", "message"],
            rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
            json_ensure_ascii=False,
            json_default=str,
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"

    def formatException(self, ei: Any) -> str:
        """`Type: first line of the message`; never a traceback."""
        exc = ei[1] if isinstance(ei, tuple) else None
        if exc is None:
            return ""
        text = str(exc).splitlines()[0] if str(exc) else ""
        return f"{type(exc).__name__}: {text}"

    def formatStack(self, stack_info: str) -> str:
        return ""

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        log_data["level"] = str(log_data.get("level", "")).lower()
        if "exc_info" in log_data:
            error = log_data.pop("exc_info")
            if error:
                log_data.setdefault("error", error)
        log_data.pop("stack_info", None)
        message = log_data.get("message")
        if isinstance(message, str) and _TRACEBACK in message:
            # a traceback passed as the message itself (Starlette sends its lifespan failures so,
            # and uvicorn logs them): its last line, the exception, only
            head, _, trace = message.partition(_TRACEBACK)
            lines = [line for line in trace.splitlines() if line.strip()]
            log_data["message"] = " ".join(filter(None, (head.strip(), lines[-1] if lines else "")))
        log_data.pop("color_message", None)  # uvicorn's copy of the message in ANSI colours
        if "opentelemetry.trace" in sys.modules:  # never imported just for logging
            log_data.update(_trace_ids())
        return log_data

    def jsonify_log_record(self, log_data: dict[str, Any]) -> str:
        """The line, scrubbed once as a whole (one scan per line, not one per field: a request's
        line has a dozen fields); a scrub that would break the JSON falls back to each field."""
        line = json_line(super().jsonify_log_record(log_data))  # one inert line
        clean = scrub(line)
        if clean == line:
            return line
        try:
            _json.loads(clean)
        except ValueError:
            return json_line(super().jsonify_log_record(_scrubbed(log_data)))
        return clean


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {key: _scrubbed(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrubbed(item) for item in value]
    return value


def _trace_ids() -> dict[str, str]:
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging config: JSON lines on stderr, no access log (the gate logs each request)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
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
