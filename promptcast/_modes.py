"""Output modes: how a task asks a model for the shape of its answer, and which one `auto` picks.

- `native`: constrained decoding to the JSON schema (Anthropic `output_config.format`,
  OpenAI-compatible `response_format` json_schema strict, Gemini's JSON-schema response config,
  `json_object` + `schema` for servers that take only that, e.g. llama-cpp-python's).
- `tool`: a forced tool call whose input is the answer.
- `prompted`: the schema in the prompt, the JSON read from the reply's text (models with neither).
- `text`: free-text output (no schema).

`auto` picks `native` where the capability table below (or `configure(models={m: {"output_mode":
…}})`) says the model supports it, `tool` otherwise; with extended thinking on Anthropic, where a
forced tool call is refused, it picks `native`, else `prompted`. The choice is made before the
request is built, and recorded in the `Run`, the cache key and the request (so in cassettes).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel

from promptcast import _json
from promptcast.render import Content, Prompt

__all__ = [
    "MODES",
    "OutputMode",
    "choose",
    "native_format",
    "prompted_instructions",
    "prompted_prompt",
    "recorded_mode",
    "replaying",
    "supports_native",
]

OutputMode = Literal["auto", "native", "tool", "prompted"]
MODES: tuple[str, ...] = ("auto", "native", "tool", "prompted")

# Model families with constrained decoding to a JSON schema, per provider (fnmatch patterns over
# the model name). A model not listed gets `tool` under `auto`; configuration overrides this.
NATIVE: dict[str, tuple[str, ...]] = {
    # output_config.format: Claude Sonnet 4.5, Opus 4.1 and Haiku 4.5 onwards
    "anthropic": (
        "claude-sonnet-4-5*",
        "claude-sonnet-4-6*",
        "claude-opus-4-1*",
        "claude-opus-4-5*",
        "claude-opus-4-6*",
        "claude-haiku-4-5*",
        "claude-*-4-[5-9]*",
        "claude-sonnet-[5-9]*",
        "claude-opus-[5-9]*",
        "claude-haiku-[5-9]*",
    ),
    "openai": ("gpt-4o*", "gpt-4.1*", "gpt-5*", "o1*", "o3*", "o4*", "chatgpt-4o*"),
    "azure": ("gpt-4o*", "gpt-4.1*", "gpt-5*", "o1*", "o3*", "o4*"),
    "gemini": ("gemini-1.5*", "gemini-2*", "gemini-3*"),
    "vertex_ai": ("gemini-1.5*", "gemini-2*", "gemini-3*"),
    # self-hosted servers: guided decoding, while their tool calling depends on how they run
    "hosted_vllm": ("*",),
    "ollama": ("*",),
    "local": ("*",),
    "llama_cpp": ("*",),
}

# Servers whose native form is `response_format: {"type": "json_object", "schema": …}`.
JSON_OBJECT: dict[str, tuple[str, ...]] = {"local": ("*",), "llama_cpp": ("*",)}

# Providers that refuse a forced tool call while extended thinking is on.
NO_FORCED_TOOL_WITH_THINKING = frozenset({"anthropic", "bedrock", "vertex_ai"})


def _matches(table: dict[str, tuple[str, ...]], provider: str, model: str) -> bool:
    return any(fnmatchcase(model.lower(), pattern) for pattern in table.get(provider, ()))


def model_setting(provider: str, model: str, key: str) -> Any:
    """A per-model setting from `configure(models={"provider/model": {key: …}})`, else the
    provider's (`configure(providers=…)`); `None` when neither sets it."""
    from promptcast._config import get_config

    config = get_config()
    for own in (config.models.get(f"{provider}/{model}"), config.providers.get(provider)):
        value = getattr(own, key, None) if own is not None else None
        if value is not None:
            return value
    return None


def supports_native(provider: str, model: str) -> bool:
    """Whether `auto` may pick `native` for `provider/model` (the table; a configured
    `output_mode` of the model wins)."""
    if provider == "litellm":
        provider, _, model = model.partition("/")
    return _matches(NATIVE, provider, model)


