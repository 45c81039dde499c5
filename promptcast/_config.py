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

__all__ = ["DEFAULT_MODEL", "Settings", "configure", "get_config", "reset_defaults"]

DEFAULT_MODEL = "anthropic/claude-sonnet-4-6"


@dataclass(frozen=True)
class Settings:
    """The effective settings; read them with `get_config()`."""

    model: str = DEFAULT_MODEL
    fallbacks: tuple[str, ...] = ()
    max_attempts: int = 3
    prompts: tuple[str, ...] = ()
    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None
    backends: dict[str, Backend] = field(default_factory=dict, repr=False)


_ENV: dict[str, str] = {
    "model": "PROMPTCAST_MODEL",
    "fallbacks": "PROMPTCAST_FALLBACKS",
    "max_attempts": "PROMPTCAST_MAX_ATTEMPTS",
    "prompts": "PROMPTCAST_PROMPTS",
    "base_url": "PROMPTCAST_BASE_URL",
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
    if name == "max_attempts":
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = 0
        if number < 1:
            raise ConfigurationError(
                f"{source} must be a whole number of at least 1, got {value!r}.", env_var=source
            )
        return number
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
    """Set process-wide defaults (`model`, `fallbacks`, `max_attempts`, `prompts`, `api_key`,
    `base_url`, `backends`). Unknown names raise `ConfigurationError`.

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
