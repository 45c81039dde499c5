"""The native Anthropic backend: the anthropic SDK for transport, instructor's tool mode for shape.

Everything constant for an output model (the tool definition, `tools`, `tool_choice`) is built once,
so a call is one `messages.create` plus one pydantic validation. The reply is read through the SDK's
raw response API: its JSON body is parsed once (pydantic-core's `from_json`) and the answer picked
out of it, without building the SDK's `Message` objects (about a third of a call's CPU). The `Message`
is built only when a re-ask needs it: instructor's Anthropic handler then answers the failed tool
call with a `tool_result` carrying only the validation error.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic_core import from_json, to_json

from promptcast._config import check_api_key, endpoint_settings, key_source
from promptcast._retry import is_retryable_status, parse_retry_after
from promptcast._schemas import anthropic_schema, schema_rejection
from promptcast._secrets import scrub
from promptcast._tokens import text_tokens
from promptcast.backends._parts import anthropic_content, anthropic_messages, has_media
from promptcast.backends.base import (
    Backend,
    Capabilities,
    ModelReply,
    ModelRequest,
    ProviderBatchInfo,
    StreamDelta,
    is_transport_failure,
    json_in_text,
    malformed_reply,
    token_count,
)
from promptcast.errors import BackendError, ConfigurationError
from promptcast.render import Prompt

if TYPE_CHECKING:
    import anthropic

__all__ = ["AnthropicBackend"]


def _sdk() -> Any:
    try:
        import anthropic
    except ImportError as exc:  # pragma: no cover - anthropic is a core dependency
        raise ConfigurationError(
            "The anthropic package is missing; reinstall promptcast: pip install promptcast",
            extra="anthropic",
        ) from exc
    return anthropic


@lru_cache(maxsize=1)
def _no_sdk_spans() -> dict[str, Any]:
    """The option that switches off the SDK's own `anthropic.messages.create` span on the clients
    promptcast creates: promptcast's `chat {model}` span (promptcast._telemetry) carries the same
    GenAI attributes, and two client spans per request would count every token twice. Clients
    handed in keep their own setting."""
    import inspect

    accepted = inspect.signature(_sdk().Anthropic.__init__).parameters
    return {"open_telemetry": False} if "open_telemetry" in accepted else {}


@lru_cache(maxsize=512)
def tool_for(model: type[BaseModel]) -> dict[str, Any]:
    """The forced-tool definition whose input schema is the output model's JSON schema."""
    from instructor import generate_anthropic_schema

    return dict(generate_anthropic_schema(model))


@lru_cache(maxsize=512)
def _tool_params(model: type[BaseModel]) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """The output tool's name and the `tools` / `tool_choice` parameters that force it, built once
    per output model (the SDK copies request data before sending, so sharing them is safe)."""
    tool = tool_for(model)
    choice = {"type": "tool", "name": tool["name"], "disable_parallel_tool_use": True}
    return tool["name"], [tool], choice


DEFAULT_BASE_URL = "https://api.anthropic.com"
_Endpoint = tuple[str | None, str | None]


