"""The litellm routes (OpenAI-compatible chat completions, Gemini's generateContent) against
replies that lie: each ends as a typed error naming the task and model, or as the right output,
through `run()` and `stream()` alike."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

import promptcast as pc
from promptcast.testing import FakeGemini, FakeOpenAI, chat_completion, generate_content, text_part
from tests.test_stream import LITELLM_WARNING, _close_litellm_clients

GEMINI = "gemini/gemini-1.5-pro"


@pytest.fixture(autouse=True)
def _litellm_clients_closed() -> Iterator[None]:
    """litellm caches its clients (and a sync stream's logging loop): close them here, as
    tests/test_stream.py does, so no later test's garbage collection finds them."""
    yield
    asyncio.run(_close_litellm_clients())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def _ticket(model: str) -> pc.Task[Any]:
    return pc.builtin_tasks()["extract_ticket"].with_model(model)


def _call(task: pc.Task[Any], how: str) -> Any:
    if how == "run":
        return task.run(message="hi").output
    return task.stream(message="hi").run.output


@pytest.fixture
def gemini(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGemini]:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    with FakeGemini() as fake:
        key = "AIzaSy-only-for-gemini-0123456789abcdef"
        pc.configure(providers={"gemini": {"api_key": key, "base_url": fake.base_url}})
        yield fake


@LITELLM_WARNING
@pytest.mark.parametrize("how", ["run", "stream"])
@pytest.mark.parametrize("content", [None, '{"issue": "x", "urg'])
def test_a_content_filter_stop_is_a_final_backend_error_not_a_re_ask(
    fake_openai: FakeOpenAI, how: str, content: str | None
) -> None:
    """It read as 'no valid output after 3 attempt(s)': the prompt sent three times, and a
    validation error that did not say the provider had withheld the answer."""
    fake_openai.stream_interval_s = 0
    fake_openai.reply(*[chat_completion(content, finish_reason="content_filter")] * 3)
    with pytest.raises(pc.BackendError) as caught:
        _call(_ticket("openai/gpt-4o-mini"), how)
    error = caught.value
    assert not isinstance(error, pc.OutputValidationError) and not error.retryable
    assert (error.task, error.model) == ("extract_ticket", "openai/gpt-4o-mini")
    assert "content_filter" in str(error) and len(fake_openai.requests) == 1


@LITELLM_WARNING
async def test_a_content_filter_stop_is_final_in_arun_and_astream(fake_openai: FakeOpenAI) -> None:
    fake_openai.stream_interval_s = 0
    fake_openai.reply(*[chat_completion(None, finish_reason="content_filter")] * 6)
    task = _ticket("openai/gpt-4o-mini")
    with pytest.raises(pc.BackendError) as ran:
        await task.arun(message="hi")
    with pytest.raises(pc.BackendError) as streamed:
        await task.astream(message="hi").result()
    assert not ran.value.retryable and not streamed.value.retryable
    assert len(fake_openai.requests) == 2


def _withheld(reason: str) -> dict[str, Any]:
    body = generate_content([text_part('{"issue": "x", "urgency": "low"}')], finish_reason=reason)
    if reason == "blockReason":  # the prompt itself blocked: no candidate at all
        return {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": body["usageMetadata"]}
    del body["candidates"][0]["content"]
    return body


@pytest.mark.parametrize(
    "reason", ["SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "blockReason"]
)
def test_a_gemini_answer_withheld_by_its_filters_is_a_final_backend_error(
    gemini: FakeGemini, reason: str
) -> None:
    gemini.reply(*[_withheld(reason)] * 3)
    with pytest.raises(pc.BackendError) as caught:
        _ticket(GEMINI).run(message="hi")
    error = caught.value
    assert not isinstance(error, pc.OutputValidationError) and not error.retryable
    assert (error.task, error.model) == ("extract_ticket", GEMINI)
    assert len(gemini.requests) == 1


def _refused(content: str | None) -> dict[str, Any]:
    body = chat_completion(content)
    body["choices"][0]["message"]["refusal"] = "I can't help with that."
    return body


@pytest.mark.parametrize("content", [None, ""])
def test_a_refusal_is_a_final_backend_error_quoting_it(
    fake_openai: FakeOpenAI, content: str | None
) -> None:
    """OpenAI's `message.refusal` read as 'no valid output after 3 attempt(s) … Field
    required', the prompt sent three times and the refusal's words only in `raw_output`."""
    fake_openai.reply(*[_refused(content)] * 3)
    with pytest.raises(pc.BackendError) as caught:
        _ticket("openai/gpt-4o-mini").run(message="hi")
    error = caught.value
    assert not isinstance(error, pc.OutputValidationError) and not error.retryable
    assert (error.task, error.model) == ("extract_ticket", "openai/gpt-4o-mini")
    assert "I can't help with that." in str(error) and len(fake_openai.requests) == 1
