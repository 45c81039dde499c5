"""A loopback fake of the Anthropic Messages API, for end-to-end tests through the real SDK.

It speaks the wire format (`POST /v1/messages`, message and error bodies as the API sends them),
keeps every request, and answers from a queue, a handler, or by default with a tool call whose
input is a placeholder built from the request's tool schema. A `"stream": true` request gets the
same reply as the Messages API streams it (`message_start`, `content_block_*` with `text_delta`,
`input_json_delta`, `thinking_delta`, `message_delta`, `message_stop`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from promptcast.testing._fake_server import FakeReply, FakeServer

__all__ = [
    "FakeAnthropic",
    "PromptCache",
    "error_reply",
    "message",
    "placeholder",
    "prompted_schema",
    "sse_event",
    "stream_events",
    "text_block",
    "tool_use_block",
]

_ids = itertools.count(1)


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def tool_use_block(name: str, input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_fake{next(_ids):08d}", "name": name, "input": input}


def message(
    content: list[dict[str, Any]],
    *,
    model: str = "claude-sonnet-4-6",
    stop_reason: str | None = None,
    input_tokens: int = 100,
    output_tokens: int = 20,
) -> dict[str, Any]:
    """A Messages API response body."""
    if stop_reason is None:
        stop_reason = "tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn"
    return {
        "id": f"msg_fake{next(_ids):08d}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
            "service_tier": "standard",
        },
    }


def error_reply(status: int, kind: str, text: str, **headers: str) -> FakeReply:
    """An API error as Anthropic sends it, e.g. `error_reply(429, "rate_limit_error", "…")`;
    keyword arguments become headers (`retry_after="1"` → `retry-after: 1`)."""
    body = {
        "type": "error",
        "error": {"type": kind, "message": text},
        "request_id": f"req_fake{next(_ids):08d}",
    }
    return FakeReply(body, status, {k.replace("_", "-"): v for k, v in headers.items()})


def sse_event(kind: str, data: dict[str, Any]) -> bytes:
    """One server-sent event frame as the Messages API writes it."""
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def stream_events(body: dict[str, Any], *, chunk_chars: int = 8) -> list[bytes]:
    """A Messages API response body as its stream: text, tool input and thinking cut into deltas
    of `chunk_chars` characters; other blocks (redacted thinking, server tools) arrive whole."""

    def pieces(text: str) -> list[str]:
        return [text[i : i + chunk_chars] for i in range(0, len(text), chunk_chars)]

    usage = dict(body.get("usage") or {})
    start = {**body, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {**usage, "output_tokens": 1}
    events = [sse_event("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(body.get("content") or []):
        kind = block.get("type")
        deltas: list[dict[str, Any]] = []
        if kind == "text":
            opening: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in pieces(block["text"])]
        elif kind == "tool_use":
            opening = {**block, "input": {}}
            raw = json.dumps(block.get("input") or {}, ensure_ascii=False)
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces(raw)]
        elif kind == "thinking":
            opening = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": p} for p in pieces(block["thinking"])]
            deltas.append({"type": "signature_delta", "signature": block.get("signature", "")})
        else:
            opening = block
        events.append(
            sse_event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opening},
            )
        )
        if index == 0:
            events.append(sse_event("ping", {"type": "ping"}))
        for delta in deltas:
            events.append(
                sse_event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            )
        events.append(
            sse_event("content_block_stop", {"type": "content_block_stop", "index": index})
        )
    final = {
        "type": "message_delta",
        "delta": {"stop_reason": body.get("stop_reason"), "stop_sequence": None},
        "usage": {"output_tokens": usage.get("output_tokens", 0)},
    }
    events.append(sse_event("message_delta", final))
    events.append(sse_event("message_stop", {"type": "message_stop"}))
    return events


def placeholder(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> Any:
    """A small value that satisfies a JSON schema (the subset pydantic produces)."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return placeholder(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return placeholder(options[0], defs)
    kind = schema.get("type", "object")
    if isinstance(kind, list):  # ["string", "null"]: a nullable field of a strict schema
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: placeholder(sub, defs) for name, sub in props.items()}
    if kind == "array":
        item = placeholder(schema.get("items", {"type": "string"}), defs)
        return [item] * schema.get("minItems", 1)
    scalars = {"string": "example", "integer": 1, "number": 1.0, "boolean": True, "null": None}
    return scalars.get(kind, "example")