def native_format(provider: str, model: str) -> str:
    """`json_schema` (the OpenAI form, strict) or `json_object` (with `schema`, for servers that
    take only that); configurable per model with `native_format`."""
    configured = model_setting(provider, model, "native_format")
    if configured:
        return str(configured)
    if provider == "litellm":
        provider, _, model = model.partition("/")
    return "json_object" if _matches(JSON_OBJECT, provider, model) else "json_schema"


def choose(
    provider: str,
    model: str,
    *,
    task_mode: str | None,
    has_output: bool,
    thinking: bool = False,
    supported: frozenset[str] | None = None,
) -> str:
    """The resolved output mode of one request to `provider/model`.

    The task file's `output_mode` wins, then the model's configured one, then the global one
    (`configure(output_mode=…)` / `PROMPTCAST_OUTPUT_MODE`); `auto` is resolved from the
    capability table. `supported` is the set of modes the backend can send at all (e.g. a scripted
    test backend): `auto` never picks one outside it.
    """
    if not has_output:
        return "text"
    from promptcast._config import get_config

    mode = task_mode if task_mode and task_mode != "auto" else None
    mode = mode or model_setting(provider, model, "output_mode") or get_config().output_mode
    if mode != "auto":
        return str(mode)
    native = (
        supports_native(provider, model)
        or model_setting(provider, model, "output_mode") == "native"
    )
    if supported is not None:
        native = native and "native" in supported
    if native:
        return "native"
    real = provider if provider != "litellm" else model.partition("/")[0]
    if thinking and real in NO_FORCED_TOOL_WITH_THINKING:
        return "prompted"
    if supported is not None and "tool" not in supported:
        return "prompted" if "prompted" in supported else next(iter(sorted(supported)), "tool")
    return "tool"


_INSTRUCTIONS = (
    "Answer with one JSON object and nothing else (no prose, no code fence) that matches this "
    "JSON schema:\n```json\n{schema}\n```"
)


@lru_cache(maxsize=512)
def prompted_instructions(model: type[BaseModel]) -> str:
    """The text that asks for `model`'s JSON in `prompted` mode; static per output model, so it
    belongs to the cacheable prefix (the end of the system block)."""
    schema = json.dumps(model.model_json_schema(), ensure_ascii=False, separators=(",", ":"))
    return _INSTRUCTIONS.format(schema=schema)


def prompted_prompt(prompt: Prompt, model: type[BaseModel]) -> Prompt:
    """`prompt` with the `prompted` mode's schema instructions at the end of its system block
    (static text: the system block stays as static as it was)."""
    text = prompted_instructions(model)
    system = prompt.system
    new: Content
    if system is None:
        new = text
    elif isinstance(system, str):
        new = f"{system}\n\n{text}"
    else:
        new = [*system, {"type": "text", "text": f"\n\n{text}"}]
    return replace(prompt, system=new, system_static=prompt.system_static or system is None)


def recorded_mode(requests: Iterable[Any]) -> str | None:
    """The output mode the first structured request among recorded ones (vcrpy `Request`s or
    JSON bodies) was sent in: `tool` (a tool definition), `native` (a JSON-schema response
    format) or `None` when none asks for structure. Recordings carry the mode in their bodies."""
    for request in requests:
        body = getattr(request, "body", request)
        if isinstance(body, (bytes, str)):
            try:
                body = _json.loads(body)
            except ValueError:
                continue
        if not isinstance(body, dict):
            continue
        if body.get("tools"):
            return "tool"
        config = body.get("generationConfig") or {}
        if (
            "output_config" in body
            or "response_format" in body
            or "responseJsonSchema" in config
            or "responseSchema" in config
        ):
            return "native"
    return None


@contextmanager
def replaying(cassette: Any) -> Iterator[None]:
    """Replay a recording in the output mode it was recorded in: a task left on `auto` sends
    what the cassette holds, so recordings made before `auto` chose `native` keep replaying (a
    task file's own `output_mode` still wins, and was recorded as such)."""
    from promptcast._config import override

    mode = recorded_mode(getattr(cassette, "requests", ()))
    if mode is None:
        yield
        return
    with override(output_mode=mode):
        yield
