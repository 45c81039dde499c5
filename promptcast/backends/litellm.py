"""The litellm backend: every other provider, and self-hosted open models, in OpenAI's format.

Model strings: `openai/gpt-4o-mini`, `gemini/…`, `bedrock/…`, `mistral/…`, `openrouter/…` go to
litellm as they are; `litellm/<anything>` forces litellm; `ollama/<model>` talks to Ollama's
OpenAI-compatible endpoint (default `http://localhost:11434/v1`); `hosted_vllm/<model>` to a vLLM
server (its base URL is required). Structured output follows instructor's modes: a forced tool
call (`Mode.TOOLS`) for hosted providers, a `json_schema` response format (`Mode.JSON_SCHEMA`,
guided decoding) for self-hosted servers, whose tool calling depends on how they were started.

litellm is imported on first use, with its cost map read from the package rather than fetched,
and its own retries off: promptcast's retry layer is the only one.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

from promptcast import _json
from promptcast._config import check_api_key, endpoint_settings, get_config, key_source
from promptcast._modes import model_setting, native_format
from promptcast._retry import is_retryable_status, parse_retry_after
from promptcast._schemas import (
    drop_strict_nulls,
    gemini_schema,
    json_object_schema,
    openai_strict_schema,
    schema_rejection,
)
from promptcast.backends._parts import openai_content, openai_messages
from promptcast.backends._redirects import keep_credentials_on_origin
from promptcast.backends.base import (
    Backend,
    Capabilities,
    ModelReply,
    ModelRequest,
    StreamDelta,
    is_transport_failure,
    json_in_text,
    malformed_reply,
    token_count,
)
from promptcast.errors import BackendError, ConfigurationError

__all__ = ["LiteLLMBackend", "known_providers"]

JSON_SCHEMA_PROVIDERS = frozenset({"ollama", "hosted_vllm"})
GEMINI_PROVIDERS = frozenset({"gemini", "vertex_ai"})
# providers whose litellm route passes `cache_control` breakpoints through (OpenAI and most
# OpenAI-compatible servers cache prefixes by themselves, and take no such key)
# providers whose litellm route takes Anthropic's `thinking` parameter (others reason by
# themselves or not at all: a task's thinking budget is not sent to them)
THINKING = frozenset({"anthropic", "bedrock", "vertex_ai", "gemini"})
CACHE_CONTROL = frozenset({"anthropic", "bedrock", "vertex_ai", "openrouter", "databricks"})
OLLAMA_BASE_URL = "http://localhost:11434/v1"


@lru_cache(maxsize=1)
def _litellm() -> Any:
    # litellm fetches its price map and Anthropic's beta headers from GitHub unless told not to:
    # a request to a third party on the first call, and up to 5 s where egress is dropped
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS", "True")
    try:
        import litellm
    except ImportError as exc:
        raise ConfigurationError(
            'This model needs the litellm backend: pip install "promptcast[litellm]"',
            extra="litellm",
        ) from exc
    litellm.suppress_debug_info = True
    keep_credentials_on_origin()  # its SDKs follow redirects with the key in any header
    litellm.disable_aiohttp_transport = True  # httpx everywhere: one transport for vcrpy to record
    # litellm's bundled model map no longer lists Gemini 1.5 (retired by Google in 2025); unlisted,
    # it would paste the schema into the prompt instead of sending Gemini's response schema, and
    # fold the system prompt into the user turn
    litellm.register_model(
        {
            f"gemini/{name}": {"litellm_provider": "gemini", "mode": "chat", **GEMINI_1_5}
            for name in GEMINI_1_5_MODELS
            if f"gemini/{name}" not in litellm.model_cost
        }
    )
    return litellm


GEMINI_1_5_MODELS = tuple(
    f"gemini-1.5-{size}{version}"
    for size in ("pro", "flash", "flash-8b")
    for version in ("", "-latest", "-001", "-002")
)
GEMINI_1_5 = {
    "supports_response_schema": True,
    "supports_function_calling": True,
    "supports_tool_choice": True,
    "supports_system_messages": True,
    "max_input_tokens": 2_097_152,
    "max_output_tokens": 8192,
}


def known_providers() -> frozenset[str]:
    """Every provider prefix litellm routes (`openai`, `gemini`, `hosted_vllm`, …)."""
    names = {str(getattr(p, "value", p)) for p in _litellm().provider_list}
    return frozenset(names | {"litellm"})


@lru_cache(maxsize=512)
def function_for(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAI function definition whose parameters are the output model's JSON schema."""
    from instructor import generate_openai_schema

    return dict(generate_openai_schema(model))


