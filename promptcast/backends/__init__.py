"""Backends and the model-string resolution that picks one.

`anthropic/<model>` → `AnthropicBackend`; `test/<name>` → a `ScriptedBackend` registered with
`configure(backends=…)`; any other `<provider>/<model>` → `LiteLLMBackend` (the `litellm` extra),
and `litellm/<provider>/<model>` forces litellm. `provider:model` works as well as `provider/model`.
"""

from __future__ import annotations

from promptcast._config import get_config
from promptcast.backends.base import Backend, ModelReply, ModelRequest
from promptcast.errors import ConfigurationError

__all__ = ["Backend", "ModelReply", "ModelRequest", "resolve", "split_model"]

_shared: dict[str, Backend] = {}


def split_model(model: str) -> tuple[str, str]:
    """`"anthropic/claude-sonnet-4-6"` → `("anthropic", "claude-sonnet-4-6")`."""
    provider, sep, name = model.partition("/")
    if not sep or ":" in provider:
        provider, sep, name = model.partition(":")
    if not sep or not provider or not name:
        raise ConfigurationError(
            f"model {model!r} is not of the form 'provider/model', e.g. 'anthropic/claude-sonnet-4-6' "
            "(set PROMPTCAST_MODEL or the task's model:)",
            env_var="PROMPTCAST_MODEL",
        )
    return provider.lower(), name


def resolve(model: str) -> tuple[Backend, str]:
    """The backend for a model string and the model name to send to it."""
    provider, name = split_model(model)
    registered = get_config().backends
    for key in (model, f"{provider}/{name}"):
        if key in registered:
            return registered[key], name
    if provider == "anthropic":
        if "anthropic" not in _shared:
            from promptcast.backends.anthropic import AnthropicBackend

            _shared["anthropic"] = AnthropicBackend()
        return _shared["anthropic"], name
    if provider == "test":
        raise ConfigurationError(
            f"no scripted backend is registered for {model!r}; register one with "
            f"promptcast.configure(backends={{{model!r}: ScriptedBackend([...])}})"
        )
    if provider not in _shared:
        from promptcast.backends.litellm import LiteLLMBackend, _litellm

        _litellm()  # fail now, with the install hint, if the extra is missing
        _shared[provider] = LiteLLMBackend(provider)
    return _shared[provider], name
