"""A loopback fake of an OpenAI-compatible `/v1/chat/completions` API (OpenAI, vLLM, Ollama…).

Answers tool calls and `response_format: json_schema` requests with placeholders built from the
request's schema, unless replies are scripted.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from promptcast.testing._fake_anthropic import placeholder
from promptcast.testing._fake_server import FakeReply, FakeServer

__all__ = ["FakeOpenAI", "chat_completion", "openai_error", "tool_call"]

_ids = itertools.count(1)


def tool_call(name: str, arguments: dict[str, Any] | str) -> dict[str, Any]:
    """A tool call; `arguments` may be a raw string (e.g. invalid JSON)."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {
        "id": f"call_fake{next(_ids):08d}",
        "type": "function",
        "function": {"name": name, "arguments": text},
    }


def chat_completion(
    content: str | None = None,
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str | None = None,
    model: str = "gpt-4o-mini",
    prompt_tokens: int = 100,
    completion_tokens: int = 20,
) -> dict[str, Any]:
    """A chat.completion response body."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": f"chatcmpl-fake{next(_ids):08d}",
        "object": "chat.completion",
        "created": 1_763_900_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def openai_error(
    status: int,
    text: str,
    *,
    kind: str = "invalid_request_error",
    code: str | None = None,
    **headers: str,
) -> FakeReply:
    """An error as OpenAI-compatible servers send it; keyword arguments become headers."""
    body = {"error": {"message": text, "type": kind, "param": None, "code": code}}
    return FakeReply(body, status, {k.replace("_", "-"): v for k, v in headers.items()})


class FakeOpenAI(FakeServer):
    """An OpenAI-compatible chat completions API on 127.0.0.1; its `base_url` ends in `/v1`."""

    paths = ("/v1/chat/completions", "/chat/completions")
    name = "fake-openai"

    @property
    def base_url(self) -> str:
        return super().base_url + "/v1"

    def auto(self, request: dict[str, Any]) -> dict[str, Any]:
        model = str(request.get("model", "gpt-4o-mini"))
        size = len(json.dumps(request)) // 4
        tools = request.get("tools") or []
        if tools:
            function = tools[0]["function"]
            data = placeholder(function.get("parameters", {}))
            return chat_completion(
                tool_calls=[tool_call(function["name"], data)], model=model, prompt_tokens=size
            )
        response_format = request.get("response_format") or {}
        if response_format.get("type") == "json_schema":
            schema = response_format["json_schema"].get("schema", {})
            return chat_completion(json.dumps(placeholder(schema)), model=model, prompt_tokens=size)
        return chat_completion("example", model=model, prompt_tokens=size)

    def error(self, status: int, kind: str, text: str) -> FakeReply:
        return openai_error(status, text, kind=kind)

    def __enter__(self) -> FakeOpenAI:
        self.start()
        return self
