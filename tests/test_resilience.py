"""Retries, fallbacks and budgets, counted at loopback fake provider servers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

import promptcast as pc
from promptcast._retry import backoff, parse_retry_after
from promptcast.pricing import cost_usd
from promptcast.testing import (
    FakeAnthropic,
    FakeOpenAI,
    FakeReply,
    chat_completion,
    error_reply,
    message,
    tool_call,
    tool_use_block,
)

TASK = """
---
inputs: {text: str}
output: {summary: str}
model: anthropic/claude-sonnet-4-6
max_tokens: 200
---
{{ text }}
"""
GOOD = {"summary": "fine"}


@pytest.fixture
def task(write_task: Callable[..., Path]) -> pc.Task[Any]:
    return pc.Task.from_file(write_task("summarize", TASK))


@pytest.fixture(autouse=True)
def _quick_backoff() -> None:
    pc.configure(retry_max_wait_s=0.05)


def ok() -> dict[str, Any]:
    return message([tool_use_block("SummarizeOutput", GOOD)])


def test_429_with_retry_after_waits_and_retries_once(
    task: pc.Task[Any], fake_anthropic: FakeAnthropic
) -> None:
    pc.configure(retry_max_wait_s=5)
    fake_anthropic.reply(
        error_reply(429, "rate_limit_error", "RATE-LIMIT-SECRET-TEXT", retry_after="1"), ok()
    )
    started = time.perf_counter()
    run = task.run(text="x")
    assert time.perf_counter() - started >= 1.0
    assert len(fake_anthropic.requests) == 2 and run.attempts == 2
    assert [a.status for a in run.attempt_log] == ["error", "ok"]
    assert "RATE-LIMIT-SECRET-TEXT" not in json.dumps(fake_anthropic.requests[1])


@pytest.mark.parametrize(
    "failure",
    [
        error_reply(529, "overloaded_error", "Overloaded. https://docs.claude.com/en/api/errors"),
        error_reply(500, "api_error", "Internal server error"),
        error_reply(408, "timeout_error", "Request timeout"),
        FakeReply(raw=b'{"id": "msg_01", "type": "mess'),
        FakeReply(drop=True),
    ],
    ids=["529", "500", "408", "malformed-json", "dropped-connection"],
)
def test_transient_failures_are_retried(
    task: pc.Task[Any], fake_anthropic: FakeAnthropic, failure: FakeReply
) -> None:
    fake_anthropic.reply(failure, ok())
    assert task.run(text="x").output.summary == "fine"
    assert len(fake_anthropic.requests) == 2


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
    ],
)
def test_final_errors_are_not_retried(
    task: pc.Task[Any], fake_anthropic: FakeAnthropic, status: int, kind: str
) -> None:
    fake_anthropic.reply(error_reply(status, kind, "no"))
    with pytest.raises(pc.BackendError) as info:
        task.run(text="x")
    assert (info.value.status, info.value.retryable) == (status, False)
    assert len(fake_anthropic.requests) == 1


def test_openai_compatible_429_honours_retry_after(fake_openai: FakeOpenAI) -> None:
    from promptcast.testing import chat_completion, openai_error, tool_call

    fake_openai.reply(
        openai_error(429, "slow down", kind="rate_limit_exceeded", retry_after="0.01"),
        chat_completion(
            tool_calls=[tool_call("Classification", {"label": "billing", "reason": "a charge"})]
        ),
    )
    task = pc.builtin_tasks()["classify"].with_model("openai/gpt-4o-mini")
    run = task.run(text="charged twice", labels=["billing", "bug"])
    assert len(fake_openai.requests) == 2 and run.attempts == 2
    assert run.output.label == "billing"


def test_classify_re_asks_until_the_label_is_one_it_was_given(fake_openai: FakeOpenAI) -> None:
    """The built-in classify validates the answer against the call's own labels."""
    from promptcast.testing import chat_completion, tool_call

    fake_openai.reply(
        chat_completion(
            tool_calls=[tool_call("Classification", {"label": "refund", "reason": "money"})]
        ),
        chat_completion(
            tool_calls=[tool_call("Classification", {"label": " Billing ", "reason": "money"})]
        ),
    )
    task = pc.builtin_tasks()["classify"].with_model("openai/gpt-4o-mini")
    run = task.run(text="charged twice", labels=["billing", "bug"])
    assert run.output.label == "billing" and run.attempts == 2
    assert "must be exactly one of the given labels: billing, bug" in str(
        fake_openai.requests[1]["messages"]
    )


