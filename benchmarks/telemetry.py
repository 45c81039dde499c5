"""Client CPU per call with OpenTelemetry's SDK recording every span and metric, vs without.

"Without" is what a user gets who configured no SDK: the OpenTelemetry API is installed (the
anthropic SDK needs it), promptcast sees that no tracer or meter provider is set and starts
nothing. "With" is the SDK with a `TracerProvider` whose `SimpleSpanProcessor` exports each span
to an in-memory exporter, and a `MeterProvider` with an in-memory reader: every span is built,
attributed and exported synchronously, the dearest setup short of a network exporter.

OpenTelemetry allows one global provider per process, so both variants run in one process with
the SDK set, and "without" switches promptcast's telemetry to the very objects it uses when no
provider is set (`promptcast._telemetry`'s do-nothing spans). The variants' calls are mixed in
random order, each timed alone with `time.process_time` (sequential task calls against a loopback
fake Messages API in another process), so drift in machine speed hits all of them alike; a round's
figure per variant is the mean of its calls without the slowest tenth, and the benchmark prints the
median over rounds of µs per call and of each round's ratio. Target: with the SDK within +15 % of without. For reference, a third
variant makes only what any instrumentation of a call must (a task and a client span without
attributes, three histogram measurements with the three required attributes), so the SDK's own
share of the cost is visible. A benchmark, not a test:
it prints, it does not assert.

Run: python benchmarks/telemetry.py [--calls 100] [--rounds 15] [--processor simple|batch]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import INVOICE_TASK, fake_anthropic_process

USER = "ACME Corp, 2 widgets at 3.50, 1 gadget at 10.00, due 2026-12-01"
WITHOUT = "no SDK (promptcast starts no span)"
WITH = "SDK + in-memory span and metric exporters"
FLOOR = "SDK floor: 2 bare spans + 3 bare measurements"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100, help="calls of each variant a round")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument(
        "--processor",
        choices=["simple", "batch"],
        default="simple",
        help="span processor: simple exports each span as it ends, on the call's thread; batch "
        "(what production setups use) exports from a background thread",
    )
    args = parser.parse_args()

    with fake_anthropic_process():
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        import promptcast as pc
        from promptcast import _telemetry

        folder = Path(tempfile.mkdtemp())
        (folder / "invoice.jinja").write_text(INVOICE_TASK)
        task = pc.Task.from_file(folder / "invoice.jinja")
        for _ in range(50):
            task(invoice=USER)
        assert _telemetry.task_span(task.spec) is _telemetry.NO_TASK_SPAN  # no SDK yet

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        processor = (
            SimpleSpanProcessor(exporter)
            if args.processor == "simple"
            else BatchSpanProcessor(
                exporter, max_queue_size=1_000_000, schedule_delay_millis=60_000
            )
        )
        provider.add_span_processor(processor)
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
        recording = _telemetry._otel()
        assert recording is not None
        task_class = type(task)
        plan = task_class._plan

        def bare_plan(self: Any, inputs: Any) -> Any:
            """The floor: the same call with two bare spans and three bare measurements."""
            outer = recording.tracer.start_span("task")
            inner = recording.tracer.start_span("chat")
            run = yield from self._steps(inputs, _telemetry.NO_TASK_SPAN)
            inner.end()
            metric = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "anthropic",
                "gen_ai.request.model": "claude-sonnet-4-6",
            }
            recording.duration.record(0.1, metric)
            recording.tokens.record(100, {**metric, "gen_ai.token.type": "input"})
            recording.tokens.record(20, {**metric, "gen_ai.token.type": "output"})
            outer.end()
            return run

        def use(variant: str) -> None:
            _telemetry._loaded[0] = recording if variant == WITH else None
            task_class._plan = bare_plan if variant == FLOOR else plan  # type: ignore[method-assign]

        def round_(order: list[str]) -> dict[str, float]:
            """One call per entry of `order`, each timed alone: µs per call of each variant,
            the slowest tenth of its calls dropped (a collection or another process's slice)."""
            times: dict[str, list[float]] = {variant: [] for variant in samples}
            exporter.clear()
            for variant in order:
                use(variant)
                start = time.process_time()
                task(invoice=USER)
                times[variant].append(time.process_time() - start)
            provider.force_flush()
            spans = len(exporter.get_finished_spans())
            assert spans == 2 * order.count(WITH) + 2 * order.count(FLOOR), spans
            return {
                variant: statistics.fmean(sorted(values)[: len(values) * 9 // 10]) * 1e6
                for variant, values in times.items()
            }

        samples: dict[str, list[float]] = {WITHOUT: [], WITH: [], FLOOR: []}
        order = [variant for variant in samples for _ in range(args.calls)]
        round_(order)  # warm every path
        for _ in range(args.rounds):
            random.shuffle(order)
            for variant, value in round_(order).items():
                samples[variant].append(value)
        _telemetry._loaded[0] = recording
        task_class._plan = plan  # type: ignore[method-assign]

    def ratio(name: str) -> float:
        return statistics.median(
            a / b for a, b in zip(samples[name], samples[WITHOUT], strict=True)
        )

    print(
        f"client CPU per task call (process_time), {args.calls} sequential calls of each variant "
        f"x {args.rounds} rounds, in random order, {args.processor} span processor, loopback fake "
        "Messages API in another process; medians of the rounds"
    )
    for name, values in samples.items():
        print(f"  {name:<46} {statistics.median(values):8.0f} µs   {ratio(name):.3f}x")
    print(
        f"with SDK / without = {ratio(WITH):.3f}x (+{(ratio(WITH) - 1) * 100:.1f} %; target <= "
        f"+15 %); the SDK floor alone is +{(ratio(FLOOR) - 1) * 100:.1f} %"
    )


if __name__ == "__main__":
    main()