def _auto(request: dict[str, Any]) -> dict[str, Any]:
    tools = request.get("tools") or []
    model = request.get("model", "claude-sonnet-4-6")
    size = len(json.dumps(request)) // 4
    if tools:
        tool = tools[0]
        data = placeholder(tool.get("input_schema", {}))
        return message([tool_use_block(tool["name"], data)], model=model, input_tokens=size)
    schema = prompted_schema(request)
    if schema is not None:  # native (output_config.format) or prompted (schema in the system)
        text = json.dumps(placeholder(schema))
        return message([text_block(text)], model=model, input_tokens=size)
    return message([text_block("example")], model=model, input_tokens=size)


def output_name(request: dict[str, Any]) -> str | None:
    """The name of the output a request asks for, whatever its mode: the output tool's name (tool
    mode) or the schema's title (native and prompted modes)."""
    tools = request.get("tools") or []
    if tools:
        return str(tools[0]["name"])
    schema = prompted_schema(request)
    return str(schema["title"]) if schema and "title" in schema else None


def answer(request: dict[str, Any], data: Any) -> dict[str, Any]:
    """A reply carrying `data` the way `request` asks for it: a call of its output tool in tool
    mode, the JSON as text in native and prompted modes; for handlers that script answers."""
    model = request.get("model", "claude-sonnet-4-6")
    tools = request.get("tools") or []
    if tools:
        return message([tool_use_block(tools[0]["name"], data)], model=model)
    return message([text_block(json.dumps(data))], model=model)


_SCHEMA_IN_TEXT = re.compile(r"JSON schema:\s*```json\s*(\{.*?\})\s*```", re.DOTALL)


