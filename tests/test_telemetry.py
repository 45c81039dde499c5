"""OpenTelemetry: GenAI spans and metrics of task calls, read back through the SDK's in-memory
exporters; once end to end through the OTLP/HTTP exporter into a loopback receiver; and a minimal
install without OpenTelemetry, which must import none of it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import promptcast as pc
from promptcast import _telemetry
from promptcast.backends.base import ModelReply
from promptcast.batch import batch
from promptcast.errors import BackendError
from promptcast.evals import aevaluate
from promptcast.server import create_app
from promptcast.testing import (
    FakeAnthropic,
    ScriptedBackend,
    chat_completion,
    error_reply,
    message,
    tool_use_block,
)
from promptcast.testing import tool_call as openai_tool_call
from tests.serving import running

ROOT = Path(__file__).resolve().parent.parent

TASK = """\
---
description: Label a text.
version: 4
inputs:
  text: str
output:
  label: str
---
{% role "system" %}You label texts.{% endrole %}
Label this: {{ text | fence("text") }}
"""

PROMPT_TEXT = "PROMPT-MARKER-4711 my order never came"
REPLY_TEXT = "REPLY-MARKER-0815"


class Telemetry:
    """An SDK with in-memory exporters, set as the global providers for one test; `spans()` and
    `points()` read what the test produced."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        self.tracing = TracerProvider()
        self.tracing.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.metering = MeterProvider(metric_readers=[self.reader])
        trace.set_tracer_provider(self.tracing)
        metrics.set_meter_provider(self.metering)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def points(self, name: str, model: str) -> list[Any]:
        """The data points of metric `name` for requests to `model`."""
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found += [
                            p
                            for p in metric.data.data_points
                            if p.attributes.get("gen_ai.request.model") == model
                        ]
        return found

    def close(self) -> None:
        self.tracing.shutdown()
        self.metering.shutdown()


def _unset_global_providers() -> None:
    """Back to no SDK, as the OpenTelemetry test utilities do between tests (the API allows one
    global provider per process), so no later test of the session records anything: a span's
    price lookup would use up, for instance, the pricing module's once-per-model warning."""
    from opentelemetry.metrics import _internal as metrics_api
    from opentelemetry.util._once import Once

    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]
    metrics_api._METER_PROVIDER_SET_ONCE = Once()
    metrics_api._METER_PROVIDER = None
    metrics_api._PROXY_METER_PROVIDER = metrics_api._ProxyMeterProvider()
    _telemetry._loaded.clear()  # its proxy tracer and instruments are bound to the old SDK


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    _unset_global_providers()
    sdk = Telemetry()
    try:
        yield sdk
    finally:
        sdk.close()
        _unset_global_providers()


@pytest.fixture
def label_task(write_task: Callable[..., Path]) -> pc.Task[Any]:
    return pc.Task.from_file(write_task("label", TASK))


def reply(label: Any, tokens: tuple[int, int], n: int) -> ModelReply:
    data = {"label": label} if label is not None else {"wrong": 1}
    return ModelReply(
        data=data,
        text=json.dumps(data),
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        response_id=f"resp-{n}",
        response_model="scripted-model-2026",
        finish_reason="tool_use",
    )


def by_name(spans: list[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.name.startswith(prefix)), key=lambda s: s.start_time or 0)


# one call: a task span with one client span per provider request


