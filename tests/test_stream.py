"""Streaming: typed partial outputs in Python, through the real SDKs against the loopback fakes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import itertools
import json
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import promptcast as pc
from promptcast.backends import aclose_shared
from promptcast.backends.base import Backend
from promptcast.backends.scripted import ScriptedBackend
from promptcast.errors import BackendError, BudgetExceededError
from promptcast.stream import (
    AsyncStream,
    Final,
    Partial,
    Restart,
    Stream,
    StreamClosedError,
    partial_output,
)
from promptcast.tasks.qa import ProductAnswer
from promptcast.testing import (
    FakeAnthropic,
    FakeOpenAI,
    FakeReply,
    chat_completion,
    message,
    text_block,
    tool_call,
    tool_use_block,
)
from tests.conftest import TEST_KEY

ANSWER = {
    "answer": "Yes: the Aero X2 crushes ice with the Pulse setting, for at most 30 seconds at a "
    "time; the jar is dishwasher safe.",
    "answered": True,
    "cited_document_ids": ["manual-3", "faq-1"],
}
INPUTS: dict[str, Any] = {
    "question": "Can the Aero X2 crush ice?",
    "documents": {"manual-3": "Pulse crushes ice.", "faq-1": "Jar is dishwasher safe."},
}
TOOL = "ProductAnswer"

FREE_TEXT = """
---
inputs:
  text: str