def test_exhausted_re_asks_fall_back_to_the_next_model(
    task: pc.Task[Any], fake_anthropic: FakeAnthropic, fake_openai: FakeOpenAI
) -> None:
    pc.configure(max_attempts=3, fallbacks=["openai/gpt-4o-mini"])
    bad = message(
        [tool_use_block("SummarizeOutput", {"summary": 42})], input_tokens=100, output_tokens=10
    )
    fake_anthropic.reply(bad, bad, bad)
    fake_openai.reply(
        chat_completion(
            tool_calls=[tool_call("SummarizeOutput", GOOD)], prompt_tokens=80, completion_tokens=12
        )
    )
    run = task.run(text="x")
    assert run.model == "openai/gpt-4o-mini" and run.output.summary == "fine"
    assert [(a.model, a.status) for a in run.attempt_log] == [
        ("anthropic/claude-sonnet-4-6", "invalid")
    ] * 3 + [("openai/gpt-4o-mini", "ok")]
    assert (run.usage.input_tokens, run.usage.output_tokens) == (380, 42)
    expected = 3 * cost_usd("anthropic/claude-sonnet-4-6", 100, 10) + cost_usd(  # type: ignore[operator]
        "openai/gpt-4o-mini", 80, 12
    )
    assert run.usage.cost_usd == pytest.approx(expected)
    assert sum(a.usage.cost_usd or 0 for a in run.attempt_log) == pytest.approx(expected)


def test_a_final_error_falls_back_too(
    task: pc.Task[Any], fake_anthropic: FakeAnthropic, fake_openai: FakeOpenAI
) -> None:
    pc.configure(fallbacks=["openai/gpt-4o-mini"])
    fake_anthropic.reply(error_reply(401, "authentication_error", "invalid x-api-key"))
    run = task.run(text="x")
    assert run.model == "openai/gpt-4o-mini" and len(fake_anthropic.requests) == 1


def test_when_every_request_fails_the_ceiling_holds(
    task: pc.Task[Any], fake_anthropic: FakeAnthropic, fake_openai: FakeOpenAI
) -> None:
    pc.configure(max_attempts=2, max_retries=2, fallbacks=["openai/gpt-4o-mini"])
    fake_anthropic.handler = lambda request: error_reply(500, "api_error", "down")
    fake_openai.handler = lambda request: FakeReply(drop=True)
    with pytest.raises(pc.BackendError) as info:
        task.run(text="x")
    total = len(fake_anthropic.requests) + len(fake_openai.requests)
    assert total <= (1 + 1) * 2 * (1 + 2)
    assert info.value.attempts == total and "tried anthropic/claude-sonnet-4-6" in str(info.value)


def test_the_ceiling_is_reached_exactly_when_failures_alternate(
    task: pc.Task[Any], fake_anthropic: FakeAnthropic, fake_openai: FakeOpenAI
) -> None:
    """Two transport failures then an invalid answer, for every attempt on every model."""
    pc.configure(max_attempts=2, max_retries=2, fallbacks=["openai/gpt-4o-mini"])
    counts = {"anthropic": 0, "openai": 0}

    def anthropic(request: dict[str, Any]) -> FakeReply | dict[str, Any]:
        counts["anthropic"] += 1
        if counts["anthropic"] % 3:
            return error_reply(529, "overloaded_error", "Overloaded")
        return message([tool_use_block("SummarizeOutput", {"summary": 1})])

    def openai(request: dict[str, Any]) -> FakeReply | dict[str, Any]:
        counts["openai"] += 1
        if counts["openai"] % 3:
            return FakeReply(raw=b"{not json")
        return chat_completion(tool_calls=[tool_call("SummarizeOutput", {"summary": 1})])

    fake_anthropic.handler, fake_openai.handler = anthropic, openai
    with pytest.raises(pc.OutputValidationError):
        task.run(text="x")
    assert counts == {"anthropic": 6, "openai": 6}  # == (1 + 1) * 2 * (1 + 2) in all


def test_budget_refuses_before_any_request(
    write_task: Callable[..., Path], fake_anthropic: FakeAnthropic
) -> None:
    task = pc.Task.from_file(
        write_task(
            "pricey",
            TASK.replace("max_tokens: 200", "max_tokens: 4000\nbudget: {max_cost_usd: 0.001}"),
        )
    )
    with pytest.raises(pc.BudgetExceededError) as info:
        task.run(text="x")
    assert info.value.limit == "max_cost_usd" and "max_cost_usd=0.001" in str(info.value)
    assert fake_anthropic.requests == []


