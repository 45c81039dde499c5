"""Added latency of the HTTP path: a task called through `promptcast serve` vs `task.arun` directly.

Three processes on loopback: a fake Messages API (answers at once, so the numbers are overhead,
not model time), `promptcast serve` (uvicorn, as deployed: JSON request log, metrics, bearer
token), and this one, which makes the same `extract_ticket` call both ways at a fixed concurrency.
Rounds alternate direct and HTTP so that drift in machine speed hits both alike; percentiles are
over all requests of all rounds. "Added" is the HTTP percentile minus the direct one.

Two HTTP clients are measured: httpx (what most Python callers use) and a minimal keep-alive
client on raw asyncio streams, which shows the server's own share. This is a benchmark, not a
test: it prints, it does not assert.

At concurrency 1 the added latency is the pure per-request cost of the HTTP hop. At higher
concurrency the fake answers at once, so the direct path is CPU-bound in one process (the SDK's
work queues on one event loop) while the HTTP path spreads that work over two processes: compare
those rows with care, on a 2-core machine they measure scheduling as much as overhead.

Run: python benchmarks/service.py [--requests 300] [--concurrency 1,4] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

TOKEN = "bench-token-0123456789"
FAKE = """
import sys
from promptcast.testing import FakeAnthropic
fake = FakeAnthropic().start()
print(fake.base_url, flush=True)
sys.stdin.read()
"""
INPUTS = {"message": "Checkout page crashes since this morning, we lose sales!"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def at_concurrency(
    call: Callable[[], Awaitable[Any]], requests: int, concurrency: int
) -> list[float]:
    """Latency in ms of each of `requests` calls, `concurrency` of them in flight at a time."""
    latencies: list[float] = []
    remaining = iter(range(requests))

    async def worker() -> None:
        for _ in remaining:
            started = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


class RawClient:
    """HTTP/1.1 keep-alive POSTs on raw asyncio streams: a pool of connections, no parsing
    beyond the status line and Content-Length."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, body: bytes) -> int:
        if self.idle:
            reader, writer = self.idle.pop()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        head = (
            f"POST {path} HTTP/1.1\r\nhost: {self.host}\r\nauthorization: Bearer {TOKEN}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        status = int((await reader.readline()).split()[1])
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await reader.readexactly(length)
        self.idle.append((reader, writer))
        return status

    async def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
            await writer.wait_closed()


def start_server(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "promptcast.cli", "serve", "--port", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stderr is not None
    while True:
        line = server.stderr.readline()
        if not line:
            raise RuntimeError("promptcast serve exited before it listened")
        message = json.loads(line).get("message", "")
        if "running on http://" in message:
            base_url = message.split("running on ", 1)[1].split()[0]
            break
    # keep draining its request log so the pipe never fills
    import threading

    threading.Thread(target=server.stderr.read, daemon=True).start()
    return server, base_url


async def bench(
    base_url: str, args: argparse.Namespace, concurrency: int
) -> dict[str, list[float]]:
    import httpx

    import promptcast as pc
    from promptcast.backends import resolve

    task = pc.builtin_tasks()["extract_ticket"]
    body = json.dumps(INPUTS).encode()
    host, port = base_url.removeprefix("http://").split(":")
    raw = RawClient(host, int(port))
    limits = httpx.Limits(max_connections=concurrency)
    headers = {"authorization": f"Bearer {TOKEN}"}
    samples: dict[str, list[float]] = {"direct": [], "httpx": [], "raw": []}
    async with httpx.AsyncClient(base_url=base_url, limits=limits, headers=headers) as client:

        async def direct() -> None:
            run = await task.arun(**INPUTS)
            assert run.usage.cost_usd is not None  # read it, as the server does for its answer

        async def via_httpx() -> None:
            response = await client.post("/v1/tasks/extract_ticket", json=INPUTS)
            assert response.status_code == 200, response.text
            response.json()

        async def via_raw() -> None:
            assert await raw.post("/v1/tasks/extract_ticket", body) == 200

        calls = {"direct": direct, "httpx": via_httpx, "raw": via_raw}
        for call in calls.values():  # warm up: imports, connections, caches
            await at_concurrency(call, max(50, concurrency * 10), concurrency)
        for _ in range(args.rounds):
            for name, call in calls.items():
                samples[name] += await at_concurrency(call, args.requests, concurrency)
    await raw.close()
    backend, _ = resolve(task.model)
    await backend.aclose()  # type: ignore[attr-defined]
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per round and path")
    parser.add_argument("--concurrency", default="1,4", help="comma list of concurrency levels")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    fake = subprocess.Popen(
        [sys.executable, "-c", FAKE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert fake.stdout is not None and fake.stdin is not None
    env = {
        **os.environ,
        "ANTHROPIC_BASE_URL": fake.stdout.readline().strip(),
        "ANTHROPIC_API_KEY": "sk-ant-bench",
        "PROMPTCAST_API_TOKENS": TOKEN,
    }
    os.environ.update(env)
    server, base_url = start_server(env)
    levels = [int(c) for c in args.concurrency.split(",")]
    results: dict[int, dict[str, list[float]]] = {}
    try:
        for concurrency in levels:
            results[concurrency] = asyncio.run(bench(base_url, args, concurrency))
    finally:
        server.terminate()
        server.wait(timeout=30)
        fake.stdin.close()
        fake.wait(timeout=10)

    import fastapi
    import uvicorn

    import promptcast as pc

    print(
        f"extract_ticket, {args.requests * args.rounds} requests per path and level "
        f"({args.rounds} interleaved rounds), loopback fake provider answering at once"
    )
    for concurrency, samples in results.items():
        direct = samples["direct"]
        p50, p99 = percentile(direct, 50), percentile(direct, 99)
        print(f"concurrency {concurrency}:")
        print(f"  {'direct task.arun':<26} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")
        for name, label in (("httpx", "HTTP, httpx client"), ("raw", "HTTP, raw asyncio client")):
            values = samples[name]
            h50, h99 = percentile(values, 50), percentile(values, 99)
            print(
                f"  {label:<26} p50 {h50:6.2f} ms   p99 {h99:6.2f} ms   "
                f"added: p50 {h50 - p50:+.2f} ms, p99 {h99 - p99:+.2f} ms"
            )
    loops = "uvloop" if _has("uvloop") else "asyncio"
    parser_name = "httptools" if _has("httptools") else "h11"
    print(
        f"python {sys.version.split()[0]}, promptcast {pc.__version__}, fastapi "
        f"{fastapi.__version__}, uvicorn {uvicorn.__version__} ({loops}, {parser_name})"
    )


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    main()
