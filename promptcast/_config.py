"""Process-wide settings: `configure()` over `PROMPTCAST_*` environment variables.

Values given to `configure()` win over the environment; the environment is read when a setting is
first needed, so a test can set a variable and call `reset_defaults()`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from promptcast.errors import ConfigurationError

if TYPE_CHECKING:
    from promptcast.backends.base import Backend
    from promptcast.cache import Cache

__all__ = ["DEFAULT_MODEL", "Settings", "configure", "get_config", "reset_defaults"]

DEFAULT_MODEL = "anthropic/claude-sonnet-4-6"


@dataclass(frozen=True)
class Settings:
    """The effective settings; read them with `get_config()`."""

    model: str = DEFAULT_MODEL
    fallbacks: tuple[str, ...] = ()
    max_attempts: int = 3
    max_retries: int = 2
    retry_max_wait_s: float = 30.0
    timeout_s: float | None = None
    max_cost_usd: float | None = None
    prompts: tuple[str, ...] = ()
    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None
    models: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    backends: dict[str, Backend] = field(default_factory=dict, repr=False)
    cache: str | Cache = "off"
    cache_ttl_s: float | None = None

    def for_model(self, model: str) -> dict[str, Any]:
        """Per-model settings (`base_url`, `api_key`) from `configure(models=…)`, falling back to
        the process-wide `base_url` / `api_key`."""
        own = self.models.get(model) or self.models.get(model.replace(":", "/", 1)) or {}
        return {
            "base_url": own.get("base_url", self.base_url),
            "api_key": own.get("api_key", self.api_key),
        }


_ENV: dict[str, str] = {
    "model": "PROMPTCAST_MODEL",
    "fallbacks": "PROMPTCAST_FALLBACKS",
    "max_attempts": "PROMPTCAST_MAX_ATTEMPTS",
    "max_retries": "PROMPTCAST_MAX_RETRIES",
    "retry_max_wait_s": "PROMPTCAST_RETRY_MAX_WAIT_S",
    "timeout_s": "PROMPTCAST_TIMEOUT_S",
    "max_cost_usd": "PROMPTCAST_MAX_COST_USD",
    "prompts": "PROMPTCAST_PROMPTS",
    "base_url": "PROMPTCAST_BASE_URL",
    "cache": "PROMPTCAST_CACHE",
    "cache_ttl_s": "PROMPTCAST_CACHE_TTL_S",
}

_overrides: dict[str, Any] = {}
_cached: Settings | None = None


def _from_env() -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, var in _ENV.items():
        raw = os.environ.get(var)
        if raw is None or raw.strip() == "":
            continue
        values[name] = _coerce(name, raw, source=var)
    return values


def _coerce(name: str, value: Any, *, source: str) -> Any:
    env_var = _ENV.get(name)
    if name in ("max_attempts", "max_retries"):
        least = 1 if name == "max_attempts" else 0
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = -1
        if number < least:
            raise ConfigurationError(
                f"{source} must be a whole number of at least {least}, got {value!r}.",
                env_var=env_var,
            )
        return number
    if name in ("retry_max_wait_s", "timeout_s", "max_cost_usd", "cache_ttl_s"):
        try:
            amount = float(value)
        except (TypeError, ValueError):
            amount = -1.0
        if amount <= 0:
            raise ConfigurationError(
                f"{source} must be a number above 0, got {value!r}.", env_var=env_var
            )
        return amount
    if name == "cache":
        from promptcast.cache import Cache, check_url

        if isinstance(value, str):
            return check_url(value, source=source)
        if not isinstance(value, Cache):
            raise ConfigurationError(
                f"{source} must be a cache URL or an object with get, set and close, "
                f"got {type(value).__name__}.",
                env_var=env_var,
            )
        return value
    if name == "fallbacks":
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(item.strip() for item in items if item.strip())
    if name == "prompts":
        items = value.split(os.pathsep) if isinstance(value, str) else list(value)
        return tuple(str(item) for item in items if str(item).strip())
    if name == "model" and (not isinstance(value, str) or not value.strip()):
        raise ConfigurationError(
            f"{source} must be a model string such as {DEFAULT_MODEL!r}.", env_var=_ENV["model"]
        )
    return value


def configure(**settings: Any) -> Settings:
    """Set process-wide defaults (`model`, `fallbacks`, `max_attempts`, `max_retries`,
    `retry_max_wait_s`, `timeout_s`, `max_cost_usd`, `prompts`, `api_key`, `base_url`, `models`,
    `backends`, `cache`, `cache_ttl_s`). Unknown names raise `ConfigurationError`.

    `cache` is `"off"`, `"sqlite:///path"`, `"redis://…"` or a `promptcast.cache.Cache` object.

    `models` maps a model string to its own settings, e.g.
    `{"hosted_vllm/llama-3.1-8b": {"base_url": "http://gpu-box:8000/v1"}}`.

    `backends` maps a model string (e.g. `"test/ticket"`) to a backend instance, which is how the
    scripted test double is wired in.
    """
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigurationError(
            f"configure() got unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}."
        )
    for name, value in settings.items():
        _overrides[name] = (
            value if value is None else _coerce(name, value, source=f"configure({name}=…)")
        )
    global _cached
    _cached = None
    return get_config()


def get_config() -> Settings:
    """The effective settings: `configure()` values over `PROMPTCAST_*` variables over defaults."""
    global _cached
    if _cached is None:
        values = _from_env()
        values.update({k: v for k, v in _overrides.items() if v is not None})
        _cached = replace(Settings(), **values)
    return _cached


def reset_defaults() -> None:
    """Forget every `configure()` value and re-read the environment on next use."""
    global _cached
    _overrides.clear()
    _cached = None
