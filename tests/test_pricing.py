"""Cost per kind of token (uncached, cache write, cache read, output), batch prices, the cache."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import genai_prices
import pytest

from promptcast import pricing
from promptcast.backends.base import ModelReply
from promptcast.result import Usage
from promptcast.testing import FakeAnthropic


def genai(
    model: str,
    uncached: int,
    output: int,
    read: int = 0,
    write: int = 0,
    *,
    batch: bool = False,
) -> float:
    """What genai-prices says for exactly this usage (its input_tokens count every input)."""
    usage: dict[str, Any] = {"input_tokens": uncached + read + write, "output_tokens": output}
    if read:
        usage["cache_read_tokens"] = read
    if write:
        usage["cache_write_tokens"] = write
    return float(
        genai_prices.calc_price(
            genai_prices.Usage(**usage),
            model_ref=model,
            provider_id="anthropic",
            price_context={"processing": "batch"} if batch else None,
        ).total_price
    )


def test_the_issue_example_is_priced_at_the_bill_not_as_full_price_input() -> None:
    # 200 uncached + 800 cache read + 100 output on claude-sonnet-4-6: $0.00234, not $0.0045
    cost = pricing.cost_usd("anthropic/claude-sonnet-4-6", 200, 100, cache_read_tokens=800)
    assert cost == pytest.approx(0.00234, abs=1e-12)


@pytest.mark.parametrize(
    ("uncached", "output", "read", "write"),
    [
        (1000, 100, 800, 0),  # the acceptance case
        (1000, 100, 0, 0),
        (0, 0, 5000, 0),
        (10, 20, 0, 3000),
        (1234, 567, 8901, 2345),
    ],
)
@pytest.mark.parametrize("model", ["claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-6"])
def test_usage_costs_what_genai_prices_says_for_that_mix(
    model: str, uncached: int, output: int, read: int, write: int
) -> None:
    usage = Usage.of(
        f"anthropic/{model}",
        uncached,
        output,
        cache_read_tokens=read,
        cache_write_tokens=write,
    )
    assert usage.cost_usd == pytest.approx(genai(model, uncached, output, read, write), abs=1e-10)


@pytest.mark.parametrize(("uncached", "read"), [(1000, 800), (300_000, 0)])
def test_a_batch_item_costs_genai_prices_batch_price(uncached: int, read: int) -> None:
    cost = pricing.cost_usd(
        "anthropic/claude-sonnet-4-6", uncached, 100, cache_read_tokens=read, batch=True
    )
    expected = genai("claude-sonnet-4-6", uncached, 100, read, batch=True)
    assert cost == pytest.approx(expected, abs=1e-10)
    assert expected < genai("claude-sonnet-4-6", uncached, 100, read)  # it is the batch price


def test_usage_adds_cache_tokens_and_prices_each_request_lazily() -> None:
    a = Usage.of("anthropic/claude-sonnet-4-6", 100, 10, cache_write_tokens=2000)
    b = Usage.of("anthropic/claude-sonnet-4-6", 100, 10, cache_read_tokens=2000)
    total = a + b
    assert (total.cache_write_tokens, total.cache_read_tokens) == (2000, 2000)
    assert total.total_tokens == 100 + 10 + 2000 + 100 + 10 + 2000
    assert total.cost_usd == pytest.approx(
        genai("claude-sonnet-4-6", 100, 10, write=2000) + genai("claude-sonnet-4-6", 100, 10, 2000),
        abs=1e-10,
    )
    assert "cache_read_tokens=2000" in repr(total)


def test_prices_are_looked_up_once_per_model_and_day(monkeypatch: pytest.MonkeyPatch) -> None:
    pricing._rates.cache_clear()
    calls: list[Any] = []
    real = pricing._genai_calculation

    def counted(*args: Any) -> Any:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(pricing, "_genai_calculation", counted)
    for i in range(50):
        pricing.cost_usd("anthropic/claude-sonnet-4-6", 1000 + i, 100, cache_read_tokens=i)
    assert len(calls) == 4  # one probe per kind of token, then arithmetic
    tomorrow = dt.date.today() + dt.timedelta(days=1)
    assert pricing._rates("anthropic", "claude-sonnet-4-6", False, tomorrow) is not None
    assert len(calls) == 8  # a new day looks the prices up again


def test_usage_past_a_price_tier_goes_through_genai_prices_every_time() -> None:
    rates = pricing._Rates(Decimal(1), Decimal(1), Decimal(1), Decimal(1), limit=200_000)
    assert rates.price(pricing._Counts(199_999, 0, 0, 10)) is not None
    assert rates.price(pricing._Counts(150_000, 50_000, 0, 10)) is None


@pytest.mark.parametrize("model", ["nope/unknown-model", "anthropic/claude-no-such-model"])
def test_an_unknown_model_costs_none(model: str, caplog: pytest.LogCaptureFixture) -> None:
    assert pricing.cost_usd(model, 10, 10, cache_read_tokens=5) is None


def test_the_anthropic_backend_reports_uncached_input_only(
    fake_anthropic: FakeAnthropic,
) -> None:
    from promptcast.backends.anthropic import _read_reply
    from promptcast.backends.base import ModelRequest
    from promptcast.render import Prompt

    body = {
        "content": [{"type": "text", "text": "hi"}],
        "usage": {
            "input_tokens": 200,
            "cache_read_input_tokens": 800,
            "cache_creation_input_tokens": 50,
            "output_tokens": 100,
        },
        "stop_reason": "end_turn",
    }
    request = ModelRequest(model="claude-sonnet-4-6", prompt=Prompt(system=None), output_model=None)
    reply: ModelReply = _read_reply(request, body)
    assert (reply.input_tokens, reply.cache_read_tokens, reply.cache_write_tokens) == (200, 800, 50)


async def test_a_provider_batch_line_is_priced_at_the_batch_price_with_cache_tokens() -> None:
    import json

    from promptcast.batch import BatchItem, _reply_line
    from promptcast.spec import parse_task_text
    from promptcast.task import Task

    task = Task(
        parse_task_text(
            "---\ninputs: {q: str}\noutput: {a: str}\nmodel: anthropic/claude-sonnet-4-6\n"
            "---\n{{ q }}\n",
            name="t",
        )
    )
    reply = ModelReply(
        data={"a": "x"},
        text='{"a": "x"}',
        input_tokens=1000,
        output_tokens=100,
        cache_read_tokens=800,
        cache_write_tokens=0,
    )
    line = await _reply_line(task, "b1", BatchItem("id-1", {"q": "?"}), reply)
    expected = genai("claude-sonnet-4-6", 1000, 100, 800, batch=True)
    assert line.usage.cost_usd == pytest.approx(expected, abs=1e-10)
    usage = json.loads(line.to_json())["usage"]
    assert usage["cache_read_tokens"] == 800 and usage["cost_usd"] == pytest.approx(expected)
