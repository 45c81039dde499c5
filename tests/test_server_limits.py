"""The server's limits: a bounded 422 body, the OpenAPI document built once, /docs without
internet, the provider's Retry-After passed on (capped), client disconnects counted as 499 and
their calls cancelled, and a hanging cache that never stalls /healthz."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest

import promptcast as pc
from promptcast.backends import ModelRequest
from promptcast.errors import BackendError
from promptcast.server import _openapi, create_app
from promptcast.server.logs import JsonFormatter
from promptcast.server.problems import MAX_LISTED_ERRORS, MAX_RETRY_AFTER_S, problem_for_error
from promptcast.testing import ScriptedBackend
from tests.serving import TOKEN, metric, running

TICKET = {"issue": "Checkout crashes", "urgency": "high", "product": "checkout"}
JSON = {"content-type": "application/json"}


def scripted_app(model: str, **options: Any) -> Any:
    """The built-ins, each pinned to the scripted `model`."""
    registry = pc.TaskRegistry({n: t.with_model(model) for n, t in pc.builtin_tasks().items()})
    return create_app(registry, **options)


# 422 bodies stay small


@pytest.mark.parametrize(
    ("task", "payload"),
    [
        # 110,000 wrong-typed list items (~660 KB): one error each
        ("classify", {"text": "t", "labels": [12345] * 110_000}),
        # huge dict keys with wrong-typed values: each key is part of its error's pointer
        ("answer_product_question", {"question": "q", "documents": {"k" * 500_000: 1, "x": 2}}),
        # both at once, and an undeclared input beside them
        (
            "answer_product_question",
            {"question": 1, "documents": {f"d{i}": i for i in range(60_000)}, "extra": True},
        ),
    ],
)
def test_a_large_invalid_body_gets_a_small_422(task: str, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    assert len(body) > 400_000
    with running(scripted_app("test/never", tokens=[])) as url:
        response = httpx.post(f"{url}/v1/tasks/{task}", content=body, headers=JSON, timeout=60)
    assert response.status_code == 422, response.text[:500]
    assert len(response.content) < 16_384, len(response.content)
    problem = response.json()
    assert len(problem["errors"]) == MAX_LISTED_ERRORS or problem.get("errors_omitted") is None
    listed = len(problem["errors"]) + problem.get("errors_omitted", 0)
    assert listed >= 2
    for item in problem["errors"]:
        assert all(len(item[key]) <= 200 for key in ("field", "pointer", "message", "type"))
    assert "k" * 300 not in response.text and "12345" not in response.text


def test_the_422_counts_what_it_leaves_out() -> None:
    payload = {"text": "t", "labels": [1] * 1000}
    with running(scripted_app("test/never", tokens=[])) as url:
        problem = httpx.post(f"{url}/v1/tasks/classify", json=payload).json()
    assert len(problem["errors"]) == MAX_LISTED_ERRORS
    assert problem["errors_omitted"] == 1000 - MAX_LISTED_ERRORS
    assert problem["errors"][3]["pointer"] == "/labels/3"


# the OpenAPI document and /docs


def test_the_openapi_document_is_built_once_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[int] = []
    original = _openapi.get_openapi

    def counting(**kwargs: Any) -> dict[str, Any]:
        built.append(1)
        return original(**kwargs)

    monkeypatch.setattr(_openapi, "get_openapi", counting)
    app = scripted_app("test/never", tokens=[TOKEN])
    assert built == [1]
    with running(app) as url:
        documents = {httpx.get(f"{url}/openapi.json").content for _ in range(5)}
    assert built == [1]  # served from bytes made at start-up, never rebuilt
    (document,) = documents
    assert json.loads(document) == app.openapi()


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [v for k, v in attrs if k in ("src", "href") and v]


def test_docs_work_offline_from_installed_assets() -> None:
    with running(scripted_app("test/never", tokens=[TOKEN])) as url:
        page = httpx.get(f"{url}/docs")  # no token: docs are open, like /openapi.json
        assert page.status_code == 200 and "SwaggerUIBundle" in page.text
        assert not re.search(r"(https?:)?//[a-z0-9]", page.text, re.IGNORECASE), page.text
        assert '"validatorUrl": null' in page.text  # Swagger UI must not call its validator
        parser = _Links()
        parser.feed(page.text)
        assert len(parser.links) == 3  # script, style sheet, icon
        kinds = set()
        for link in parser.links:
            asset = httpx.get(f"{url}/{link}")
            assert asset.status_code == 200 and len(asset.content) > 1000, link
            kinds.add(asset.headers["content-type"].split(";")[0])
        assert kinds == {"text/javascript", "text/css", "image/png"}
        bundle = httpx.get(f"{url}/docs-assets/swagger-ui-bundle.js").text
        assert "OpenAPI 3.1" in bundle or "3.1.0" in bundle  # a Swagger UI that reads 3.1
        spec_url = re.search(r"url: '([^']+)'", page.text)
        assert spec_url and httpx.get(f"{url}/{spec_url.group(1)}").status_code == 200
        # the assets are open, but only the assets
        for escape in ("%2e%2e/pyproject.toml", "..%2fREADME.md", "%2e%2e/%2e%2e/etc/passwd"):
            assert httpx.get(f"{url}/docs-assets/{escape}").status_code == 404, escape


# Retry-After from the provider


@pytest.mark.parametrize(
    ("status", "retryable", "provider_wait", "expected"),
    [
        (429, True, 17.2, "18"),
        (429, True, 3600, str(MAX_RETRY_AFTER_S)),
        (429, True, None, "5"),
        (503, True, 0.001, "1"),
        (529, True, 30, "30"),
        (529, True, float("inf"), "2"),
        (504, True, 7, "7"),
        (500, True, 3, "3"),
        (400, False, 10, None),
    ],
)
def test_the_providers_retry_after_is_passed_on_capped(
    status: int, retryable: bool, provider_wait: float | None, expected: str | None
) -> None:
    exc = BackendError(
        "x", provider="anthropic", status=status, retryable=retryable, retry_after=provider_wait
    )
    body, headers = problem_for_error(exc, instance="/v1/tasks/t", request_id="r")
    assert headers.get("retry-after") == expected
    assert body.get("retry_after") == (int(expected) if expected else None)


def test_a_rate_limited_call_tells_the_client_the_providers_wait() -> None:
    pc.configure(max_retries=0)
    rate_limited = BackendError(
        "slow down", provider="test", status=429, retryable=True, retry_after=17.2
    )
    pc.configure(backends={"test/limited": ScriptedBackend([rate_limited])})
    with running(scripted_app("test/limited", tokens=[])) as url:
        response = httpx.post(f"{url}/v1/tasks/extract_ticket", json={"message": "hi"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "18" and response.json()["retry_after"] == 18


# client disconnects


def test_a_client_that_disconnects_is_counted_as_499_and_its_call_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="promptcast.server")
    started, cancelled = threading.Event(), threading.Event()

    async def slow(request: ModelRequest) -> dict[str, Any]:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return TICKET

    pc.configure(backends={"test/slow": ScriptedBackend(slow)})
    with running(scripted_app("test/slow", tokens=[])) as url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{url}/v1/tasks/extract_ticket",
                json={"message": "hi"},
                headers={"x-request-id": "gone-1"},
                timeout=httpx.Timeout(10, read=0.5),
            )
        assert started.is_set()
        assert cancelled.wait(10), "the provider call went on after the client left"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            scraped = httpx.get(f"{url}/metrics").text
            if metric(scraped, "promptcast_http_responses_total", status="499"):
                break
            time.sleep(0.05)
        in_flight = metric(scraped, "promptcast_calls_in_flight")
    assert metric(scraped, "promptcast_http_responses_total", status="499") == 1
    assert metric(scraped, "promptcast_http_responses_total", status="500") == 0
    labels = {"task": "extract_ticket", "model": "test/slow"}
    assert metric(scraped, "promptcast_task_calls_total", status="499", **labels) == 1
    assert metric(scraped, "promptcast_task_calls_total", status="500", **labels) == 0
    assert in_flight == 0
    (line,) = [
        json.loads(JsonFormatter().format(r))
        for r in caplog.records
        if r.name == "promptcast.server" and getattr(r, "request_id", None) == "gone-1"
    ]
    assert line["status"] == 499 and line["error"] == "client-disconnected"


def test_a_client_that_disconnects_while_sending_is_a_499_not_a_500() -> None:
    with running(scripted_app("test/never", tokens=[])) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                b"POST /v1/tasks/extract_ticket HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                b'{"message": "half'
            )
            time.sleep(0.2)
        deadline = time.monotonic() + 10
        scraped = ""
        while time.monotonic() < deadline:
            scraped = httpx.get(f"{url}/metrics").text
            if metric(scraped, "promptcast_http_responses_total", status="499"):
                break
            time.sleep(0.05)
    assert metric(scraped, "promptcast_http_responses_total", status="499") == 1
    assert metric(scraped, "promptcast_http_responses_total", status="500") == 0


# a cache that never answers


def test_healthz_answers_fast_while_calls_wait_on_a_silent_cache(
    silent_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPTCAST_CACHE", f"redis://127.0.0.1:{silent_server}/0")
    pc.reset_defaults()

    async def thinking(request: ModelRequest) -> dict[str, Any]:
        await asyncio.sleep(1.0)
        return TICKET

    pc.configure(backends={"test/cached": ScriptedBackend(thinking)})
    calls = 8
    with running(scripted_app("test/cached", tokens=[])) as url:

        async def scenario() -> tuple[list[int], list[float]]:
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                in_flight = [
                    asyncio.create_task(
                        http.post("/v1/tasks/extract_ticket", json={"message": f"order {i}"})
                    )
                    for i in range(calls)
                ]
                await asyncio.sleep(0.1)  # the calls are reading the cache, or the "model"
                latencies = []
                async with httpx.AsyncClient(base_url=url, timeout=10) as probe:
                    for _ in range(15):
                        began = time.perf_counter()
                        assert (await probe.get("/healthz")).status_code == 200
                        latencies.append(time.perf_counter() - began)
                        await asyncio.sleep(0.05)
                statuses = [(await done).status_code for done in in_flight]
                return statuses, latencies

        statuses, latencies = asyncio.run(scenario())
    assert statuses == [200] * calls  # the cache was skipped, not waited for
    assert max(latencies) < 0.2, latencies
