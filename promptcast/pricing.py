"""Cost of a request in USD, from the `genai-prices` package (imported on first use), else from
litellm's bundled cost map when litellm is in use.

Each kind of token has its own price: uncached input, input written to the provider's prompt
cache, input read from it, and output (thinking included). A provider batch is priced through
genai-prices' batch price context (`processing: batch`), not by halving a price by hand.

A model's prices are looked up once per day (`_rates`): genai-prices is asked for each kind of
token once, and a request is then priced with four multiplications instead of a full lookup
(about 100 µs each). Usage past a model's first price tier (long-context prices) goes through
genai-prices every time, so tiered prices stay exact.

An unknown model costs `None` and is logged once per model (logger `promptcast.pricing`): a missing
price must never break a call, nor print a warning with a source line into the caller's output.
"""

from __future__ import annotations

import datetime as _dt
import logging
import sys
from decimal import Decimal
from functools import lru_cache
from typing import Any, NamedTuple

__all__ = ["cost_usd"]

logger = logging.getLogger("promptcast.pricing")
_warned: set[str] = set()
_BATCH: dict[str, str] = {"processing": "batch"}
_PROBE = 1000  # tokens per probe: below every price tier, exact in Decimal


def cost_usd(
    model: str,
    input_tokens: int,
    output_tokens: int,
    *,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    batch: bool = False,
) -> float | None:
    """Price of one request on `model` (`"provider/name"` or `"provider:name"`), or `None` when it
    is not known. `input_tokens` is the uncached input only; `batch=True` prices it as an entry of
    the provider's batch API."""
    provider, sep, name = model.partition("/")
    if not sep or ":" in provider:
        provider, _, name = model.partition(":")
        model = f"{provider}/{name}"
    if provider == "test":
        return 0.0
    if provider == "local":
        return None  # a model on your own hardware has no price per token
    counts = _Counts(input_tokens, cache_read_tokens, cache_write_tokens, output_tokens)
    rates = _rates(provider, name, batch, _dt.date.today())
    if rates is not None:
        price = rates.price(counts)
        if price is not None:
            return float(price)
        try:
            return float(_genai_price(provider, name, counts, batch))
        except (LookupError, ValueError):
            pass
    cost = _litellm_cost(model, counts)
    if cost is not None:
        return cost
    if model not in _warned:
        _warned.add(model)
        logger.warning("no price known for %r; its cost is reported as None", model)
    return None


class _Counts(NamedTuple):
    uncached: int
    cache_read: int
    cache_write: int
    output: int

    @property
    def total_input(self) -> int:
        return self.uncached + self.cache_read + self.cache_write


class _Rates(NamedTuple):
    """A model's price per `_PROBE` tokens of each kind (`None`: genai-prices could not price that
    kind alone), valid while the total input stays below `limit` (the first price tier)."""

    uncached: Decimal | None
    cache_read: Decimal | None
    cache_write: Decimal | None
    output: Decimal | None
    limit: int | None

    def price(self, counts: _Counts) -> Decimal | None:
        if self.limit is not None and counts.total_input >= self.limit:
            return None
        total = Decimal(0)
        for rate, count in zip(self[:4], counts, strict=True):
            if count:
                if rate is None:
                    return None
                total += rate * count / _PROBE
        return total


@lru_cache(maxsize=1024)
def _rates(provider: str, name: str, batch: bool, day: _dt.date) -> _Rates | None:
    """The per-token prices of `provider/name` today, from genai-prices; `None` when it does not
    know the model (the date is part of the key, so a price change on a date is picked up)."""
    probes = (
        _Counts(_PROBE, 0, 0, 0),
        _Counts(0, _PROBE, 0, 0),
        _Counts(0, 0, _PROBE, 0),
        _Counts(0, 0, 0, _PROBE),
    )
    found: list[Decimal | None] = []
    limit: int | None = None
    for probe in probes:
        try:
            calculation = _genai_calculation(provider, name, probe, batch)
        except LookupError:
            if not found:
                return None
            found.append(None)
            continue
        except ValueError:  # genai-prices refuses to price this kind of token for the model
            found.append(None)
            continue
        found.append(calculation.total_price)
        limit = _first_tier(calculation.model_price)
    if all(rate is None for rate in found):
        return None
    return _Rates(found[0], found[1], found[2], found[3], limit)


def _first_tier(model_price: Any) -> int | None:
    """The smallest input size at which any of the model's prices changes (long-context tiers)."""
    starts = [
        tier.start
        for value in vars(model_price).values()
        for tier in getattr(value, "tiers", None) or ()
    ]
    return min(starts) if starts else None


def _genai_calculation(provider: str, name: str, counts: _Counts, batch: bool) -> Any:
    calc = _calculator()
    usage = {
        "input_tokens": counts.total_input,
        "output_tokens": counts.output,
    }
    if counts.cache_read:
        usage["cache_read_tokens"] = counts.cache_read
    if counts.cache_write:
        usage["cache_write_tokens"] = counts.cache_write
    return calc.calc_price(
        calc.Usage(**usage),
        model_ref=name,
        provider_id=provider,
        price_context=_BATCH if batch else None,
    )


def _genai_price(provider: str, name: str, counts: _Counts, batch: bool) -> Decimal:
    return Decimal(_genai_calculation(provider, name, counts, batch).total_price)


def _litellm_cost(model: str, counts: _Counts) -> float | None:
    litellm = sys.modules.get("litellm")
    if litellm is None:
        return None
    try:
        prompt, completion = litellm.cost_per_token(
            model=model.removeprefix("litellm/"),
            prompt_tokens=counts.total_input,
            completion_tokens=counts.output,
            cache_read_input_tokens=counts.cache_read,
            cache_creation_input_tokens=counts.cache_write,
        )
    except Exception:  # litellm raises several kinds for an unmapped model
        return None
    return float(prompt + completion)


@lru_cache(maxsize=1)
def _calculator():  # type: ignore[no-untyped-def]
    import genai_prices

    return genai_prices
