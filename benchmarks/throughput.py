"""Async throughput: 256 and 1,024 calls in flight against a fake Messages API (50 ms per reply).

Prints tasks per second for the raw anthropic SDK (AsyncAnthropic tool call + validation) and for
a promptcast task (`arun`) on identical requests, each in its own client (so neither warms the
other's connections), over several interleaved rounds, and the median over rounds of the ratio
(target >= 1.0); then the peak RSS of `promptcast batch` over 1k and 10k input lines (it should
stay flat). A benchmark that prints, not a test. The fake server runs in another process so its
CPU is not counted.

Run: python benchmarks/throughput.py [--calls 4096] [--in-flight 256 1024] [--rounds 5] [--no-rss]
    [--fake asyncio|threads]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import async_fake_anthropic_process, fake_anthropic_process
from pydantic import BaseModel

TASK = """\
---
inputs: {text: str}
output: throughput:Label
max_tokens: 64
---
{% role "system" %}Label the text.{% endrole %}
{{ text | fence("text") }}
"""


class Label(BaseModel):
    """A label."""

    label: str
    confidence: float


async def timed(calls: int, in_flight: int, one: Any) -> tuple[float, float]:
    """Tasks per second, and this process's CPU µs per call, over `calls` calls."""
    gate = asyncio.Semaphore(in_flight)

    async def bounded(i: int) -> None:
        async with gate:
            await one(i)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(bounded(i) for i in range(calls)))
    rate = calls / (time.perf_counter() - started)
    return rate, (time.process_time() - cpu) / calls * 1e6


def batch_rss(lines: int, base_url: str) -> float:
    """Peak RSS (MiB) of a `promptcast batch` child process over `lines` inputs."""
    folder = Path(tempfile.mkdtemp())
    (folder / "prompts").mkdir()
    (folder / "prompts" / "label.jinja").write_text(
        "---\ninputs: {text: str}\noutput: {label: str}\nmax_tokens: 64\n---\n{{ text }}\n"
    )
    source = folder / "in.jsonl"
    with source.open("w") as handle:
        for i in range(lines):
            handle.write(json.dumps({"id": str(i), "text": f"item {i}"}) + "\n")
    code = (
        "import resource, sys; from promptcast.cli import main; sys.argv = sys.argv[1:]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)"
    )
    env = {**os.environ, "ANTHROPIC_BASE_URL": base_url, "ANTHROPIC_API_KEY": "sk-ant-bench"}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "promptcast",
            "batch",
            "label",
            str(source),
            "-o",
            str(folder / "out.jsonl"),
            "-p",
            str(folder / "prompts"),
            "--concurrency",
            "256",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stderr.strip().splitlines()[-1]) / 1024


async def main_async(
    calls: int, in_flight: list[int], rounds: int
) -> dict[int, dict[str, list[tuple[float, float]]]]:
    import anthropic

    import promptcast as pc

    client = anthropic.AsyncAnthropic(max_retries=0)
    from promptcast.backends.anthropic import tool_for

    tool = tool_for(Label)

    async def raw(i: int) -> Label:
        reply = await client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=64,
            system="Label the text.",
            messages=[{"role": "user", "content": f"<text>\nitem {i}\n</text>"}],
            tools=[tool],
            tool_choice={"type": "tool", "name": tool["name"], "disable_parallel_tool_use": True},
        )
        block = next(b for b in reply.content if b.type == "tool_use")
        return Label.model_validate(block.input)

    folder = Path(tempfile.mkdtemp())
    (folder / "label.jinja").write_text(TASK)
    sys.modules["throughput"] = sys.modules[__name__]
    task = pc.Task.from_file(folder / "label.jinja")

    async def ours(i: int) -> Any:
        return await task.acall(text=f"item {i}")

    results: dict[int, dict[str, list[tuple[float, float]]]] = {}
    for flight in in_flight:
        await timed(flight, flight, raw)  # warm connections and imports
        await timed(flight, flight, ours)
        results[flight] = {"raw": [], "promptcast": []}
        for _ in range(rounds):  # interleave rounds so machine drift hits both alike
            results[flight]["raw"].append(await timed(calls, flight, raw))
            results[flight]["promptcast"].append(await timed(calls, flight, ours))
    await client.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4096)
    parser.add_argument("--in-flight", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-rss", action="store_true", help="skip the batch RSS measurement")
    parser.add_argument(
        "--fake",
        choices=["asyncio", "threads"],
        default="asyncio",
        help="the fake server: one asyncio loop (default), or FakeAnthropic's thread per "
        "connection, which itself becomes the bottleneck with many requests in flight",
    )
    args = parser.parse_args()
    fake = async_fake_anthropic_process if args.fake == "asyncio" else fake_anthropic_process
    with fake(delay_s=0.05) as base_url:
        results = asyncio.run(main_async(args.calls, args.in_flight, args.rounds))
        rss = {} if args.no_rss else {n: batch_rss(n, base_url) for n in (1_000, 10_000)}
    for flight, samples in results.items():
        rates = {name: [rate for rate, _ in values] for name, values in samples.items()}
        cpu = {name: [micros for _, micros in values] for name, values in samples.items()}
        ratios = [ours / raw for ours, raw in zip(rates["promptcast"], rates["raw"], strict=True)]
        cpu_ratios = [ours / raw for ours, raw in zip(cpu["promptcast"], cpu["raw"], strict=True)]
        print(
            f"{args.calls} calls, {flight} in flight, 50 ms fake latency ({args.fake} fake), "
            f"{args.rounds} interleaved rounds (medians)"
        )
        for name, label in (("raw", "raw anthropic SDK"), ("promptcast", "promptcast arun")):
            print(
                f"  {label:<19} {statistics.median(rates[name]):8.0f} tasks/s   "
                f"client CPU {statistics.median(cpu[name]):6.0f} µs/call"
            )
        print(
            f"  promptcast/raw throughput = {statistics.median(ratios):.2f} (target >= 1.00; "
            f"rounds: {', '.join(f'{r:.2f}' for r in ratios)}); CPU per call = "
            f"{statistics.median(cpu_ratios):.2f}x"
        )
    if rss:
        print(
            f"promptcast batch peak RSS: 1k lines {rss[1_000]:.0f} MiB, 10k lines "
            f"{rss[10_000]:.0f} MiB (self: "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB)"
        )


if __name__ == "__main__":
    main()
