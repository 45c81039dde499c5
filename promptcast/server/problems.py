"""RFC 9457 problem details: the body, the status chosen for each error, the capped 422 body, and
the scrubbing that keeps keys and tokens out of every response and log line.

Status choices (documented in the README):

| status | problem type | when |
|---|---|---|
| 401 | unauthorized | missing or wrong bearer token |
| 402 | budget-exceeded | the call would cost more than its budget (`max_cost_usd`); retrying the
  same request will not help, so it is not a 429 that clients' retry loops would repeat |
| 404 | not-found | no such task or route |
| 413 | body-too-large, media-too-large | body over the size limit; an image or document (or
  all of a call's) over its limit |
| 421 | host-not-allowed | the Host header names neither loopback nor an allowed host |
| 422 | invalid-input | a missing, undeclared or mistyped input, or malformed JSON; `field` names it |
| 502 | provider-error, invalid-output, output-truncated | the provider failed or never gave valid
  output |
| 503 | provider-unavailable, not-configured, not-ready, server-shutting-down | the provider is
  rate limited or overloaded (with `Retry-After`), or this server cannot call it, or it stopped
  before the call finished (`promptcast serve --graceful-timeout`) |
| 504 | provider-timeout | the provider did not answer in time, or the call ran out of its time
  budget (`timeout_s`) |
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from promptcast._config import PROVIDER_ENV, endpoint_settings, get_config
from promptcast._secrets import scrub_literal
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
from promptcast.media import MediaTooLargeError
from promptcast.server import context

__all__ = [
    "MAX_LISTED_ERRORS",
    "MAX_RETRY_AFTER_S",
    "PROBLEM_MEDIA_TYPE",
    "PROBLEM_SCHEMA",
    "invalid_input",
    "problem",
    "problem_bytes",
    "problem_for_error",
    "problem_response",
    "scrub",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:promptcast:problem:"

MAX_LISTED_ERRORS = 20
"""A 422 lists at most this many input errors (`errors_omitted` counts the rest): a large invalid
body must not become a larger error body."""
MAX_ERROR_TEXT = 200
"""Characters kept of each error's field, pointer and message (a dict key is part of a pointer)."""
MAX_RETRY_AFTER_S = 60
"""The longest `Retry-After` passed on from a provider: a client should not be told to wait hours."""

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
            "maxItems": MAX_LISTED_ERRORS,
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
        "errors_omitted": {
            "type": "integer",
            "description": f"Input errors not listed (`errors` holds the first {MAX_LISTED_ERRORS}).",
        },
        "retryable": {"type": "boolean"},
        "retry_after": {"type": "integer", "description": "Seconds; also sent as Retry-After."},
        "matches": {"type": "array", "items": {"type": "string"}},
        "limit_bytes": {"type": "integer"},
    },
}


def _known_secrets() -> list[str]:
    """This server's tokens and every provider key it could send: scrubbed as literal values,
    whatever their shape, besides the shared credential patterns."""
    found = list(get_config().api_tokens)
    for provider in PROVIDER_ENV:
        key, _ = endpoint_settings(provider)
        if key:
            found.append(key)
    return found


def scrub(text: str) -> str:
    """`text` without this server's tokens, provider keys or anything credential-shaped (the shared
    patterns of `promptcast._secrets`)."""
    return scrub_literal(text, _known_secrets())


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
        body["instance"] = scrub(instance)  # the path is the caller's: it may hold a key
    if request_id is not None:
        body["request_id"] = request_id
    body.update({k: v for k, v in extensions.items() if v is not None})
    return body


