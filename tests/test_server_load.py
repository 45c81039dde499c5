"""A burst of 1,000 concurrent requests on loopback: all answered, none lost, and the provider never
sees more calls at once than PROMPTCAST_MAX_CONCURRENCY allows (the rest wait in line)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from promptcast.server import create_app
from tests.conftest import TEST_KEY
from tests.serving import AUTH, TOKEN, child_fake, running

REQUESTS = 1000
CLIENT_CONNECTIONS = 32  # the client's bound: at most 32 of the 1,000 requests on the wire
LIMIT = 16  # the server's limit on provider calls in flight
PROVIDER_DELAY_S = 0.05


async def burst(base_url: str) -> list[tuple[int, int, dict[str, Any], str]]:
    """All requests started at once, CLIENT_CONNECTIONS of them on the wire at a time (a semaphore,
    not httpx's pool queue, which rescans every waiting request on each hand-out).

    Idle connections expire on the client (2 s) before uvicorn closes them (5 s), so the client
    never reuses a connection the server is closing.
    """
    limits = httpx.Limits(
        max_connections=CLIENT_CONNECTIONS,
        max_keepalive_connections=CLIENT_CONNECTIONS,
        keepalive_expiry=2,
    )
    gate = asyncio.Semaphore(CLIENT_CONNECTIONS)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=120) as http:

        async def one(i: int) -> tuple[int, int, dict[str, Any], str]:
            async with gate:
                response = await http.post(
                    "/v1/tasks/extract_ticket",
                    json={"message": f"Where is my order #{i} ? It is late."},
                    headers={**AUTH, "x-request-id": f"burst-{i}"},
                )
            return i, response.status_code, response.json(), response.headers["x-request-id"]

        return await asyncio.gather(*(one(i) for i in range(REQUESTS)))


def test_a_burst_of_1000_requests_queues_under_the_limit_and_loses_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with child_fake(PROVIDER_DELAY_S) as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", TEST_KEY)
        monkeypatch.setenv("PROMPTCAST_MAX_CONCURRENCY", str(LIMIT))
        with running(create_app(tokens=[TOKEN])) as base_url:
            started = time.perf_counter()
            results = asyncio.run(burst(base_url))
            elapsed = time.perf_counter() - started
            metrics = httpx.get(f"{base_url}/metrics", headers=AUTH).text
        stats = fake.stop()
    assert len(results) == REQUESTS
    failures = [(i, status, body) for i, status, body, _ in results if status != 200]
    assert not failures, failures[:3]
    for i, _, body, request_id in results:  # every answer is the answer to its own request
        assert request_id == f"burst-{i}"
        assert body["output"]["issue"] == f"order #{i} is late"
    assert stats["calls"] == REQUESTS
    assert stats["peak"] <= LIMIT, f"peak {stats['peak']} provider calls in flight"
    assert stats["peak"] >= LIMIT // 2, f"the limit was never approached (peak {stats['peak']})"
    # 1,000 calls of 50 ms through 16 slots cannot take less than 1000 * 0.05 / 16 s
    assert elapsed >= REQUESTS * PROVIDER_DELAY_S / LIMIT * 0.95
    served = (
        'promptcast_task_calls_total{model="anthropic/claude-sonnet-4-6",status="200",'
        'task="extract_ticket"} 1000.0'
    )
    assert served in metrics
    assert "promptcast_calls_in_flight 0.0" in metrics
    assert "promptcast_calls_waiting 0.0" in metrics
