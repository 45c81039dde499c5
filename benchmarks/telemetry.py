"""Client CPU per call with OpenTelemetry's SDK recording every span and metric, vs without.

"Without" is what a user gets who configured nothing: the OpenTelemetry API is installed (the
anthropic SDK needs it) but no SDK, so promptcast's spans are the API's non-recording ones. "With"
sets up the SDK with a `TracerProvider` whose `SimpleSpanProcessor` exports each span to an
in-memory exporter, and a `MeterProvider` with an in-memory reader: every span is built, attributed
and exported synchronously, the dearest setup short of a network exporter.

OpenTelemetry allows one global provider per process, so each round runs each variant in its own
child process (warm-up, then `--calls` sequential task calls timed with `time.process_time`)
against one loopback fake Messages API in another process; rounds interleave the variants so
drift in machine speed hits both. Prints the median µs per call and the median per-round ratio.
Target: with the SDK within +15 % of without. A benchmark, not a test: it prints, it does not
assert.

Run: python benchmarks/telemetry.py [--calls 300] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import INVOICE_TASK, fake_anthropic_process

USER = "ACME Corp, 2 widgets at 3.50, 1 gadget at 10.00, due 2026-12-01"
VARIANTS = {
    "off": "API only, no SDK configured (non-recording spans)",
    "sdk": "SDK + in-memory span and metric exporters",
}


def child(variant: str, calls: int) -> None:
    """Time `calls` task calls in this process, with or without the SDK; prints µs per call."""
    exporter = None
    if variant == "sdk":
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))

    import promptcast as pc

    folder = Path(tempfile.mkdtemp())
    (folder / "invoice.jinja").write_text(INVOICE_TASK)
    task = pc.Task.from_file(folder / "invoice.jinja")
    for _ in range(max(20, calls // 5)):
        task(invoice=USER)
    if exporter is not None:
        assert len(exporter.get_finished_spans()) > 0, "the SDK recorded no span"
        exporter.clear()
    start = time.process_time()
    for _ in range(calls):
        task(invoice=USER)
    elapsed = time.process_time() - start
    if exporter is not None:
        assert len(exporter.get_finished_spans()) == 2 * calls  # a task span and a client span
    print(f"{elapsed / calls * 1e6:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--child", choices=sorted(VARIANTS))
    args = parser.parse_args()
    if args.child:
        child(args.child, args.calls)
        return

    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with fake_anthropic_process():
        for _ in range(args.rounds):
            for name in VARIANTS:
                done = subprocess.run(
                    [sys.executable, __file__, "--child", name, "--calls", str(args.calls)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                samples[name].append(float(done.stdout.strip().splitlines()[-1]))
    ratio = statistics.median(a / b for a, b in zip(samples["sdk"], samples["off"], strict=True))
    print(
        f"client CPU per task call (process_time), {args.calls} sequential calls x {args.rounds} "
        "interleaved rounds, loopback fake Messages API in another process; medians"
    )
    for name, label in VARIANTS.items():
        print(f"  {label:<52} {statistics.median(samples[name]):8.0f} µs")
    print(f"with SDK / without = {ratio:.3f}x (+{(ratio - 1) * 100:.1f} %; target <= +15 %)")


if __name__ == "__main__":
    main()