class AnthropicBackend(Backend):
    """Claude through the Messages API.

    Credentials and base URL come from the arguments, else per model from
    `configure(models={"anthropic/…": {...}})`, else `configure(providers={"anthropic": {...}})`,
    else `ANTHROPIC_API_KEY` / `ANTHROPIC_BASE_URL`. One client per endpoint (and per event loop
    for async), created on first use and closed by `close()` / `aclose()`.

    Or hand in your own clients (`AnthropicBedrock`, `AnthropicVertex`, a proxy, a custom HTTP
    transport): `client=` for sync calls, `async_client=` for async ones (given only `client`,
    async calls run it in a worker thread). Those are used as they are, with their own
    credentials, and never closed by promptcast; their SDK retries are switched off for our
    calls, since promptcast's retry layer is the only one.
    """

    provider = "anthropic"
    capabilities = Capabilities(
        batch=True, streaming=True, output_modes=frozenset({"native", "tool", "prompted"})
    )

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        client: anthropic.Anthropic | Any | None = None,
        async_client: anthropic.AsyncAnthropic | Any | None = None,
    ) -> None:
        self._api_key = api_key
        self._base_url = base_url
        self._given = client.with_options(max_retries=0) if client is not None else None
        self._given_async = (
            async_client.with_options(max_retries=0) if async_client is not None else None
        )
        self._sync: dict[_Endpoint, anthropic.Anthropic] = {}
        self._async: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[_Endpoint, _AsyncPool]
        ] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def _endpoint(self, model: str | None) -> _Endpoint:
        given = self._api_key.strip() if self._api_key is not None else None
        if given:
            check_api_key(given, "AnthropicBackend(api_key=…)")
        key, url = endpoint_settings("anthropic", model, check=not given)
        return given or key, self._base_url or url

    def check(self, model: str) -> None:
        if self._given is not None or self._given_async is not None:
            return
        _checked(self._endpoint(model), model)

    def endpoint(self, model: str) -> str:
        given = self._given or self._given_async
        if given is not None:
            return str(given.base_url)
        _, url = self._endpoint(model)
        return url or os.environ.get("ANTHROPIC_BASE_URL") or DEFAULT_BASE_URL

    def warm_up(self, request: ModelRequest) -> None:
        _sdk()
        if request.output_model is not None:
            tool_for(request.output_model)

    def client(self, model: str | None = None) -> anthropic.Anthropic:
        """The sync client for `model`'s endpoint."""
        if self._given is not None:
            return self._given
        if self._given_async is not None:
            raise ConfigurationError(
                "this AnthropicBackend was given only an async client: call tasks with "
                "acall/arun, or pass client= as well"
            )
        endpoint = self._endpoint(model)
        if model is not None:
            _checked(endpoint, model)
        client = self._sync.get(endpoint)
        if client is None:
            with self._lock:
                client = self._sync.get(endpoint)
                if client is None:
                    client = _sdk().Anthropic(
                        api_key=endpoint[0], base_url=endpoint[1], max_retries=0, **_no_sdk_spans()
                    )
                    self._sync[endpoint] = client
        return client

    def async_client(self, model: str | None = None) -> anthropic.AsyncAnthropic:
        """The running event loop's async client for `model`'s endpoint."""
        if self._given_async is not None:
            return self._given_async
        return self._async_pool(model).first()

    def _async_pool(self, model: str | None) -> _AsyncPool:
        endpoint = self._endpoint(model)
        if model is not None:
            _checked(endpoint, model)
        loop = asyncio.get_running_loop()
        pools = self._async.get(loop)
        if pools is None:
            pools = self._async.setdefault(loop, {})
        pool = pools.get(endpoint)
        if pool is None:
            pool = pools[endpoint] = _AsyncPool(endpoint)
        return pool

    def close(self) -> None:
        """Close the sync clients this backend created (a later call opens new ones)."""
        with self._lock:
            clients, self._sync = list(self._sync.values()), {}
        for client in clients:
            client.close()

    async def aclose(self) -> None:
        """Close the running event loop's async clients that this backend created."""
        pools = self._async.pop(asyncio.get_running_loop(), {})
        for pool in pools.values():
            await pool.close()

    def request(self, request: ModelRequest) -> ModelReply:
        kwargs = _kwargs(request)
        client = self.client(request.model)
        with _mapped_errors(request):
            response = client.messages.with_raw_response.create(**kwargs)
            body = _body(request, response.http_response)
        return _reply(request, body)

    async def arequest(self, request: ModelRequest) -> ModelReply:
        kwargs = _kwargs(request)
        if self._given is not None and self._given_async is None:
            return await asyncio.to_thread(self.request, request)
        if self._given_async is not None:
            with _mapped_errors(request):
                response = await self._given_async.messages.with_raw_response.create(**kwargs)
                body = _body(request, response.http_response)
            return _reply(request, body)
        pool = self._async_pool(request.model)
        shard = pool.pick()
        pool.busy[shard] += 1
        try:
            with _mapped_errors(request):
                response = await pool.client(shard).messages.with_raw_response.create(**kwargs)
                body = _body(request, response.http_response)
        finally:
            pool.busy[shard] -= 1
        return _reply(request, body)

    # Streaming: the same parameters through the SDK's `messages.stream()`

    def stream(self, request: ModelRequest) -> Iterator[StreamDelta | ModelReply]:
        from promptcast.backends import _anthropic_stream as streaming

        kwargs = _kwargs(request)
        answer = streaming.Answer(request, _answer_tool(request))
        return streaming.stream_reply(
            _sdk(),
            self.client(request.model),
            kwargs,
            request,
            answer,
            lambda message: _reply(request, message),
            _mapped_errors,
        )

    def astream(self, request: ModelRequest) -> AsyncIterator[StreamDelta | ModelReply]:
        from promptcast.backends import _anthropic_stream as streaming

        if self._given is not None and self._given_async is None:
            return streaming.in_thread(self.stream(request))
        kwargs = _kwargs(request)
        answer = streaming.Answer(request, _answer_tool(request))
        client = self._given_async or self._async_pool(request.model).first()
        return streaming.astream_reply(
            _sdk(),
            client,
            kwargs,
            request,
            answer,
            lambda message: _reply(request, message),
            _mapped_errors,
        )

    # Message Batches: the same requests at half the price, for work that can wait

    async def submit_batch(self, requests: list[tuple[str, ModelRequest]]) -> str:
        """Submit `(custom_id, request)` pairs as one Message Batch; returns its id."""
        entries: list[Any] = [
            {"custom_id": custom_id, "params": batch_params(request)}
            for custom_id, request in requests
        ]
        with _mapped_errors(requests[0][1]):
            client = self.async_client(requests[0][1].model)
            batch = await client.messages.batches.create(requests=entries)
        return str(batch.id)

    async def batch_ended(self, batch_id: str, *, model: str | None = None) -> bool:
        """Whether the batch (submitted for `model`'s endpoint) has finished processing."""
        with _mapped_errors(ModelRequest(model="batch", prompt=_EMPTY, output_model=None)):
            batch = await self.async_client(model).messages.batches.retrieve(batch_id)
        return bool(batch.processing_status == "ended")

    async def cancel_batch(self, batch_id: str, *, model: str | None = None) -> None:
        """Cancel the batch (submitted for `model`'s endpoint): requests not processed yet are
        not billed."""
        with _mapped_errors(ModelRequest(model="batch", prompt=_EMPTY, output_model=None)):
            await self.async_client(model).messages.batches.cancel(batch_id)

    async def list_batches(
        self, *, since: float, model: str | None = None
    ) -> list[ProviderBatchInfo]:
        """The Message Batches created at or after `since` (epoch seconds) on `model`'s
        endpoint, newest first: the API lists newest first, so paging stops at the first older
        one."""
        found: list[ProviderBatchInfo] = []
        with _mapped_errors(ModelRequest(model="batch", prompt=_EMPTY, output_model=None)):
            async for batch in self.async_client(model).messages.batches.list(limit=100):
                created = batch.created_at.timestamp()
                if created < since:
                    break
                counts = batch.request_counts
                total = (
                    counts.processing
                    + counts.succeeded
                    + counts.errored
                    + counts.canceled
                    + counts.expired
                )
                found.append(ProviderBatchInfo(str(batch.id), created, total))
        return found

    async def batch_results(
        self, batch_id: str, requests: dict[str, ModelRequest]
    ) -> AsyncIterator[tuple[str, ModelReply | str]]:
        """Each request's reply, or why it has none ("expired", "errored: …", "canceled")."""
        model = next(iter(requests.values())).model if requests else None
        with _mapped_errors(ModelRequest(model="batch", prompt=_EMPTY, output_model=None)):
            results = await self.async_client(model).messages.batches.results(batch_id)
        try:
            async for entry in results:
                result = entry.result
                if entry.custom_id not in requests:  # not asked for here (another run's batch)
                    yield entry.custom_id, "unrequested"
                elif result.type == "succeeded":
                    try:
                        reply: ModelReply | str = _reply(requests[entry.custom_id], result.message)
                    except BackendError as exc:  # one malformed entry must not end the others
                        reply = f"errored: {exc}"
                    yield entry.custom_id, reply
                elif result.type == "errored":
                    error = getattr(getattr(result.error, "error", None), "message", "") or ""
                    yield entry.custom_id, f"errored: {error}".strip()
                else:
                    yield entry.custom_id, str(result.type)
        finally:  # a caller that stops early (another run's results) leaves no stream open
            await results.close()

    def batch_params(self, request: ModelRequest) -> dict[str, Any]:
        return batch_params(request)

    def reask(self, request: ModelRequest, reply: ModelReply, error: str) -> ModelRequest:
        if request.output_model is None or reply.raw is None or request.output_mode != "tool":
            return super().reask(request, reply, error)
        from instructor import Mode, Provider
        from instructor.processing import handle_reask_kwargs

        message = reply.raw
        if isinstance(message, dict):  # the reply's JSON body: build the SDK's `Message` now
            message = _sdk().types.Message.model_construct(**message)
        added = handle_reask_kwargs(
            {"messages": []}, Mode.TOOLS, message, ValueError(error), provider=Provider.ANTHROPIC
        )["messages"]
        return replace(request, history=request.history + tuple(added))


