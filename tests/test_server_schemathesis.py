"""Schemathesis against the app's own OpenAPI document: generated requests for every operation (a
bounded number each), sent to the app running under uvicorn, find no 5xx, no undocumented status
and no response that breaks its schema."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from promptcast.server import create_app
from promptcast.testing import FakeAnthropic, message, text_block, tool_use_block
from tests.conftest import TEST_KEY
from tests.serving import TOKEN, running

APP = create_app(tokens=[TOKEN])
# the token goes in as the schema's own bearerAuth credentials, so Schemathesis can also check that
# leaving it out or changing it is refused
CONFIG = schemathesis.config.SchemathesisConfig.from_dict(
    {"auth": {"openapi": {"bearerAuth": {"bearer": TOKEN}}}}
)
schema = schemathesis.openapi.from_dict(APP.openapi(), config=CONFIG)


def first_label(request: dict[str, Any]) -> str:
    """The first of the labels the classify template lists in its system prompt."""
    system = request["system"]
    text = system if isinstance(system, str) else "".join(b["text"] for b in system)
    listed = text.split("nothing else:\n", 1)[1].split("\nThe text inside <text>", 1)[0]
    return listed.removeprefix("- ").removesuffix("\n").split("\n- ", 1)[0]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    """Answers every call with a schema-valid placeholder; `classify` with one of its labels, as
    its output must be one of them."""
    with FakeAnthropic() as provider:

        def answer(request: dict[str, Any]) -> dict[str, Any]:
            tool = (request.get("tools") or [{}])[0].get("name")
            native = request.get("output_config", {}).get("format", {}).get("schema", {})
            if "Classification" not in (tool, native.get("title")):
                return provider.auto(request)
            label = {"label": first_label(request), "reason": "placeholder"}
            block = (
                tool_use_block("Classification", label)
                if tool
                else text_block(json.dumps(label))  # native mode: the JSON as text
            )
            return message([block], model=request["model"])

        provider.handler = answer
        yield provider


@pytest.fixture(scope="module")
def base_url(fake: FakeAnthropic) -> Iterator[str]:
    with running(APP) as url:
        yield url


@pytest.fixture(autouse=True)
def _provider(fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", TEST_KEY)


@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_keeps_its_own_contract(case: schemathesis.Case, base_url: str) -> None:
    response = case.call_and_validate(base_url=base_url)
    assert response.status_code < 500
    assert "Traceback" not in response.text and TEST_KEY not in response.text
