"""examples/service: the support-desk service triages a message through three tasks over HTTP,
against the real promptcast app (under uvicorn) and the fake provider."""

from __future__ import annotations

import importlib.util
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from promptcast.server import create_app
from promptcast.testing import FakeAnthropic, error_reply
from promptcast.testing._fake_anthropic import answer, output_name
from tests.conftest import ROOT
from tests.serving import TOKEN, running

ANSWERS: dict[str, dict[str, Any]] = {
    "Translation": {"translation": "The blender no longer turns on.", "source_language": "German"},
    "Ticket": {"issue": "The blender does not turn on", "urgency": "medium", "product": "Aero X2"},
    "ProductAnswer": {
        "answer": "Check that the jar is locked onto the base.",
        "answered": True,
        "cited_document_ids": ["kb-power"],
    },
}


def load_example() -> ModuleType:
    path = ROOT / "examples" / "service" / "support_desk.py"
    spec = importlib.util.spec_from_file_location("support_desk", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def promptcast_url(fake_anthropic: FakeAnthropic) -> Iterator[str]:
    def handler(request: dict[str, Any]) -> dict[str, Any]:
        name = output_name(request)
        assert name is not None, request
        return answer(request, ANSWERS[name])

    fake_anthropic.handler = handler
    with running(create_app(tokens=[TOKEN])) as url:
        yield url


def test_the_example_service_triages_a_message(
    promptcast_url: str, fake_anthropic: FakeAnthropic
) -> None:
    desk = load_example()
    client = desk.PromptcastClient(promptcast_url, TOKEN)
    result = desk.triage(client, "Der Mixer geht seit gestern nicht mehr an.", "business")
    assert result["language"] == "German"
    assert result["ticket"] == ANSWERS["Ticket"]
    assert result["reply"]["cited_document_ids"] == ["kb-power"]
    assert result["cost_usd"] > 0
    sent = [json.dumps(r) for r in fake_anthropic.requests]
    assert "business plan" in sent[1] and "kb-power" in sent[2]  # inputs went where they belong

    server = desk.make_server(client, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        inbox = f"http://127.0.0.1:{server.server_address[1]}/inbox"
        request = urllib.request.Request(
            inbox,
            data=json.dumps({"message": "Der Mixer geht nicht."}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read())["ticket"]["product"] == "Aero X2"
        fake_anthropic.handler = lambda _: error_reply(
            400, "invalid_request_error", "bad request", retry_after_ms="1"
        )
        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(request, timeout=30)
        problem = json.loads(failed.value.read())
        failed.value.close()
        assert failed.value.code == 502 and problem["type"].endswith("provider-error")
    finally:
        server.shutdown()
        server.server_close()


def test_the_example_client_raises_the_problem_detail(promptcast_url: str) -> None:
    desk = load_example()
    with pytest.raises(desk.TaskCallError) as failed:
        desk.PromptcastClient(promptcast_url, "wrong-token").call("translate", {"text": "x"})
    assert failed.value.status == 401 and failed.value.problem["type"].endswith("unauthorized")
    with pytest.raises(desk.TaskCallError) as missing:
        desk.PromptcastClient(promptcast_url, TOKEN).call("translate", {})
    assert missing.value.status == 422 and missing.value.problem["field"] == "text"
