"""Server logging: standard-library records with structured fields, rendered as JSON lines by
python-json-logger; credentials scrubbed from every field; no traceback; plain text under another
logging configuration."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from promptcast.server.gate import logger
from promptcast.server.logs import JsonFormatter, log_config

KEY = "sk-ant-api03-" + "Zq9Xw8Vu7Ts6Rq5P" * 5


def record(
    message: str, *args: object, exc: BaseException | None = None, **extra: object
) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logger.makeRecord(
        logger.name, logging.INFO, __file__, 1, message, args, exc_info, extra=extra
    )


def test_a_record_is_one_json_line_with_its_extra_fields() -> None:
    line = JsonFormatter().format(
        record("request %s %s %s", "POST", "/v1/tasks/x", 200, event="request", status=200)
    )
    assert "\n" not in line
    data = json.loads(line)
    assert data["message"] == "request POST /v1/tasks/x 200"
    assert data["level"] == "info" and data["logger"] == "promptcast.server"
    assert data["ts"].endswith("Z") and len(data["ts"]) == len("2026-11-24T12:00:00.000Z")
    assert data["event"] == "request" and data["status"] == 200


@pytest.mark.parametrize("code", [*range(0x7F, 0xA0), 0x2028, 0x2029])
def test_characters_json_leaves_raw_are_escaped_and_read_back(code: int) -> None:
    """DEL and C1 controls would drive a terminal, U+0085/U+2028/U+2029 would end the line."""
    text = f"a{chr(code)}b"
    line = JsonFormatter().format(record("request %s", text, path=text))
    assert chr(code) not in line and f"\\u{code:04x}" in line
    data = json.loads(line)
    assert data["message"] == f"request {text}" and data["path"] == text


def test_uvicorns_colour_copy_of_a_message_is_not_logged() -> None:
    made = record("Started server process [%d]", 7, color_message="Started \x1b[36m%d\x1b[0m")
    data = json.loads(JsonFormatter().format(made))
    assert data["message"] == "Started server process [7]" and "color_message" not in data


@pytest.mark.parametrize(
    "where",
    ["message", "field", "nested", "list", "exception"],
)
def test_credentials_are_scrubbed_from_every_part_of_a_line(where: str) -> None:
    if where == "message":
        made = record("key is %s", KEY)
    elif where == "field":
        made = record("x", error_detail=f"HTTP 401 for {KEY}")
    elif where == "nested":
        made = record("x", inputs={"text": {"deep": f"token {KEY}"}})
    elif where == "list":
        made = record("x", inputs=["ok", f"Bearer {KEY}"])
    else:
        try:
            raise RuntimeError(f"failed with {KEY}\nsecond line")
        except RuntimeError as exc:
            made = record("boom", exc=exc)
    line = JsonFormatter().format(made)
    assert KEY not in line and "[REDACTED]" in line
    json.loads(line)


def test_exception_info_is_its_type_and_first_line_never_a_traceback() -> None:
    try:
        raise ValueError("bad value\nmore detail")
    except ValueError as exc:
        made = record("failed", exc=exc)
    made.stack_info = "Stack (most recent call last):\n  File x"
    data = json.loads(JsonFormatter().format(made))
    assert data["error"] == "ValueError: bad value"
    assert "Traceback" not in json.dumps(data) and "stack_info" not in data
    assert "exc_info" not in data


def test_the_current_span_is_on_the_line() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("request") as span:
        data = json.loads(JsonFormatter().format(record("in a span")))
    context = span.get_span_context()
    assert data["trace_id"] == f"{context.trace_id:032x}"
    assert data["span_id"] == f"{context.span_id:016x}"
    assert "trace_id" not in json.loads(JsonFormatter().format(record("outside")))
    assert "opentelemetry.trace" in sys.modules and trace.get_current_span() is not span


def test_under_another_logging_config_a_request_line_is_plain_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The old formatter passed JSON text through as the message, so users of their own logging
    config got JSON blobs inside their lines; the fields now travel as record attributes."""
    caplog.set_level(logging.INFO, logger="promptcast.server")
    plain = logging.Formatter("%(levelname)s %(message)s")
    logger.info("request %s %s %s", "GET", "/healthz", 200, extra={"status": 200, "path": "/h"})
    (made,) = [r for r in caplog.records if r.name == "promptcast.server"]
    text = plain.format(made)
    assert text == "INFO request GET /healthz 200" and "{" not in text
    assert getattr(made, "status", None) == 200


def test_uvicorns_config_uses_the_json_formatter() -> None:
    config = log_config("DEBUG")
    assert config["formatters"]["json"]["()"] == "promptcast.server.logs.JsonFormatter"
    assert config["loggers"]["promptcast"]["level"] == "DEBUG"
    assert config["handlers"]["stderr"]["formatter"] == "json"
