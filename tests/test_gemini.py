"""Gemini through litellm (`gemini/…`), against a loopback fake that speaks `generateContent`:
function calls and schema-constrained JSON validate, Gemini's error shape is retried like any
provider's, the cost is priced, and a recorded exchange replays with no key and no server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import promptcast as pc
from promptcast.testing import (
    FakeGemini,
    function_call_part,
    gemini_error,
    generate_content,
    recording,
    replay,
    text_part,
)
from tests.conftest import ROOT

MODEL = "gemini/gemini-1.5-pro"
KEY = "AIzaSy-only-for-gemini-0123456789abcdef"
CASSETTE = ROOT / "cassettes" / "gemini" / "extract_ticket.yaml"
# Gemini 1.5 Pro, prompts up to 128k tokens: $1.25 per million input, $5 per million output
INPUT_PRICE, OUTPUT_PRICE = 1.25e-6, 5e-6


@pytest.fixture
def gemini(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGemini]:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    with FakeGemini() as fake:
        pc.configure(
            providers={"gemini": {"api_key": KEY, "base_url": fake.base_url}},
            retry_max_wait_s=0.01,
        )
        yield fake


def ticket_task() -> pc.Task[pc.tasks.Ticket]:
    return pc.builtin_tasks()["extract_ticket"].with_model(MODEL)


def test_a_forced_function_call_validates_and_is_priced(gemini: FakeGemini) -> None:
    pc.configure(models={MODEL: {"output_mode": "tool"}})
    gemini.reply(
        generate_content(
            [function_call_part("Ticket", {"issue": "Checkout is down", "urgency": "critical"})],
            prompt_tokens=412,
            candidates_tokens=31,
        )
    )
    run = ticket_task().run(message="Checkout is down!")
    assert run.output.urgency == "critical"
    assert run.attempts == 1 and run.output_mode == "tool"
    sent = gemini.requests[0]
    assert gemini.models == ["gemini-1.5-pro"]
    declared = sent["tools"][0]["function_declarations"]
    assert [f["name"] for f in declared] == ["Ticket"]
    assert sent["toolConfig"]["functionCallingConfig"]["mode"] == "ANY"
    assert gemini.request_headers[0]["x-goog-api-key"] == KEY
    assert (run.usage.input_tokens, run.usage.output_tokens) == (412, 31)
    assert run.usage.cost_usd == pytest.approx(412 * INPUT_PRICE + 31 * OUTPUT_PRICE)


def test_a_json_schema_reply_validates_and_is_priced(gemini: FakeGemini) -> None:
    """Native mode (auto's choice for Gemini 1.5): Gemini's response schema, JSON text back."""
    gemini.reply(
        generate_content(
            [text_part('{"issue": "Checkout is down", "urgency": "critical", "product": null}')],
            prompt_tokens=300,
            candidates_tokens=18,
        )
    )
    run = ticket_task().run(message="Checkout is down!")
    assert run.output.urgency == "critical" and run.output.product is None
    assert run.attempts == 1 and run.output_mode == "native"
    sent = gemini.requests[0]
    config = sent["generationConfig"]
    assert config["response_mime_type"] == "application/json"
    assert config["response_schema"]["required"] == ["issue", "urgency"]
    assert "tools" not in sent
    # the schema travels as Gemini's response schema, never pasted into the prompt
    assert "JSON schema" not in str(sent["contents"])
    assert "support tickets" in str(sent["system_instruction"])
    assert run.usage.cost_usd == pytest.approx(300 * INPUT_PRICE + 18 * OUTPUT_PRICE)


@pytest.mark.parametrize("name", ["extract_ticket", "answer_product_question", "translate"])
def test_the_seed_features_run_on_gemini_1_5_pro(gemini: FakeGemini, name: str) -> None:
    task = pc.builtin_tasks()[name].with_model(MODEL)
    run = task.run(**task.spec.examples[0].inputs)
    assert run.model == MODEL and run.attempts == 1
    assert isinstance(run.output, task.spec.output_model or str)
    assert run.usage.cost_usd is not None and run.usage.cost_usd > 0


def test_a_json_text_reply_instead_of_the_call_validates(gemini: FakeGemini) -> None:
    """In tool mode, a model that answers with JSON text instead of the call still validates."""
    pc.configure(models={MODEL: {"output_mode": "tool"}})
    gemini.reply(generate_content([text_part('{"issue": "Checkout down", "urgency": "high"}')]))
    assert ticket_task()(message="Checkout is down!").urgency == "high"


@pytest.mark.parametrize(
    ("status", "message", "delay"),
    [
        (429, "Resource has been exhausted (e.g. check quota).", None),
        (429, "You exceeded your current quota, please check your plan and billing details.", 1),
        (500, "An internal error has occurred. Please retry or report it.", None),
        (503, "The model is overloaded. Please try again later.", None),
    ],
)
def test_geminis_error_shape_is_retried(
    gemini: FakeGemini, status: int, message: str, delay: int | None
) -> None:
    gemini.reply(gemini_error(status, message, retry_delay_s=delay))
    run = ticket_task().run(message="Checkout is down!")
    assert [a.status for a in run.attempt_log] == ["error", "ok"]
    assert len(gemini.requests) == 2
    assert f"HTTP {status}" in (run.attempt_log[0].error or "")


def test_a_retry_delay_in_the_body_is_honoured(gemini: FakeGemini) -> None:
    """Gemini sends no retry-after header: the wait is a RetryInfo detail in the error body."""
    gemini.reply(
        gemini_error(429, "Resource has been exhausted (e.g. check quota).", retry_delay_s=7)
    )
    task = ticket_task()
    with pc.override(max_retries=0), pytest.raises(pc.BackendError) as caught:
        task.run(message="Checkout is down!")
    assert caught.value.retryable and caught.value.retry_after == 7.0


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, "Invalid JSON payload received."),
        (403, "API key not valid. Please pass a valid API key."),
    ],
)
def test_geminis_final_errors_are_not_retried(
    gemini: FakeGemini, status: int, message: str
) -> None:
    gemini.reply(gemini_error(status, message))
    with pytest.raises(pc.BackendError) as caught:
        ticket_task().run(message="Checkout is down!")
    assert caught.value.status == status and not caught.value.retryable
    assert len(gemini.requests) == 1


def test_a_recorded_gemini_exchange_replays_without_key_or_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The committed cassette holds no key, and replays with none and no base URL; recording it
    again against the fake gives the same scrubbed file."""
    text = CASSETTE.read_text()
    assert KEY not in text and "AIza" not in text
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    with replay(CASSETTE):
        run = ticket_task().run(message="Checkout is down!")
    assert run.output.urgency == "low" and run.usage.input_tokens > 0
    fresh = tmp_path / "extract_ticket.yaml"
    with FakeGemini() as fake:
        pc.configure(providers={"gemini": {"api_key": KEY, "base_url": fake.base_url}})
        with recording(fresh):
            ticket_task().run(message="Checkout is down!")
    assert KEY not in fresh.read_text()
