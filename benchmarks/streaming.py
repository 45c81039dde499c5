"""Time to the first partial object: `task.stream()` vs the provider's first byte vs `task.run()`.

A loopback fake Messages API plays a model that generates one delta every 50 ms (8 characters of
the tool input each). Streamed, each delta goes out as it is generated (`message_start` at once,
then an event every 50 ms); not streamed, the whole reply goes out once the last delta would have
been generated, as a real provider answers. For the same `answer_product_question` reply we time,
from the moment the call starts:

- first byte: the fake writes the stream's first event (`message_start`),
- first delta: the fake writes the first `content_block_delta`,
- first partial: `task.stream()` yields its first `ProductAnswer` with a field known,
- stream end: the stream's final `Run`,
- run(): the non-streaming call's total time.

The fake also spaces the framing events (`content_block_start`, `ping`) 50 ms apart, and the first
delta holds only `{"answer`, so the first partial with a field known comes with the second delta.
Rounds alternate streamed and non-streamed calls; we print medians. A benchmark, not a test: it
prints, it does not assert.

Run: python benchmarks/streaming.py [--rounds 5] [--interval-ms 50]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import promptcast as pc
from promptcast.testing import FakeAnthropic, FakeReply, message, tool_use_block

MODEL = "anthropic/claude-3-5-haiku-20241022"  # tool mode: the answer streams as input_json_delta
ANSWER = {
    "answer": "Yes. The Aero X2 crushes ice with the Pulse setting; run it for at most 30 "
    "seconds at a time, then let the motor rest. The jar is dishwasher safe.",
    "answered": True,
    "cited_document_ids": ["manual-3", "faq-1"],
}
INPUTS: dict[str, Any] = {
    "question": "Can the Aero X2 crush ice?",
    "documents": {"manual-3": "Pulse crushes ice, 30 s max.", "faq-1": "Jar: dishwasher safe."},
}


def body() -> dict[str, Any]:
    return message([tool_use_block("ProductAnswer", ANSWER)], input_tokens=180, output_tokens=70)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--interval-ms", type=float, default=50.0)
    args = parser.parse_args()
    interval = args.interval_ms / 1000
    with FakeAnthropic() as fake:
        os.environ["ANTHROPIC_BASE_URL"] = fake.base_url
        os.environ["ANTHROPIC_API_KEY"] = "sk-ant-benchmark-placeholder"
        fake.stream_interval_s = interval
        events = fake.sse({}, body())
        deltas = sum(b"content_block_delta" in e for e in events)
        generation = (len(events) - 1) * interval  # when the last event would be generated
        task = pc.builtin_tasks().answer_product_question.with_model(MODEL)
        fake.reply(body())
        task.run(**INPUTS)  # warm up: SDK import, client, schema
        samples: dict[str, list[float]] = {
            k: [] for k in ("first byte", "first delta", "first partial", "stream end", "run()")
        }
        for _ in range(args.rounds):
            fake.reply(body())
            started = time.perf_counter()
            stream = task.stream(**INPUTS)
            first: float | None = None
            for _partial in stream:
                first = first or time.perf_counter()
            ended = time.perf_counter()
            log = fake.streams[-1]
            first_delta = next(
                at for at, e in zip(log.sent_at, events, strict=False) if b"_delta" in e
            )
            assert first is not None and stream.run.output.model_dump() == ANSWER
            samples["first byte"].append(log.sent_at[0] - started)
            samples["first delta"].append(first_delta - started)
            samples["first partial"].append(first - started)
            samples["stream end"].append(ended - started)
            fake.reply(FakeReply(body(), delay_s=generation))
            started = time.perf_counter()
            task.run(**INPUTS)
            samples["run()"].append(time.perf_counter() - started)
    median = {name: statistics.median(values) * 1000 for name, values in samples.items()}
    print(
        f"answer_product_question, {deltas} deltas of 8 characters, one every "
        f"{args.interval_ms:g} ms ({len(events)} events), median of {args.rounds} rounds:"
    )
    for name, ms in median.items():
        print(f"  {name:<14} {ms:8.1f} ms")
    print(
        f"first partial is {median['first partial'] - median['first delta']:.1f} ms after the "
        f"first delta, {median['first partial'] - median['first byte']:.1f} ms after the first "
        f"byte, and {median['first partial'] / median['run()'] * 100:.1f}% of run()'s total "
        f"({median['run()'] / median['first partial']:.1f}x sooner)"
    )
    print(json.dumps({k: round(v, 1) for k, v in median.items()}))


if __name__ == "__main__":
    main()
