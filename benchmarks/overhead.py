"""Client CPU per call: raw anthropic SDK vs instructor vs a promptcast task, on identical requests.

A loopback fake Messages API runs in a separate process (so its CPU is not counted) and answers
every request with a tool call for a nested invoice schema. Each contender makes the same request
(same system prompt, message, tool and tool_choice) and validates the same output model; we time
the calling thread's CPU (`time.thread_time`) over many sequential calls and print µs per call and
the ratio to the raw SDK. This is a benchmark, not a test: it prints, it does not assert.

Run: python benchmarks/overhead.py [--calls 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import INVOICE_TASK, Invoice, fake_anthropic_process

SYSTEM = "You extract invoices."
USER = "<invoice>\nACME Corp, 2 widgets at 3.50, 1 gadget at 10.00, due 2026-12-01\n</invoice>"
MODEL = "claude-sonnet-4-6"


def cpu_per_call(
    contenders: dict[str, Callable[[], Any]], calls: int, rounds: int = 7
) -> dict[str, float]:
    """Median over rounds of CPU µs per call in this thread; rounds interleave the contenders
    so that drift in machine speed hits them all alike."""
    for call in contenders.values():
        for _ in range(max(10, calls // 10)):
            call()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, call in contenders.items():
            start = time.thread_time()
            for _ in range(calls):
                call()
            samples[name].append((time.thread_time() - start) / calls * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()

    with fake_anthropic_process():
        import anthropic
        import instructor

        import promptcast as pc
        from promptcast.backends.anthropic import tool_for

        client = anthropic.Anthropic(max_retries=0)
        tool = tool_for(Invoice)
        kwargs: dict[str, Any] = {
            "model": MODEL,
            "max_tokens": 1024,
            "system": SYSTEM,
            "messages": [{"role": "user", "content": USER}],
            "tools": [tool],
            "tool_choice": {
                "type": "tool",
                "name": tool["name"],
                "disable_parallel_tool_use": True,
            },
        }

        def raw() -> Invoice:
            reply = client.messages.create(**kwargs)
            block = next(b for b in reply.content if b.type == "tool_use")
            return Invoice.model_validate(block.input)

        patched = instructor.from_anthropic(anthropic.Anthropic(max_retries=0))

        def with_instructor() -> Invoice:
            return patched.messages.create(
                model=MODEL,
                max_tokens=1024,
                system=SYSTEM,
                messages=[{"role": "user", "content": USER}],
                response_model=Invoice,
                max_retries=1,
            )

        folder = Path(tempfile.mkdtemp())
        (folder / "invoice.jinja").write_text(INVOICE_TASK)
        task = pc.Task.from_file(folder / "invoice.jinja")
        invoice_text = USER.removeprefix("<invoice>\n").removesuffix("\n</invoice>")
        assert task.render(invoice=invoice_text).messages[0]["content"] == USER

        def with_promptcast() -> Invoice:
            return task(invoice=invoice_text)  # type: ignore[no-any-return]

        def with_promptcast_cost() -> float | None:
            return task.run(invoice=invoice_text).usage.cost_usd

        results = cpu_per_call(
            {
                "raw anthropic SDK (tool call + validate)": raw,
                "instructor messages.create(response_model=)": with_instructor,
                "promptcast task": with_promptcast,
                "promptcast task.run + read usage.cost_usd": with_promptcast_cost,
            },
            args.calls,
        )

    base = results["raw anthropic SDK (tool call + validate)"]
    print(f"client CPU per call, {args.calls} sequential calls x 7 rounds (median), loopback fake")
    for name, micros in results.items():
        print(f"  {name:<46} {micros:8.0f} µs   {micros / base:5.2f}x raw")
    ratio = results["promptcast task"] / base
    print(f"promptcast/raw = {ratio:.2f}x (target <= 1.20x)")
    print(
        textwrap.dedent(f"""\
        python {sys.version.split()[0]}, anthropic {anthropic.__version__}, \
instructor {instructor.__version__}, promptcast {pc.__version__}""")
    )


if __name__ == "__main__":
    main()
