"""Model strings checked before any call: an unknown provider gets a did-you-mean at load-check
time (`promptcast check`), not at the first request in production."""

from __future__ import annotations

import difflib

from promptcast.errors import ConfigurationError

__all__ = ["model_problem"]

# Providers litellm routes that need no import of litellm to recognise (importing it takes a
# second); any other name is looked up in litellm's own list.
_COMMON = frozenset(
    {
        "openai",
        "azure",
        "azure_ai",
        "gemini",
        "vertex_ai",
        "bedrock",
        "ollama",
        "ollama_chat",
        "hosted_vllm",
        "mistral",
        "groq",
        "deepseek",
        "openrouter",
        "together_ai",
        "cohere",
        "xai",
    }
)


def model_problem(model: str) -> str | None:
    """Why `model` cannot be routed (with the closest provider), or None when it can or when the
    litellm extra that knows the other providers is not installed."""
    from promptcast.backends import NATIVE_PROVIDERS, split_model

    try:
        provider, _ = split_model(model)
    except ConfigurationError as exc:
        return str(exc)
    if provider in NATIVE_PROVIDERS or provider in _COMMON:
        return None
    try:
        from promptcast.backends.litellm import known_providers

        known = known_providers()
    except (ConfigurationError, ImportError):
        return None
    if provider in known:
        return None
    names = [*NATIVE_PROVIDERS, *sorted(_COMMON), *sorted(known - _COMMON)]
    close = difflib.get_close_matches(provider, names, n=1)
    hint = f"; did you mean '{close[0]}/…'?" if close else ""
    return f"model {model!r}: unknown provider {provider!r}{hint}"
