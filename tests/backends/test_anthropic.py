"""The Anthropic backend end to end: real SDK, loopback fake Messages API, real reply shapes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

import promptcast as pc
from promptcast.testing import (
    FakeAnthropic,
    FakeReply,
    error_reply,
    message,
    text_block,
    tool_use_block,
)
from tests.conftest import TEST_KEY

INLINE = """
---
inputs:
  text: str
output:
  summary: str
  bullets: "list[str]"
model: anthropic/claude-haiku-4-5
max_tokens: 300
output_mode: tool
---
{% role "system" %}Summarize.{% endrole %}
{{ text | fence("text") }}
"""
GOOD = {"summary": "Short.", "bullets": ["a", "b"]}


@pytest.fixture
def summarize(write_task: Callable[..., Path]) -> pc.Task[object]:
    return pc.Task.from_file(write_task("summarize", INLINE))


def thinking() -> dict[str, object]:
    return {"type": "thinking", "thinking": "Let me look.", "signature": "c2lnbmF0dXJl"}


def test_inline_schema_task_runs_through_the_sdk(
    summarize: pc.Task[object], fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply(
        message([tool_use_block("SummarizeOutput", GOOD)], input_tokens=120, output_tokens=30)
    )
    run = summarize.run(text="A long text.")
    assert run.output.model_dump() == GOOD  # type: ignore[attr-defined]
    sent = fake_anthropic.requests[0]
    assert sent["model"] == "claude-haiku-4-5" and sent["max_tokens"] == 300
    assert sent["system"] == "Summarize."
    assert sent["messages"] == [{"role": "user", "content": "<text>\nA long text.\n</text>"}]
    [tool] = sent["tools"]
    assert tool["input_schema"] == summarize.output_model.model_json_schema()  # type: ignore[union-attr]
    assert sent["tool_choice"] == {
        "type": "tool",
        "name": tool["name"],
        "disable_parallel_tool_use": True,
    }
    assert (run.usage.input_tokens, run.usage.output_tokens) == (120, 30)
    assert run.usage.cost_usd is not None and run.usage.cost_usd > 0
    headers = fake_anthropic.request_headers[0]
    assert TEST_KEY in (headers.get("x-api-key", "") + headers.get("authorization", ""))


def test_module_class_schema_task_runs_through_the_sdk(
    write_task: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_anthropic: FakeAnthropic,
) -> None:
    (tmp_path / "shop_models.py").write_text(
        "from pydantic import BaseModel\n"
        "class Item(BaseModel):\n    name: str\n    qty: int\n"
        "class Order(BaseModel):\n    '''An order.'''\n    items: list[Item]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    task = pc.Task.from_file(
        write_task(
            "order",
            "---\ninputs: {text: str}\noutput: shop_models:Order\noutput_mode: tool\n---\n"
            "{{ text }}\n",
        )
    )
    run = task.run(text="two apples")  # the fake answers with a placeholder valid for the schema
    sent = fake_anthropic.requests[0]
    assert sent["model"] == "claude-sonnet-4-6"
    assert sent["messages"][0]["content"] == "two apples"
    assert sent["tools"][0]["name"] == "Order"
    assert sent["tools"][0]["input_schema"]["$defs"]["Item"]["required"] == ["name", "qty"]
    assert run.output.items[0].qty == 1


def test_thinking_block_before_the_tool_call_is_skipped(
    summarize: pc.Task[object], fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply(message([thinking(), tool_use_block("SummarizeOutput", GOOD)]))
    assert summarize.run(text="x").output.model_dump() == GOOD  # type: ignore[attr-defined]


def test_output_tool_is_picked_by_name_among_two_tool_calls(
    summarize: pc.Task[object], fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply(
        message(
            [
                tool_use_block("get_time", {}),
                text_block("Here it is."),
                tool_use_block("SummarizeOutput", GOOD),
                tool_use_block("SummarizeOutput", {"summary": "second", "bullets": []}),
            ]
        )
    )
    run = summarize.run(text="x")
    assert run.output.summary == "Short." and run.attempts == 1  # type: ignore[attr-defined]


def test_fenced_json_text_instead_of_a_tool_call_is_accepted(
    summarize: pc.Task[object], fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply(message([text_block(f"Sure:\n```json\n{json.dumps(GOOD)}\n```\nDone.")]))
    assert summarize.run(text="x").output.model_dump() == GOOD  # type: ignore[attr-defined]


def test_prose_instead_of_a_tool_call_is_re_asked(
    summarize: pc.Task[object], fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply(
        message([text_block("I would rather chat about it.")], input_tokens=50, output_tokens=8),
        message([tool_use_block("SummarizeOutput", GOOD)], input_tokens=70, output_tokens=20),
    )
    run = summarize.run(text="x")
    assert run.attempts == 2
    assert (run.usage.input_tokens, run.usage.output_tokens) == (120, 28)
    reask = fake_anthropic.requests[1]["messages"]
    assert reask[-2]["role"] == "assistant"
    assert reask[-1]["role"] == "user" and "no tool invocation" in json.dumps(reask[-1])


def test_invalid_tool_input_is_answered_with_a_tool_result_error(
    summarize: pc.Task[object], fake_anthropic: FakeAnthropic
) -> None:
    bad = tool_use_block("SummarizeOutput", {"summary": "x", "bullets": "not a list"})
    fake_anthropic.reply(
        message([thinking(), bad]), message([tool_use_block("SummarizeOutput", GOOD)])
    )
    run = summarize.run(text="x")
    assert run.attempts == 2
    first_cost = pc.pricing.cost_usd("anthropic/claude-haiku-4-5", 100, 20)
    assert first_cost is not None and run.usage.cost_usd == pytest.approx(2 * first_cost)
    follow_up = fake_anthropic.requests[1]["messages"]
    assert follow_up[-2]["content"][0]["type"] == "thinking"  # replayed with its signature
    [result] = follow_up[-1]["content"]
    assert result["type"] == "tool_result" and result["tool_use_id"] == bad["id"]
    assert result["is_error"] is True and "bullets" in result["content"]


def test_max_tokens_stop_is_a_clear_truncation_error(
    summarize: pc.Task[object], fake_anthropic: FakeAnthropic
) -> None:
    partial = tool_use_block("SummarizeOutput", {"summary": "cut"})
    fake_anthropic.reply(message([partial], stop_reason="max_tokens", output_tokens=300))
    with pytest.raises(pc.OutputTruncatedError, match="max_tokens=300") as info:
        summarize.run(text="x")
    assert info.value.usage is not None and info.value.usage.output_tokens == 300
    assert len(fake_anthropic.requests) == 1


def test_401_is_a_final_backend_error_and_its_text_never_reaches_a_prompt(
    summarize: pc.Task[object], fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply(error_reply(401, "authentication_error", "invalid x-api-key SECRET-TEXT"))
    with pytest.raises(pc.BackendError) as info:
        summarize.run(text="x")
    err = info.value
    assert (err.status, err.retryable, err.provider) == (401, False, "anthropic")
    assert err.task == "summarize" and err.attempts == 1
    assert len(fake_anthropic.requests) == 1
    summarize.run(text="again")
    assert "SECRET-TEXT" not in json.dumps(fake_anthropic.requests[1])


def test_billing_400_is_final(summarize: pc.Task[object], fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.reply(
        error_reply(
            400, "invalid_request_error", "Your credit balance is too low to access the API."
        )
    )
    with pytest.raises(pc.BackendError) as info:
        summarize.run(text="x")
    assert info.value.retryable is False


def test_missing_api_key_names_the_variable(
    summarize: pc.Task[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    with pytest.raises(pc.ConfigurationError) as info:
        summarize.run(text="x")
    assert info.value.env_var == "ANTHROPIC_API_KEY"


async def test_async_call_through_the_sdk(
    summarize: pc.Task[object], fake_anthropic: FakeAnthropic, close_async_clients: None
) -> None:
    fake_anthropic.reply(
        message([tool_use_block("SummarizeOutput", {"summary": 1})]),
        message([tool_use_block("SummarizeOutput", GOOD)]),
    )
    run = await summarize.arun(text="x")
    assert run.attempts == 2 and run.output.model_dump() == GOOD  # type: ignore[attr-defined]


@pytest.fixture
def sdk_messages_built(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every SDK `Message` object built (by the SDK's parse or by promptcast) during the test."""
    from anthropic.types import Message

    built: list[object] = []
    construct = Message.construct.__func__  # type: ignore[attr-defined]

    def counted(cls: type[Message], /, *args: object, **values: object) -> Message:
        built.append(values)
        return construct(cls, *args, **values)  # type: ignore[no-any-return]

    monkeypatch.setattr(Message, "construct", classmethod(counted))
    monkeypatch.setattr(Message, "model_construct", classmethod(counted))
    return built