class _AsyncPool:
    """The async clients of one endpoint on one event loop: up to `SHARDS` SDK clients, each with
    its share of the SDK's connection limits, and each request sent on the least busy one.

    Why not one client: httpcore's pool scans every connection it holds for each request (is it
    idle, expired, readable: a `poll` per connection), so with hundreds of requests in flight that
    scan dominates a call's CPU. Eight pools of an eighth of the connections each cut the client
    CPU per call by about a third at 256 and at 1,024 in flight (benchmarks/throughput.py). A
    client is created only when every existing one is busy, so sequential use opens one.
    """

    SHARDS = 8

    def __init__(self, endpoint: _Endpoint) -> None:
        self.endpoint = endpoint
        self.clients: list[anthropic.AsyncAnthropic | None] = [None] * self.SHARDS
        self.busy = [0] * self.SHARDS

    def pick(self) -> int:
        busy = self.busy
        if not busy[0]:
            return 0
        return min(range(self.SHARDS), key=busy.__getitem__)

    def first(self) -> anthropic.AsyncAnthropic:
        return self.client(0)

    def client(self, shard: int) -> anthropic.AsyncAnthropic:
        client = self.clients[shard]
        if client is None:
            sdk = _sdk()
            limits = sdk.DEFAULT_CONNECTION_LIMITS
            share = type(limits)(
                max_connections=max(1, limits.max_connections // self.SHARDS),
                max_keepalive_connections=max(1, limits.max_keepalive_connections // self.SHARDS),
                keepalive_expiry=limits.keepalive_expiry,
            )
            client = self.clients[shard] = sdk.AsyncAnthropic(
                api_key=self.endpoint[0],
                base_url=self.endpoint[1],
                max_retries=0,
                http_client=sdk.DefaultAsyncHttpxClient(limits=share),
                **_no_sdk_spans(),
            )
        return client

    async def close(self) -> None:
        clients, self.clients = self.clients, [None] * self.SHARDS
        for client in clients:
            if client is not None:
                await client.close()


def batch_params(request: ModelRequest) -> dict[str, Any]:
    """The `messages.create` parameters of a request as a Message Batch entry carries them."""
    kwargs = _kwargs(request)
    kwargs.pop("timeout", None)
    kwargs.pop("extra_headers", None)
    kwargs.update(kwargs.pop("extra_body", {}))
    return kwargs


_EMPTY = Prompt(system=None)


def _kwargs(request: ModelRequest) -> dict[str, Any]:
    prompt = request.prompt
    kwargs: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": [
            *anthropic_messages(prompt.messages, caching=request.prompt_caching),
            *request.history,
        ],
    }
    if prompt.system:
        kwargs["system"] = anthropic_content(prompt.system, caching=request.prompt_caching)
    if request.timeout_s is not None:
        kwargs["timeout"] = request.timeout_s
    if has_media(prompt):  # the media header names each image's input and hash
        kwargs["extra_headers"] = request.tracing_headers()
    elif request.task or request.template_hash:
        kwargs["extra_headers"] = _tracing_headers(request.task, request.template_hash)
    if request.temperature is not None:
        # anthropic>=1.0 dropped `temperature` from the signature; the API still takes it on models
        # that support sampling options, so it travels in the body, and only when a task sets it.
        kwargs["extra_body"] = {"temperature": request.temperature}
    if request.output_model is not None:
        mode = request.output_mode
        if mode == "native":  # constrained decoding: the reply's text is the JSON
            kwargs["output_config"] = _output_config(request.output_model)
        elif mode == "tool":
            _, kwargs["tools"], kwargs["tool_choice"] = _tool_params(request.output_model)
            if request.thinking_budget:  # a forced tool call is refused with thinking on
                kwargs["tool_choice"] = _AUTO_TOOL
        # prompted: the schema is in the system block already (promptcast._modes)
    if request.thinking_budget:
        kwargs["thinking"] = {"type": "enabled", "budget_tokens": request.thinking_budget}
        kwargs["max_tokens"] = request.max_tokens + request.thinking_budget
    if request.prompt_caching:
        _cache_breakpoints(kwargs, request)
    return kwargs


