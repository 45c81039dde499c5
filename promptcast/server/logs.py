"""JSON log lines for `promptcast serve`: one object per line, never a stack trace, and uvicorn's
logging configuration that writes them.

Request lines from the gate are already JSON objects built from scrubbed parts and pass through;
other records (uvicorn's startup lines, warnings) are wrapped and scrubbed. Exception info is
reduced to the exception's type and message, so a traceback never reaches the log.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from promptcast.server.problems import scrub

__all__ = ["JsonFormatter", "log_config"]

REQUEST_LOGGER = "promptcast.server"


class JsonFormatter(logging.Formatter):
    """Formats every record as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == REQUEST_LOGGER and message.startswith('{"event": "request"'):
            return message
        line: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": scrub(message),
        }
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            line["error"] = scrub(
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            )
        return json.dumps(line, ensure_ascii=False)


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