class LiteLLMBackend(Backend):
    """One backend instance per provider prefix (`openai`, `ollama`, …).

    Credentials come from `configure(models=…)`, then `configure(providers=…)`, then the
    provider's own variables (`OPENAI_API_KEY`/`OPENAI_BASE_URL`, `GEMINI_API_KEY`, …), and are
    always passed to litellm explicitly for OpenAI-compatible routes, so litellm never falls back
    to another provider's variable (an Ollama or vLLM box never sees `OPENAI_API_KEY`).
    """

    capabilities = Capabilities(
        streaming=True, output_modes=frozenset({"native", "tool", "prompted"})
    )

    def __init__(self, provider: str) -> None:
        self.provider = provider

    def _route(self, model: str) -> tuple[str, str]:
        """The provider whose credentials `model` uses, and the model name within it."""
        if self.provider == "litellm":
            inner, _, name = model.partition("/")
            return inner.lower(), name
        return self.provider, model

    def _endpoint(self, model: str) -> tuple[str | None, str | None]:
        own = get_config().models.get(f"litellm/{model}") if self.provider == "litellm" else None
        key, url = endpoint_settings(*self._route(model), check=True)
        if own is not None:
            if own.api_key is not None:
                key = own.api_key.get_secret_value().strip()
                check_api_key(key, f"configure(models={{'litellm/{model}': {{'api_key': …}}}})")
            url = own.base_url or url
        provider, _ = self._route(model)
        if provider == "ollama":
            return key or "ollama", url or OLLAMA_BASE_URL
        if provider in JSON_SCHEMA_PROVIDERS or provider == "openai":
            # OpenAI-compatible servers: without an explicit key the openai client under litellm
            # would read OPENAI_API_KEY, and send it to this server
            return key or ("EMPTY" if provider != "openai" else None), url
        return key, url

    def check(self, model: str) -> None:
        provider, name = self._route(model)
        key, url = self._endpoint(model)
        if provider == "hosted_vllm" and not url:
            raise ConfigurationError(
                f"hosted_vllm/{name} needs the server's base URL: set HOSTED_VLLM_API_BASE or "
                f'configure(models={{"hosted_vllm/{name}": {{"base_url": "http://…/v1"}}}})',
                env_var="HOSTED_VLLM_API_BASE",
            )
        if key is None:
            missing = _missing_keys(f"{provider}/{name}")
            if missing:
                raise ConfigurationError(
                    f"{self.provider}/{model} needs {' or '.join(missing)}: set it, or "
                    f"configure(providers={{{provider!r}: {{'api_key': …}}}})",
                    env_var=missing[-1],
                )

    def endpoint(self, model: str) -> str:
        _, url = self._endpoint(model)
        return url or f"litellm:{self._route(model)[0]}"

    def _native_format(self, request: ModelRequest) -> dict[str, Any]:
        """`response_format` of native mode: json_schema strict (OpenAI-compatible), Gemini's
        JSON-schema response config, or `json_object` + `schema` (llama-cpp-python's server)."""
        assert request.output_model is not None
        provider = self._route(request.model)[0]
        function = function_for(request.output_model)
        if (
            native_format(self.provider, request.model) == "json_object"
            or self.endpoint(request.model) in _json_object_endpoints
        ):
            return {"type": "json_object", "schema": json_object_schema(request.output_model)}
        if provider in GEMINI_PROVIDERS:  # litellm turns this into Gemini's responseJsonSchema
            schema = gemini_schema(request.output_model)
            return {
                "type": "json_schema",
                "json_schema": {"name": function["name"], "schema": schema},
            }
        schema = openai_strict_schema(request.output_model)
        return {
            "type": "json_schema",
            "json_schema": {"name": function["name"], "schema": schema, "strict": True},
        }

    def _kwargs(self, request: ModelRequest) -> dict[str, Any]:
        self.check(request.model)
        api_key, base_url = self._endpoint(request.model)
        model = f"{self.provider}/{request.model}"
        if self.provider == "litellm":
            model = request.model
        elif self.provider == "ollama":
            model = f"openai/{request.model}"
        prompt = request.prompt
        caching = request.prompt_caching and self._route(request.model)[0] in CACHE_CONTROL
        messages: list[Any] = (
            [{"role": "system", "content": openai_content(prompt.system, caching=caching)}]
            if prompt.system
            else []
        )
        messages += [*openai_messages(prompt.messages, caching=caching), *request.history]
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "max_tokens": request.max_tokens,
            "num_retries": 0,
            "max_retries": 0,
            "_skip_mcp_handler": True,  # litellm 1.106 imports its MCP proxy for any tools
        }
        if base_url:
            kwargs["api_base"] = base_url
        if api_key:
            kwargs["api_key"] = api_key
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        seed = model_setting(self.provider, request.model, "seed")
        if seed is not None:  # the same prompt, the same reply, where the server honours it
            kwargs["seed"] = seed
        if request.timeout_s is not None:
            kwargs["timeout"] = request.timeout_s
        headers = request.tracing_headers()
        if headers:
            kwargs["extra_headers"] = headers
        if request.output_model is not None:
            function = function_for(request.output_model)
            if request.output_mode == "native":
                kwargs["response_format"] = self._native_format(request)
            elif request.output_mode == "tool":
                kwargs["tools"] = [{"type": "function", "function": function}]
                kwargs["tool_choice"] = (
                    "auto"  # a forced tool call is refused with thinking on
                    if request.thinking_budget
                    else {"type": "function", "function": {"name": function["name"]}}
                )
            # prompted: the schema is in the system message already (promptcast._modes)
        if request.thinking_budget and self._route(request.model)[0] in THINKING:
            kwargs["thinking"] = {"type": "enabled", "budget_tokens": request.thinking_budget}
        if caching and prompt.system_static and messages and messages[0]["role"] == "system":
            messages[0] = {"role": "system", "content": _cached(messages[0]["content"])}
        return kwargs

    def request(self, request: ModelRequest) -> ModelReply:
        kwargs = self._kwargs(request)
        with self._mapped_errors(request):
            try:
                response = _litellm().completion(**kwargs)
            except Exception as exc:
                if not self._takes_json_object_only(request, kwargs, exc):
                    raise
                response = _litellm().completion(**self._kwargs(request))
        return self._reply(request, response)

    async def arequest(self, request: ModelRequest) -> ModelReply:
        kwargs = self._kwargs(request)
        with self._mapped_errors(request):
            try:
                response = await _litellm().acompletion(**kwargs)
            except Exception as exc:
                if not self._takes_json_object_only(request, kwargs, exc):
                    raise
                response = await _litellm().acompletion(**self._kwargs(request))
        return self._reply(request, response)

    def _takes_json_object_only(
        self, request: ModelRequest, kwargs: dict[str, Any], exc: Exception
    ) -> bool:
        """Whether the server just refused `response_format` json_schema, naming `json_object`
        as what it takes (llama-cpp-python's server answers so, with HTTP 500): the endpoint is
        remembered for the process and this request is sent once more in that form."""
        sent = kwargs.get("response_format") or {}
        text = str(exc)
        if sent.get("type") != "json_schema" or not (
            "'json_object'" in text and "json_schema" in text
        ):
            return False
        _json_object_endpoints.add(self.endpoint(request.model))
        return True

    def stream(self, request: ModelRequest) -> Iterator[StreamDelta | ModelReply]:
        from promptcast.backends import _litellm_stream as streaming

        return streaming.stream_reply(
            _litellm(),
            self._kwargs(request),
            request,
            lambda response: self._reply(request, response),
            self._mapped_errors,
        )

    def astream(self, request: ModelRequest) -> AsyncIterator[StreamDelta | ModelReply]:
        from promptcast.backends import _litellm_stream as streaming

        return streaming.astream_reply(
            _litellm(),
            self._kwargs(request),
            request,
            lambda response: self._reply(request, response),
            self._mapped_errors,
        )

    def _reply(self, request: ModelRequest, response: Any) -> ModelReply:
        try:
            reply = _reply(request, response)
        except (AttributeError, TypeError, KeyError, IndexError, ValueError) as exc:
            raise malformed_reply(self.provider, request, exc) from exc
        if reply.finish_reason == "content_filter":  # litellm's name for Gemini's SAFETY too
            # the provider withheld the answer: asking again gets the same, and no
            # validation error would say why
            raise self._declined(
                request,
                "withheld the answer (finish_reason 'content_filter': its content filter "
                "flagged the prompt or the reply)",
            )
        refusal = getattr(response.choices[0].message, "refusal", None)
        if refusal and not reply.data:  # OpenAI's structured outputs: the model declined
            raise self._declined(request, f"refused to answer: {str(refusal)[:500]!r}")
        return reply

    def _declined(self, request: ModelRequest, what: str) -> BackendError:
        """A final error for an answer the provider will not give (asking again gets the same)."""
        return BackendError(
            f"{self.provider} {what}; change the inputs or the prompt, or use another model",
            provider=self.provider,
            retryable=False,
            task=request.task,
            model=f"{self.provider}/{request.model}",
        )

    def reask(self, request: ModelRequest, reply: ModelReply, error: str) -> ModelRequest:
        message = reply.raw.choices[0].message if reply.raw is not None else None
        calls = getattr(message, "tool_calls", None) if message is not None else None
        if not calls:
            return super().reask(request, reply, error)
        from instructor import Mode, Provider
        from instructor.processing import handle_reask_kwargs

        added = handle_reask_kwargs(
            {"messages": []}, Mode.TOOLS, reply.raw, ValueError(error), provider=Provider.OPENAI
        )["messages"]
        return replace(request, history=request.history + tuple(_plain(m) for m in added))

    @contextmanager
    def _mapped_errors(self, request: ModelRequest) -> Iterator[None]:
        """litellm exceptions → `BackendError`, with `retry-after` and quota errors understood."""
        litellm = _litellm()
        import openai  # litellm's own exceptions subclass the openai SDK's

        context: dict[str, Any] = {
            "task": request.task,
            "model": f"{self.provider}/{request.model}",
        }
        try:
            yield
        except (litellm.Timeout, litellm.APIConnectionError) as exc:
            raise BackendError(
                f"cannot reach {self.provider} ({type(exc).__name__}); check the network or the "
                "base URL",
                provider=self.provider,
                retryable=isinstance(exc, litellm.Timeout) or is_transport_failure(exc),
                **context,
            ) from exc
        except (openai.APIError, ValueError) as exc:
            if _MEDIA_FETCH in str(exc):  # litellm downloads some media URLs itself, first
                raise BackendError(
                    f"litellm could not fetch a media URL itself before calling {self.provider} "
                    "(the address is internal, which litellm refuses, or unreachable); send the "
                    "file's bytes (a Path or a data URL) instead",
                    provider=self.provider,
                    **context,
                ) from exc
            status = int(getattr(exc, "status_code", 0) or 0)
            # litellm appends a traceback to some messages ("Invalid response object Traceback
            # (most recent call last): ..."): the first line says it, the rest is its internals
            text = str(getattr(exc, "message", exc)).partition(_TRACEBACK)[0].rstrip()
            if code := _GOOGLE_CODE.search(text):  # litellm maps any "overloaded" text to a 500
                status = int(code[1])
            # Gemini sends every 429 as RESOURCE_EXHAUSTED ("… check quota"), per-minute limits
            # included, with the wait in a RetryInfo detail of the body instead of a header
            quota = "insufficient_quota" in text or (
                "quota" in text.lower() and status == 429 and "RESOURCE_EXHAUSTED" not in text
            )
            headers = getattr(exc, "litellm_response_headers", None) or {}
            retry_after = parse_retry_after(headers.get("retry-after"))
            if retry_after is None and (delay := _RETRY_DELAY.search(text)):
                retry_after = float(delay[1])
            refused = ""
            if status == 401:
                source = key_source(*self._route(request.model))
                refused = f"; the API key was refused: check {source}"
            raise BackendError(
                f"{self.provider} returned HTTP {status or '?'}: {text}{refused}"
                + schema_rejection(request.output_mode, status, text, context["model"]),
                provider=self.provider,
                status=status or None,
                retryable=(not status or is_retryable_status(status)) and not quota,
                retry_after=retry_after,
                **context,
            ) from exc


