"""JSON log lines for `promptcast serve`: one object per line, never a stack trace.

Request lines from the server are already JSON objects and pass through; other records (uvicorn's
startup lines, warnings) are wrapped. Exception info is reduced to the exception's type and
message, scrubbed of keys, so a traceback never reaches the log.
"""

from __future__ import annotations

import json
import logging
import time

from promptcast._server_problem import scrub

__all__ = ["JsonFormatter"]


class JsonFormatter(logging.Formatter):
    """Formats every record as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        message = scrub(record.getMessage())
        if message.startswith("{") and record.name == "promptcast.server":
            return message
        line: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            line["error"] = scrub(
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            )
        return json.dumps(line, ensure_ascii=False)
