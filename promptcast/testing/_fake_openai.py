"""A loopback fake of an OpenAI-compatible `/v1/chat/completions` API (OpenAI, vLLM, Ollama…).

Answers tool calls and `response_format: json_schema` requests with placeholders built from the
request's schema, unless replies are scripted. A `"stream": true` request gets the same reply as
`chat.completion.chunk` events (`data: {…}` lines, then `data: [DONE]`), with a last usage-only
chunk when the request sets `stream_options.include_usage`.
"""

from __future__ import annotations

import itertools
import json
import threading
from typing import Any

from promptcast.testing._fake_anthropic import placeholder, prompted_schema
from promptcast.testing._fake_server import FakeReply, FakeServer

__all__ = ["FakeOpenAI", "chat_completion", "openai_error", "stream_chunks", "tool_call"]

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


def stream_chunks(
    body: dict[str, Any], *, chunk_chars: int = 8, include_usage: bool = True
) -> list[bytes]:
    """A chat.completion body as its stream: content and tool-call arguments cut into deltas of
    `chunk_chars` characters, as server-sent `data:` lines ending with `data: [DONE]`."""

    def pieces(text: str) -> list[str]:
        return [text[i : i + chunk_chars] for i in range(0, len(text), chunk_chars)]

    head = {
        "id": body.get("id", f"chatcmpl-fake{next(_ids):08d}"),
        "object": "chat.completion.chunk",
        "created": body.get("created", 1_763_900_000),
        "model": body.get("model", "gpt-4o-mini"),
        "system_fingerprint": None,
    }
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    calls = message.get("tool_calls") or []

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        entry = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**head, "choices": [entry]}

    opening: dict[str, Any] = {
        "role": "assistant",
        "content": None if calls else "",
        "refusal": None,
    }
    chunks = [chunk(opening)]
    chunks += [chunk({"content": p}) for p in pieces(message.get("content") or "")]
    for index, call in enumerate(calls):
        function = call["function"]
        start = {"index": index, "id": call["id"], "type": "function"}
        start["function"] = {"name": function["name"], "arguments": ""}
        chunks.append(chunk({"tool_calls": [start]}))
        chunks += [
            chunk({"tool_calls": [{"index": index, "function": {"arguments": p}}]})
            for p in pieces(function.get("arguments") or "")
        ]
    chunks.append(chunk({}, choice.get("finish_reason") or "stop"))
    if include_usage and body.get("usage"):
        chunks.append({**head, "choices": [], "usage": body["usage"]})
    lines = [f"data: {json.dumps(c, ensure_ascii=False)}\n\n".encode() for c in chunks]
    return [*lines, b"data: [DONE]\n\n"]


class FakeOpenAI(FakeServer):
    """An OpenAI-compatible chat completions API on 127.0.0.1; its `base_url` ends in `/v1`."""

    paths = ("/v1/chat/completions", "/chat/completions")
    name = "fake-openai"

    def __init__(self, handler: Any = None) -> None:
        super().__init__(handler)
        self.prefixes: set[str] = set()
        self._prefix_lock = threading.Lock()

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
        schema: dict[str, Any] | None = None
        if response_format.get("type") == "json_schema":
            schema = response_format["json_schema"].get("schema", {})
        elif response_format.get("type") == "json_object":  # llama-cpp-python's form
            schema = response_format.get("schema") or {"type": "object"}
        else:  # prompted mode: the schema quoted in the system message
            system = next((m for m in request.get("messages", []) if m["role"] == "system"), None)
            if system is not None:
                schema = prompted_schema({"system": system["content"]})
        text = "example" if schema is None else json.dumps(placeholder(schema))
        body = chat_completion(text, model=model, prompt_tokens=size)
        cached = self.cached_prefix(request)
        if cached:
            body["usage"]["prompt_tokens_details"] = {"cached_tokens": cached}
        return body

    def cached_prefix(self, request: dict[str, Any]) -> int:
        """OpenAI's automatic prompt caching, simplified: the messages before the last one, when
        at least 1,024 tokens (JSON characters / 4) and sent before, are read from the cache
        (`usage.prompt_tokens_details.cached_tokens`)."""
        prefix = json.dumps(request.get("messages", [])[:-1], sort_keys=True)
        tokens = len(prefix) // 4
        if tokens < 1024:
            return 0
        with self._prefix_lock:
            seen = prefix in self.prefixes
            self.prefixes.add(prefix)
        return tokens if seen else 0

    def error(self, status: int, kind: str, text: str) -> FakeReply:
        return openai_error(status, text, kind=kind)

    def sse(self, request: dict[str, Any], body: dict[str, Any]) -> list[bytes]:
        usage = bool((request.get("stream_options") or {}).get("include_usage"))
        return stream_chunks(body, chunk_chars=self.stream_chunk_chars, include_usage=usage)

    def __enter__(self) -> FakeOpenAI:
        self.start()
        return self