def prompted_schema(request: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a request asks the answer to follow: native mode's
    `output_config.format.schema` (or the beta's top-level `output_format.schema`, which litellm
    sends), or the one a prompted-mode system block quotes."""
    fmt = (request.get("output_config") or {}).get("format") or request.get("output_format") or {}
    if fmt.get("type") == "json_schema":
        return dict(fmt.get("schema") or {})
    system = request.get("system") or ""
    text = system if isinstance(system, str) else " ".join(b.get("text", "") for b in system)
    found = _SCHEMA_IN_TEXT.search(text)
    return dict(json.loads(found.group(1))) if found else None


def _without_cache_control(block: Any) -> Any:
    if isinstance(block, dict) and "cache_control" in block:
        return {k: v for k, v in block.items() if k != "cache_control"}
    return block


class PromptCache:
    """Prompt caching as the Messages API reports it: a prefix (tools, then system, then
    messages) up to a block marked `cache_control` is written to the cache the first time
    (`cache_creation_input_tokens`) and read from it by later requests with the same prefix
    (`cache_read_input_tokens`); `input_tokens` is what follows the last cached breakpoint.
    Prefixes shorter than `min_tokens` are not cached. Tokens are counted as JSON characters / 4.
    Entries never expire (the API keeps them 5 minutes after their last use)."""

    def __init__(self, min_tokens: int = 1024) -> None:
        self.min_tokens = min_tokens
        self.prefixes: set[str] = set()
        self._lock = threading.Lock()

    def usage(self, request: dict[str, Any]) -> tuple[int, int, int]:
        """`(input_tokens, cache_creation_input_tokens, cache_read_input_tokens)` of `request`."""
        total = len(json.dumps(request)) // 4
        blocks: list[Any] = list(request.get("tools") or [])
        system = request.get("system")
        if isinstance(system, list):
            blocks += system
        elif system:
            blocks.append({"type": "text", "text": system})
        for msg in request.get("messages") or []:
            content = msg.get("content")
            blocks += content if isinstance(content, list) else [{"type": "text", "text": content}]
        breakpoints: list[tuple[str, int]] = []
        digest = hashlib.sha256()
        size = 0
        for block in blocks:
            plain = json.dumps(_without_cache_control(block), sort_keys=True)
            digest.update(plain.encode())
            size += len(plain) // 4
            if isinstance(block, dict) and "cache_control" in block and size >= self.min_tokens:
                breakpoints.append((digest.copy().hexdigest(), size))
        read = write = 0
        with self._lock:
            for key, tokens in breakpoints:
                if key in self.prefixes:
                    read = tokens
            for key, tokens in breakpoints:
                if key not in self.prefixes:
                    self.prefixes.add(key)
                    write = tokens - read
        write = max(write, 0)
        return max(total - read - write, 0), write, read


class FakeAnthropic(FakeServer):
    """The Messages API on 127.0.0.1 (random port). Use as a context manager; point the SDK at
    `base_url` with `ANTHROPIC_BASE_URL`.

    Message Batches too: `POST /v1/messages/batches` stores the requests, a batch ends after
    `batch_polls` retrievals, and its results answer each request as `/v1/messages` would, except
    the custom ids listed in `batch_outcomes` (`{"id-7": "expired", "id-9": "errored"}`).
    `POST /v1/messages/batches/{id}/cancel` cancels a batch: its ids go to `canceled`, and its
    requests that had not ended come out "canceled". `GET /v1/messages/batches` lists them newest
    first, `list_page_size` a page (the `limit` asked for, when smaller). An outcome's key is a
    custom id, or the item id a promptcast custom id carries before its `-<nonce>`.

    To stop a client at a chosen instant of a submit: `before_create()` runs when a create
    arrives, before the batch exists (returning False drops the connection, nothing accepted);
    `after_create(batch_id)` runs once it is stored, before the reply goes out.
    """

    paths = ("/v1/messages", "/v1/messages/batches")
    name = "fake-anthropic"

    def __init__(self, handler: Any = None) -> None:
        super().__init__(handler)
        self.batches: dict[str, dict[str, Any]] = {}
        self.batch_polls = 2
        self.batch_outcomes: dict[str, str] = {}
        self.canceled: list[str] = []
        self.prompt_cache = PromptCache()
        self.list_page_size = 20
        self.before_create: Callable[[], bool] | None = None
        self.after_create: Callable[[str], None] | None = None

    def add_batch(self, requests: list[dict[str, Any]], *, created_at: float | None = None) -> str:
        """Store a batch as a create would (e.g. one made by another run, earlier); its id."""
        batch_id = f"msgbatch_fake{next(_ids):08d}"
        created = time.time() if created_at is None else created_at
        with self._lock:
            self.batches[batch_id] = {"requests": requests, "polls": 0, "created_at": created}
        return batch_id

    def _answer(self, path: str, raw: bytes, headers: dict[str, str]) -> FakeReply:
        parts = path.split("?")[0].strip("/").split("/")
        if parts[:3] == ["v1", "messages", "batches"] and parts[4:] == ["cancel"]:
            if parts[3] not in self.batches:
                return self.error(404, "not_found_error", f"no batch {parts[3]}")
            self.canceled.append(parts[3])
            state = self.batches[parts[3]]
            if state["polls"] < self.batch_polls:  # not ended: nothing more is processed
                state["polls"] = self.batch_polls
                state["canceled"] = True
            return FakeReply({**self._batch(parts[3]), "processing_status": "canceling"})
        if path.split("?")[0] != "/v1/messages/batches":
            return super()._answer(path, raw, headers)
        body = json.loads(raw)
        if self.before_create is not None and not self.before_create():
            return FakeReply(drop=True)
        batch_id = self.add_batch(body["requests"])
        if self.after_create is not None:
            self.after_create(batch_id)
        return FakeReply(self._batch(batch_id))

    def _outcome(self, custom_id: str) -> str | None:
        if custom_id in self.batch_outcomes:
            return self.batch_outcomes[custom_id]
        return self.batch_outcomes.get(re.sub(r"-[0-9a-f]{10}$", "", custom_id))

    def _list(self, query: str) -> FakeReply:
        """A page of `GET /v1/messages/batches`: newest first, `after_id` the cursor."""
        params = dict(part.partition("=")[::2] for part in query.split("&") if part)
        size = min(int(params.get("limit") or 20), self.list_page_size)
        with self._lock:
            newest_first = list(self.batches)[::-1]
        after = params.get("after_id")
        start = newest_first.index(after) + 1 if after in newest_first else 0
        page = newest_first[start : start + size]
        return FakeReply(
            {
                "data": [self._batch(batch_id) for batch_id in page],
                "has_more": start + size < len(newest_first),
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
            }
        )

    def _batch(self, batch_id: str) -> dict[str, Any]:
        state = self.batches[batch_id]
        ended = state["polls"] >= self.batch_polls
        count = len(state["requests"])
        expired = sum(self._outcome(r["custom_id"]) == "expired" for r in state["requests"])
        errored = sum(self._outcome(r["custom_id"]) == "errored" for r in state["requests"])
        created = datetime.fromtimestamp(state.get("created_at", time.time()), UTC)
        return {
            "id": batch_id,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": {
                "processing": 0 if ended else count,
                "succeeded": count - expired - errored if ended else 0,
                "errored": errored if ended else 0,
                "canceled": 0,
                "expired": expired if ended else 0,
            },
            "created_at": created.isoformat().replace("+00:00", "Z"),
            "ended_at": "2026-11-23T10:05:00Z" if ended else None,
            "expires_at": "2026-11-24T10:00:00Z",
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"{self.base_url}/v1/messages/batches/{batch_id}/results"
            if ended
            else None,
        }

    def get(self, path: str) -> FakeReply:
        parts = path.split("?")[0].strip("/").split("/")
        if parts == ["v1", "messages", "batches"]:
            return self._list(path.partition("?")[2])
        if (
            len(parts) >= 4
            and parts[:3] == ["v1", "messages", "batches"]
            and parts[3] in self.batches
        ):
            batch_id = parts[3]
            if len(parts) == 4:
                self.batches[batch_id]["polls"] += 1
                return FakeReply(self._batch(batch_id))
            if parts[4:] == ["results"]:
                state = self.batches[batch_id]
                lines = [
                    json.dumps(
                        {"custom_id": r["custom_id"], "result": {"type": "canceled"}}
                        if state.get("canceled")
                        else self._result(r)
                    )
                    for r in state["requests"]
                ]
                return FakeReply(
                    raw=("\n".join(lines) + "\n").encode(),
                    headers={"content-type": "application/binary"},
                )
        return super().get(path)

    def _result(self, entry: dict[str, Any]) -> dict[str, Any]:
        custom_id = entry["custom_id"]
        outcome = self._outcome(custom_id)
        if outcome == "expired":
            return {"custom_id": custom_id, "result": {"type": "expired"}}
        if outcome == "errored":
            error = {
                "type": "error",
                "error": {"type": "invalid_request_error", "message": "max_tokens: too large"},
            }
            return {"custom_id": custom_id, "result": {"type": "errored", "error": error}}
        with self._lock:
            self.requests.append(entry["params"])
        reply = self.handler(entry["params"]) if self.handler else self.auto(entry["params"])
        body = reply.body if isinstance(reply, FakeReply) else reply
        return {"custom_id": custom_id, "result": {"type": "succeeded", "message": body}}

    def auto(self, request: dict[str, Any]) -> dict[str, Any]:
        body = _auto(request)
        fresh, written, read = self.prompt_cache.usage(request)
        body["usage"].update(
            input_tokens=fresh, cache_creation_input_tokens=written, cache_read_input_tokens=read
        )
        return body

    def sse(self, request: dict[str, Any], body: dict[str, Any]) -> list[bytes]:
        return stream_events(body, chunk_chars=self.stream_chunk_chars)

    def stream_error(self, kind: str, text: str) -> bytes:
        """The `error` event the API sends when a stream fails midway (e.g. `overloaded_error`)."""
        return sse_event("error", {"type": "error", "error": {"type": kind, "message": text}})

    def error(self, status: int, kind: str, text: str) -> FakeReply:
        return error_reply(status, kind, text)

    def __enter__(self) -> FakeAnthropic:
        self.start()
        return self