output: str
model: anthropic/claude-haiku-4-5
---
Say something about {{ text }}.
"""


TOOL_MODEL = "anthropic/claude-3-5-haiku-20241022"  # no native structured output: tool mode
NATIVE_MODEL = "anthropic/claude-sonnet-4-6"  # native structured output: text deltas of JSON


@pytest.fixture
def qa() -> pc.Task[ProductAnswer]:
    return pc.builtin_tasks().answer_product_question.with_model(TOOL_MODEL)


def _known(partial: BaseModel) -> dict[str, Any]:
    return {name: getattr(partial, name) for name in partial.model_fields_set}


def _grows(before: Any, after: Any) -> bool:
    """`after` keeps everything `before` knew: strings extend, lists extend, the rest is equal."""
    if isinstance(before, str):
        return isinstance(after, str) and after.startswith(before)
    if isinstance(before, list):
        return (
            isinstance(after, list)
            and len(after) >= len(before)
            and all(_grows(a, b) for a, b in zip(before[:-1], after, strict=False))
            and (not before or _grows(before[-1], after[len(before) - 1]))
        )
    if isinstance(before, BaseModel):
        return all(_grows(v, getattr(after, k)) for k, v in _known(before).items())
    return bool(before == after)


# partial outputs from incomplete JSON


class Item(BaseModel):
    name: str
    qty: int


class Order(BaseModel):
    customer: str
    total: float
    urgent: bool = False
    items: list[Item] = []
    note: str | None = None


@pytest.mark.parametrize(
    ("text", "known"),
    [
        ('{"customer": "Ad', {"customer": "Ad"}),
        ('{"customer": "Ada", "total": 12', {"customer": "Ada"}),  # 12 may be 125
        ('{"customer": "Ada", "total": 12.', {"customer": "Ada"}),
        ('{"customer": "Ada", "total": -', {"customer": "Ada"}),
        ('{"customer": "Ada", "total": 12,', {"customer": "Ada", "total": 12.0}),
        ('{"customer": "Ada", "total": 1e3}', {"customer": "Ada", "total": 1000.0}),
        ('{"customer": "A1', {"customer": "A1"}),  # a digit inside a string is text
        ('{"customer": "Ada", "urgent": tr', {"customer": "Ada"}),
        ('{"customer": "Ada", "urgent": true', {"customer": "Ada", "urgent": True}),
        ('{"customer": "Ada", "note": nu', {"customer": "Ada"}),
        ('{"customer": "x\\u00e', {"customer": "x"}),
        ('{"items": [{"name": "ca', {"items": [Item.model_construct(name="ca", qty=None)]}),
        (
            '{"items": [{"name": "cable", "qty": 2}, {"na',
            {"items": [Item(name="cable", qty=2), Item.model_construct(qty=None, name=None)]},
        ),
        ('```json\n{"customer": "Ada"', {"customer": "Ada"}),  # prompted mode: a fence first
        ('Here it is: {"customer": "Ada"', {"customer": "Ada"}),
    ],
)
def test_partial_outputs_of_incomplete_json(text: str, known: dict[str, Any]) -> None:
    partial = partial_output(Order, text)
    assert isinstance(partial, Order)
    assert _known(partial) == known
    for name in set(Order.model_fields) - set(known):  # unknown fields: None or their default
        default = Order.model_fields[name].get_default(call_default_factory=True)
        assert getattr(partial, name) == (
            None if Order.model_fields[name].is_required() else default
        )


@pytest.mark.parametrize("text", ["", "```json\n", "Sure, ", "[1, 2"])
def test_no_partial_output_before_the_object_starts(text: str) -> None:
    assert partial_output(Order, text) is None


def test_an_enum_value_appears_only_once_it_is_valid() -> None:
    from promptcast.tasks.ticket import Ticket

    assert partial_output(Ticket, '{"issue": "down", "urgency": "hi').urgency is None
    assert partial_output(Ticket, '{"issue": "down", "urgency": "high"').urgency == "high"


# the stream object, with the scripted backend


def _scripted(*replies: Any, **options: Any) -> ScriptedBackend:
    return ScriptedBackend(list(replies), chunk_chars=options.pop("chunk_chars", 7), **options)


def test_scripted_stream_partials_grow_and_final_equals_run(qa: pc.Task[ProductAnswer]) -> None:
    backend = _scripted(json.dumps(ANSWER), json.dumps(ANSWER))
    with pc.override(model="test/qa", backends={"test/qa": backend}):
        expected = qa.with_model("test/qa").run(**INPUTS)
        stream = qa.with_model("test/qa").stream(**INPUTS)
        partials = list(stream)
    assert len(partials) > 10
    assert all(isinstance(p, ProductAnswer) for p in partials)
    for before, after in itertools.pairwise(partials):
        assert _grows(before, after), (before, after)
    assert partials[-1] == expected.output == stream.run.output == stream.output
    assert stream.run.attempts == 1 and stream.attempt == 1
    assert stream.run.usage == expected.usage


async def test_async_stream_gives_the_same_partials(qa: pc.Task[ProductAnswer]) -> None:
    with pc.override(
        model="test/qa", backends={"test/qa": _scripted(json.dumps(ANSWER), json.dumps(ANSWER))}
    ):
        sync_partials = list(qa.with_model("test/qa").stream(**INPUTS))
        async with qa.with_model("test/qa").astream(**INPUTS) as stream:
            async_partials = [p async for p in stream]
    assert async_partials == sync_partials
    assert stream.run.output == ProductAnswer(**ANSWER)


def test_bound_task_streams(tmp_path: Path) -> None:
    @pc.task(pc.builtin_tasks().answer_product_question)
    def answer(question: str, documents: dict[str, str]) -> ProductAnswer: ...

    with pc.override(model="test/qa", backends={"test/qa": _scripted(json.dumps(ANSWER))}):
        stream = answer.stream(**INPUTS)
        assert list(stream)[-1] == ProductAnswer(**ANSWER)


def test_free_text_streams_text(write_task: Callable[..., Path]) -> None:
    task = pc.Task.from_file(write_task("say", FREE_TEXT))
    text = "Ice is frozen water, and the blender crushes it."
    with pc.override(model="test/t", backends={"test/t": _scripted(text)}):
        stream = task.stream(text="ice")
        partials = list(stream)
    assert partials[0] == text[:7] and partials[-1] == text == stream.run.output
    assert all(b.startswith(a) for a, b in itertools.pairwise(partials))


def test_invalid_reply_then_valid_restarts_and_counts_both(qa: pc.Task[ProductAnswer]) -> None:
    invalid = {"answer": "Perhaps.", "answered": "maybe"}
    backend = _scripted(json.dumps(invalid), json.dumps(ANSWER))
    with pc.override(model="test/qa", backends={"test/qa": backend}):
        stream = qa.with_model("test/qa").stream(**INPUTS)
        events = list(stream.events())
    restarts = [e for e in events if isinstance(e, Restart)]
    assert restarts == [Restart(attempt=2, model="test/qa", reason="invalid")]
    at = events.index(restarts[0])
    assert {e.attempt for e in events[:at] if isinstance(e, Partial)} == {1}
    assert {e.attempt for e in events[at:] if isinstance(e, Partial)} == {2}
    final = events[-1]
    assert isinstance(final, Final) and final.run.output == ProductAnswer(**ANSWER)
    assert final.run.attempts == 2 and stream.attempt == 2
    assert final.run.usage.input_tokens == 20 and final.run.usage.output_tokens == 10
    assert len(backend.requests) == 2 and backend.requests[1].history  # the re-ask


def test_fallback_model_streams_after_the_first_fails(qa: pc.Task[ProductAnswer]) -> None:
    failing = ScriptedBackend(
        [BackendError("down", provider="test", retryable=False)], chunk_chars=7
    )
    backends = {"test/a": failing, "test/b": _scripted(json.dumps(ANSWER))}
    with pc.override(model="test/a", fallbacks=["test/b"], backends=backends):
        stream = qa.with_model("test/a").stream(**INPUTS)
        events = list(stream.events())
    assert [e for e in events if isinstance(e, Restart)] == [
        Restart(attempt=2, model="test/b", reason="error")
    ]
    assert stream.run.model == "test/b" and stream.run.output == ProductAnswer(**ANSWER)


def test_a_cached_answer_streams_as_one_partial(qa: pc.Task[ProductAnswer], tmp_path: Path) -> None:
    backend = _scripted(json.dumps(ANSWER))
    with pc.override(
        model="test/qa", backends={"test/qa": backend}, cache=f"sqlite:///{tmp_path}/c.db"
    ):
        first = qa.with_model("test/qa").stream(**INPUTS)
        assert len(list(first)) > 1
        second = qa.with_model("test/qa").stream(**INPUTS)
        assert list(second) == [ProductAnswer(**ANSWER)]
    assert second.run.cached and len(backend.requests) == 1


def test_wrong_input_fails_when_the_stream_is_made(qa: pc.Task[ProductAnswer]) -> None:
    with pytest.raises(pc.TaskInputError, match="question"):
        qa.stream(documents={})


def test_budget_applies_to_streams(qa: pc.Task[ProductAnswer]) -> None:
    backend = _scripted(json.dumps(ANSWER), chunk_chars=4, chunk_delay_s=0.02)
    with (
        pc.override(model="test/qa", backends={"test/qa": backend}, timeout_s=0.15),
        pytest.raises(BudgetExceededError, match="timeout_s"),
    ):
        list(qa.with_model("test/qa").stream(**INPUTS))
    assert backend.streams_closed == 1


def test_closing_early_closes_the_backend_stream(qa: pc.Task[ProductAnswer]) -> None:
    backend = _scripted(json.dumps(ANSWER))
    with pc.override(model="test/qa", backends={"test/qa": backend}):
        stream = qa.with_model("test/qa").stream(**INPUTS)
        for _ in stream:
            break
        assert backend.streams_closed == 1
        with pytest.raises(StreamClosedError):
            _ = stream.run


@pytest.mark.parametrize("leave", ["break", "raise"])
def test_leaving_async_with_after_a_break_closes_the_provider_stream_once(leave: str) -> None:
    """`async with` closed the provider's stream while the loop finalized the abandoned `async
    for`, which closed it again: with a close that waits (httpx closing its connection) the
    second raised "aclose(): asynchronous generator is already running" in a task of its own."""
    errors: list[Any] = []
    closes: list[str] = []

    async def events() -> Any:
        try:
            for n in range(10):
                yield Partial(n, 1)
                await asyncio.sleep(0)
        finally:
            closes.append("start")
            await asyncio.sleep(0.05)
            closes.append("end")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, context: errors.append(context))
        with contextlib.suppress(KeyError):
            async with AsyncStream(events()) as stream:
                async for _ in stream:
                    if leave == "raise":
                        raise KeyError("the reader's own error")
                    break
        assert closes == ["start", "end"]  # closed when the block is left
        await asyncio.sleep(0.1)
        gc.collect()
        await asyncio.sleep(0.1)
        assert stream._closed

    asyncio.run(main())
    assert errors == [] and closes == ["start", "end"]


def test_a_backend_without_streaming_says_so(qa: pc.Task[ProductAnswer]) -> None:
    class Plain(Backend):
        provider = "plain"

        def request(self, request: Any) -> Any:
            raise AssertionError

        async def arequest(self, request: Any) -> Any:
            raise AssertionError

    with (
        pc.override(model="test/p", backends={"test/p": Plain()}),
        pytest.raises(BackendError, match="cannot stream"),
    ):
        list(qa.with_model("test/p").stream(**INPUTS))


# through the anthropic SDK against the loopback fake


def _answer_message(fake: FakeAnthropic, data: dict[str, Any] = ANSWER) -> dict[str, Any]:
    return message([tool_use_block(TOOL, data)], input_tokens=300, output_tokens=60)


def test_anthropic_tool_mode_first_partial_before_a_quarter(
    qa: pc.Task[ProductAnswer], fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply(_answer_message(fake_anthropic), _answer_message(fake_anthropic))
    fake_anthropic.stream_interval_s = 0
    expected = qa.run(**INPUTS)
    fake_anthropic.stream_interval_s = 0.05
    stream = qa.stream(**INPUTS)
    first_at: float | None = None
    partials = []
    for partial in stream:
        first_at = first_at or time.perf_counter()
        partials.append(partial)
    [log] = fake_anthropic.streams
    deltas = sum(
        b"content_block_delta" in e for e in fake_anthropic.sse({}, _answer_message(fake_anthropic))
    )
    assert deltas >= 20
    assert first_at is not None and first_at < log.sent_at[log.total // 4]
    assert all(isinstance(p, ProductAnswer) for p in partials)
    for before, after in itertools.pairwise(partials):
        assert _grows(before, after)
    assert stream.run.output == expected.output and partials[-1] == expected.output
    assert stream.run.usage.input_tokens == 300 and stream.run.usage.output_tokens == 60
    sent = fake_anthropic.requests[1]
    assert sent.pop("stream") is True
    assert sent == fake_anthropic.requests[0]  # the same request, plus stream: true


def test_anthropic_thinking_and_other_text_are_not_partials(
    qa: pc.Task[ProductAnswer], fake_anthropic: FakeAnthropic
) -> None:
    thinking = {"type": "thinking", "thinking": '{"answer": "no"} hmm', "signature": "c2ln"}
    fake_anthropic.stream_interval_s = 0
    fake_anthropic.reply(
        message(
            [thinking, text_block('I will answer. {"answer": "x"}'), tool_use_block(TOOL, ANSWER)]
        )
    )
    partials = list(qa.stream(**INPUTS))
    assert all(p.answer is None or ANSWER["answer"].startswith(p.answer) for p in partials)
    assert partials[-1] == ProductAnswer(**ANSWER)


def test_anthropic_native_mode_streams_text_deltas(
    qa: pc.Task[ProductAnswer], fake_anthropic: FakeAnthropic
) -> None:
    native = qa.with_model(NATIVE_MODEL)
    assert native.request(**INPUTS).output_mode == "native"
    fake_anthropic.stream_interval_s = 0
    thinking = {"type": "thinking", "thinking": "The manual says Pulse.", "signature": "c2ln"}
    fake_anthropic.reply(message([thinking, text_block(json.dumps(ANSWER))]))
    stream = native.stream(**INPUTS)
    partials = list(stream)
    assert len(partials) > 10 and partials[0].answer is not None
    for before, after in itertools.pairwise(partials):
        assert _grows(before, after)
    assert partials[-1] == stream.run.output == ProductAnswer(**ANSWER)
    assert stream.run.output_mode == "native"


def test_anthropic_free_text_streams_text_deltas(
    write_task: Callable[..., Path], fake_anthropic: FakeAnthropic
) -> None:
    task = pc.Task.from_file(write_task("say", FREE_TEXT))
    fake_anthropic.stream_interval_s = 0
    text = "Ice is frozen water; the Aero X2 crushes it with Pulse."
    fake_anthropic.reply(message([text_block(text)]))
    stream = task.stream(text="ice")
    partials = list(stream)
    assert len(partials) == -(-len(text) // 8) and partials[-1] == text == stream.run.output


def test_anthropic_invalid_stream_then_valid(
    qa: pc.Task[ProductAnswer], fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.stream_interval_s = 0
    fake_anthropic.reply(
        _answer_message(fake_anthropic, {"answer": "Perhaps.", "answered": "maybe"}),
        _answer_message(fake_anthropic),
    )
    stream = qa.stream(**INPUTS)
    events = list(stream.events())
    assert [e.attempt for e in events if isinstance(e, Restart)] == [2]
    assert stream.run.output == ProductAnswer(**ANSWER)
    assert stream.run.usage.input_tokens == 600 and stream.run.usage.output_tokens == 120
    reask = fake_anthropic.requests[1]["messages"]
    assert reask[-1]["content"][0]["type"] == "tool_result"  # answers the streamed tool call


def test_anthropic_error_event_mid_stream_is_retried(
    qa: pc.Task[ProductAnswer], fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.stream_interval_s = 0
    events = fake_anthropic.sse({}, _answer_message(fake_anthropic))
    broken = [*events[:8], fake_anthropic.stream_error("overloaded_error", "Overloaded")]
    fake_anthropic.reply(FakeReply(events=broken), _answer_message(fake_anthropic))
    with pc.override(retry_max_wait_s=0.01):
        stream = qa.stream(**INPUTS)
        seen = list(stream.events())
    assert [(e.attempt, e.reason) for e in seen if isinstance(e, Restart)] == [(2, "error")]
    assert stream.run.output == ProductAnswer(**ANSWER)
    assert [a.status for a in stream.run.attempt_log] == ["error", "ok"]


def test_anthropic_dropped_connection_mid_stream_is_a_backend_error(
    qa: pc.Task[ProductAnswer], fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.stream_interval_s = 0
    events = fake_anthropic.sse({}, _answer_message(fake_anthropic))
    fake_anthropic.reply(*[FakeReply(events=events[:8], drop=True)] * 3)
    with (
        pc.override(retry_max_wait_s=0.01, max_retries=2),
        pytest.raises(BackendError, match="broke off"),
    ):
        list(qa.stream(**INPUTS))


def test_anthropic_break_closes_the_connection(
    qa: pc.Task[ProductAnswer], fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply(_answer_message(fake_anthropic))
    fake_anthropic.stream_interval_s = 0.02
    for partial in qa.stream(**INPUTS):
        assert isinstance(partial, ProductAnswer)
        break
    [log] = fake_anthropic.streams
    assert log.done.wait(5)
    assert log.closed_by_client and len(log.sent_at) < log.total


async def test_anthropic_async_stream_and_early_close(
    qa: pc.Task[ProductAnswer], fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.stream_interval_s = 0
    fake_anthropic.reply(_answer_message(fake_anthropic))
    stream = qa.astream(**INPUTS)
    partials = [p async for p in stream]
    assert partials[-1] == (await stream.result()).output == ProductAnswer(**ANSWER)
    fake_anthropic.stream_interval_s = 0.02
    fake_anthropic.reply(_answer_message(fake_anthropic))
    async with qa.astream(**INPUTS) as early:
        async for _ in early:
            break
    log = fake_anthropic.streams[-1]
    assert log.done.wait(5) and log.closed_by_client
    with pytest.raises(StreamClosedError):
        _ = early.run
    await aclose_shared()


# through litellm against the loopback OpenAI-compatible fake

LITELLM_TOOL_MODEL = "openai/gpt-3.5-turbo"  # no native structured output: tool mode
# litellm's stream handler reads every attribute of a chunk (`dir()`), pydantic's deprecated
# `model_fields` / `model_computed_fields` instance attributes included: litellm's warning, not ours
LITELLM_WARNING = pytest.mark.filterwarnings(
    "ignore:Accessing the 'model_[a-z_]+' attribute on the instance:DeprecationWarning"
)


async def _close_litellm_clients() -> None:
    """litellm caches the OpenAI clients it makes (per event loop for async ones): close them
    on the loop that made them, so no socket is left for the garbage collector of a later test.
    A client an earlier test's loop made (that loop is closed now) cannot be closed: it is
    dropped, and the garbage collection after this finds what it left."""
    cache = sys.modules["litellm"].in_memory_llm_clients_cache
    for client in list(cache.cache_dict.values()):
        close = getattr(client, "close", None)
        if close is not None:
            try:
                result = close()
                if inspect.isawaitable(result):
                    await result
            except RuntimeError as exc:
                if "Event loop is closed" not in str(exc):
                    raise
    cache.flush_cache()


@pytest.fixture
def openai_models(fake_openai: FakeOpenAI) -> Iterator[FakeOpenAI]:
    pc.configure(
        models={
            LITELLM_TOOL_MODEL: {"base_url": fake_openai.base_url},
            "ollama/llama3.1": {"base_url": fake_openai.base_url},
        }
    )
    fake_openai.stream_interval_s = 0
    yield fake_openai
    asyncio.run(_close_litellm_clients())
    with warnings.catch_warnings():  # what litellm's cached clients or loops left, found now
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@LITELLM_WARNING
def test_litellm_tool_call_argument_deltas(
    qa: pc.Task[ProductAnswer], openai_models: FakeOpenAI
) -> None:
    task = qa.with_model(LITELLM_TOOL_MODEL)
    reply = chat_completion(
        tool_calls=[tool_call(TOOL, ANSWER)], prompt_tokens=210, completion_tokens=70
    )
    openai_models.reply(reply, reply)
    expected = task.run(**INPUTS)
    stream = task.stream(**INPUTS)
    partials = list(stream)
    assert len(partials) > 10
    for before, after in itertools.pairwise(partials):
        assert _grows(before, after)
    assert partials[-1] == expected.output == stream.run.output
    assert stream.run.usage.input_tokens == 210 and stream.run.usage.output_tokens == 70
    sent = openai_models.requests[1]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["tools"] == openai_models.requests[0]["tools"]


@LITELLM_WARNING
def test_litellm_content_deltas_for_a_response_format(
    qa: pc.Task[ProductAnswer], openai_models: FakeOpenAI
) -> None:
    task = qa.with_model("ollama/llama3.1")
    openai_models.reply(chat_completion(json.dumps(ANSWER)))
    stream = task.stream(**INPUTS)
    partials = list(stream)
    assert "response_format" in openai_models.requests[0]
    assert len(partials) > 10 and partials[-1] == stream.run.output == ProductAnswer(**ANSWER)


@LITELLM_WARNING
def test_litellm_invalid_then_valid_and_free_text(
    qa: pc.Task[ProductAnswer], openai_models: FakeOpenAI, write_task: Callable[..., Path]
) -> None:
    task = qa.with_model(LITELLM_TOOL_MODEL)
    openai_models.reply(
        chat_completion(tool_calls=[tool_call(TOOL, {"answer": "Perhaps.", "answered": "maybe"})]),
        chat_completion(tool_calls=[tool_call(TOOL, ANSWER)]),
    )
    stream = task.stream(**INPUTS)
    assert [e.attempt for e in stream.events() if isinstance(e, Restart)] == [2]
    assert stream.run.output == ProductAnswer(**ANSWER) and stream.run.usage.input_tokens == 200
    say = pc.Task.from_file(write_task("say", FREE_TEXT)).with_model(LITELLM_TOOL_MODEL)
    text = "Ice is frozen water; the Aero X2 crushes it."
    openai_models.reply(chat_completion(text))
    partials = list(say.stream(text="ice"))
    assert partials[0] == text[:8] and partials[-1] == text


@LITELLM_WARNING
async def test_litellm_async_stream_and_early_close(
    qa: pc.Task[ProductAnswer], openai_models: FakeOpenAI
) -> None:
    task = qa.with_model(LITELLM_TOOL_MODEL)
    openai_models.reply(chat_completion(tool_calls=[tool_call(TOOL, ANSWER)]))
    stream = task.astream(**INPUTS)
    assert [p async for p in stream][-1] == ProductAnswer(**ANSWER)
    openai_models.stream_interval_s = 0.02
    openai_models.reply(chat_completion(tool_calls=[tool_call(TOOL, ANSWER)]))
    async with task.astream(**INPUTS) as early:
        async for _ in early:
            break
    log = openai_models.streams[-1]
    assert log.done.wait(5) and log.closed_by_client
    await _close_litellm_clients()


# promptcast run --stream


def test_cli_stream_prints_one_json_line_per_partial_when_piped(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from promptcast.cli import app

    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps(INPUTS), encoding="utf-8")
    invalid = json.dumps({"answer": "Perhaps.", "answered": "maybe"})
    backend = _scripted(invalid, json.dumps(ANSWER))
    with pc.override(backends={"test/qa": backend}):
        result = CliRunner().invoke(
            app,
            [
                "run",
                "answer_product_question",
                "--stream",
                "--model",
                "test/qa",
                "--input-json",
                str(inputs),
            ],
        )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) > 10 and lines[-1] == ANSWER
    assert lines[0] == {"answer": ""} or lines[0].keys() <= ANSWER.keys()
    assert "attempt 2 on test/qa: the previous one did not validate" in result.stderr
    assert "2 attempt(s)" in result.stderr


def test_cli_stream_shows_the_output_live_on_a_terminal() -> None:
    import io

    from rich.console import Console

    from promptcast._cli_stream import show_stream

    screen, errors = io.StringIO(), io.StringIO()
    out = Console(file=screen, force_terminal=True, width=100)
    err = Console(file=errors, force_terminal=False, width=100)
    with pc.override(model="test/qa", backends={"test/qa": _scripted(json.dumps(ANSWER))}):
        run = show_stream(pc.builtin_tasks().answer_product_question.stream(**INPUTS), out, err)
    shown = screen.getvalue()
    assert "\x1b[" in shown  # drawn and redrawn by rich's Live
    assert shown.count('"answer"') > 5  # each partial was drawn
    final = shown[shown.rindex("{\n") :]
    assert json.loads(final) == ANSWER == run.output.model_dump()


# cassettes: a streamed call records and replays offline


@pytest.mark.parametrize("model", [TOOL_MODEL, NATIVE_MODEL])
def test_a_recorded_stream_replays_offline_with_the_same_partials(
    qa: pc.Task[ProductAnswer], fake_anthropic: FakeAnthropic, tmp_path: Path, model: str
) -> None:
    from promptcast.testing import recording, replay

    task = qa.with_model(model)
    fake_anthropic.stream_interval_s = 0
    if model == TOOL_MODEL:
        fake_anthropic.reply(_answer_message(fake_anthropic))
    else:
        fake_anthropic.reply(message([text_block(json.dumps(ANSWER))]))
    cassette = tmp_path / "stream.yaml"
    with recording(cassette):
        recorded = list(task.stream(**INPUTS))
    assert len(fake_anthropic.requests) == 1
    text = cassette.read_text(encoding="utf-8")
    assert "stream: true" in text and "event: content_block_delta" in text
    assert TEST_KEY not in text
    fake_anthropic.stop()  # nothing to answer now: the replay must not need it
    with replay(cassette):
        stream = task.stream(**INPUTS)
        replayed = list(stream)
    assert replayed == recorded and len(recorded) > 10
    assert stream.run.output == ProductAnswer(**ANSWER)


@pytest.mark.parametrize("text", ["a\ud800b", "\udfff", "ok \ud83d"], ids=repr)
def test_a_lone_surrogate_in_streamed_text_is_no_crash(text: str) -> None:
    """jiter refuses a str holding one with a TypeError, not the ValueError of bad JSON."""
    backend = ScriptedBackend([{"summary": text, "key_points": ["k"]}], chunk_chars=3)
    with pc.override(backends={"test/s": backend}):
        stream = pc.builtin_tasks().summarize.with_model("test/s").stream(text="hi")
        partials = list(stream)
    assert partials and stream.run.output.summary == text  # type: ignore[attr-defined]


# one stream, two readers


def _held(entered: Any, release: Any) -> Callable[[Any], Any]:
    """A handler that signals `entered`, then answers once `release` is set."""

    def handler(request: Any) -> str:
        entered.set()
        assert release.wait(10)
        return json.dumps(ANSWER)

    return handler


@contextmanager
def _read_in_a_thread(
    qa: pc.Task[ProductAnswer],
) -> Iterator[tuple[Stream[ProductAnswer], ScriptedBackend, list[Any]]]:
    """A stream whose reader thread is waiting for the provider while the block runs; the
    provider answers and the reader ends when the block is left."""
    entered, release = threading.Event(), threading.Event()
    backend = ScriptedBackend(_held(entered, release), chunk_chars=7)
    with pc.override(model="test/qa", backends={"test/qa": backend}):
        stream = qa.with_model("test/qa").stream(**INPUTS)
        seen: list[Any] = []
        reader = threading.Thread(target=lambda: seen.extend(stream))
        reader.start()
        assert entered.wait(10)
        try:
            yield stream, backend, seen
        finally:
            release.set()
            reader.join(10)
    assert not reader.is_alive()


def test_a_second_thread_reading_a_stream_gets_a_typed_error_and_the_first_goes_on(
    qa: pc.Task[ProductAnswer],
) -> None:
    with (
        _read_in_a_thread(qa) as (stream, backend, first),
        pytest.raises(pc.StreamInUseError, match="read a stream in one place"),
    ):
        next(iter(stream))  # while the first reader waits for the provider
    assert first and first[-1] == ProductAnswer(**ANSWER)
    assert stream.run.output == ProductAnswer(**ANSWER) and backend.streams_closed == 0


def test_closing_a_stream_from_another_thread_stops_its_reader_at_the_next_event(
    qa: pc.Task[ProductAnswer],
) -> None:
    with _read_in_a_thread(qa) as (stream, backend, seen):
        stream.close()  # before: ValueError "generator already executing"
    assert len(seen) <= 1 and backend.streams_closed == 1
    with pytest.raises(StreamClosedError, match="closed"):
        _ = stream.run


async def test_a_second_task_reading_an_async_stream_gets_a_typed_error(
    qa: pc.Task[ProductAnswer],
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def handler(request: Any) -> str:
        entered.set()
        await release.wait()
        return json.dumps(ANSWER)

    with pc.override(model="test/qa", backends={"test/qa": ScriptedBackend(handler)}):
        stream = qa.with_model("test/qa").astream(**INPUTS)
        first = asyncio.ensure_future(stream.result())
        await asyncio.wait_for(entered.wait(), 10)
        with pytest.raises(pc.StreamInUseError):
            await stream.result()
        release.set()
        assert (await first).output == ProductAnswer(**ANSWER)

        entered.clear(), release.clear()
        stream = qa.with_model("test/qa").astream(**INPUTS)
        first = asyncio.ensure_future(stream.result())
        await asyncio.wait_for(entered.wait(), 10)
        await stream.aclose()  # before: RuntimeError "asynchronous generator is already running"
        release.set()
        with pytest.raises(StreamClosedError):
            await first