_AUTO_TOOL = {"type": "auto", "disable_parallel_tool_use": True}
_EPHEMERAL = {"type": "ephemeral"}
#: Anthropic caches at most this many breakpoints per request.
MAX_BREAKPOINTS = 4
# The shortest prefix each model family caches (tokens); shorter prefixes are sent without one.
_MIN_CACHEABLE = (
    ("claude-opus-4-5", 4096),
    ("claude-opus-4-6", 4096),
    ("claude-haiku-4-5", 4096),
    ("claude-3-haiku", 2048),
    ("claude-3-5-haiku", 2048),
)


def min_cacheable_tokens(model: str) -> int:
    """The shortest prompt prefix `model` caches."""
    return next((n for prefix, n in _MIN_CACHEABLE if model.startswith(prefix)), 1024)


@lru_cache(maxsize=512)
def _output_config(model: type[BaseModel]) -> dict[str, Any]:
    """`output_config` for native mode, built once per output model."""
    return {"format": {"type": "json_schema", "schema": anthropic_schema(model)}}


def _tokens(value: Any) -> int:
    """A rough token count of request content (`promptcast._tokens.text_tokens`)."""
    if isinstance(value, str):
        return text_tokens(value)
    if isinstance(value, dict) and value.get("type") == "text":
        return text_tokens(value.get("text", ""))
    return text_tokens(json.dumps(value, default=str, ensure_ascii=False))


