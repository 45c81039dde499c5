"""A loopback fake of Gemini's `generateContent` API (Google AI Studio, `gemini/…` in litellm).

It speaks Gemini's wire format, not OpenAI's: `POST /v1beta/models/{model}:generateContent` with
`contents`/`parts`, answers a forced function call with a `functionCall` part, a request with a
response schema (`responseSchema` or `responseJsonSchema`) with JSON text, reports
`usageMetadata`, and fails in Gemini's error shape (`{"error": {"code", "message", "status"}}`).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from typing import Any

from promptcast.testing._fake_anthropic import placeholder
from promptcast.testing._fake_server import FakeReply, FakeServer

__all__ = [
    "FakeGemini",
    "function_call_part",
    "gemini_error",
    "generate_content",
    "text_part",
]

_ids = itertools.count(1)
_PATH = re.compile(r"^/(?:v1|v1beta|v1alpha)/models/(?P<model>[^/:]+):generateContent$")

# The status name Google's APIs send with each HTTP status (google.rpc.Code).
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def text_part(text: str) -> dict[str, Any]:
    return {"text": text}


def function_call_part(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"functionCall": {"name": name, "args": args}}


def generate_content(
    parts: list[dict[str, Any]],
    *,
    model: str = "gemini-1.5-pro-002",
    finish_reason: str = "STOP",
    prompt_tokens: int = 100,
    candidates_tokens: int = 20,
) -> dict[str, Any]:
    """A `GenerateContentResponse` body with one candidate."""
    return {
        "candidates": [
            {
                "content": {"parts": parts, "role": "model"},
                "finishReason": finish_reason,
                "index": 0,
                "avgLogprobs": -0.05,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": candidates_tokens,
            "totalTokenCount": prompt_tokens + candidates_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
            "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": candidates_tokens}],
        },
        "modelVersion": model,
        "responseId": f"fakeGemini{next(_ids):08d}",
    }


def gemini_error(
    status: int, message: str, *, retry_delay_s: int | None = None, **headers: str
) -> FakeReply:
    """An error as Gemini sends it; `retry_delay_s` adds the `RetryInfo` detail Gemini puts in a
    429 (it sends no `retry-after` header); keyword arguments become headers."""
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": STATUS_NAMES.get(status, "UNKNOWN"),
    }
    if retry_delay_s is not None:
        error["details"] = [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_delay_s}s"}
        ]
    return FakeReply({"error": error}, status, {k.replace("_", "-"): v for k, v in headers.items()})


def _camel(config: dict[str, Any], snake: str) -> Any:
    """A field that clients send in snake_case or camelCase (both are accepted by the API)."""
    head, *rest = snake.split("_")
    return config.get(snake, config.get(head + "".join(w.title() for w in rest)))


def _function(request: dict[str, Any]) -> dict[str, Any] | None:
    """The function the request forces (or the first one declared), if it declares any."""
    declared = [
        fn
        for tool in request.get("tools") or []
        for fn in (_camel(tool, "function_declarations") or [])
    ]
    if not declared:
        return None
    calling = _camel(_camel(request, "tool_config") or {}, "function_calling_config") or {}
    allowed = _camel(calling, "allowed_function_names") or []
    chosen: dict[str, Any] = next((fn for fn in declared if fn.get("name") in allowed), declared[0])
    return chosen


class FakeGemini(FakeServer):
    """Gemini's `generateContent` on 127.0.0.1 (random port); its `base_url` ends in `/v1beta`,
    as litellm's `api_base` for `gemini/…` expects. `models` holds the model of each request."""

    name = "fake-gemini"

    def __init__(self, handler: Any = None) -> None:
        super().__init__(handler)
        self.models: list[str] = []
        self._current = threading.local()

    @property
    def base_url(self) -> str:
        return super().base_url + "/v1beta"

    def _answer(self, path: str, raw: bytes, headers: dict[str, str]) -> FakeReply:
        match = _PATH.match(path.split("?")[0])
        if match is None:
            return self.error(404, "NOT_FOUND", f"Not found: {path.split('?')[0]}")
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return self.error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        with self._lock:
            self.models.append(match["model"])
        self._current.model = match["model"]
        return self._next(body, headers)

    def auto(self, request: dict[str, Any]) -> dict[str, Any]:
        model = getattr(self._current, "model", "gemini-1.5-pro")
        size = len(json.dumps(request)) // 4
        function = _function(request)
        if function is not None:
            args = placeholder(function.get("parameters") or {})
            return generate_content(
                [function_call_part(function["name"], args)], model=model, prompt_tokens=size
            )
        config = _camel(request, "generation_config") or {}
        schema = _camel(config, "response_json_schema") or _camel(config, "response_schema")
        if schema is not None:
            text = json.dumps(placeholder(_lowered(schema)))
            return generate_content([text_part(text)], model=model, prompt_tokens=size)
        return generate_content([text_part("example")], model=model, prompt_tokens=size)

    def error(self, status: int, kind: str, text: str) -> FakeReply:
        return gemini_error(status, text)

    def __enter__(self) -> FakeGemini:
        self.start()
        return self


def _lowered(schema: Any) -> Any:
    """Gemini's OpenAPI-style `responseSchema` spells types in capitals (`OBJECT`, `STRING`);
    the placeholder builder reads JSON Schema's lower-case ones."""
    if isinstance(schema, dict):
        return {
            k: (v.lower() if k == "type" and isinstance(v, str) else _lowered(v))
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_lowered(v) for v in schema]
    return schema
