"""Helpers for the server tests: run a real app under uvicorn on 127.0.0.1 in a thread, and a fake
provider in a child process that counts the calls it has in flight."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "pc-test-token-7f3a9c1e5b"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@contextmanager
def running(app: Any, **options: Any) -> Iterator[str]:
    """Serve `app` on a random loopback port until the block ends; yields the base URL.

    uvicorn runs its lifespan, so the app's shutdown closes its provider clients on its own loop.
    """
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        access_log=False,
        lifespan="on",
        **options,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


class CountingProvider:
    """A fake provider handler: each call takes `delay_s`; records the peak of calls in flight.

    It answers `extract_ticket` with a ticket naming the order number found in the prompt, so a
    caller can tell that each answer belongs to its own request.
    """

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0
        self.calls = 0

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        from promptcast.testing import message, tool_use_block

        with self.lock:
            self.in_flight += 1
            self.calls += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            time.sleep(self.delay_s)
        finally:
            with self.lock:
                self.in_flight -= 1
        text = json.dumps(request["messages"])
        number = text.split("order #", 1)[1].split()[0] if "order #" in text else "?"
        answer = {"issue": f"order #{number} is late", "urgency": "medium", "product": "shop"}
        return message([tool_use_block("Ticket", answer)], model=request["model"])


@dataclass
class ChildFake:
    """A `FakeAnthropic` with a `CountingProvider`, in a child process (so its work does not
    compete for this process's GIL); `stop()` fills `stats` with its peak and call count."""

    process: subprocess.Popen[str]
    base_url: str
    stats: dict[str, int] = field(default_factory=dict)

    def stop(self) -> dict[str, int]:
        out, _ = self.process.communicate("", timeout=30)
        self.stats = json.loads(out.strip().splitlines()[-1])
        return self.stats


@contextmanager
def child_fake(delay_s: float) -> Iterator[ChildFake]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.serving", str(delay_s)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    child = ChildFake(process, process.stdout.readline().strip())
    try:
        yield child
    finally:
        if process.poll() is None:
            child.stop()


def _child_main(delay_s: float) -> None:
    from promptcast.testing import FakeAnthropic

    counting = CountingProvider(delay_s)
    with FakeAnthropic(handler=counting) as fake:
        print(fake.base_url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin
        print(json.dumps({"peak": counting.peak, "calls": counting.calls}), flush=True)


if __name__ == "__main__":
    _child_main(float(sys.argv[1]))