@lru_cache(maxsize=512)
def _tool_tokens(model: type[BaseModel]) -> tuple[int, ...]:
    """The rough size of each tool sent for `model`'s output: constant, so counted once."""
    return tuple(_tokens(tool) for tool in _tool_params(model)[1])


def _cache_breakpoints(kwargs: dict[str, Any], request: ModelRequest) -> None:
    """Place `cache_control` at the end of the static prefix: the system block when it reads no
    input (after the tools, which it then covers), plus the template's `{% cachepoint %}`s; at
    most `MAX_BREAKPOINTS` (the last ones), none where the prefix before it is shorter than the
    model caches. Blocks that hold data are never marked: the renderer refuses a cache point
    after data, and a system block that reads an input is not static."""
    system = kwargs.get("system")
    tools = kwargs.get("tools")
    tool_sizes: tuple[int, ...] = ()
    if tools:
        assert request.output_model is not None  # the only tool is the output tool
        kwargs["tools"] = tools = list(tools)
        tool_sizes = _tool_tokens(request.output_model)
    minimum = min_cacheable_tokens(request.model)
    static = sum(tool_sizes)
    if system and request.prompt.system_static:
        static += _tokens(system) if isinstance(system, str) else sum(map(_tokens, system))
        if static >= minimum:
            blocks = [{"type": "text", "text": system}] if isinstance(system, str) else list(system)
            blocks[-1] = {**blocks[-1], "cache_control": _EPHEMERAL}
            kwargs["system"] = blocks
    elif tools and static >= minimum:  # the system block holds data: only the tools are static
        tools[-1] = {**tools[-1], "cache_control": _EPHEMERAL}
    # every block in prefix order, with the list that holds it (to drop a mark where needed)
    places: list[tuple[list[Any], int]] = []
    if tools:
        places += [(tools, i) for i in range(len(tools))]
    if isinstance(kwargs.get("system"), list):
        places += [(kwargs["system"], i) for i in range(len(kwargs["system"]))]
    for message in kwargs["messages"]:
        if isinstance(message.get("content"), list):
            places += [(message["content"], i) for i in range(len(message["content"]))]
        else:
            places.append(([message], 0))
    size = 0
    marked: list[tuple[list[Any], int]] = []
    for holder, i in places:
        block = holder[i]
        if holder is tools:
            size += tool_sizes[i]
        else:
            size += _tokens(block.get("content") if "role" in block else block)
        if isinstance(block, dict) and "cache_control" in block:
            if size < minimum:
                holder[i] = {k: v for k, v in block.items() if k != "cache_control"}
            else:
                marked.append((holder, i))
    for holder, i in marked[:-MAX_BREAKPOINTS]:
        holder[i] = {k: v for k, v in holder[i].items() if k != "cache_control"}


