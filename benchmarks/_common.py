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

__all__ = ["INVOICE_TASK", "Invoice", "LineItem", "fake_anthropic_process"]

INVOICE_TASK = """\
---
inputs: {invoice: str}
output: _common:Invoice
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


@contextmanager
def fake_anthropic_process(delay_s: float = 0.0) -> Iterator[str]:
    """A loopback fake Messages API in a child process; sets ANTHROPIC_BASE_URL and a key."""
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(delay_s)],
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