# OpenAI-compatible endpoints (base URLs) seen refusing json_schema for json_object + schema
_json_object_endpoints: set[str] = set()
_TRACEBACK = "Traceback (most recent call last)"
_MEDIA_FETCH = "Unable to fetch image from URL"  # litellm's words for any media URL it fetches
_RETRY_DELAY = re.compile(r'"retryDelay":\s*"(\d+(?:\.\d+)?)s"')
_GOOGLE_CODE = re.compile(r'\{\s*"error":\s*\{\s*"code":\s*(\d{3})\b')  # Google's error body


@lru_cache(maxsize=256)
def _missing_keys_cached(model: str, present: frozenset[str]) -> tuple[str, ...]:
    return tuple(_litellm().validate_environment(model=model).get("missing_keys") or ())


def _missing_keys(model: str) -> list[str]:
    """The variables litellm needs for `model` and cannot find (none for self-hosted servers);
    cached per set of variables present."""
    return list(_missing_keys_cached(model, frozenset(k for k, v in os.environ.items() if v)))


def _plain(message: Any) -> Any:
    return message.model_dump(exclude_none=True) if hasattr(message, "model_dump") else message


def _cache_tokens(usage: Any) -> tuple[int, int]:
    """`(read, written)` prompt-cache tokens of a litellm usage: OpenAI's
    `prompt_tokens_details.cached_tokens`, or Anthropic's own fields passed through."""
    if usage is None:
        return 0, 0
    details = getattr(usage, "prompt_tokens_details", None)
    read = getattr(usage, "cache_read_input_tokens", None) or getattr(
        details, "cached_tokens", None
    )
    written = getattr(usage, "cache_creation_input_tokens", None)
    return (
        token_count(read, "cache_read_input_tokens", optional=True),
        token_count(written, "cache_creation_input_tokens", optional=True),
    )