def _answer_tool(request: ModelRequest) -> str | None:
    """The name of the tool whose input is the answer (tool mode), for picking stream deltas."""
    if request.output_model is None:
        return None
    return _tool_params(request.output_model)[0]


@lru_cache(maxsize=1024)
def _tracing_headers(task: str | None, template_hash: str | None) -> dict[str, str]:
    """`ModelRequest.tracing_headers()`, built once per task (the SDK copies headers it is given)."""
    return ModelRequest(
        model="", prompt=_EMPTY, output_model=None, task=task, template_hash=template_hash
    ).tracing_headers()


def _body(request: ModelRequest, response: Any) -> Any:
    """The parsed JSON body of a 2xx Messages API response (the SDK's raw `http_response`).

    Invalid JSON raises `ValueError`, which `_mapped_errors` reports as a malformed reply, as the
    SDK's own parse does; a body that is not JSON at all (a proxy's HTML page) is not the API's
    shape."""
    try:
        return from_json(response.content)
    except ValueError as exc:
        kind = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        if kind.endswith("json"):
            raise
        raise malformed_reply("anthropic", request, exc) from exc


def _reply(request: ModelRequest, body: Any) -> ModelReply:
    """Pick the answer out of a reply: the output tool's call, skipping thinking and other tools.
    `body` is the reply's JSON (or, from a Message Batch, the SDK's `Message`)."""
    try:
        if not isinstance(body, dict):
            body = body.to_dict(warnings=False) if hasattr(body, "to_dict") else body
        return _read_reply(request, body)
    except (AttributeError, TypeError, KeyError, ValueError) as exc:
        raise malformed_reply("anthropic", request, exc) from exc


