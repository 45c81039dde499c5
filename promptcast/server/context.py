"""What the gate leaves in each request's ASGI scope for the handlers: the request id, and the dict
of fields (task, model, tokens, cost, error) that becomes the request's one log line."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

__all__ = ["INFO_KEY", "REQUEST_ID_KEY", "log_info", "request_id"]

INFO_KEY = "promptcast.log"
REQUEST_ID_KEY = "promptcast.request_id"


def request_id(request: Request) -> str | None:
    value = request.scope.get(REQUEST_ID_KEY)
    return value if isinstance(value, str) else None


def log_info(request: Request) -> dict[str, Any]:
    """The request's log-line fields, to fill in (a throwaway dict outside the gate)."""
    info = request.scope.get(INFO_KEY)
    if not isinstance(info, dict):
        info = request.scope[INFO_KEY] = {}
    return info
