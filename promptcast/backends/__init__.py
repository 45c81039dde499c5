"""Backends and the model-string resolution that picks one.

`anthropic/<model>` → `AnthropicBackend`; `test/<name>` → a `ScriptedBackend` registered with
`configure(backends=…)` or `override(backends=…)`; any other `<provider>/<model>` →
`LiteLLMBackend` (the `litellm` extra), and `litellm/<provider>/<model>` forces litellm.
`local/<path.gguf>` → `LocalBackend`: a GGUF model run in-process by llama-cpp-python (the `local`
extra).
`provider:model` works as well as `provider/model`.

A backend registered under a full model string wins over one registered under its provider name,
which wins over the shared default backend of that provider.
"""

from __future__ import annotations

import difflib
import threading

from promptcast._config import get_config
from promptcast.backends.base import Backend, Capabilities, ModelReply, ModelRequest
from promptcast.errors import ConfigurationError

__all__ = [
    "AnthropicBackend",
    "Backend",
    "Capabilities",
    "LiteLLMBackend",
    "LocalBackend",
    "ModelReply",
    "ModelRequest",
    "ScriptedBackend",
    "aclose_shared",
    "close_shared",
    "resolve",
    "split_model",
]

NATIVE_PROVIDERS = ("anthropic", "test", "litellm", "local")
_shared: dict[str, Backend] = {}
_lock = threading.Lock()


def __getattr__(name: str) -> object:
    # the backend classes, imported on first use: `import promptcast` stays free of provider SDKs
    if name == "AnthropicBackend":
        from promptcast.backends.anthropic import AnthropicBackend

        return AnthropicBackend
    if name == "LiteLLMBackend":
        from promptcast.backends.litellm import LiteLLMBackend

        return LiteLLMBackend
    if name == "LocalBackend":
        from promptcast.backends.local import LocalBackend

        return LocalBackend
    if name == "ScriptedBackend":
        from promptcast.backends.scripted import ScriptedBackend

        return ScriptedBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    if registered:
        for key in (model, f"{provider}/{name}", provider):
            if key in registered:
                return registered[key], name
    backend = _shared.get(provider)
    if backend is None:
        with _lock:
            backend = _shared.get(provider) or _new(provider, model)
            _shared[provider] = backend
    return backend, name


def _new(provider: str, model: str) -> Backend:
    if provider == "anthropic":
        from promptcast.backends.anthropic import AnthropicBackend

        return AnthropicBackend()
    if provider == "local":
        from promptcast.backends.local import LocalBackend

        return LocalBackend()
    if provider == "test":
        raise ConfigurationError(
            f"no scripted backend is registered for {model!r}; wire one with "
            f"promptcast.override(backends={{{model!r}: ScriptedBackend([...])}}) "
            "(or configure(backends=…) for the whole process); override() holds for its "
            "thread or asyncio task, so a thread you start runs without it unless started "
            "through contextvars.copy_context().run(...)"
        )
    from promptcast.backends.litellm import LiteLLMBackend, known_providers

    known = known_providers()  # fails here, with the install hint, if the extra is missing
    if provider not in known:
        close = difflib.get_close_matches(provider, [*NATIVE_PROVIDERS, *known], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigurationError(
            f"unknown provider {provider!r} in model {model!r}.{hint} Known providers: anthropic, "
            "test, local (a GGUF file), and litellm's (openai, gemini, ollama, hosted_vllm, bedrock, …).",
            env_var="PROMPTCAST_MODEL",
        )
    return LiteLLMBackend(provider)


def close_shared() -> None:
    """Close the sync clients of the shared backends (tests, shutdown)."""
    for backend in list(_shared.values()):
        backend.close()


async def aclose_shared() -> None:
    """Close the running event loop's clients of the shared backends and of the registered ones
    (the server calls this at shutdown, so no connection outlives it)."""
    seen: set[int] = set()
    for backend in [*_shared.values(), *get_config().backends.values()]:
        if id(backend) not in seen:
            seen.add(id(backend))
            await backend.aclose()
