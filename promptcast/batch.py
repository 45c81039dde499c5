"""Bulk runs: one task over a JSONL file of inputs, streaming, bounded, resumable.

Each input line is a JSON object of the task's inputs, optionally with an `"id"` (default: the
line number). Each output line is `{"id", "output" | "error", "usage", "model", "attempts"}`,
written and flushed as soon as its call ends, so memory stays flat however large the file is and
an interrupted run loses nothing: a rerun with the same output file skips the ids already there
(a torn last line is dropped first). A bad input line becomes an error line, never a crash.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptcast.errors import PromptcastError
from promptcast.result import Usage
from promptcast.task import Task

__all__ = ["BatchItem", "BatchResult", "BatchStats", "batch", "done_ids", "read_items", "run_file"]


@dataclass(frozen=True)
class BatchItem:
    """One input: its id and the task inputs, or the reason the line could not be read."""

    id: str
    inputs: dict[str, Any]
    problem: str | None = None


@dataclass(frozen=True)
class BatchResult:
    """One output line."""

    id: str
    output: Any = None
    error: dict[str, str] | None = None
    usage: Usage = field(default_factory=Usage)
    model: str | None = None
    attempts: int = 0

    def to_json(self) -> str:
        line: dict[str, Any] = {"id": self.id}
        if self.error is not None:
            line["error"] = self.error
        else:
            output = self.output
            line["output"] = (
                output.model_dump(mode="json") if hasattr(output, "model_dump") else output
            )
        line["usage"] = {
            "input_tokens": self.usage.input_tokens,
            "output_tokens": self.usage.output_tokens,
            "cost_usd": self.usage.cost_usd,
        }
        line["model"] = self.model
        line["attempts"] = self.attempts
        return json.dumps(line, ensure_ascii=False)


@dataclass
class BatchStats:
    """Running totals, for progress display and the final summary."""

    done: int = 0
    failed: int = 0
    skipped: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0

    def add(self, result: BatchResult) -> None:
        self.done += 1
        self.failed += result.error is not None
        self.input_tokens += result.usage.input_tokens
        self.output_tokens += result.usage.output_tokens
        cost = result.usage.cost_usd
        self.cost_usd = None if cost is None or self.cost_usd is None else self.cost_usd + cost


def read_items(
    lines: Iterable[str], *, skip: set[str] | frozenset[str] = frozenset()
) -> Iterator[BatchItem]:
    """Parse input lines lazily; ids in `skip` are left out."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            item = BatchItem(f"line-{number}", {}, f"line {number} is not JSON: {exc}")
        else:
            if not isinstance(data, dict):
                item = BatchItem(f"line-{number}", {}, f"line {number} is not a JSON object")
            else:
                item_id = str(data.pop("id", f"line-{number}"))
                inputs = data.pop("inputs", data)
                item = BatchItem(
                    item_id,
                    inputs if isinstance(inputs, dict) else {},
                    None if isinstance(inputs, dict) else "inputs must be an object",
                )
        if item.id not in skip:
            yield item


def done_ids(output: Path) -> set[str]:
    """Ids already written to `output`; a torn last line (from a killed run) is cut off first."""
    if not output.exists():
        return set()
    with output.open("rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            handle.truncate(cut)
            data = data[:cut]
    ids = set()
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            ids.add(str(json.loads(line)["id"]))
        except (ValueError, KeyError, TypeError):
            continue
    return ids


class _RateLimiter:
    """Starts at most `rate` calls per second, evenly spaced."""

    def __init__(self, rate: float | None) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self._interval:
            return
        async with self._lock:
            now = time.monotonic()
            delay = self._next - now
            self._next = max(now, self._next) + self._interval
        if delay > 0:
            await asyncio.sleep(delay)


async def batch(
    task: Task[Any],
    items: Iterable[BatchItem | dict[str, Any]],
    *,
    concurrency: int = 16,
    rate: float | None = None,
) -> AsyncIterator[BatchResult]:
    """Run `task` over `items` with at most `concurrency` calls in flight (and at most `rate`
    starts per second); yields results as they finish, in completion order."""
    limiter = _RateLimiter(rate)
    source = iter(items)
    pending: set[asyncio.Task[BatchResult]] = set()

    async def one(item: BatchItem) -> BatchResult:
        if item.problem is not None:
            return BatchResult(item.id, error={"type": "TaskInputError", "message": item.problem})
        await limiter.wait()
        try:
            run = await task.arun(**item.inputs)
        except PromptcastError as exc:
            usage = getattr(exc, "usage", None) or Usage()
            return BatchResult(
                item.id,
                error={"type": type(exc).__name__, "message": str(exc)},
                usage=usage,
                model=getattr(exc, "model", None),
                attempts=getattr(exc, "attempts", 0),
            )
        return BatchResult(
            item.id, run.output, usage=run.usage, model=run.model, attempts=run.attempts
        )

    def refill() -> None:
        for raw in source:
            item = raw if isinstance(raw, BatchItem) else _item(raw, len(pending))
            pending.add(asyncio.ensure_future(one(item)))
            if len(pending) >= concurrency:
                return

    try:
        refill()
        while pending:
            finished, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for done in finished:
                pending.discard(done)
                yield done.result()
            refill()
    finally:
        for running in pending:
            running.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


def _item(data: dict[str, Any], index: int) -> BatchItem:
    data = dict(data)
    return BatchItem(str(data.pop("id", f"item-{index}")), data.pop("inputs", data))


async def run_file(
    task: Task[Any],
    source: Path,
    output: Path,
    *,
    concurrency: int = 16,
    rate: float | None = None,
    on_result: Callable[[BatchResult, BatchStats], None] | None = None,
) -> BatchStats:
    """Run `task` over the JSONL file `source`, appending to `output`; resumes where it stopped."""
    skip = done_ids(output)
    stats = BatchStats(skipped=len(skip))
    with source.open(encoding="utf-8") as lines, output.open("a", encoding="utf-8") as out:
        async for result in batch(
            task, read_items(lines, skip=skip), concurrency=concurrency, rate=rate
        ):
            out.write(result.to_json() + "\n")
            out.flush()
            stats.add(result)
            if on_result is not None:
                on_result(result, stats)
    return stats