@pytest.mark.parametrize("use_async", [False, True], ids=["run", "arun"])
async def test_a_valid_reply_is_read_without_building_sdk_objects(
    summarize: pc.Task[object],
    fake_anthropic: FakeAnthropic,
    close_async_clients: None,
    sdk_messages_built: list[object],
    use_async: bool,
) -> None:
    fake_anthropic.reply(
        message(
            [thinking(), text_block("Here."), tool_use_block("SummarizeOutput", GOOD)],
            input_tokens=40,
            output_tokens=9,
        )
    )
    run = await summarize.arun(text="x") if use_async else summarize.run(text="x")
    assert run.output.model_dump() == GOOD  # type: ignore[attr-defined]
    assert (run.usage.input_tokens, run.usage.output_tokens) == (40, 9)
    assert sdk_messages_built == []


@pytest.mark.parametrize("use_async", [False, True], ids=["run", "arun"])
async def test_a_re_ask_builds_the_sdk_message_of_the_failed_reply_only(
    summarize: pc.Task[object],
    fake_anthropic: FakeAnthropic,
    close_async_clients: None,
    sdk_messages_built: list[object],
    use_async: bool,
) -> None:
    bad = tool_use_block("SummarizeOutput", {"summary": "x", "bullets": "not a list"})
    fake_anthropic.reply(message([bad]), message([tool_use_block("SummarizeOutput", GOOD)]))
    run = await summarize.arun(text="x") if use_async else summarize.run(text="x")
    assert run.attempts == 2
    assert [values["content"] for values in sdk_messages_built] == [[bad]]  # type: ignore[index]
    [result] = fake_anthropic.requests[1]["messages"][-1]["content"]
    assert result["tool_use_id"] == bad["id"] and result["is_error"] is True


