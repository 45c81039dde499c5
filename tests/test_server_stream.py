"""`POST /v1/tasks/{name}/stream`: the real app under uvicorn, the real anthropic SDK and the
loopback fake Messages API streaming behind it; read with httpx as any SSE client would."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import promptcast as pc
from promptcast.server import create_app
from promptcast.testing import FakeAnthropic, FakeReply, error_reply, message, tool_use_block
from tests.conftest import TEST_KEY
from tests.serving import AUTH, TOKEN, metric, running

MODEL = "anthropic/claude-3-5-haiku-20241022"  # tool mode: input_json_delta events
ANSWER = {
    "answer": "Yes: the Aero X2 crushes ice with the Pulse setting, for at most 30 seconds.",
    "answered": True,
    "cited_document_ids": ["manual-3"],
}
INPUTS = {"question": "Can the Aero X2 crush ice?", "documents": {"manual-3": "Pulse crushes ice."}}
PATH = "/v1/tasks/answer_product_question/stream"


def reply(data: dict[str, Any] = ANSWER) -> dict[str, Any]:
    return message([tool_use_block("ProductAnswer", data)], input_tokens=150, output_tokens=40)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as provider:
        yield provider


@pytest.fixture(scope="module")
def base_url(fake: FakeAnthropic) -> Iterator[str]:
    task = pc.builtin_tasks().answer_product_question.with_model(MODEL)
    registry = pc.TaskRegistry({"answer_product_question": task})
    with running(create_app(registry, tokens=[TOKEN])) as url:
        yield url


@pytest.fixture(autouse=True)
def _provider(fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", TEST_KEY)
    pc.configure(max_retries=0, retry_max_wait_s=0.01)
    fake.handler = lambda request: reply()
    fake.replies.clear()
    fake.streams.clear()
    fake.stream_interval_s = 0.005


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, headers=AUTH, timeout=30) as http:
        yield http


def events(response: httpx.Response) -> list[tuple[str, Any]]:
    """The (event, JSON data) pairs of a server-sent event stream."""
    found: list[tuple[str, Any]] = []
    kind, data = "message", ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif not line and data:
            found.append((kind, json.loads(data)))
            kind, data = "message", ""
    return found


def streamed(client: httpx.Client, body: Any = INPUTS, **options: Any) -> httpx.Response:
    response = client.post(PATH, json=body, **options)
    text = response.text
    assert "Traceback" not in text and TEST_KEY not in text and "sk-ant-" not in text
    return response


def test_events_arrive_in_order_and_final_carries_usage_and_cost(client: httpx.Client) -> None:
    response = streamed(client)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    found = events(response)
    kinds = [kind for kind, _ in found]
    assert kinds[-1] == "final" and set(kinds[:-1]) == {"partial"} and len(kinds) > 10
    partials = [data for kind, data in found if kind == "partial"]
    assert partials[0].keys() <= ANSWER.keys() and partials[-1] == ANSWER
    for before, after in itertools.pairwise(partials):
        assert before.keys() <= after.keys()
        assert after["answer"].startswith(before.get("answer", ""))
    final = found[-1][1]
    assert final["output"] == ANSWER and final["model"] == MODEL and final["attempts"] == 1
    assert final["output_mode"] == "tool"
    usage = final["usage"]
    assert usage["input_tokens"] == 150 and usage["output_tokens"] == 40
    assert usage["cost_usd"] == pc.Usage.of(MODEL, 150, 40).cost_usd and usage["cost_usd"] > 0


def test_the_same_result_as_the_json_route(client: httpx.Client) -> None:
    plain = client.post("/v1/tasks/answer_product_question", json=INPUTS).json()
    final = events(streamed(client))[-1][1]
    assert {k: v for k, v in final.items() if k != "output_mode"} == plain


def test_an_invalid_reply_restarts_and_usage_counts_both(
    client: httpx.Client, fake: FakeAnthropic
) -> None:
    fake.reply(reply({"answer": "Perhaps.", "answered": "maybe"}), reply())
    found = events(streamed(client))
    kinds = [kind for kind, _ in found]
    restart = kinds.index("restart")
    assert set(kinds[:restart]) == {"partial"} and kinds[-1] == "final"
    assert found[restart][1] == {"attempt": 2, "model": MODEL, "reason": "invalid"}
    final = found[-1][1]
    assert final["output"] == ANSWER and final["attempts"] == 2
    assert final["usage"]["input_tokens"] == 300 and final["usage"]["output_tokens"] == 80


def test_a_provider_failure_mid_stream_ends_with_an_error_event(
    client: httpx.Client, fake: FakeAnthropic
) -> None:
    head = fake.sse({}, reply())[:8]
    broken = [*head, fake.stream_error("invalid_request_error", f"bad request for {TEST_KEY}")]
    fake.reply(FakeReply(events=broken))
    response = streamed(client)
    assert response.status_code == 200
    found = events(response)
    assert [k for k, _ in found][-1] == "error" and "partial" in [k for k, _ in found]
    problem = found[-1][1]
    assert problem["type"] == "urn:promptcast:problem:provider-error"
    assert problem["status"] == 502 and problem["task"] == "answer_product_question"
    assert problem["request_id"] == response.headers["x-request-id"]


def test_a_failure_before_the_first_event_is_the_json_routes_problem(
    client: httpx.Client, fake: FakeAnthropic
) -> None:
    limited = error_reply(429, "rate_limit_error", "Number of requests exceeded", retry_after="7")
    fake.reply(limited, limited)
    response = streamed(client)
    plain = client.post("/v1/tasks/answer_product_question", json=INPUTS)
    assert response.status_code == plain.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["retry-after"] == plain.headers["retry-after"]
    drop = {"request_id", "instance"}
    assert {k: v for k, v in response.json().items() if k not in drop} == {
        k: v for k, v in plain.json().items() if k not in drop
    }


@pytest.mark.parametrize(
    ("body", "headers", "status", "kind"),
    [
        (INPUTS, {"authorization": "Bearer wrong"}, 401, "unauthorized"),
        ({"question": "q"}, {}, 422, "invalid-input"),
        ({**INPUTS, "question": 3}, {}, 422, "invalid-input"),
        ({**INPUTS, "extra": 1}, {}, 422, "invalid-input"),
    ],
)
def test_auth_and_input_errors_as_on_the_json_route(
    client: httpx.Client, body: Any, headers: dict[str, str], status: int, kind: str
) -> None:
    streaming = streamed(client, body, headers=headers)
    plain = client.post("/v1/tasks/answer_product_question", json=body, headers=headers)
    for response in (streaming, plain):
        assert response.status_code == status, response.text
        assert response.json()["type"] == f"urn:promptcast:problem:{kind}"


def test_an_unknown_task_stream_is_a_404_with_close_matches(client: httpx.Client) -> None:
    response = client.post("/v1/tasks/answer_product_questoin/stream", json=INPUTS)
    assert response.status_code == 404
    assert "answer_product_question" in response.json()["matches"]


def test_a_client_disconnect_closes_the_provider_stream(
    client: httpx.Client, fake: FakeAnthropic
) -> None:
    fake.stream_interval_s = 0.03
    with client.stream("POST", PATH, json=INPUTS) as response:
        for line in response.iter_lines():
            if line.startswith("event: partial"):
                break
    deadline = time.monotonic() + 10
    while not fake.streams or not fake.streams[-1].done.is_set():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    log = fake.streams[-1]
    assert log.closed_by_client and len(log.sent_at) < log.total
    text = client.get("/metrics").text
    assert metric(
        text,
        "promptcast_task_calls_total",
        task="answer_product_question",
        model=MODEL,
        status="499",
    )


def test_openapi_documents_the_stream_route(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    post = schema["paths"][PATH]["post"]
    assert post["operationId"] == "stream_answer_product_question"
    assert "text/event-stream" in post["responses"]["200"]["content"]
    assert {"401", "422", "502"} <= set(post["responses"])
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert (
        body
        == schema["paths"][PATH.removesuffix("/stream")]["post"]["requestBody"]["content"][
            "application/json"
        ]["schema"]
    )
