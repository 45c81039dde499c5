"""Client CPU per call: raw anthropic SDK vs instructor vs a promptcast task, on identical requests.

A loopback fake Messages API runs in a separate process (so its CPU is not counted) and answers
every request with a tool call for a nested invoice schema. Each contender makes the same request
(same system prompt, message, tool and tool_choice) and validates the same output model; we time
the process's CPU (`time.process_time`: the client is the only thing running in this process) over
many sequential calls. Rounds interleave the contenders so that drift in machine speed (other
processes on a shared machine) hits them all alike; we print the median µs per call and the median
over rounds of each round's ratio to the raw SDK. This is a benchmark, not a test: it prints, it
does not assert.

Run: python benchmarks/overhead.py [--calls 300] [--rounds 9]
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
RAW = "raw anthropic SDK (tool call + validate)"
INSTRUCTOR = "instructor messages.create(response_model=)"
OURS = "promptcast task"


def cpu_per_call(
    contenders: dict[str, Callable[[], Any]], calls: int, rounds: int
) -> dict[str, list[float]]:
    """CPU µs per call of each contender, one sample per round; rounds interleave the contenders."""
    for call in contenders.values():
        for _ in range(max(10, calls // 10)):
            call()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, call in contenders.items():
            start = time.process_time()
            for _ in range(calls):
                call()
            samples[name].append((time.process_time() - start) / calls * 1e6)
    return samples


def median_ratio(samples: dict[str, list[float]], name: str, base: str) -> float:
    """The median over rounds of `name`'s CPU per call divided by `base`'s in the same round."""
    return statistics.median(a / b for a, b in zip(samples[name], samples[base], strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=9)
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

        samples = cpu_per_call(
            {
                RAW: raw,
                INSTRUCTOR: with_instructor,
                OURS: with_promptcast,
                "promptcast task.run + read usage.cost_usd": with_promptcast_cost,
            },
            args.calls,
            args.rounds,
        )

    print(
        f"client CPU per call (process_time), {args.calls} sequential calls x {args.rounds} "
        "interleaved rounds, loopback fake in another process; medians"
    )
    for name, values in samples.items():
        print(
            f"  {name:<46} {statistics.median(values):8.0f} µs   "
            f"{median_ratio(samples, name, RAW):5.2f}x raw"
        )
    print(f"promptcast/raw        = {median_ratio(samples, OURS, RAW):.2f}x (target <= 1.00x)")
    print(
        f"promptcast/instructor = {median_ratio(samples, OURS, INSTRUCTOR):.2f}x (target <= 0.25x)"
    )
    print(
        textwrap.dedent(f"""\
        python {sys.version.split()[0]}, anthropic {anthropic.__version__}, \
instructor {instructor.__version__}, promptcast {pc.__version__}""")
    )


if __name__ == "__main__":
    main()
