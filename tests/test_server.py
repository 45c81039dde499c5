"""The HTTP server end to end: the real app under uvicorn on 127.0.0.1, the real anthropic SDK, and
the loopback fake Messages API behind it; called with httpx like any other service would."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import promptcast as pc
from promptcast.errors import (
    BackendError,
    BudgetExceededError,
    ConfigurationError,
    OutputTruncatedError,
    OutputValidationError,
    TaskInputError,
)
from promptcast.server import create_app, is_loopback
from promptcast.server.logs import JsonFormatter
from promptcast.testing import (
    FakeAnthropic,
    FakeReply,
    ScriptedBackend,
    error_reply,
    message,
    tool_use_block,
)
from promptcast.testing._fake_anthropic import text_block
from tests.conftest import TEST_KEY
from tests.serving import AUTH, TOKEN, metric, running

# What a model would answer, by output tool name: each a valid instance of the task's output.
ANSWERS: dict[str, dict[str, Any]] = {
    "Ticket": {"issue": "Checkout page crashes", "urgency": "high", "product": "checkout"},
    "ProductAnswer": {
        "answer": "Yes, with the Pulse setting, for at most 30 seconds.",
        "answered": True,
        "cited_document_ids": ["manual-3"],
    },
    "Translation": {
        "translation": "The blender is loud, but it makes excellent smoothies.",
        "source_language": "German",
    },
    "Summary": {"summary": "Q3 adds offline mode.", "key_points": ["offline mode", "faster sync"]},
    "Classification": {"label": "billing", "reason": "A double charge is a billing matter."},
}
INPUT_TOKENS, OUTPUT_TOKENS = 120, 30


def answer(request: dict[str, Any]) -> dict[str, Any]:
    """The fake provider's handler: the scripted answer for the requested output tool, or as
    JSON text for a native-mode request (its schema's title names the output)."""
    if "tools" not in request:
        title = request["output_config"]["format"]["schema"]["title"]
        return message(
            [text_block(json.dumps(ANSWERS[title]))],
            model=request["model"],
            input_tokens=INPUT_TOKENS,
            output_tokens=OUTPUT_TOKENS,
        )
    tool = request["tools"][0]["name"]
    return message(
        [tool_use_block(tool, ANSWERS[tool])],
        model=request["model"],
        input_tokens=INPUT_TOKENS,
        output_tokens=OUTPUT_TOKENS,
    )


# fixtures: one fake provider and one server for the module; env and handler reset per test


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as provider:
        yield provider


@pytest.fixture(scope="module")
def base_url(fake: FakeAnthropic) -> Iterator[str]:
    with running(create_app(tokens=[TOKEN, "second-token-b2c4"], max_concurrency=4)) as url:
        yield url


@pytest.fixture(autouse=True)
def _provider(fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the SDK at the fake (conftest clears ANTHROPIC_BASE_URL before every test)."""
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", TEST_KEY)
    fake.handler = answer
    fake.replies.clear()


@pytest.fixture
def seen() -> list[httpx.Response]:
    return []


@pytest.fixture
def client(base_url: str, seen: list[httpx.Response]) -> Iterator[httpx.Client]:
    """An httpx client that keeps every response, so each test also checks that no body leaks a
    stack trace or the provider key."""

    def keep(response: httpx.Response) -> None:
        response.read()
        seen.append(response)

    with httpx.Client(base_url=base_url, event_hooks={"response": [keep]}, timeout=30) as http:
        yield http
    for response in seen:
        assert "Traceback" not in response.text, response.text
        assert TEST_KEY not in response.text, response.text
        assert "sk-ant-" not in response.text, response.text


def log_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        json.loads(JsonFormatter().format(r))
        for r in caplog.records
        if r.name == "promptcast.server" and getattr(r, "event", None) == "request"
    ]


def assert_problem(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:promptcast:problem:{kind}"
    assert body["status"] == status and body["title"] and body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


# typed outputs


@pytest.mark.parametrize("name", sorted(pc.builtin_tasks()))
def test_each_builtin_task_answers_with_its_typed_output(
    name: str, client: httpx.Client, fake: FakeAnthropic
) -> None:
    task = pc.builtin_tasks()[name]
    inputs = task.spec.examples[0].inputs
    response = client.post(f"/v1/tasks/{name}", json=inputs, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    output_model = task.spec.output_model
    assert output_model is not None
    output = output_model.model_validate(body["output"])
    assert output == output_model.model_validate(ANSWERS[output_model.__name__])
    assert body["usage"]["input_tokens"] == INPUT_TOKENS
    assert body["usage"]["output_tokens"] == OUTPUT_TOKENS
    assert body["usage"]["cost_usd"] > 0
    assert body["model"] == "anthropic/claude-sonnet-4-6" and body["task"] == name
    assert body["task_version"] == task.spec.version
    assert body["template_hash"] == task.spec.template_hash
    assert body["attempts"] == 1
    sent = fake.requests[-1]
    assert sent["output_config"]["format"]["schema"]["title"] == output_model.__name__
    first_text = next(value for value in inputs.values() if isinstance(value, str))
    assert first_text in json.dumps(sent, ensure_ascii=False)  # the inputs reached the prompt


def test_defaults_apply_and_an_invalid_answer_is_reasked(
    client: httpx.Client, fake: FakeAnthropic
) -> None:
    fake.reply(message([tool_use_block("Ticket", {"issue": "x", "urgency": "whenever"})]))
    response = client.post(
        "/v1/tasks/extract_ticket", json={"message": "Login fails"}, headers=AUTH
    )
    assert response.status_code == 200, response.text
    assert response.json()["attempts"] == 2
    assert response.json()["output"]["urgency"] == "high"
    assert "standard plan" in json.dumps(fake.requests[-1])  # customer_tier's default


# OpenAPI, listing and docs


def resolve_ref(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node["$ref"]
    assert ref.startswith("#/components/schemas/")
    found: dict[str, Any] = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return found


def _no_null_defaults(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {k: v for k, v in prop.items() if not (k == "default" and v is None)}
        for name, prop in properties.items()
    }


def test_openapi_lists_every_task_with_its_own_schemas(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    for name, task in pc.builtin_tasks().items():
        operation = schema["paths"][f"/v1/tasks/{name}"]["post"]
        assert operation["operationId"] == f"run_{name}"
        request = operation["requestBody"]["content"]["application/json"]["schema"]
        inputs = resolve_ref(schema, request)
        own_inputs = task.spec.input_model.model_json_schema()
        # FastAPI leaves out the `null` default of a media input (its serializer takes no None)
        assert _no_null_defaults(inputs["properties"]) == _no_null_defaults(
            own_inputs["properties"]
        )
        assert inputs.get("required", []) == own_inputs.get("required", [])
        assert inputs["additionalProperties"] is False
        ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
        result = resolve_ref(schema, ok)
        assert set(result["properties"]) >= {"output", "usage", "model", "task_version"}
        output_model = task.spec.output_model
        assert output_model is not None
        output = resolve_ref(schema, result["properties"]["output"])
        own_output = output_model.model_json_schema(mode="serialization")["properties"]
        # a response always holds every field, so FastAPI drops defaults from output schemas
        assert output["properties"] == {
            field: {k: v for k, v in prop.items() if k != "default"}
            for field, prop in own_output.items()
        }
        for status in ("401", "413", "422", "502", "503", "504"):
            problem = operation["responses"][status]["content"]["application/problem+json"]
            assert problem["schema"] == {"$ref": "#/components/schemas/Problem"}
        assert operation["security"] == [{"bearerAuth": []}]
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert "HTTPValidationError" not in json.dumps(schema)
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_list_and_describe_tasks(client: httpx.Client) -> None:
    listed = client.get("/v1/tasks", headers=AUTH).json()["tasks"]
    assert [t["name"] for t in listed] == sorted(pc.builtin_tasks())
    ticket = next(t for t in listed if t["name"] == "extract_ticket")
    assert ticket["version"] == 1 and ticket["url"] == "/v1/tasks/extract_ticket"
    detail = client.get("/v1/tasks/extract_ticket", headers=AUTH).json()
    assert detail["inputs"]["customer_tier"]["default"] == "standard"
    assert detail["inputs"]["message"]["required"] is True
    assert detail["output_schema"]["properties"]["urgency"]["enum"][0] == "low"
    assert detail["input_schema"]["required"] == ["message"]
    assert "path" not in detail and "/" not in json.dumps(detail["examples"])[:1]
    missing = assert_problem(client.get("/v1/tasks/extract_tickt", headers=AUTH), 404, "not-found")
    assert missing["matches"] == ["extract_ticket"]
    unknown_run = client.post("/v1/tasks/extract_tickt", json={}, headers=AUTH)
    assert assert_problem(unknown_run, 404, "not-found")["matches"] == ["extract_ticket"]


def test_health_and_readiness(client: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "tasks": 5}
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    assert_problem(client.get("/readyz"), 503, "not-ready")


# metrics


def test_metrics_count_calls_tokens_cost_and_errors(client: httpx.Client) -> None:
    def scrape() -> str:
        response = client.get("/metrics", headers=AUTH)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        return response.text

    labels = {"task": "translate", "model": "anthropic/claude-sonnet-4-6"}
    before = scrape()
    for _ in range(3):
        assert client.post("/v1/tasks/translate", json={"text": "Hallo"}, headers=AUTH).is_success
    assert client.post("/v1/tasks/translate", json={}, headers=AUTH).status_code == 422
    after = scrape()

    def grew(name: str, **extra: str) -> float:
        return metric(after, name, **labels, **extra) - metric(before, name, **labels, **extra)

    assert grew("promptcast_task_calls_total", status="200") == 3
    assert grew("promptcast_task_calls_total", status="422") == 1
    assert grew("promptcast_task_errors_total", error="TaskInputError") == 1
    assert grew("promptcast_task_call_duration_seconds_count") == 3
    assert grew("promptcast_tokens_total", kind="input") == 3 * INPUT_TOKENS
    assert grew("promptcast_tokens_total", kind="output") == 3 * OUTPUT_TOKENS
    assert grew("promptcast_provider_requests_total") == 3
    assert grew("promptcast_cost_usd_total") == pytest.approx(
        3 * pc.Usage.of("anthropic/claude-sonnet-4-6", INPUT_TOKENS, OUTPUT_TOKENS).cost_usd  # type: ignore[operator]
    )
    assert metric(after, "promptcast_calls_in_flight") == 0
    assert metric(after, "promptcast_http_responses_total", status="200") >= 4


# auth, size limit, input errors


def test_missing_or_wrong_token_gets_401(client: httpx.Client) -> None:
    inputs = {"message": "Checkout crashes"}
    for headers in (
        {},
        {"authorization": "Bearer wrong-token"},
        {"authorization": f"Bearer {TOKEN[:-1]}"},
        {"authorization": f"Basic {TOKEN}"},
        {"authorization": TOKEN},
    ):
        response = client.post("/v1/tasks/extract_ticket", json=inputs, headers=headers)
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/v1/tasks").status_code == 401
    assert client.get("/metrics").status_code == 401
    second = client.post(
        "/v1/tasks/extract_ticket",
        json=inputs,
        headers={"authorization": "bearer second-token-b2c4"},
    )
    assert second.status_code == 200


def test_a_2_mib_body_gets_413(client: httpx.Client) -> None:
    big = json.dumps({"message": "x" * (2 << 20)}).encode()
    response = client.post(
        "/v1/tasks/extract_ticket",
        content=big,
        headers={**AUTH, "content-type": "application/json"},
    )
    assert assert_problem(response, 413, "body-too-large")["limit_bytes"] == 1 << 20

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds for chunked bodies too
        for start in range(0, len(big), 64 << 10):
            yield big[start : start + (64 << 10)]

    chunked = client.post(
        "/v1/tasks/extract_ticket",
        content=chunks(),
        headers={**AUTH, "content-type": "application/json"},
    )
    assert_problem(chunked, 413, "body-too-large")
    small = client.post(
        "/v1/tasks/extract_ticket",
        content=iter([b'{"message": ', b'"Checkout crashes"}']),
        headers={**AUTH, "content-type": "application/json"},
    )
    assert small.status_code == 200, small.text


def test_a_missing_input_gets_422_naming_it(client: httpx.Client, fake: FakeAnthropic) -> None:
    sent = len(fake.requests)
    response = client.post(
        "/v1/tasks/answer_product_question", json={"question": "?"}, headers=AUTH
    )
    body = assert_problem(response, 422, "invalid-input")
    assert body["field"] == "documents" and body["task"] == "answer_product_question"
    assert "documents" in body["detail"] and "required" in body["detail"]
    assert body["errors"][0] == {
        "field": "documents",
        "pointer": "/documents",
        "message": "is required (declared inputs: question, documents)",
        "type": "missing",
    }
    assert len(fake.requests) == sent  # nothing reached the provider


def test_malformed_json_gets_422_naming_the_body(client: httpx.Client) -> None:
    response = client.post(
        "/v1/tasks/extract_ticket",
        content=b'{"message": "unterminated',
        headers={**AUTH, "content-type": "application/json"},
    )
    body = assert_problem(response, 422, "invalid-input")
    assert body["field"] == "body" and "malformed JSON" in body["detail"]
    assert body["errors"][0]["type"] == "json_invalid"


@pytest.mark.parametrize(
    ("payload", "field", "kind"),
    [
        ({"text": "hi", "max_points": "many"}, "max_points", "int_type"),
        ({"text": "hi", "max_points": False}, "max_points", "int_type"),  # strict JSON types
        ({"text": "hi", "max_points": "3"}, "max_points", "int_type"),
        ({"text": "hi", "tone": "dry"}, "tone", "extra_forbidden"),
        (["text", "hi"], "body", "model_type"),
        ({"text": 12}, "text", "string_type"),
    ],
)
def test_wrong_inputs_get_422_naming_the_field(
    client: httpx.Client, payload: Any, field: str, kind: str
) -> None:
    response = client.post("/v1/tasks/summarize", json=payload, headers=AUTH)
    body = assert_problem(response, 422, "invalid-input")
    assert body["field"] == field and body["errors"][0]["type"] == kind
    assert "many" not in json.dumps(body["errors"])  # input values are not echoed back


def test_a_body_not_sent_as_json_gets_415(client: httpx.Client) -> None:
    response = client.post(
        "/v1/tasks/summarize",
        content=b'{"text": "hi"}',
        headers={**AUTH, "content-type": "text/plain"},
    )
    assert assert_problem(response, 415, "unsupported-media-type")["task"] == "summarize"


def test_a_wrong_method_gets_405_listing_every_allowed_one(client: httpx.Client) -> None:
    response = client.delete("/v1/tasks/translate", headers=AUTH)
    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "GET, POST"


def test_an_empty_body_gets_422(client: httpx.Client) -> None:
    response = client.post(
        "/v1/tasks/summarize", headers={**AUTH, "content-type": "application/json"}
    )
    assert assert_problem(response, 422, "invalid-input")["field"] == "body"


# provider failures


def test_provider_failing_every_time_gets_502_with_retry_hint(
    client: httpx.Client, fake: FakeAnthropic, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="promptcast.server")
    sent = len(fake.requests)
    fake.handler = lambda _: error_reply(
        500, "api_error", f"Internal error for key {TEST_KEY}", retry_after_ms="1"
    )
    response = client.post("/v1/tasks/extract_ticket", json={"message": "hi"}, headers=AUTH)
    body = assert_problem(response, 502, "provider-error")
    assert body["retryable"] is True and response.headers["retry-after"] == "1"
    assert "HTTP 500" in body["detail"] and body["task"] == "extract_ticket"
    assert len(fake.requests) - sent >= 1  # the SDK's own retries all failed too
    (line,) = [r for r in log_lines(caplog) if r.get("request_id") == body["request_id"]]
    assert line["status"] == 502 and line["error"] == "BackendError"
    assert TEST_KEY not in json.dumps(line) and "[REDACTED]" in line["error_detail"]


@pytest.mark.parametrize(
    ("reply", "status", "kind", "retry"),
    [
        (
            error_reply(429, "rate_limit_error", "slow down", retry_after_ms="1"),
            503,
            "provider-unavailable",
            "5",
        ),
        (
            error_reply(529, "overloaded_error", "Overloaded", retry_after_ms="1"),
            503,
            "provider-unavailable",
            "2",
        ),
        (
            error_reply(401, "authentication_error", "invalid x-api-key"),
            502,
            "provider-error",
            None,
        ),
        (error_reply(400, "invalid_request_error", "bad model"), 502, "provider-error", None),
    ],
)
def test_provider_errors_map_to_gateway_statuses(
    client: httpx.Client,
    fake: FakeAnthropic,
    reply: FakeReply,
    status: int,
    kind: str,
    retry: str | None,
) -> None:
    fake.handler = lambda _: reply
    response = client.post("/v1/tasks/classify", json={"text": "t", "labels": ["a"]}, headers=AUTH)
    body = assert_problem(response, status, kind)
    assert response.headers.get("retry-after") == retry
    assert body["retryable"] is (retry is not None)


def test_no_valid_output_gets_502_invalid_output(client: httpx.Client, fake: FakeAnthropic) -> None:
    fake.handler = lambda r: message([tool_use_block("Summary", {"summary": 1})])
    response = client.post("/v1/tasks/summarize", json={"text": "long text"}, headers=AUTH)
    body = assert_problem(response, 502, "invalid-output")
    assert "3 attempt(s)" in body["detail"] and body["retryable"] is True


# request ids and logging


def test_request_id_is_kept_or_made(client: httpx.Client) -> None:
    given = client.get("/healthz", headers={"x-request-id": "trace-42.a:b"})
    assert given.headers["x-request-id"] == "trace-42.a:b"
    made = client.get("/healthz")
    assert len(made.headers["x-request-id"]) == 32
    unsafe = client.get("/healthz", headers={"x-request-id": "x" * 300})
    assert unsafe.headers["x-request-id"] != "x" * 300
    for keyish in ("sk-ant-api03-abcdefghijklmnopqrstuvwx", "AKIAIOSFODNN7EXAMPLE"):
        replaced = client.get("/healthz", headers={"x-request-id": keyish})  # never logged
        assert len(replaced.headers["x-request-id"]) == 32
    problem = client.post("/v1/tasks/translate", json={}, headers={**AUTH, "x-request-id": "req-7"})
    assert problem.json()["request_id"] == "req-7" == problem.headers["x-request-id"]


def test_one_json_log_line_per_request_without_the_prompt(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="promptcast.server")
    secret_text = "Mein Passwort ist Schwertfisch"
    response = client.post(
        "/v1/tasks/translate", json={"text": secret_text}, headers={**AUTH, "x-request-id": "log-1"}
    )
    assert response.status_code == 200
    client.get("/healthz", headers={"x-request-id": "log-2"})
    lines = {line["request_id"]: line for line in log_lines(caplog)}
    line = lines["log-1"]
    assert line["status"] == 200 and line["task"] == "translate" and line["version"] == 1
    assert line["model"] == "anthropic/claude-sonnet-4-6" and line["path"] == "/v1/tasks/translate"
    assert line["input_tokens"] == INPUT_TOKENS and line["output_tokens"] == OUTPUT_TOKENS
    assert line["cost_usd"] > 0 and line["latency_ms"] > 0 and line["attempts"] == 1
    assert lines["log-2"]["path"] == "/healthz" and lines["log-2"]["status"] == 200
    assert all(secret_text not in JsonFormatter().format(r) for r in caplog.records)
    assert len([r for r in caplog.records if getattr(r, "request_id", None) == "log-1"]) == 1


def test_debug_logging_adds_the_inputs(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="promptcast.server")
    client.post(
        "/v1/tasks/translate", json={"text": "Guten Tag"}, headers={**AUTH, "x-request-id": "dbg"}
    )
    (line,) = [r for r in log_lines(caplog) if r["request_id"] == "dbg"]
    assert line["inputs"] == {"text": "Guten Tag", "target_language": "English"}


def budget_error(limit: str) -> BudgetExceededError:
    """A budget error of either kind (`limit` is "max_cost_usd" or "timeout_s")."""
    try:
        return BudgetExceededError(f"over its {limit} budget", limit=limit, task="extract_ticket")  # type: ignore[call-arg]
    except TypeError:  # an errors module from before budgets named their limit
        exc = BudgetExceededError(f"over its {limit} budget", task="extract_ticket")
        exc.limit = limit  # type: ignore[attr-defined]
        return exc


# a second app: scripted backends for failures the fake provider cannot produce


@pytest.fixture
def scripted_server(fake: FakeAnthropic) -> Iterator[tuple[str, list[Any]]]:
    """An app whose `extract_ticket` runs on a scripted backend; put exceptions in the list."""
    script: list[Any] = []
    # configure, not override: the server runs in a thread of its own, which a scope set here
    # does not reach (a served app's backends are process-wide by design)
    pc.configure(backends={"test/script": ScriptedBackend(lambda _: script.pop(0))})
    task = pc.builtin_tasks()["extract_ticket"].with_model("test/script")
    with running(create_app(pc.TaskRegistry({"extract_ticket": task}), tokens=[])) as url:
        yield url, script


def test_budget_and_unexpected_errors(
    scripted_server: tuple[str, list[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="promptcast.server")
    url, script = scripted_server
    with httpx.Client(base_url=url) as http:  # no tokens configured: no auth needed
        script.append(budget_error("max_cost_usd"))
        budget = http.post("/v1/tasks/extract_ticket", json={"message": "hi"})
        assert assert_problem(budget, 402, "budget-exceeded")["retryable"] is False
        script.append(RuntimeError(f"bug with {TEST_KEY} inside"))
        crash = http.post(
            "/v1/tasks/extract_ticket", json={"message": "hi"}, headers={"x-request-id": "boom"}
        )
        body = assert_problem(crash, 500, "internal-error")
        assert "Traceback" not in crash.text and TEST_KEY not in crash.text
        script.append(ANSWERS["Ticket"])
        assert (
            http.post("/v1/tasks/extract_ticket", json={"message": "hi"}).json()["output"]
            == ANSWERS["Ticket"]
        )
    (line,) = [r for r in log_lines(caplog) if r["request_id"] == "boom"]
    assert line["status"] == 500 and line["error"] == "RuntimeError"
    assert TEST_KEY not in line["error_detail"] and "[REDACTED]" in line["error_detail"]
    assert body["request_id"] == "boom"
    for record in caplog.records:
        assert "Traceback" not in record.getMessage() and record.exc_info is None


LEAKED = [
    "AKIAIOSFODNN7EXAMPLE",  # an AWS access key id
    "AIzaSyA-1234567890abcdefghijklmnopqrstu",  # a Google API key
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "Bearer abcdefghijklmnop1",
    "sk-proj-abcdefghijklmnopqrstuvwx",
    "hf_abcdefghijklmnopqrstuvwxyz123456",
    "gsk_abcdefghijklmnopqrstuvwxyz0123456789",
    "https://x.example/v1?api_key=abc123def456",
    "plain-openai-key-of-no-known-shape",  # scrubbed as the configured key's literal value
    "server-token-of-no-known-shape",  # this server's own token
]


@pytest.mark.parametrize("secret", LEAKED)
def test_log_lines_and_problems_scrub_every_known_credential(
    scripted_server: tuple[str, list[Any]],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    secret: str,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "plain-openai-key-of-no-known-shape")
    pc.configure(max_retries=0, api_tokens=["server-token-of-no-known-shape"])
    caplog.set_level(logging.INFO, logger="promptcast.server")
    url, script = scripted_server
    script.append(RuntimeError(f"bug near {secret} inside"))
    script.append(BackendError(f"provider said {secret}", provider="test", status=500))
    with httpx.Client(base_url=url) as http:
        crash = http.post("/v1/tasks/extract_ticket", json={"message": "hi"})
        failed = http.post("/v1/tasks/extract_ticket", json={"message": "hi"})
    assert crash.status_code == 500 and failed.status_code == 502
    lines = [line for line in log_lines(caplog) if line.get("error_detail")]
    assert len(lines) == 2
    for text in (crash.text, failed.text, json.dumps(lines)):
        assert secret.split("=")[-1].removeprefix("Bearer ") not in text
    assert all("[REDACTED]" in line["error_detail"] for line in lines)


def test_a_free_text_task_without_inputs(
    fake: FakeAnthropic, write_task: Callable[..., Path]
) -> None:
    fake.handler = None  # the fake's default: text when the request has no tools
    task = pc.Task.from_file(write_task("motto", "---\ndescription: A motto.\n---\nA motto.\n"))
    app = create_app(pc.TaskRegistry({"motto": task}), tokens=[])
    with running(app) as url, httpx.Client(base_url=url) as http:
        ran = http.post("/v1/tasks/motto", headers={"content-type": "application/json"})
        assert ran.status_code == 200, ran.text
        assert ran.json()["output"] == "example"
        assert http.post("/v1/tasks/motto", json={}).json()["output"] == "example"
        schema = http.get("/openapi.json").json()
    operation = schema["paths"]["/v1/tasks/motto"]["post"]
    assert operation.get("requestBody", {}).get("required", False) is False
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert resolve_ref(schema, ok)["properties"]["output"]["type"] == "string"
    assert "security" not in operation  # no tokens, no auth
    assert "tools" not in fake.requests[-1]


def test_problem_statuses_for_each_error() -> None:
    from promptcast.server.problems import problem_for_error

    timeout = BackendError(
        "cannot reach the Anthropic API (ReadTimeout: timed out)",
        provider="anthropic",
        retryable=True,
    )
    cases: list[tuple[pc.PromptcastError, int, str]] = [
        (timeout, 504, "provider-timeout"),
        (
            BackendError("x", provider="anthropic", status=504, retryable=True),
            504,
            "provider-timeout",
        ),
        (BackendError("refused", provider="anthropic", retryable=True), 502, "provider-error"),
        (budget_error("max_cost_usd"), 402, "budget-exceeded"),
        (budget_error("timeout_s"), 504, "provider-timeout"),
        (OutputTruncatedError("cut"), 502, "output-truncated"),
        (OutputValidationError("bad"), 502, "invalid-output"),
        (
            ConfigurationError(f"key {TEST_KEY} rejected", env_var="ANTHROPIC_API_KEY"),
            503,
            "not-configured",
        ),
        (TaskInputError("t", "text", "is required"), 422, "invalid-input"),
    ]
    for exc, status, kind in cases:
        body, headers = problem_for_error(exc, instance="/v1/tasks/t", request_id="r")
        assert (body["status"], body["type"]) == (status, f"urn:promptcast:problem:{kind}"), exc
        assert TEST_KEY not in json.dumps(body)
        if body.get("retryable"):
            assert headers["retry-after"] == str(body["retry_after"])


# settings


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTCAST_MAX_CONCURRENCY", "3")
    monkeypatch.setenv("PROMPTCAST_API_TOKENS", " a-token , , b-token ")
    app = create_app()
    assert app.state.promptcast.max_concurrency == 3
    assert "securitySchemes" in app.openapi()["components"]
    for var, value in (
        ("PROMPTCAST_MAX_BODY_BYTES", "lots"),
        ("PROMPTCAST_MAX_CONCURRENCY", "0"),
        ("PROMPTCAST_ALLOWED_HOSTS", "http://api.example.com/"),
    ):
        with monkeypatch.context() as scoped:
            scoped.setenv(var, value)
            pc.reset_defaults()  # settings are read once; a new value needs a fresh read
            with pytest.raises(ConfigurationError) as caught:
                create_app()
        assert caught.value.env_var == var
        pc.reset_defaults()


def test_loopback_detection() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.4", "example.org"))


def test_the_server_never_imports_the_test_doubles() -> None:
    code = (
        "import sys; from promptcast.server import create_app; create_app(); "
        "print('promptcast.testing' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_importing_promptcast_or_its_cli_loads_no_server_stack() -> None:
    code = (
        "import sys, promptcast, promptcast.cli; "
        "print(' '.join(m for m in ('fastapi', 'starlette', 'uvicorn', 'prometheus_client') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