@pytest.mark.parametrize("driver", ["sync", "async"])
async def test_retry_and_reask_are_three_sibling_client_spans_under_the_task_span(
    otel: Telemetry, label_task: pc.Task[Any], driver: str
) -> None:
    model = f"test/otel-{driver}"
    script = ScriptedBackend(
        [
            BackendError("overloaded", provider="test", status=529, retryable=True),
            reply(None, (11, 3), 2),  # invalid: re-asked
            reply("shipping", (13, 4), 3),
        ]
    )
    with pc.override(model=model, backends={model: script}, retry_max_wait_s=0.001):
        if driver == "sync":
            run = label_task.run(text="where is my parcel")
        else:
            run = await label_task.arun(text="where is my parcel")
    assert run.output.label == "shipping"
    spans = otel.spans()
    (task_span,) = by_name(spans, "task ")
    calls = by_name(spans, "chat ")
    assert len(calls) == 3
    assert task_span.name == "task label" and task_span.kind is SpanKind.INTERNAL
    task_attrs = dict(task_span.attributes or {})
    assert task_attrs["promptcast.task"] == "label"
    assert task_attrs["promptcast.task.version"] == "4"
    assert task_attrs["promptcast.template_hash"] == label_task.spec.template_hash
    assert task_attrs["promptcast.cache_hit"] is False
    assert task_attrs["promptcast.attempts"] == 3
    assert task_attrs["promptcast.output_mode"] in {"tool", "native", "prompted"}
    assert not [k for k in task_attrs if k.startswith("gen_ai.usage")]  # counted once: below
    assert task_attrs["promptcast.cost_usd"] == 0.0
    for call in calls:  # siblings: every client span is a child of the task span
        assert call.name == f"chat otel-{driver}" and call.kind is SpanKind.CLIENT
        assert call.parent is not None and call.parent.span_id == task_span.context.span_id
        assert call.context.trace_id == task_span.context.trace_id
        attrs = dict(call.attributes or {})
        assert attrs["gen_ai.operation.name"] == "chat"
        assert attrs["gen_ai.provider.name"] == "test"
        assert attrs["gen_ai.request.model"] == f"otel-{driver}"
        assert attrs["gen_ai.output.type"] == "json"
    failed, invalid, valid = (dict(c.attributes or {}) for c in calls)
    assert calls[0].status.status_code is StatusCode.ERROR
    assert failed["error.type"] == "529" and "gen_ai.usage.input_tokens" not in failed
    assert (failed["promptcast.attempt"], failed["promptcast.retry"]) == (1, 0)
    assert (invalid["promptcast.attempt"], invalid["promptcast.retry"]) == (1, 1)
    assert (valid["promptcast.attempt"], valid["promptcast.retry"]) == (2, 0)
    for attrs, (tokens_in, tokens_out, n) in ((invalid, (11, 3, 2)), (valid, (13, 4, 3))):
        assert "error.type" not in attrs
        assert attrs["gen_ai.usage.input_tokens"] == tokens_in
        assert attrs["gen_ai.usage.output_tokens"] == tokens_out
        assert "gen_ai.usage.cache_read.input_tokens" not in attrs  # none reported
        assert attrs["gen_ai.response.id"] == f"resp-{n}"
        assert attrs["gen_ai.response.model"] == "scripted-model-2026"
        assert attrs["gen_ai.response.finish_reasons"] == ("tool_use",)
        assert attrs["promptcast.cost_usd"] == 0.0

    # the metrics: one duration per request (the failed one with error.type), tokens per type
    durations = otel.points("gen_ai.client.operation.duration", f"otel-{driver}")
    assert sum(p.count for p in durations) == 3
    assert [p.count for p in durations if p.attributes.get("error.type") == "529"] == [1]
    tokens = otel.points("gen_ai.client.token.usage", f"otel-{driver}")
    kinds = {p.attributes["gen_ai.token.type"]: p.sum for p in tokens}
    assert kinds == {"input": 24, "output": 7}
    assert all(p.attributes["gen_ai.provider.name"] == "test" for p in tokens)
    assert all(p.attributes["gen_ai.response.model"] == "scripted-model-2026" for p in tokens)


def test_a_failed_call_ends_its_task_span_with_the_error(
    otel: Telemetry, label_task: pc.Task[Any]
) -> None:
    script = ScriptedBackend([BackendError("no", provider="test", status=401)])
    with (
        pc.override(model="test/denied", backends={"test/denied": script}),
        pytest.raises(BackendError),
    ):
        label_task.run(text="hi")
    (task_span,) = by_name(otel.spans(), "task ")
    (call,) = by_name(otel.spans(), "chat ")
    assert task_span.status.status_code is StatusCode.ERROR
    assert (task_span.attributes or {})["error.type"] == "BackendError"
    assert (call.attributes or {})["error.type"] == "401"


