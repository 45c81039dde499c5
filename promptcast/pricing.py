"""Cost of a request in USD, from the `genai-prices` package (imported on first use), else from
litellm's bundled cost map when litellm is in use.

An unknown model costs `None` and is logged once per model (logger `promptcast.pricing`): a missing
price must never break a call, nor print a warning with a source line into the caller's output.
"""

from __future__ import annotations

import logging
import sys
from functools import lru_cache

__all__ = ["cost_usd"]

logger = logging.getLogger("promptcast.pricing")
_warned: set[str] = set()


def cost_usd(model: str, input_tokens: int, output_tokens: int) -> float | None:
    """Price of one request on `model` (`"provider/name"` or `"provider:name"`), or `None` when it
    is not known."""
    provider, sep, name = model.partition("/")
    if not sep or ":" in provider:
        provider, _, name = model.partition(":")
        model = f"{provider}/{name}"
    if provider == "test":
        return 0.0
    calc = _calculator()
    try:
        price = calc.calc_price(
            calc.Usage(input_tokens=input_tokens, output_tokens=output_tokens),
            model_ref=name,
            provider_id=provider,
        )
    except LookupError:
        cost = _litellm_cost(model, input_tokens, output_tokens)
        if cost is not None:
            return cost
        if model not in _warned:
            _warned.add(model)
            logger.warning("no price known for %r; its cost is reported as None", model)
        return None
    return float(price.total_price)


def _litellm_cost(model: str, input_tokens: int, output_tokens: int) -> float | None:
    litellm = sys.modules.get("litellm")
    if litellm is None:
        return None
    try:
        prompt, completion = litellm.cost_per_token(
            model=model.removeprefix("litellm/"),
            prompt_tokens=input_tokens,
            completion_tokens=output_tokens,
        )
    except Exception:  # litellm raises several kinds for an unmapped model
        return None
    return float(prompt + completion)


@lru_cache(maxsize=1)
def _calculator():  # type: ignore[no-untyped-def]
    import genai_prices

    return genai_prices
