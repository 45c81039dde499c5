"""Model strings checked before any call: an unknown provider gets a did-you-mean at load-check
time (`promptcast check`), not at the first request in production."""

from __future__ import annotations

import difflib

from promptcast.errors import ConfigurationError

__all__ = ["model_problem"]


def model_problem(model: str) -> str | None:
    """Why `model` cannot be routed (with the closest provider), or None when it can or when the
    litellm extra that knows the other providers is not installed."""
    from promptcast.backends import NATIVE_PROVIDERS, split_model

    try:
        provider, _ = split_model(model)
    except ConfigurationError as exc:
        return str(exc)
    if provider in NATIVE_PROVIDERS:
        return None
    try:
        from promptcast.backends.litellm import known_providers

        known = known_providers()
    except (ConfigurationError, ImportError):
        return None
    if provider in known:
        return None
    close = difflib.get_close_matches(provider, [*NATIVE_PROVIDERS, *sorted(known)], n=1)
    hint = f"; did you mean '{close[0]}/…'?" if close else ""
    return f"model {model!r}: unknown provider {provider!r}{hint}"