class _Raising(SpanProcessor):
    """An application's span processor (or exporter behind a simple one) that raises."""

    def __init__(self, where: str) -> None:
        self.where = where

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if self.where == "span start":
            raise RuntimeError("processor broke on start")

    def on_end(self, span: ReadableSpan) -> None:
        if self.where == "span end":
            raise RuntimeError("processor broke on end")


@pytest.mark.parametrize("where", ["span start", "span end", "measurement"])
def test_telemetry_that_raises_never_fails_a_call(
    otel: Telemetry,
    label_task: pc.Task[Any],
    where: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The SDK runs the application's processors, exporters and readers inside `start_span`,
    `end` and `record`: one that raised ended every task call, after the provider was paid, and
    replaced a failed call's own error."""
    monkeypatch.setattr(_telemetry, "_reported", set())  # each test sees its own warnings
    otel.tracing.add_span_processor(_Raising(where))
    if where == "measurement":
        from opentelemetry.sdk.metrics._internal import measurement_consumer

        def broken(*args: Any) -> None:
            raise RuntimeError("reader broke")

        consumer = measurement_consumer.SynchronousMeasurementConsumer
        monkeypatch.setattr(consumer, "consume_measurement", broken)
    script = ScriptedBackend(lambda request: {"label": "ok"})
    with pc.override(model="test/broken-otel", backends={"test/broken-otel": script}):
        assert label_task(text="a").label == "ok"
        assert label_task(text="b").label == "ok"
        assert asyncio.run(label_task.acall(text="c")).label == "ok"
        assert list(label_task.stream(text="d"))[-1].label == "ok"

        async def bulk() -> list[Any]:
            return [r async for r in batch(label_task, [{"text": "e"}, {"text": "f"}])]

        assert [result.output.label for result in asyncio.run(bulk())] == ["ok", "ok"]
    denied = ScriptedBackend([BackendError("no", provider="test", status=401)])
    with (
        pc.override(model="test/denied", backends={"test/denied": denied}),
        pytest.raises(BackendError, match="no"),  # the call's own error, not the processor's
    ):
        label_task.run(text="g")
    warnings = [r.getMessage() for r in caplog.records if r.name == "promptcast.telemetry"]
    assert warnings and len(warnings) == len(set(warnings))  # once per entry point
    assert all("the call goes on" in warning for warning in warnings)


def test_a_response_cache_hit_is_a_task_span_without_client_spans(
    otel: Telemetry, label_task: pc.Task[Any], tmp_path: Path
) -> None:
    script = ScriptedBackend([reply("a", (5, 1), 1)])
    cache = f"sqlite:///{tmp_path / 'cache.db'}"
    with pc.override(model="test/cached", backends={"test/cached": script}, cache=cache):
        label_task.run(text="same")
        label_task.run(text="same")
    first, second = by_name(otel.spans(), "task ")
    assert (first.attributes or {})["promptcast.cache_hit"] is False
    assert (second.attributes or {})["promptcast.cache_hit"] is True
    (call,) = by_name(otel.spans(), "chat ")
    assert call.parent is not None and call.parent.span_id == first.context.span_id


def classification(request: dict[str, Any]) -> dict[str, Any]:
    """The fake's answer to `classify`, in whichever output mode was asked for."""
    answer = {"label": "billing", "reason": "twice"}
    if "tools" in request:  # tool mode
        return message([tool_use_block(request["tools"][0]["name"], answer)])
    return message([{"type": "text", "text": json.dumps(answer)}], stop_reason="end_turn")


# the real anthropic SDK: our span carries the reply's id, model and stop reason; the SDK's own
# `anthropic.messages.create` span is switched off, so each request is one client span


@pytest.mark.usefixtures("close_async_clients")
@pytest.mark.parametrize("driver", ["sync", "async"])
async def test_anthropic_request_is_one_client_span_with_the_replys_attributes(
    otel: Telemetry, fake_anthropic: FakeAnthropic, driver: str
) -> None:
    fake_anthropic.handler = classification
    task = pc.builtin_tasks()["classify"].with_model("anthropic/claude-sonnet-4-6")
    inputs = {"text": "I was charged twice", "labels": ["billing", "bug"]}
    if driver == "sync":
        task.run(**inputs)
    else:
        await task.arun(**inputs)
    spans = otel.spans()
    assert not [s for s in spans if s.name.startswith("anthropic.")]
    (call,) = by_name(spans, "chat ")
    attrs = dict(call.attributes or {})
    body = fake_anthropic.requests[-1]
    assert call.name == "chat claude-sonnet-4-6"
    assert attrs["gen_ai.provider.name"] == "anthropic"
    assert attrs["gen_ai.request.model"] == body["model"] == "claude-sonnet-4-6"
    assert attrs["gen_ai.response.model"] == "claude-sonnet-4-6"
    assert str(attrs["gen_ai.response.id"]).startswith("msg_fake")
    assert attrs["gen_ai.response.finish_reasons"] in {("tool_use",), ("end_turn",)}
    assert attrs["gen_ai.usage.output_tokens"] > 0
    assert attrs["server.address"] == "127.0.0.1"
    port = int(fake_anthropic.base_url.rsplit(":", 1)[1])
    assert attrs["server.port"] == port
    durations = otel.points("gen_ai.client.operation.duration", "claude-sonnet-4-6")
    assert [(p.attributes["server.address"], p.attributes["server.port"]) for p in durations] == [
        ("127.0.0.1", port)
    ]
    assert attrs["promptcast.cost_usd"] > 0


@pytest.mark.usefixtures("close_async_clients")
@pytest.mark.parametrize("driver", ["sync", "async"])
async def test_anthropic_retry_and_reask_through_the_sdk(
    otel: Telemetry, fake_anthropic: FakeAnthropic, driver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import promptcast.pricing

    priced: list[str] = []
    price = promptcast.pricing.cost_usd

    def counted(model: str, *args: Any, **kwargs: Any) -> float | None:
        priced.append(model)
        return price(model, *args, **kwargs)

    monkeypatch.setattr(promptcast.pricing, "cost_usd", counted)
    answers = iter(
        [
            error_reply(529, "overloaded_error", "Overloaded", retry_after="0"),
            {"label": "not-a-label", "reason": "x"},  # invalid: re-asked
            {"label": "billing", "reason": "twice"},
        ]
    )

    def handler(request: dict[str, Any]) -> Any:
        answer = next(answers)
        if not isinstance(answer, dict):
            return answer
        if "tools" in request:
            block = tool_use_block(request["tools"][0]["name"], answer)
            return message([block], input_tokens=400, output_tokens=30)
        text = {"type": "text", "text": json.dumps(answer)}
        return message([text], stop_reason="end_turn", input_tokens=400, output_tokens=30)

    fake_anthropic.handler = handler
    task = pc.builtin_tasks()["classify"].with_model("anthropic/claude-sonnet-4-6")
    inputs = {"text": "I was charged twice", "labels": ["billing", "bug"]}
    with pc.override(retry_max_wait_s=0.001):
        run = task.run(**inputs) if driver == "sync" else await task.arun(**inputs)
    assert run.attempts == 3
    (task_span,) = by_name(otel.spans(), "task classify")
    calls = by_name(otel.spans(), "chat ")
    assert len(calls) == 3
    assert {c.parent.span_id for c in calls if c.parent} == {task_span.context.span_id}
    failed, invalid, valid = (dict(c.attributes or {}) for c in calls)
    assert failed["error.type"] == "529" and "gen_ai.response.id" not in failed
    for attrs in (failed, invalid, valid):
        assert attrs["gen_ai.provider.name"] == "anthropic"
        assert attrs["server.address"] == "127.0.0.1"
    ids = set()
    for attrs in (invalid, valid):
        assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (
            400,
            30,
        )
        assert attrs["gen_ai.response.model"] == "claude-sonnet-4-6"
        ids.add(attrs["gen_ai.response.id"])
    assert len(ids) == 2
    assert (invalid["promptcast.attempt"], valid["promptcast.attempt"]) == (1, 2)
    cost = (task_span.attributes or {})["promptcast.cost_usd"]
    assert cost == pytest.approx(invalid["promptcast.cost_usd"] + valid["promptcast.cost_usd"])
    assert cost == pytest.approx(run.usage.cost_usd)
    assert len(priced) == 2  # each answered request priced once, for its span and the run


def test_cached_input_tokens_count_in_the_input_and_get_their_own_attributes(
    otel: Telemetry, label_task: pc.Task[Any]
) -> None:
    cached = ModelReply(
        data={"label": "x"},
        text='{"label": "x"}',
        input_tokens=20,
        output_tokens=5,
        cache_read_tokens=300,
        cache_write_tokens=40,
    )
    with pc.override(
        model="test/cache-tokens", backends={"test/cache-tokens": ScriptedBackend([cached])}
    ):
        label_task.run(text="hi")
    (call,) = by_name(otel.spans(), "chat ")
    attrs = dict(call.attributes or {})
    assert attrs["gen_ai.usage.input_tokens"] == 360  # uncached + read + written, as counted
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 300
    assert attrs["gen_ai.usage.cache_creation.input_tokens"] == 40
    tokens = otel.points("gen_ai.client.token.usage", "cache-tokens")
    assert {p.attributes["gen_ai.token.type"]: p.sum for p in tokens} == {"input": 360, "output": 5}


# content capture: off by default, on with the conventions' switch


def _all_text(spans: list[ReadableSpan]) -> str:
    values: list[str] = []
    for span in spans:
        values += [str(v) for v in (span.attributes or {}).values()]
        for event in span.events:
            values += [event.name, *(str(v) for v in (event.attributes or {}).values())]
    return "\n".join(values)


@pytest.mark.parametrize("setting", [None, "false", "", "no_content"])
def test_no_prompt_or_reply_text_in_spans_by_default(
    otel: Telemetry,
    label_task: pc.Task[Any],
    monkeypatch: pytest.MonkeyPatch,
    setting: str | None,
) -> None:
    if setting is None:
        monkeypatch.delenv(_telemetry.CAPTURE_CONTENT_ENV, raising=False)
    else:
        monkeypatch.setenv(_telemetry.CAPTURE_CONTENT_ENV, setting)
    script = ScriptedBackend([reply(REPLY_TEXT, (1, 1), 1)])
    with pc.override(model="test/quiet", backends={"test/quiet": script}):
        label_task.run(text=PROMPT_TEXT)
    text = _all_text(otel.spans())
    assert by_name(otel.spans(), "chat ") and PROMPT_TEXT not in text and REPLY_TEXT not in text
    assert "You label texts" not in text


@pytest.mark.parametrize("setting", ["true", "TRUE", "1", "span_only", "span_and_event"])
def test_prompt_and_reply_text_in_the_client_span_when_opted_in(
    otel: Telemetry,
    label_task: pc.Task[Any],
    monkeypatch: pytest.MonkeyPatch,
    setting: str,
) -> None:
    monkeypatch.setenv(_telemetry.CAPTURE_CONTENT_ENV, setting)
    secret = "sk-ant-api03-" + "A1b2C3d4E5f6G7h8" * 5
    script = ScriptedBackend([reply(REPLY_TEXT, (1, 1), 1)])
    with pc.override(model="test/loud", backends={"test/loud": script}):
        label_task.run(text=f"{PROMPT_TEXT} {secret}")
    (call,) = by_name(otel.spans(), "chat ")
    attrs = dict(call.attributes or {})
    messages = json.loads(str(attrs["gen_ai.input.messages"]))
    assert messages[0]["role"] == "user" and PROMPT_TEXT in messages[0]["parts"][0]["content"]
    assert json.loads(str(attrs["gen_ai.system_instructions"]))[0]["content"] == "You label texts."
    output = json.loads(str(attrs["gen_ai.output.messages"]))
    assert REPLY_TEXT in output[0]["parts"][0]["content"]
    assert output[0]["finish_reason"] == "tool_use"
    assert secret not in _all_text(otel.spans())  # credentials are scrubbed even then


# streaming: the client span ends when the stream does


def test_a_streamed_calls_spans_end_when_the_stream_ends(
    otel: Telemetry, label_task: pc.Task[Any]
) -> None:
    script = ScriptedBackend([reply("streamed", (3, 2), 1)])
    with pc.override(model="test/streamed", backends={"test/streamed": script}):
        stream = label_task.stream(text="hi")
        events = iter(stream.events())
        next(events)
        assert not by_name(otel.spans(), "chat ")  # the request is still streaming
        assert not by_name(otel.spans(), "task ")
        for _ in events:
            pass
    (task_span,) = by_name(otel.spans(), "task ")
    (call,) = by_name(otel.spans(), "chat ")
    assert call.parent is not None and call.parent.span_id == task_span.context.span_id
    assert (call.attributes or {})["gen_ai.usage.output_tokens"] == 2


async def test_an_async_streamed_calls_spans_end_when_the_stream_ends(
    otel: Telemetry, label_task: pc.Task[Any]
) -> None:
    script = ScriptedBackend([reply("streamed", (3, 2), 1)])
    with pc.override(model="test/astreamed", backends={"test/astreamed": script}):
        stream = label_task.astream(text="hi")
        events = stream.events().__aiter__()
        await events.__anext__()
        assert not by_name(otel.spans(), "chat ") and not by_name(otel.spans(), "task ")
        async for _ in events:
            pass
    (task_span,) = by_name(otel.spans(), "task ")
    (call,) = by_name(otel.spans(), "chat ")
    assert call.parent is not None and call.parent.span_id == task_span.context.span_id


# bulk work: a run span and one span per item


async def test_a_batch_run_has_one_span_per_item_under_its_run_span(
    otel: Telemetry, label_task: pc.Task[Any]
) -> None:
    def answer(request: Any) -> Any:
        text = str(request.prompt.messages[0]["content"])
        if "bad" in text:
            raise BackendError("refused", provider="test", status=400)
        return {"label": "x"}

    script = ScriptedBackend(answer)
    items = [{"id": f"i{n}", "text": "bad" if n == 2 else f"t{n}"} for n in range(3)]
    with pc.override(model="test/bulk", backends={"test/bulk": script}):
        results = [r async for r in batch(label_task, items, concurrency=2)]
    assert len(results) == 3
    spans = otel.spans()
    (run,) = by_name(spans, "batch label")
    item_spans = by_name(spans, "batch.item label")
    assert len(item_spans) == 3
    assert {s.parent.span_id for s in item_spans if s.parent} == {run.context.span_id}
    assert {(s.attributes or {})["promptcast.batch.item_id"] for s in item_spans} == {
        "i0",
        "i1",
        "i2",
    }
    outcomes = {(s.attributes or {})["promptcast.batch.item_id"]: s for s in item_spans}
    assert (outcomes["i2"].attributes or {})["promptcast.outcome"] == "error"
    assert (run.attributes or {})["promptcast.batch.ok"] == 2
    for task_span in by_name(spans, "task "):  # each call nests under its own item
        assert task_span.parent is not None
        assert task_span.parent.span_id in {s.context.span_id for s in item_spans}


async def test_an_eval_run_has_one_span_per_case_under_its_run_span(
    otel: Telemetry, label_task: pc.Task[Any]
) -> None:
    from promptcast.spec import Example

    cases = [Example(inputs={"text": f"c{n}"}, expect={"label": "x"}) for n in range(2)]
    backends = {m: ScriptedBackend(lambda _: {"label": "x"}) for m in ("test/e1", "test/e2")}
    with pc.override(backends=backends):
        report = await aevaluate(label_task, ["test/e1", "test/e2"], cases)
    assert len(report.results) == 4
    spans = otel.spans()
    (run,) = by_name(spans, "eval label")
    case_spans = by_name(spans, "eval.case label")
    assert len(case_spans) == 4
    assert {s.parent.span_id for s in case_spans if s.parent} == {run.context.span_id}
    assert {(s.attributes or {})["promptcast.eval.model"] for s in case_spans} == {
        "test/e1",
        "test/e2",
    }
    assert len(by_name(spans, "task ")) == 4


# the server continues an incoming trace


def test_a_request_with_traceparent_is_traced_in_the_callers_trace(otel: Telemetry) -> None:
    pc.configure(
        backends={"test/traced": ScriptedBackend(lambda _: {"label": "billing", "reason": "r"})}
    )
    registry = pc.TaskRegistry(
        {"classify": pc.builtin_tasks()["classify"].with_model("test/traced")}
    )
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with running(create_app(registry, tokens=[])) as url:
        response = httpx.post(
            f"{url}/v1/tasks/classify",
            json={"text": "charged twice", "labels": ["billing", "bug"]},
            headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
        )
        untraced = httpx.get(f"{url}/healthz")
    assert response.status_code == 200 and untraced.status_code == 200
    spans = otel.spans()
    # one HTTP span per request, FastAPI's own (promptcast adds none: no double counting)
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER and s.name.startswith("POST")]
    assert server.name == "POST /v1/tasks/classify"  # one typed route per task
    assert server.instrumentation_scope is not None
    assert server.instrumentation_scope.name == "fastapi"
    assert server.parent is not None and f"{server.parent.span_id:016x}" == parent_id
    assert (server.attributes or {})["http.response.status_code"] == 200
    (task_span,) = by_name(spans, "task classify")
    (call,) = by_name(spans, "chat traced")
    for span in (server, task_span, call):
        assert f"{span.context.trace_id:032x}" == trace_id
    assert task_span.parent is not None and task_span.parent.span_id == server.context.span_id
    (probe,) = [s for s in spans if s.kind is SpanKind.SERVER and s.name.startswith("GET")]
    assert f"{probe.context.trace_id:032x}" != trace_id  # no traceparent: a trace of its own


# end to end through the OTLP/HTTP exporter, as a user's SDK setup sends it

_OTLP_CHILD = """
import sys
from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

url, task_file = sys.argv[1], sys.argv[2]
resource = Resource.create({"service.name": "support-desk"})
tracer_provider = TracerProvider(resource=resource)
tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url + "/v1/traces")))
trace.set_tracer_provider(tracer_provider)
reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=url + "/v1/metrics"))
meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
metrics.set_meter_provider(meter_provider)

import promptcast as pc
from promptcast.testing import ScriptedBackend

task = pc.Task.from_file(task_file)
with pc.override(model="test/otlp", backends={"test/otlp": ScriptedBackend([{"label": "ok"}])}):
    task.run(text="hello")
tracer_provider.shutdown()
meter_provider.shutdown()
"""


class _Receiver(BaseHTTPRequestHandler):
    received: dict[str, list[bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.received.setdefault(self.path, []).append(body)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_spans_and_metrics_reach_an_otlp_http_receiver(
    write_task: Callable[..., Path],
) -> None:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    received: dict[str, list[bytes]] = {}
    handler = type("Receiver", (_Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        task_file = write_task("label", TASK)
        done = subprocess.run(
            [sys.executable, "-c", _OTLP_CHILD, url, str(task_file)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr
    finally:
        server.shutdown()
        server.server_close()
    spans = {}
    for body in received.get("/v1/traces", []):
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            assert service["service.name"] == "support-desk"
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans[span.name] = span
    assert set(spans) == {"task label", "chat otlp"}
    task_span, call = spans["task label"], spans["chat otlp"]
    assert call.parent_span_id == task_span.span_id and call.trace_id == task_span.trace_id
    attrs = {a.key: a.value for a in call.attributes}
    assert attrs["gen_ai.request.model"].string_value == "otlp"
    assert attrs["gen_ai.usage.input_tokens"].int_value == 10
    names = set()
    for body in received.get("/v1/metrics", []):
        request = ExportMetricsServiceRequest.FromString(body)
        for resource_metrics in request.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                names |= {m.name for m in scope_metrics.metrics}
    assert {"gen_ai.client.token.usage", "gen_ai.client.operation.duration"} <= names


# a minimal install: no OpenTelemetry at all

_WITHOUT_OTEL = """
import sys

class NoOpenTelemetry:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, NoOpenTelemetry())
import promptcast as pc
from promptcast.testing import ScriptedBackend

assert not [m for m in sys.modules if m.startswith("opentelemetry")], "imported by promptcast"
task = pc.Task.from_file(sys.argv[1])
with pc.override(model="test/min", backends={"test/min": ScriptedBackend([{"label": "ok"}])}):
    run = task.run(text="hello")
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
print(run.output, loaded)
"""


def test_without_opentelemetry_promptcast_imports_none_of_it_and_calls_work(
    write_task: Callable[..., Path],
) -> None:
    task_file = write_task("label", TASK)
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_OTEL, str(task_file)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "label='ok' []"


def test_provider_names_follow_the_conventions() -> None:
    cases = {
        ("anthropic", "claude-sonnet-4-6"): "anthropic",
        ("openai", "gpt-4o-mini"): "openai",
        ("gemini", "gemini-2.5-flash"): "gcp.gemini",
        ("bedrock", "anthropic.claude"): "aws.bedrock",
        ("litellm", "mistral/mistral-large"): "mistral_ai",
        ("ollama", "llama3.1"): "ollama",
    }
    for (provider, model), expected in cases.items():
        assert _telemetry.provider_name(provider, model) == expected


_API_ONLY = """
import sys
import promptcast as pc
from promptcast import _telemetry
from promptcast.testing import ScriptedBackend

task = pc.Task.from_file(sys.argv[1])
with pc.override(model="test/api", backends={"test/api": ScriptedBackend(lambda _: {"label": "a"})}):
    task.run(text="hello")
    # installed but imported by nobody: no SDK can be set, so promptcast does not import it
    assert "opentelemetry" not in sys.modules
    import opentelemetry.trace  # imported (the anthropic SDK does), still no SDK: nothing starts

    task.run(text="hello")
    assert _telemetry.task_span(task.spec) is _telemetry.NO_TASK_SPAN

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # an SDK set later is picked up by the next call
    task.run(text="hello")
print(sorted(span.name for span in exporter.get_finished_spans()))
"""


def test_with_the_api_but_no_sdk_no_span_is_started_until_one_is_set(
    write_task: Callable[..., Path],
) -> None:
    task_file = write_task("label", TASK)
    done = subprocess.run(
        [sys.executable, "-c", _API_ONLY, str(task_file)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['chat api', 'task label']"


def test_a_handed_in_anthropic_clients_own_span_nests_under_the_client_span(
    otel: Telemetry, fake_anthropic: FakeAnthropic
) -> None:
    import anthropic

    from promptcast.backends.anthropic import AnthropicBackend

    fake_anthropic.handler = classification
    client = anthropic.Anthropic(base_url=fake_anthropic.base_url, api_key="sk-ant-given")
    backend = AnthropicBackend(client=client)  # the user's client keeps the SDK's tracing
    task = pc.builtin_tasks()["classify"].with_model("anthropic/claude-sonnet-4-6")
    with pc.override(backends={"anthropic/claude-sonnet-4-6": backend}):
        task.run(text="charged twice", labels=["billing", "bug"])
    client.close()
    spans = otel.spans()
    (ours,) = by_name(spans, "chat ")
    (sdk,) = by_name(spans, "anthropic.messages.create")
    assert sdk.parent is not None and sdk.parent.span_id == ours.context.span_id


def test_a_litellm_request_carries_the_replys_id_model_and_finish_reason(
    otel: Telemetry, fake_openai: Any
) -> None:
    answer = {"label": "billing", "reason": "twice"}

    def handler(request: dict[str, Any]) -> dict[str, Any]:
        if request.get("tools"):
            name = request["tools"][0]["function"]["name"]
            return chat_completion(tool_calls=[openai_tool_call(name, answer)])
        return chat_completion(json.dumps(answer))

    fake_openai.handler = handler
    task = pc.builtin_tasks()["classify"].with_model("openai/gpt-4o-mini")
    task.run(text="charged twice", labels=["billing", "bug"])
    (call,) = by_name(otel.spans(), "chat ")
    attrs = dict(call.attributes or {})
    assert call.name == "chat gpt-4o-mini"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert str(attrs["gen_ai.response.id"]).startswith("chatcmpl-fake")
    assert attrs["gen_ai.response.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.response.finish_reasons"] in {("stop",), ("tool_calls",)}
    assert attrs["server.address"] == "127.0.0.1"
