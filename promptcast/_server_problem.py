"""RFC 9457 problem details for the HTTP server: the body, the status chosen for each error, and
the scrubbing that keeps keys and tokens out of every response and log line.

Status choices (documented in the README):

| status | problem type | when |
|---|---|---|
| 401 | unauthorized | missing or wrong bearer token |
| 402 | budget-exceeded | the call would cost more than its budget (`max_cost_usd`); retrying the
  same request will not help, so it is not a 429 that clients' retry loops would repeat |
| 404 | not-found | no such task or route |
| 413 | body-too-large | body over the size limit |
| 422 | invalid-input | a missing, undeclared or mistyped input, or malformed JSON; `field` names it |
| 502 | provider-error, invalid-output, output-truncated | the provider failed or never gave valid
  output |
| 503 | provider-unavailable, not-configured, not-ready | the provider is rate limited or
  overloaded (with `Retry-After`), or this server cannot call it |
| 504 | provider-timeout | the provider did not answer in time, or the call ran out of its time
  budget (`timeout_s`) |
"""

from __future__ import annotations

import json
import os
import re
from http import HTTPStatus
from typing import Any

from promptcast._config import get_config
from promptcast.errors import (
    BackendError,
    BudgetExceededError,
    ConfigurationError,
    OutputTruncatedError,
    OutputValidationError,
    PromptcastError,
    TaskInputError,
    TaskNotFoundError,
)

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "PROBLEM_SCHEMA",
    "problem",
    "problem_bytes",
    "problem_for_error",
    "scrub",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:promptcast:problem:"

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An RFC 9457 problem detail. `field` names the input at fault on a 422; "
    "`retryable` says whether the same request may succeed later (see also Retry-After).",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "urn:promptcast:problem:<kind>"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "task": {"type": "string"},
        "field": {"type": ["string", "null"]},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "pointer", "message", "type"],
                "properties": {
                    "field": {"type": "string"},
                    "pointer": {"type": "string"},
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
        "retryable": {"type": "boolean"},
        "retry_after": {"type": "integer", "description": "Seconds; also sent as Retry-After."},
        "matches": {"type": "array", "items": {"type": "string"}},
    },
}

_KEYLIKE = re.compile(
    r"sk-ant-[A-Za-z0-9_-]{6,}|sk-(?:proj-)?[A-Za-z0-9_-]{16,}|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}"
)


def _secrets() -> list[str]:
    found = [
        os.environ.get("ANTHROPIC_API_KEY", ""),
        os.environ.get("ANTHROPIC_AUTH_TOKEN", ""),
        get_config().api_key or "",
        *os.environ.get("PROMPTCAST_API_TOKENS", "").split(","),
    ]
    return sorted({s.strip() for s in found if len(s.strip()) >= 4}, key=len, reverse=True)


def scrub(text: str) -> str:
    """`text` with configured keys, bearer tokens and anything key-shaped replaced by [REDACTED]."""
    for secret in _secrets():
        if secret in text:
            text = text.replace(secret, "[REDACTED]")
    return _KEYLIKE.sub("[REDACTED]", text)


def problem(
    status: int,
    kind: str,
    detail: str,
    *,
    instance: str | None = None,
    request_id: str | None = None,
    title: str | None = None,
    **extensions: Any,
) -> dict[str, Any]:
    """A problem body; `detail` is scrubbed, extensions with value `None` are left out."""
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + kind,
        "title": title or _phrase(status),
        "status": status,
        "detail": scrub(detail),
    }
    if instance is not None:
        body["instance"] = instance
    if request_id is not None:
        body["request_id"] = request_id
    body.update({k: v for k, v in extensions.items() if v is not None})
    return body


def problem_bytes(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_for_error(
    exc: PromptcastError, *, instance: str | None = None, request_id: str | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The problem body and extra headers for an error raised by a task call.

    Provider error text is not passed on: it is the provider's, and may echo request details.
    """
    task = getattr(exc, "task", None)
    common: dict[str, Any] = {"instance": instance, "request_id": request_id}
    if isinstance(task, str):
        common["task"] = task
    if isinstance(exc, TaskInputError):
        return problem(422, "invalid-input", str(exc), field=exc.field or "body", **common), {}
    if isinstance(exc, TaskNotFoundError):
        return problem(404, "not-found", str(exc), matches=exc.matches, **common), {}
    if isinstance(exc, BudgetExceededError):
        if getattr(exc, "limit", None) == "timeout_s":  # out of time: the gateway timed out
            detail = "the call ran out of its time budget (timeout_s); retry later"
            body = problem(504, "provider-timeout", detail, retryable=True, retry_after=2, **common)
            return body, {"retry-after": "2"}
        return problem(402, "budget-exceeded", str(exc), retryable=False, **common), {}
    if isinstance(exc, OutputTruncatedError):
        detail = f"the model's reply was cut off at the task's max_tokens after {exc.attempts} attempt(s)"
        return problem(502, "output-truncated", detail, retryable=False, **common), {}
    if isinstance(exc, OutputValidationError):
        detail = f"the model gave no output matching the task's schema in {exc.attempts} attempt(s)"
        body = problem(502, "invalid-output", detail, retryable=True, retry_after=1, **common)
        return body, {"retry-after": "1"}
    if isinstance(exc, BackendError):
        return _backend_problem(exc, common)
    if isinstance(exc, ConfigurationError):
        detail = "this server is not configured to call the task's model; see the server log"
        return problem(503, "not-configured", detail, retryable=False, **common), {}
    return problem(500, "internal-error", "the call failed; see the server log", **common), {}


def _backend_problem(
    exc: BackendError, common: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    status = exc.status
    said = f"returned HTTP {status}" if status else "could not be reached"
    where = f"the model provider ({exc.provider}) {said}"
    timed_out = status in (408, 504) or (status is None and "timeout" in str(exc).lower())
    if timed_out:
        code, kind, wait = 504, "provider-timeout", 2
    elif status in (429, 503, 529) and exc.retryable:
        code, kind, wait = 503, "provider-unavailable", 5 if status == 429 else 2
    else:
        code, kind, wait = 502, "provider-error", 1
    retryable = exc.retryable or timed_out
    body = problem(
        code,
        kind,
        f"{where}; " + ("retry later" if retryable else "retrying will not help"),
        retryable=retryable,
        retry_after=wait if retryable else None,
        **common,
    )
    return body, ({"retry-after": str(wait)} if retryable else {})
