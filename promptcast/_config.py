"""Settings: `configure()` over `PROMPTCAST_*` environment variables, and `override()` for a block.

Three layers, the nearer one winning: `override(...)` (a context variable: one `with` block, one
thread or one asyncio task), then `configure(...)` (the process), then the environment, then the
defaults. The library, the CLI and the server all read one `Settings` object from `get_config()`.

Provider credentials are never provider-blind: each provider reads its own variables
(`ANTHROPIC_API_KEY`, `OPENAI_BASE_URL`, …) or `configure(providers={name: {...}})`, and a model
can have its own endpoint with `configure(models={model: {...}})`; see `endpoint_settings()`.
"""

from __future__ import annotations

import contextvars
import json
import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from promptcast.errors import ConfigurationError

__all__ = [
    "DEFAULT_MODEL",
    "ProviderSettings",
    "Settings",
    "check_api_key",
    "configure",
    "endpoint_settings",
    "get_config",
    "key_source",
    "override",
    "redact_url",
    "reset_defaults",
]

DEFAULT_MODEL = "anthropic/claude-sonnet-4-6"
ENV_PREFIX = "PROMPTCAST_"

# The variables each provider's own SDK reads: a credential found here only ever goes to its
# own provider. Providers not listed get their credentials from litellm, which reads their own.
PROVIDER_ENV: dict[str, tuple[str | None, str | None]] = {
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
    "openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL"),
    "gemini": ("GEMINI_API_KEY", None),
    "mistral": ("MISTRAL_API_KEY", None),
    "groq": ("GROQ_API_KEY", None),
    "openrouter": ("OPENROUTER_API_KEY", None),
    "deepseek": ("DEEPSEEK_API_KEY", None),
    "ollama": (None, "OLLAMA_API_BASE"),
    "hosted_vllm": ("HOSTED_VLLM_API_KEY", "HOSTED_VLLM_API_BASE"),
}

# Settings that used to apply to every provider at once; now refused with what to use instead.
_REMOVED_ENV = {
    "PROMPTCAST_BASE_URL": "ANTHROPIC_BASE_URL / OPENAI_BASE_URL (each provider's own), or "
    "configure(providers={'openai': {'base_url': …}})",
    "PROMPTCAST_API_KEY": "ANTHROPIC_API_KEY / OPENAI_API_KEY (each provider's own), or "
    "configure(providers={'anthropic': {'api_key': …}})",
}

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
CommaList = Annotated[tuple[str, ...], NoDecode]


