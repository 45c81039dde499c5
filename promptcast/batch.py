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
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from promptcast.backends.base import ModelRequest
from promptcast.errors import ConfigurationError, PromptcastError
from promptcast.pricing import cost_usd
from promptcast.result import Usage
from promptcast.task import Task

__all__ = [
    "BatchItem",
    "BatchResult",
    "BatchStats",
    "batch",
    "done_ids",
    "read_items",
    "run_file",
    "run_file_provider_batch",
    "run_item",
]


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
                item = _item(data, f"line-{number}")
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


async def run_item(task: Task[Any], item: BatchItem) -> BatchResult:
    """One item's output line; a bad item or a failed call becomes an error line."""
    if item.problem is not None:
        return BatchResult(item.id, error={"type": "TaskInputError", "message": item.problem})
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
    return BatchResult(item.id, run.output, usage=run.usage, model=run.model, attempts=run.attempts)


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
    source = enumerate(items)
    pending: set[asyncio.Task[BatchResult]] = set()

    async def one(item: BatchItem) -> BatchResult:
        if item.problem is None:
            await limiter.wait()
        return await run_item(task, item)

    def refill() -> None:
        for index, raw in source:
            item = raw if isinstance(raw, BatchItem) else _item(raw, f"item-{index}")
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


def _item(data: dict[str, Any], default_id: str) -> BatchItem:
    """An input object: its `"id"` (or `default_id`) and its inputs, flat or under `"inputs"`."""
    data = dict(data)
    item_id = str(data.pop("id", default_id))
    inputs = data.pop("inputs", data)
    if not isinstance(inputs, dict):
        return BatchItem(item_id, {}, "inputs must be an object")
    return BatchItem(item_id, inputs)


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


_CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
BATCH_MAX_REQUESTS = 100_000
BATCH_MAX_BYTES = 200 * 1024 * 1024  # under the 256 MB limit, leaving room for the envelope


async def run_file_provider_batch(
    task: Task[Any],
    source: Path,
    output: Path,
    *,
    poll_s: float = 30.0,
    max_requests: int = BATCH_MAX_REQUESTS,
    on_result: Callable[[BatchResult, BatchStats], None] | None = None,
) -> BatchStats:
    """Like `run_file`, through Anthropic Message Batches (half the price, results within 24 h).

    Inputs go out in batches of at most `max_requests` requests and about 200 MB; each batch is
    polled every `poll_s` seconds until it ends. A reply that does not validate is run again
    live (with the normal re-asks), so every line ends validated or as an error line; expired,
    errored and canceled requests become error lines.
    """
    from promptcast.backends import resolve
    from promptcast.backends.anthropic import AnthropicBackend, batch_params

    backend, _ = resolve(task.model)
    if not isinstance(backend, AnthropicBackend):
        raise ConfigurationError(
            f"--provider-batch needs an anthropic/… model; task {task.name!r} runs on {task.model}"
        )
    skip = done_ids(output)
    stats = BatchStats(skipped=len(skip))
    with source.open(encoding="utf-8") as lines, output.open("a", encoding="utf-8") as out:

        def emit(result: BatchResult) -> None:
            out.write(result.to_json() + "\n")
            out.flush()
            stats.add(result)
            if on_result is not None:
                on_result(result, stats)

        chunk: list[tuple[BatchItem, ModelRequest]] = []
        size = 0
        for item in read_items(lines, skip=skip):
            if item.problem is not None:
                emit(
                    BatchResult(item.id, error={"type": "TaskInputError", "message": item.problem})
                )
                continue
            try:
                request = task.request(**item.inputs)
            except PromptcastError as exc:
                emit(BatchResult(item.id, error={"type": type(exc).__name__, "message": str(exc)}))
                continue
            chunk.append((item, request))
            size += len(json.dumps(batch_params(request)))
            if len(chunk) >= max_requests or size >= BATCH_MAX_BYTES:
                await _one_batch(task, backend, chunk, poll_s, emit)
                chunk, size = [], 0
        if chunk:
            await _one_batch(task, backend, chunk, poll_s, emit)
    return stats


async def _one_batch(
    task: Task[Any],
    backend: Any,
    chunk: list[tuple[BatchItem, ModelRequest]],
    poll_s: float,
    emit: Callable[[BatchResult], None],
) -> None:
    by_custom_id: dict[str, tuple[BatchItem, ModelRequest]] = {}
    for index, pair in enumerate(chunk):  # the item's own id when the API accepts it as one
        wanted = pair[0].id if _CUSTOM_ID.fullmatch(pair[0].id) else f"item-{index}"
        by_custom_id[wanted if wanted not in by_custom_id else f"item-{index}"] = pair
    batch_id = await backend.submit_batch([(cid, req) for cid, (_, req) in by_custom_id.items()])
    while not await backend.batch_ended(batch_id):
        await asyncio.sleep(poll_s)
    seen: set[str] = set()
    requests = {cid: req for cid, (_, req) in by_custom_id.items()}
    async for custom_id, reply in backend.batch_results(batch_id, requests):
        seen.add(custom_id)
        item, _ = by_custom_id[custom_id]
        if isinstance(reply, str):
            kind = "BatchItem" + reply.split(":")[0].capitalize()
            emit(
                BatchResult(item.id, error={"type": kind, "message": f"batch {batch_id}: {reply}"})
            )
            continue
        model = task.model
        cost = cost_usd(model, reply.input_tokens, reply.output_tokens)
        usage = Usage(reply.input_tokens, reply.output_tokens, None if cost is None else cost / 2)
        try:
            if reply.truncated:
                raise ValueError("truncated")
            output = task.validate_reply(reply)
        except ValueError:  # invalid or truncated: run it live, re-asks included
            live = await run_item(task, item)
            emit(replace(live, usage=usage + live.usage, attempts=live.attempts + 1))
            continue
        emit(BatchResult(item.id, output, usage=usage, model=model, attempts=1))
    for custom_id, (item, _) in by_custom_id.items():
        if custom_id not in seen:
            emit(
                BatchResult(
                    item.id,
                    error={
                        "type": "BatchItemMissing",
                        "message": f"batch {batch_id} returned no result",
                    },
                )
            )