@pytest.mark.parametrize(
    "reply",
    [
        FakeReply(
            raw=b"<html><body>Bad gateway</body></html>", headers={"content-type": "text/html"}
        ),
        FakeReply(raw=b'{"id": "msg_01", "content": [{"type": "te'),
        FakeReply(raw=b""),
        FakeReply(raw=b"null"),
        FakeReply(raw=b'"a string"'),
    ],
    ids=["html-page", "truncated-json", "empty", "json-null", "json-string"],
)
def test_a_2xx_body_that_is_not_a_message_is_a_retryable_backend_error(
    summarize: pc.Task[object], fake_anthropic: FakeAnthropic, reply: FakeReply
) -> None:
    fake_anthropic.reply(*[reply] * 3)
    with pc.override(retry_max_wait_s=0.01), pytest.raises(pc.BackendError) as info:
        summarize.run(text="x")
    assert info.value.retryable and info.value.provider == "anthropic"
    assert len(fake_anthropic.requests) == 3


async def test_sequential_async_calls_use_one_client_and_concurrent_ones_spread(
    summarize: pc.Task[object], fake_anthropic: FakeAnthropic
) -> None:
    import asyncio

    from promptcast.backends.anthropic import AnthropicBackend

    backend = AnthropicBackend()
    with pc.override(backends={"anthropic": backend}):
        for _ in range(3):
            await summarize.arun(text="x")
        [pool] = backend._async[asyncio.get_running_loop()].values()
        assert [c is not None for c in pool.clients].count(True) == 1

        fake_anthropic.handler = lambda request: FakeReply(
            message([tool_use_block("SummarizeOutput", GOOD)]), delay_s=0.2
        )
        runs = await asyncio.gather(*(summarize.arun(text=str(i)) for i in range(16)))
        assert all(run.output.model_dump() == GOOD for run in runs)  # type: ignore[attr-defined]
        created = [c for c in pool.clients if c is not None]
        assert len(created) == pool.SHARDS and pool.busy == [0] * pool.SHARDS
        assert len(fake_anthropic.requests) == 3 + 16
    await backend.aclose()
    assert all(client.is_closed() for client in created)
    assert asyncio.get_running_loop() not in backend._async


BAD_COUNTS = [
    pytest.param(field, value, id=f"{field}={value!r}")
    for field in ("input_tokens", "output_tokens", "cache_read_input_tokens")
    for value in (-5, None, "12", 1.5, True, [3], 2**64)
    if not (field.startswith("cache") and value is None)  # the cache counts may be null
]


@pytest.mark.parametrize(("field", "value"), BAD_COUNTS)
def test_a_usage_that_is_no_token_count_is_a_malformed_reply(
    summarize: pc.Task[object], fake_anthropic: FakeAnthropic, field: str, value: object
) -> None:
    """A server that only looks like the API must not price, budget or count with its numbers
    (a None or a string made a bare TypeError; a negative count lowered the spend)."""
    body = message([tool_use_block("SummarizeOutput", GOOD)])
    body["usage"][field] = value
    fake_anthropic.reply(body)
    with (
        pc.override(max_retries=0),
        pytest.raises(pc.BackendError, match=f"usage.{field} is ") as caught,
    ):
        summarize.run(text="x")
    assert "not its API's shape" in str(caught.value)


def test_null_cache_counts_are_zero(
    summarize: pc.Task[object], fake_anthropic: FakeAnthropic
) -> None:
    body = message([tool_use_block("SummarizeOutput", GOOD)])
    body["usage"].update(cache_read_input_tokens=None, cache_creation_input_tokens=None)
    fake_anthropic.reply(body)
    usage = summarize.run(text="x").usage
    assert (usage.input_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (100, 0, 0)
