"""What the benchmarks share: the invoice schema and a fake provider in its own process.

The fake runs in a child process so that its CPU never counts against the client being measured.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import BaseModel

__all__ = [
    "INVOICE_TASK",
    "Invoice",
    "LineItem",
    "async_fake_anthropic_process",
    "fake_anthropic_process",
]

INVOICE_TASK = """\
---
inputs: {invoice: str}
output: _common:Invoice
output_mode: tool  # the same request as the raw SDK's tool call
max_tokens: 1024
---
{% role "system" %}You extract invoices.{% endrole %}
{{ invoice | fence("invoice") }}
"""


class LineItem(BaseModel):
    description: str
    quantity: int
    unit_price: float


class Invoice(BaseModel):
    """An invoice with its line items."""

    vendor: str
    due_date: str
    currency: str
    items: list[LineItem]
    total: float


_SERVER = """
import sys
from promptcast.testing import FakeAnthropic, FakeReply
from promptcast.testing._fake_anthropic import _auto
delay = float(sys.argv[1])
handler = (lambda request: FakeReply(_auto(request), delay_s=delay)) if delay else None
fake = FakeAnthropic(handler=handler).start()
print(fake.base_url, flush=True)
sys.stdin.read()
"""


# The same answers from one asyncio loop instead of a thread per connection: with 1,024 requests
# in flight, `FakeAnthropic`'s threads (one per connection, all sleeping out the delay under one
# GIL) become the bottleneck, and a throughput benchmark would measure the fake, not the client.
_ASYNC_SERVER = """
import asyncio, json, os, sys
from promptcast.testing._fake_anthropic import _auto
delay = float(sys.argv[1])

async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\\r\\n\\r\\n")
            length = 0
            for line in head.split(b"\\r\\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = json.loads(await reader.readexactly(length)) if length else {}
            await asyncio.sleep(delay)
            payload = json.dumps(_auto(body)).encode()
            writer.write(
                b"HTTP/1.1 200 OK\\r\\ncontent-type: application/json\\r\\n"
                b"content-length: %d\\r\\n\\r\\n%s" % (len(payload), payload)
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=4096)
    print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    os._exit(0)  # the parent is done: no need to wind down the open connections one by one

asyncio.run(main())
"""


@contextmanager
def fake_anthropic_process(delay_s: float = 0.0) -> Iterator[str]:
    """A loopback fake Messages API in a child process; sets ANTHROPIC_BASE_URL and a key."""
    with _child(_SERVER, delay_s) as base_url:
        yield base_url


@contextmanager
def async_fake_anthropic_process(delay_s: float = 0.0) -> Iterator[str]:
    """`fake_anthropic_process` served by one asyncio loop (for many requests in flight)."""
    with _child(_ASYNC_SERVER, delay_s) as base_url:
        yield base_url


@contextmanager
def _child(code: str, delay_s: float) -> Iterator[str]:
    server = subprocess.Popen(
        [sys.executable, "-c", code, str(delay_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None and server.stdin is not None
    base_url = server.stdout.readline().strip()
    os.environ.update(ANTHROPIC_BASE_URL=base_url, ANTHROPIC_API_KEY="sk-ant-bench")
    try:
        yield base_url
    finally:
        server.stdin.close()
        server.wait(timeout=10)
