"""A loopback fake of the Anthropic Messages API, for end-to-end tests through the real SDK.

It speaks the wire format (`POST /v1/messages`, message and error bodies as the API sends them),
keeps every request it receives, and answers from a queue, a handler, or, by default, with a tool
call whose input is a placeholder object built from the request's tool schema.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeAnthropic", "FakeReply", "error_reply", "message", "text_block", "tool_use_block"]

_ids = itertools.count(1)


@dataclass
class FakeReply:
    """One scripted HTTP reply: status, JSON body, extra headers and a delay before answering."""

    body: dict[str, Any]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


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
    """An API error as Anthropic sends it, e.g. `error_reply(429, "rate_limit_error", "…")`."""
    body = {
        "type": "error",
        "error": {"type": kind, "message": text},
        "request_id": f"req_fake{next(_ids):08d}",
    }
    return FakeReply(body, status, {k.replace("_", "-"): v for k, v in headers.items()})


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
    if kind == "object":
        props = schema.get("properties", {})
        return {name: placeholder(sub, defs) for name, sub in props.items()}
    if kind == "array":
        return [placeholder(schema.get("items", {"type": "string"}), defs)] * schema.get(
            "minItems", 1
        )
    return {"string": "example", "integer": 1, "number": 1.0, "boolean": True, "null": None}.get(
        kind, "example"
    )


def _auto(request: dict[str, Any]) -> dict[str, Any]:
    tools = request.get("tools") or []
    model = request.get("model", "claude-sonnet-4-6")
    size = len(json.dumps(request)) // 4
    if tools:
        tool = tools[0]
        data = placeholder(tool.get("input_schema", {}))
        return message([tool_use_block(tool["name"], data)], model=model, input_tokens=size)
    return message([text_block("example")], model=model, input_tokens=size)


Handler = Callable[[dict[str, Any]], "FakeReply | dict[str, Any]"]


class FakeAnthropic:
    """A Messages API on 127.0.0.1 (random port). Use as a context manager.

    Replies come from `replies` (a queue of `FakeReply` or message bodies) while it holds any,
    then from `handler(request_json)`, then from the schema placeholder. `requests` holds every
    JSON request body received and `request_headers` their headers.
    """

    __test__ = False

    def __init__(self, handler: Handler | None = None) -> None:
        self.handler = handler
        self.replies: list[FakeReply | dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeAnthropic is not started; use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def reply(self, *items: FakeReply | dict[str, Any]) -> None:
        """Queue replies, answered in order before the handler is consulted."""
        with self._lock:
            self.replies.extend(items)

    def _next(self, body: dict[str, Any]) -> FakeReply:
        with self._lock:
            self.requests.append(body)
            queued = self.replies.pop(0) if self.replies else None
        item = queued if queued is not None else self.handler(body) if self.handler else _auto(body)
        return item if isinstance(item, FakeReply) else FakeReply(item)

    def start(self) -> FakeAnthropic:
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                if self.path.split("?")[0] != "/v1/messages":
                    reply = error_reply(404, "not_found_error", f"Not found: {self.path}")
                else:
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        body = None
                    if not isinstance(body, dict):
                        reply = error_reply(400, "invalid_request_error", "body is not JSON")
                    else:
                        with fake._lock:
                            fake.request_headers.append(
                                {k.lower(): v for k, v in self.headers.items()}
                            )
                        reply = fake._next(body)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                payload = json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                if "request-id" not in reply.headers:
                    self.send_header("request-id", f"req_fake{next(_ids):08d}")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def version_string(self) -> str:
                return "promptcast-fake-anthropic"

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