def _read_reply(request: ModelRequest, body: dict[str, Any]) -> ModelReply:
    content = body["content"]
    text = "".join(block["text"] for block in content if block["type"] == "text").strip()
    data: Any = text
    raw_text = text
    if request.output_model is not None:
        name = _tool_params(request.output_model)[0]
        calls = [b for b in content if b["type"] == "tool_use" and b["name"] == name]
        if calls:
            data = calls[0]["input"]
            raw_text = to_json(data).decode()  # pydantic-core: a third of json.dumps's time
        else:  # native and prompted modes (or a model that wrote JSON instead of the tool call)
            data = _json_object(text)
    usage = body["usage"]
    return ModelReply(
        data=data,
        text=raw_text,
        # uncached input only: cache tokens have their own prices
        input_tokens=token_count(usage["input_tokens"], "input_tokens"),
        cache_write_tokens=token_count(
            usage.get("cache_creation_input_tokens"), "cache_creation_input_tokens", optional=True
        ),
        cache_read_tokens=token_count(
            usage.get("cache_read_input_tokens"), "cache_read_input_tokens", optional=True
        ),
        output_tokens=token_count(usage["output_tokens"], "output_tokens"),
        truncated=body.get("stop_reason") == "max_tokens",
        raw=body,
        response_id=body.get("id"),
        response_model=body.get("model"),
        finish_reason=body.get("stop_reason"),
    )


def _json_object(text: str) -> Any:
    """The JSON object a text answer holds (the whole text in native mode), else `None`."""
    try:
        value = from_json(text)
    except ValueError:
        return json_in_text(text)
    return value if isinstance(value, dict) else None


@contextmanager
def _mapped_errors(request: ModelRequest) -> Iterator[None]:
    """Turn SDK exceptions into `BackendError`; the provider's message stays out of prompts."""
    sdk = _sdk()
    context: dict[str, Any] = {"task": request.task, "model": f"anthropic/{request.model}"}
    try:
        yield
    except sdk.APIStatusError as exc:
        status = exc.status_code
        kind = _error_type(exc.body)
        quota = kind == "billing_error" or "credit balance" in str(exc.message).lower()
        refused = f"; the API key was refused: check {key_source('anthropic', request.model)}"
        raise BackendError(
            f"Anthropic returned HTTP {status} ({kind or 'error'}): {exc.message}"
            + (refused if status == 401 else "")
            + schema_rejection(request.output_mode, status, str(exc.message), context["model"]),
            provider="anthropic",
            status=status,
            retryable=is_retryable_status(status) and not quota,
            retry_after=parse_retry_after(exc.response.headers.get("retry-after")),
            **context,
        ) from exc
    except ValueError as exc:  # a 2xx reply whose body is not the JSON it should be
        raise BackendError(
            f"Anthropic sent a malformed reply ({type(exc).__name__}: {exc})",
            provider="anthropic",
            retryable=True,
            **context,
        ) from exc
    except sdk.APIConnectionError as exc:
        cause = exc.__cause__ or exc
        detail = scrub(str(cause).strip()).splitlines()[0] if str(cause).strip() else ""
        raise BackendError(
            f"cannot reach the Anthropic API ({type(cause).__name__}: {detail}); check the "
            "network or ANTHROPIC_BASE_URL",
            provider="anthropic",
            retryable=is_transport_failure(exc),
            **context,
        ) from exc


def _checked(endpoint: _Endpoint, model: str) -> None:
    if not endpoint[0] and not os.environ.get("ANTHROPIC_AUTH_TOKEN"):
        raise ConfigurationError(
            f"No Anthropic API key for anthropic/{model}: set ANTHROPIC_API_KEY (or "
            "configure(providers={'anthropic': {'api_key': …}})), or run offline with a "
            "test/… model or recorded cassettes.",
            env_var="ANTHROPIC_API_KEY",
        )


def _error_type(body: object) -> str | None:
    if isinstance(body, dict):
        error = body.get("error")
        kind = error.get("type") if isinstance(error, dict) else None
        if isinstance(kind, str):
            return kind
    return None