class ProviderSettings(BaseModel):
    """Where one provider (or one model) is reached, and with which credential."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_key: SecretStr | None = None
    base_url: str | None = None
    # per model: how the answer's shape is asked for (see promptcast._modes), and the form of a
    # native request on OpenAI-compatible servers ("json_object" for servers that take only that)
    output_mode: Literal["auto", "native", "tool", "prompted"] | None = None
    native_format: Literal["json_schema", "json_object"] | None = None
    # local/<path.gguf> models (llama-cpp-python): context size, CPU threads, layers on the GPU
    n_ctx: Annotated[int, Field(ge=0)] | None = None
    n_threads: Annotated[int, Field(ge=1)] | None = None
    n_gpu_layers: Annotated[int, Field(ge=-1)] | None = None
    # the sampling seed: local/… models use 0 unless set; other models send it with each request
    # when set (self-hosted servers honour it, OpenAI on a best-effort basis)
    seed: Annotated[int, Field(ge=0)] | None = None

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = _clean_url(value)
        if urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"base_url must be an http(s) URL, got {redact_url(value)!r}")
        return value


def _clean_url(value: str) -> str:
    """A base URL without surrounding whitespace or trailing slashes: the OpenAI-compatible
    route pasted them into the path (`/v1%20/chat/completions`, `/v1//chat/completions`: 404)."""
    return value.strip().rstrip("/")


class Settings(BaseModel):
    """The effective settings; read them with `get_config()`, change them with `configure()` or
    `override()`."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    model: str = DEFAULT_MODEL
    fallbacks: CommaList = ()
    max_attempts: Annotated[int, Field(ge=1)] = 3
    max_retries: Annotated[int, Field(ge=0)] = 2
    retry_max_wait_s: PositiveFloat = 30.0
    timeout_s: PositiveFloat | None = None
    max_cost_usd: PositiveFloat | None = None
    prompts: CommaList = ()
    providers: dict[str, ProviderSettings] = Field(default_factory=dict, repr=False)
    models: dict[str, ProviderSettings] = Field(default_factory=dict, repr=False)
    backends: dict[str, Any] = Field(default_factory=dict, repr=False)
    cache: Any = Field(default="off", repr=False)
    cache_ttl_s: PositiveFloat | None = None
    cache_timeout_s: PositiveFloat = 0.25
    output_mode: Literal["auto", "native", "tool", "prompted"] = "auto"
    prompt_caching: bool = True  # cache breakpoints where a task allows them (prompt_caching: auto)
    # promptcast serve
    api_tokens: CommaList = Field(default=(), repr=False)
    allowed_hosts: CommaList = ()
    max_concurrency: Annotated[int, Field(ge=1)] = 64
    max_body_bytes: Annotated[int, Field(ge=1)] = 1 << 20
    keep_alive_s: PositiveFloat = 5.0
    max_connections: Annotated[int, Field(ge=1)] = 512
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("fallbacks", "api_tokens", "allowed_hosts", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lstrip().startswith("["):
            # pydantic-settings' own spelling of a list (`'["a","b"]'`); split at commas it made
            # the tokens '["a"' and '"b"]'
            items = json.loads(value)  # a ValueError names the variable
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise ValueError("a JSON list must hold strings only")
        else:
            items = value.split(",") if isinstance(value, str) else value
        return tuple(str(item).strip() for item in items if str(item).strip())

    @field_validator("prompts", mode="before")
    @classmethod
    def _path_list(cls, value: Any) -> Any:
        items = value.split(os.pathsep) if isinstance(value, str) else value
        return tuple(str(item) for item in items if str(item).strip())

    @field_validator("model")
    @classmethod
    def _model_string(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(f"must be a model string such as {DEFAULT_MODEL!r}")
        return value.strip()

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("providers", "models", mode="before")
    @classmethod
    def _endpoint_keys(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {_model_key(str(k)): v for k, v in value.items()}
        return value

    @field_validator("backends")
    @classmethod
    def _backends(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, backend in value.items():
            if not callable(getattr(backend, "arequest", None)):
                raise ValueError(
                    f"{key!r} must map to a promptcast.backends.Backend, got {type(backend).__name__}"
                )
        return value

    @field_validator("cache", mode="before")
    @classmethod
    def _cache(cls, value: Any) -> Any:
        if isinstance(value, str):
            return check_cache_url(value)
        if not all(callable(getattr(value, name, None)) for name in ("get", "set", "close")):
            raise ValueError(
                "must be a cache URL ('off', 'sqlite:///path', 'redis://…') or an object with "
                "get, set and close"
            )  # the value is shown after the message
        return value


class _FromEnv(BaseSettings, Settings):
    """`Settings` read from `PROMPTCAST_*`; keyword arguments (from `configure()`) win."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")


def _model_key(key: str) -> str:
    """`provider:model` and `provider/model` name the same model."""
    provider, sep, name = key.partition(":")
    if sep and "/" not in provider:
        return f"{provider}/{name}"
    return key


def check_cache_url(value: str) -> str:
    """`value` normalised if it is `off`, `sqlite:///path` or `redis://…`; else `ValueError`."""
    url = value.strip()
    if url.lower() in ("off", "none", ""):
        return "off"
    parts = urlsplit(url)
    if parts.scheme == "sqlite" and parts.netloc == "" and parts.path.removeprefix("/"):
        return url
    if parts.scheme in ("redis", "rediss", "unix") and (parts.netloc or parts.path):
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
        except ValueError:
            raise ValueError(f"the port of {redact_url(url)!r} is not a valid port") from None
        return url
    raise ValueError(
        "must be 'off', 'sqlite:///path' (relative; 'sqlite:////abs/path' for an absolute path) "
        f"or 'redis://host:port/db', got {redact_url(value)!r}"
    )


_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]+@")


def redact_url(text: str) -> str:
    """`text` with the password of every URL in it replaced by `***`, for messages and reprs."""
    return _URL_PASSWORD.sub(r"\1***@", text)


def _error(exc: ValidationError, given: Mapping[str, Any], source: str) -> ConfigurationError:
    """A `ConfigurationError` naming the variable or `configure()` argument that is wrong."""
    err = exc.errors(include_url=False)[0]
    field = str(err["loc"][0]) if err["loc"] else ""
    env_var = f"{ENV_PREFIX}{field.upper()}"
    where = f"{source}({field}=…)" if field in given else env_var
    shown = err.get("input")
    if field == "cache" and isinstance(shown, str):
        shown = redact_url(shown)
    if field in ("api_tokens", "providers", "models") or "api_key" in map(str, err["loc"]):
        shown = "…"
    message = err["msg"].removeprefix("Value error, ")
    return ConfigurationError(
        f"{where} is invalid: {message} (got {shown!r}).", env_var=env_var if field else None
    )


_configured: dict[str, Any] = {}
_base: Settings | None = None
_lock = threading.Lock()
_scope: contextvars.ContextVar[tuple[dict[str, Any], Settings, Settings] | None] = (
    contextvars.ContextVar("promptcast_override", default=None)
)


def _known(settings: Mapping[str, Any], source: str) -> None:
    unknown = sorted(set(settings) - set(Settings.model_fields))
    if unknown:
        import difflib

        hints = [
            f"{name!r} (did you mean {close[0]!r}?)"
            if (close := difflib.get_close_matches(name, Settings.model_fields, n=1))
            else repr(name)
            for name in unknown
        ]
        raise ConfigurationError(
            f"{source}() got unknown setting(s) {', '.join(hints)}; known: "
            f"{', '.join(sorted(Settings.model_fields))}."
        )


def _merged(base: Mapping[str, Any], updates: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `updates` applied; the mappings (providers, models, backends) merge per key,
    and a provider's or model's own settings merge per field."""
    values = dict(base)
    for name, value in updates.items():
        if name in ("providers", "models") and value is not None:
            merged = dict(values.get(name) or {})
            for key, own in dict(value).items():
                key = _model_key(str(key))
                earlier = merged.get(key)
                if isinstance(earlier, ProviderSettings):
                    earlier = earlier.model_dump(exclude_unset=True)
                if isinstance(own, ProviderSettings):
                    own = own.model_dump(exclude_unset=True)
                merged[key] = {**(earlier or {}), **dict(own)}
            values[name] = merged
        elif name == "backends" and value is not None:
            values[name] = {**(values.get(name) or {}), **dict(value)}
        else:
            values[name] = value
    return values


def _load() -> Settings:
    for var, instead in _REMOVED_ENV.items():
        if os.environ.get(var, "").strip():
            raise ConfigurationError(
                f"{var} is no longer read: a provider-blind key or URL would be sent to every "
                f"provider. Use {instead}.",
                env_var=var,
            )
    given = {k: v for k, v in _configured.items() if v is not None}
    try:
        loaded = _FromEnv(**given)
    except ValidationError as exc:
        raise _error(exc, given, "configure") from None
    return Settings.model_construct(
        _fields_set=loaded.model_fields_set,
        **{name: getattr(loaded, name) for name in Settings.model_fields},
    )


def _values(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in Settings.model_fields}


def configure(**settings: Any) -> Settings:
    """Set process-wide defaults; unknown names raise `ConfigurationError`.

    Takes every field of `Settings`: `model`, `fallbacks`, `max_attempts`, `max_retries`,
    `retry_max_wait_s`, `timeout_s`, `max_cost_usd`, `prompts`, `providers`, `models`, `backends`,
    `cache`, `cache_ttl_s`, `cache_timeout_s` and the server's settings. `providers` maps a
    provider name to `{"api_key": …, "base_url": …}`; `models` does the same for one model
    string; `backends` maps a provider name (`"anthropic"`) or a model string (`"test/ticket"`)
    to a ready `Backend`. Mappings merge with earlier calls; `None` forgets a setting.
    """
    _known(settings, "configure")
    global _base
    with _lock:
        candidate = _merged(_configured, settings)
        given = {k: v for k, v in candidate.items() if v is not None}
        try:
            Settings.model_validate(given)
        except ValidationError as exc:
            raise _error(exc, given, "configure") from None
        _configured.clear()
        _configured.update(candidate)
        _base = None
    return get_config()


def _base_settings() -> Settings:
    global _base
    base = _base
    if base is None:
        with _lock:
            if _base is None:
                _base = _load()
            base = _base
    return base


def get_config() -> Settings:
    """The effective settings: `override()` over `configure()` over `PROMPTCAST_*` over defaults."""
    base = _base_settings()
    scope = _scope.get()
    if scope is None:
        return base
    updates, scoped_base, merged = scope
    if scoped_base is base:
        return merged
    merged = _apply(base, updates)
    _scope.set((updates, base, merged))
    return merged


def _apply(base: Settings, updates: Mapping[str, Any]) -> Settings:
    try:
        return Settings.model_validate(_merged(_values(base), updates))
    except ValidationError as exc:
        raise _error(exc, updates, "override") from None


def overridden(name: str) -> Any:
    """The value an enclosing `override()` gives `name`, or `None`: a scoped `model` wins over a
    task file's `model:`, where a configured one does not."""
    scope = _scope.get()
    return scope[0].get(name) if scope is not None else None


@contextmanager
def override(**settings: Any) -> Iterator[Settings]:
    """Change settings for one block only: this thread or asyncio task, and what it starts.

    Takes what `configure()` takes; wins over `configure()` and over a task file's `model:` and
    `fallbacks:`. Nested blocks merge, the inner one winning::

        with pc.override(model="test/tickets", backends={"test/tickets": ScriptedBackend([...])}):
            ...
    """
    _known(settings, "override")
    scope = _scope.get()
    updates = _merged(scope[0] if scope else {}, settings)
    merged = _apply(_base_settings(), updates)
    token = _scope.set((updates, _base_settings(), merged))
    try:
        yield merged
    finally:
        _scope.reset(token)


def reset_defaults() -> None:
    """Forget every `configure()` value and re-read the environment on next use."""
    global _base
    with _lock:
        _configured.clear()
        _base = None


def endpoint_settings(
    provider: str, model: str | None = None, *, check: bool = False
) -> tuple[str | None, str | None]:
    """`(api_key, base_url)` for a provider, or one of its models: the model's own settings
    (`configure(models=…)`), then the provider's (`configure(providers=…)`), then the provider's
    own environment variables. Never another provider's.

    A key loses surrounding whitespace (a `.env` line's `\r`, a secret file's newline), which
    no key has and which made the HTTP client refuse the header, quoting the key in its error.
    With `check`, a key that still holds a character no header can carry is refused here."""
    config = get_config()
    own = config.models.get(f"{provider}/{model}") if model else None
    shared = config.providers.get(provider)
    key_var, url_var = PROVIDER_ENV.get(provider, (None, None))
    key: str | None = None
    url: str | None = None
    source = ""
    for layer, name in (
        (own, f"models={{'{provider}/{model}'"),
        (shared, f"providers={{'{provider}'"),
    ):
        if layer is None:
            continue
        if key is None and layer.api_key is not None:
            key = layer.api_key.get_secret_value().strip() or None
            source = f"configure({name}: {{'api_key': …}}}})"
        if url is None and layer.base_url is not None:
            url = layer.base_url
    if key is None and key_var:
        key = os.environ.get(key_var, "").strip() or None
        source = key_var
    if url is None and url_var:
        url = _clean_url(os.environ.get(url_var, "")) or None
    if check and key is not None:
        check_api_key(key, source, env_var=key_var if source == key_var else None)
    return key, url


def key_source(provider: str, model: str | None = None) -> str:
    """Where the key sent to `provider` (for `model`) is set, as `endpoint_settings` reads it:
    for an error that says what to fix when the provider refuses the key."""
    config = get_config()
    own = config.models.get(f"{provider}/{model}") if model else None
    if own is not None and own.api_key is not None:
        return f"configure(models={{'{provider}/{model}': {{'api_key': …}}}})"
    shared = config.providers.get(provider)
    if shared is not None and shared.api_key is not None:
        return f"configure(providers={{'{provider}': {{'api_key': …}}}})"
    return PROVIDER_ENV.get(provider, (None, None))[0] or f"{provider.upper()}_API_KEY"


def check_api_key(key: str, source: str, *, env_var: str | None = None) -> None:
    """Refuse a key holding a line break, tab, space, control or non-ASCII character (a paste
    from a document or two lines of a file), naming where it came from but never the key."""
    bad = next((i for i, c in enumerate(key) if not " " < c < "\x7f"), None)
    if bad is not None:
        raise ConfigurationError(
            f"{source} holds {_char_name(key[bad])} at position {bad + 1}, which an HTTP header "
            "cannot carry: set it to the key alone, on one line",
            env_var=env_var,
        )


def _char_name(char: str) -> str:
    names = {"\n": "a line break", "\r": "a carriage return", "\t": "a tab", " ": "a space"}
    return names.get(char, f"the character U+{ord(char):04X}")