def _cached(content: Any) -> list[Any]:
    """System content with a `cache_control` breakpoint on its last block."""
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
    blocks[-1] = {**blocks[-1], "cache_control": {"type": "ephemeral"}}
    return blocks


def _reply(request: ModelRequest, response: Any) -> ModelReply:
    choice = response.choices[0]
    message = choice.message
    text = (message.content or "").strip()
    data: Any = text
    raw_text = text
    if request.output_model is not None:
        calls = getattr(message, "tool_calls", None) or []
        name = function_for(request.output_model)["name"]
        chosen = next((c for c in calls if c.function.name == name), calls[0] if calls else None)
        if chosen is not None:
            raw_text = chosen.function.arguments or ""
            try:
                data = _json.loads(raw_text)
            except ValueError:
                data = None
        else:
            data = json_in_text(text)
            if isinstance(data, dict) and request.output_mode == "native":
                data = drop_strict_nulls(data, request.output_model)
        if not isinstance(data, dict):
            data = None
        refusal = getattr(message, "refusal", None)
        if refusal and data is None:
            raw_text = str(refusal)
    usage = getattr(response, "usage", None)
    read, written = _cache_tokens(usage)
    return ModelReply(
        data=data,
        text=raw_text,
        # prompt_tokens counts cached input too; input_tokens is the uncached part only
        input_tokens=max(
            token_count(getattr(usage, "prompt_tokens", None), "prompt_tokens", optional=True)
            - read
            - written,
            0,
        ),
        cache_read_tokens=read,
        cache_write_tokens=written,
        output_tokens=token_count(
            getattr(usage, "completion_tokens", None), "completion_tokens", optional=True
        ),
        truncated=choice.finish_reason == "length",
        raw=response,
        response_id=getattr(response, "id", None) or None,
        response_model=getattr(response, "model", None) or None,
        finish_reason=getattr(choice, "finish_reason", None) or None,
    )