def problem_bytes(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(
        problem_bytes(body),
        status_code=int(body["status"]),
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# errors of a task call


def problem_for_error(
    exc: PromptcastError,
    *,
    instance: str | None = None,
    request_id: str | None = None,
    task: str | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The problem body and extra headers for an error raised by a task call (`task`: the
    task's name, for errors that do not carry it, such as a missing key).

    Provider error text is not passed on: it is the provider's, and may echo request details.
    """
    task = getattr(exc, "task", None) or task
    common: dict[str, Any] = {"instance": instance, "request_id": request_id}
    if isinstance(task, str):
        common["task"] = task
    if isinstance(exc, MediaTooLargeError):
        return problem(413, "media-too-large", str(exc), field=exc.field or "body", **common), {}
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


def retry_after_s(provider_wait: float | None, default: int) -> int:
    """Whole seconds for `Retry-After`: the provider's own wait when it sent one (at least 1, at
    most `MAX_RETRY_AFTER_S`), else `default`."""
    if provider_wait is None or not math.isfinite(provider_wait):
        return default
    return max(1, min(MAX_RETRY_AFTER_S, math.ceil(provider_wait)))


def _backend_problem(
    exc: BackendError, common: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    status = exc.status
    text = str(exc).lower()
    # the SDKs' own timeouts are known by their text ("ReadTimeout"), promptcast's by the flag
    timed_out = exc.timed_out or status in (408, 504) or (status is None and "timeout" in text)
    if status:
        said = f"returned HTTP {status}"
    elif timed_out:
        said = "did not answer in time"
    elif "cannot reach" in text:
        said = "could not be reached"
    else:  # it answered: an error page, another API's reply, a stream cut short
        said = "sent no usable reply"
    where = f"the model provider ({exc.provider}) {said}"
    if timed_out:
        code, kind, default = 504, "provider-timeout", 2
    elif status in (429, 503, 529) and exc.retryable:
        code, kind, default = 503, "provider-unavailable", 5 if status == 429 else 2
    else:
        code, kind, default = 502, "provider-error", 1
    retryable = exc.retryable or timed_out
    wait = retry_after_s(exc.retry_after, default) if retryable else None
    body = problem(
        code,
        kind,
        f"{where}; " + ("retry later" if retryable else "retrying will not help"),
        retryable=retryable,
        retry_after=wait,
        **common,
    )
    return body, ({"retry-after": str(wait)} if wait is not None else {})


# 422: invalid input, capped


def invalid_input(
    request: Request,
    errors: Sequence[Any],
    *,
    task: str | None,
    declared: str,
    total: int | None = None,
) -> dict[str, Any]:
    """A 422 body naming the field at fault (`body` for malformed JSON), without the values sent.

    At most `MAX_LISTED_ERRORS` errors are listed, each text cut to `MAX_ERROR_TEXT` characters,
    so the body stays a few KB however large and however wrong the request was.
    """
    items = [_validation_item(err, declared) for err in errors[:MAX_LISTED_ERRORS]]
    first = items[0] if items else {"field": "body", "message": "invalid request"}
    omitted = (len(errors) if total is None else total) - len(items)
    return problem(
        422,
        "invalid-input",
        f"input {first['field']!r}: {first['message']}",
        title="Invalid input",
        instance=request.url.path,
        request_id=context.request_id(request),
        task=task,
        field=first["field"],
        errors=items,
        errors_omitted=omitted or None,
    )


def _cut(text: str) -> str:
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 1] + "…"


def _pointer(loc: Sequence[str]) -> str:
    """An RFC 6901 JSON pointer to the value at `loc`."""
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in loc)


def _validation_item(err: Any, declared: str) -> dict[str, str]:
    """One pydantic error as {field, pointer, message, type}, without the input value."""
    loc = [str(p) for p in err.get("loc", ())]
    kind = str(err.get("type", "value_error"))
    if kind == "json_invalid":
        reason = (err.get("ctx") or {}).get("error") or err.get("msg", "not valid JSON")
        return {
            "field": "body",
            "pointer": "",
            "message": _cut(f"malformed JSON: {reason}"),
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
    return {
        "field": _cut(scrub(field[: 2 * MAX_ERROR_TEXT])),  # an undeclared name is the caller's
        "pointer": _cut(scrub(_pointer(loc)[: 2 * MAX_ERROR_TEXT])),
        "message": _cut(message),
        "type": _cut(kind),
    }
