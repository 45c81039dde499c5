"""Schemathesis against the app's own OpenAPI document: generated requests for every operation (a
bounded number each), sent to the app running under uvicorn, find no 5xx, no undocumented status
and no response that breaks its schema."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from promptcast.server import create_app
from promptcast.testing import FakeAnthropic
from tests.conftest import TEST_KEY
from tests.serving import TOKEN, running

APP = create_app(tokens=[TOKEN])
# the token goes in as the schema's own bearerAuth credentials, so Schemathesis can also check that
# leaving it out or changing it is refused
CONFIG = schemathesis.config.SchemathesisConfig.from_dict(
    {"auth": {"openapi": {"bearerAuth": {"bearer": TOKEN}}}}
)
schema = schemathesis.openapi.from_dict(APP.openapi(), config=CONFIG)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as provider:  # answers every call with a schema-valid placeholder
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