def test_budget_stops_re_asking_once_spent(
    task: pc.Task[Any], fake_anthropic: FakeAnthropic
) -> None:
    first = cost_usd("anthropic/claude-sonnet-4-6", 2000, 200)
    assert first is not None
    pc.configure(max_cost_usd=first * 1.2)
    fake_anthropic.reply(
        message(
            [tool_use_block("SummarizeOutput", {"summary": 3})],
            input_tokens=2000,
            output_tokens=200,
        )
    )
    with pytest.raises(pc.BudgetExceededError) as info:
        task.run(text="x")
    assert len(fake_anthropic.requests) == 1
    assert info.value.usage is not None and info.value.usage.cost_usd == pytest.approx(first)


def test_timeout_bounds_the_whole_call_under_a_slow_server(
    task: pc.Task[Any], fake_anthropic: FakeAnthropic
) -> None:
    task.run(text="warm-up: the SDK import is not part of what is timed")
    pc.configure(timeout_s=1.0, max_retries=5, max_attempts=3)
    fake_anthropic.handler = lambda request: FakeReply(ok(), delay_s=0.6)
    slow_bad = message([tool_use_block("SummarizeOutput", {"summary": 5})])
    fake_anthropic.reply(FakeReply(slow_bad, delay_s=0.6))
    started = time.perf_counter()
    with pytest.raises(pc.BudgetExceededError) as info:
        task.run(text="x")
    assert time.perf_counter() - started < 1.6
    assert info.value.limit == "timeout_s"


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [("2", 2, 2), ("0.5", 0.5, 0.5), ("soon", None, None)],
)
def test_retry_after_parsing(value: str, low: float | None, high: float | None) -> None:
    parsed = parse_retry_after(value)
    assert parsed == low == high if low is None else low <= parsed <= high  # type: ignore[operator]


def test_retry_after_as_an_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    parsed = parse_retry_after(when)
    assert parsed is not None and 25 <= parsed <= 30


def test_backoff_is_capped_and_honours_retry_after() -> None:
    assert backoff(0, 3.0, cap=10) == 3.0
    assert backoff(0, 30.0, cap=10) == 10
    assert all(0 <= backoff(n, None, cap=1) <= 1 for n in range(10))


def test_bad_retry_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTCAST_MAX_RETRIES", "-1")
    pc.reset_defaults()
    with pytest.raises(pc.ConfigurationError) as info:
        pc.get_config()
    assert info.value.env_var == "PROMPTCAST_MAX_RETRIES"


NOT_THE_API = [
    pytest.param({"hello": "world"}, id="unrelated-json"),
    pytest.param({"error": {"message": "upstream unavailable"}}, id="proxy-error-envelope"),
    pytest.param({"content": "not a list", "usage": None}, id="wrong-types"),
    pytest.param([1, 2, 3], id="a-list"),
]


@pytest.mark.parametrize("body", NOT_THE_API)
def test_a_200_that_is_not_the_anthropic_shape_is_retryable_and_falls_back(
    task: pc.Task[Any], fake_anthropic: FakeAnthropic, fake_openai: FakeOpenAI, body: Any
) -> None:
    fake_anthropic.reply(*[FakeReply(raw=json.dumps(body).encode())] * 3)
    fake_openai.reply(chat_completion(tool_calls=[tool_call("SummarizeOutput", GOOD)]))
    with pc.override(fallbacks=["openai/gpt-4o-mini"], retry_max_wait_s=0.01):
        run = task.run(text="x")
    assert run.model == "openai/gpt-4o-mini" and run.output.summary == "fine"
    errors = [a for a in run.attempt_log if a.status == "error"]
    assert len(errors) == 3 and "not its API's shape" in (errors[0].error or "")


@pytest.mark.parametrize(
    "body", [p for p in NOT_THE_API if p.id != "proxy-error-envelope"]
)  # litellm reads a 200 `{"error": …}` as the provider's own error (HTTP 422): not retried
def test_a_200_that_is_not_the_openai_shape_is_a_retryable_backend_error(
    task: pc.Task[Any], fake_openai: FakeOpenAI, body: Any
) -> None:
    fake_openai.reply(*[FakeReply(raw=json.dumps(body).encode())] * 3)
    with pc.override(retry_max_wait_s=0.01), pytest.raises(pc.BackendError) as info:
        task.with_model("openai/gpt-4o-mini").run(text="x")
    assert info.value.retryable and len(fake_openai.requests) == 3
