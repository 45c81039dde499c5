"""Wall time of a response-cache hit vs a call that goes to the provider (a loopback fake).

The fake Messages API runs in a separate process and answers every request with a tool call for a
nested invoice schema. The same task call is timed with the cache off (each call is a request), and
as a hit in a sqlite cache and, when `redis-server` is on PATH, in a redis cache started here on a
loopback port. A hit still checks inputs, renders the prompt, hashes the key and validates the
stored output; it only skips the request. Rounds interleave the contenders so that drift in machine
speed hits them all alike. This is a benchmark, not a test: it prints, it does not assert.

Run: python benchmarks/cache.py [--calls 300] [--rounds 7]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import INVOICE_TASK, fake_anthropic_process

INVOICE = "ACME Corp, 2 widgets at 3.50, 1 gadget at 10.00, due 2026-12-01"


@contextmanager
def redis_server() -> Iterator[str | None]:
    """A throwaway redis-server on a free loopback port, or `None` when it is not installed."""
    exe = shutil.which("redis-server")
    if exe is None:
        yield None
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    folder = tempfile.mkdtemp()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen([exe, *args, "--dir", folder], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def wall_per_call(
    contenders: dict[str, tuple[Callable[[], Any], Callable[[], Any]]], calls: int, rounds: int
) -> dict[str, float]:
    """Median over rounds of wall-clock µs per sequential call; each contender is (setup, call)
    and its setup runs untimed before each of its rounds."""
    for setup, call in contenders.values():
        setup()
        for _ in range(max(10, calls // 10)):
            call()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, (setup, call) in contenders.items():
            setup()
            start = time.perf_counter()
            for _ in range(calls):
                call()
            samples[name].append((time.perf_counter() - start) / calls * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    with fake_anthropic_process(), redis_server() as redis_url:
        import promptcast as pc
        from promptcast.cache import close_caches

        folder = Path(tempfile.mkdtemp())
        (folder / "invoice.jinja").write_text(INVOICE_TASK)
        task = pc.Task.from_file(folder / "invoice.jinja")

        def using(cache: str) -> tuple[Callable[[], Any], Callable[[], Any]]:
            def call() -> Any:
                run = task.run(invoice=INVOICE)
                assert run.cached == (cache != "off")  # the first call fills the cache
                return run.output

            def setup() -> None:
                pc.configure(cache=cache)
                if cache != "off":
                    task.run(invoice=INVOICE)

            return setup, call

        contenders = {"call to the fake server (cache off)": using("off")}
        contenders["sqlite cache hit"] = using(f"sqlite:///{folder / 'cache.db'}")
        if redis_url:
            contenders["redis cache hit (loopback)"] = using(redis_url)
        results = wall_per_call(contenders, args.calls, args.rounds)
        close_caches()

    base = results["call to the fake server (cache off)"]
    print(
        f"wall time per task call, {args.calls} sequential calls x {args.rounds} rounds "
        "(median), loopback fake Messages API in another process"
    )
    for name, micros in results.items():
        print(f"  {name:<40} {micros:8.0f} µs   {micros / base:5.3f}x a call")
    if not redis_url:
        print("  redis cache hit: skipped (redis-server is not on PATH)")
    hit = max(v for k, v in results.items() if "hit" in k)
    print(f"slowest hit / call = {hit / base:.3f}x (target <= 0.1x)")
    print(f"python {sys.version.split()[0]}, promptcast {pc.__version__}")


if __name__ == "__main__":
    main()
