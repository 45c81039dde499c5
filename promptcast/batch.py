"""Bulk runs: one task over a JSONL file of inputs, streaming, bounded, resumable.

Each input line is a JSON object of the task's inputs, optionally with an `"id"`. Each output
line is `{"id", "output" | "error", "usage", "model", "attempts"}`, written and flushed as soon as
its call ends, so memory stays flat however large the file is and an interrupted run loses
nothing. A bad input line, a failed call or an unexpected exception in one item becomes an error
line (its message scrubbed of credentials), never a crash of the run.

Ids. An `"id"` is a string or an integer and comes back with the same JSON type; a line without
one is `"line-N"` (N its line number). Ids are compared as text, so `1`, `"1"`, and an explicit
`"line-3"` against line 3's default are the same id: a file with a repeated id is refused before
any call, naming the lines.

Lines. A file is read as bytes and split on `\\n` only, so U+2028, U+2029, NEL or `\\r` inside a
JSON string never split an input; each line is decoded alone (a UTF-8 BOM opening it is dropped),
so invalid UTF-8 makes that one line an error line.

Resume. A rerun on the same output skips the ids that already have an `"output"` line (a torn
last line is cut off first) and runs the errored ids again; the new line is appended after the
old error line, so an id's last line is its current one. `retry_errors=False` skips errored ids
too. One run writes an output at a time: the file is locked with an OS lock for the run. An
output that is the input file, or a file that is not a batch output, is refused untouched.
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import json
import logging
import math
import re
import secrets
import time
import typing
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from promptcast import _batch_files, _json, _telemetry
from promptcast._secrets import scrub
from promptcast.backends.base import ModelReply, ModelRequest, ProviderBatches
from promptcast.errors import (
    BackendError,
    ConfigurationError,
    PromptcastError,
    TaskInputError,
    UnsavedBatchError,
)
from promptcast.media import media_inputs
from promptcast.result import Usage
from promptcast.task import Task

__all__ = [
    "BatchItem",
    "BatchOutputBusyError",
    "BatchOutputError",
    "BatchResult",
    "BatchStats",
    "ItemId",
    "batch",
    "done_ids",
    "id_key",
    "read_items",
    "run_file",
    "run_file_provider_batch",
    "run_item",
]

ItemId = str | int
"""An item's id as its JSON type: a string or an integer."""

logger = logging.getLogger("promptcast.batch")


class BatchOutputError(PromptcastError, OSError):
    """The output file cannot be opened or written (a missing folder, no permission, a full
    disk); the lines written before stay, so the run resumes once that is fixed."""

    def __init__(
        self, output: Path, cause: OSError, *, written: int | None, message: str | None = None
    ) -> None:
        self.output = output
        reason = cause.strerror or str(cause)
        if message is not None:  # the caller's own account of what failed
            pass
        elif written is None:
            message = f"cannot open {output} for the results ({reason}); nothing was run"
        else:
            message = (
                f"writing {output} failed ({reason}); the {written} line(s) this run wrote "
                "before are kept: fix that (free disk space, permissions) and run the same "
                "command again to resume"
            )
        super().__init__(message)
        self.errno = cause.errno


class BatchOutputBusyError(PromptcastError):
    """Another run holds the output file; two writers would run and bill every item twice."""

    def __init__(self, output: Path) -> None:
        self.output = output
        super().__init__(
            f"{output} is being written by another promptcast batch run (it holds the file's "
            "lock); wait for that run to end or stop it, or write to another -o file"
        )


def id_key(item_id: ItemId) -> str:
    """An id as text, the form ids are compared in: `1` and `"1"` are the same id."""
    return item_id if isinstance(item_id, str) else str(item_id)


@dataclass(frozen=True)
class BatchItem:
    """One input: its id and the task inputs, or the reason the line could not be read."""

    id: ItemId
    inputs: dict[str, Any]
    problem: str | None = None

    @property
    def key(self) -> str:
        return id_key(self.id)


def _failure(kind: str, message: str) -> dict[str, str]:
    """An output line's `error`: provider text can echo credentials, so it is scrubbed here."""
    return {"type": kind, "message": scrub(message)}


@dataclass(frozen=True)
class BatchResult:
    """One output line."""

    id: ItemId
    output: Any = None
    error: dict[str, str] | None = None
    usage: Usage = field(default_factory=Usage)
    model: str | None = None
    attempts: int = 0

    def to_json(self) -> str:
        line: dict[str, Any] = {"id": self.id}
        if self.error is not None:
            line["error"] = _failure(self.error.get("type", "Error"), self.error.get("message", ""))
        else:
            try:
                line["output"] = _jsonable(self.output)
            except (TypeError, ValueError) as exc:
                line["error"] = _failure("OutputNotSerializable", f"the output is not JSON: {exc}")
        line["usage"] = {
            "input_tokens": self.usage.input_tokens,
            "output_tokens": self.usage.output_tokens,
            "cost_usd": self.usage.cost_usd,
        }
        if self.usage.cache_read_tokens or self.usage.cache_write_tokens:  # prompt caching used
            line["usage"]["cache_read_tokens"] = self.usage.cache_read_tokens
            line["usage"]["cache_write_tokens"] = self.usage.cache_write_tokens
        line["model"] = self.model
        line["attempts"] = self.attempts
        line = _finite(line)
        text = json.dumps(line, ensure_ascii=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (from a `\ud800` escape) has no UTF-8
            text = json.dumps(line)
        return text


def _jsonable(output: Any) -> Any:
    if hasattr(output, "model_dump"):
        return output.model_dump(mode="json")
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(output)


def _finite(value: Any) -> Any:
    """`value` with NaN and infinities as None, as pydantic's own JSON has them: `json.dumps`
    would write bare `NaN`, which no strict JSON reader (jq, JavaScript, Go) accepts."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


@dataclass
class BatchStats:
    """Running totals, for progress display and the final summary.

    `total` is how many lines this run will write; `skipped` how many input items were already
    done in the output.
    """

    done: int = 0
    failed: int = 0
    skipped: int = 0
    total: int = 0
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


# reading inputs


def read_items(
    lines: Iterable[str | bytes], *, skip: set[str] | frozenset[str] = frozenset()
) -> Iterator[BatchItem]:
    """Parse input lines lazily (bytes are decoded line by line); ids in `skip` are left out."""
    for _, item in _numbered(lines):
        if item.key not in skip:
            yield item


def _located(task: Task[Any], items: Iterable[BatchItem], source: Path) -> Iterator[BatchItem]:
    """Items whose image and document inputs given as file names are paths relative to the
    input file `source` (data URLs and http(s) URLs are kept as they are).

    A required task input named "id" cannot come from a line's top-level "id" (that is the
    item's id); an item without it says so, where the task would say only that it is missing."""
    names = media_inputs(task.spec)
    id_input = task.spec.inputs.get("id")
    for item in items:
        if item.problem is None and id_input and id_input.required and "id" not in item.inputs:
            item = replace(
                item,
                inputs={},
                problem=f'task {task.name!r} has an input named "id", and a line\'s top-level '
                '"id" is the item\'s id, not that input: put the inputs under "inputs", '
                '{"id": "item-1", "inputs": {"id": …, …}}',
            )
        if names and item.problem is None:
            item = replace(item, inputs=_batch_files.media_paths(item.inputs, names, source.parent))
        yield item


def _numbered(lines: Iterable[str | bytes]) -> Iterator[tuple[int, BatchItem]]:
    for number, line in enumerate(lines, 1):
        item = _parse(number, line)
        if item is not None:
            yield number, item


@contextmanager
def _file_lines(source: Path, upto: int | None = None) -> Iterator[Iterable[bytes]]:
    """`source`'s lines as bytes, split on `\\n` only (never on U+2028, NEL or `\\r`); with
    `upto`, only the lines that start in its first `upto` bytes: the file as it was checked,
    so lines a producer appends during the run (a repeated id among them) wait for the next."""
    with source.open("rb") as handle:
        yield handle if upto is None else _lines_upto(handle, upto)


def _lines_upto(handle: BinaryIO, upto: int) -> Iterator[bytes]:
    position = 0
    for line in handle:
        if position >= upto:
            return
        position += len(line)
        yield line


def _parse(number: int, line: str | bytes) -> BatchItem | None:
    """One input line as an item, None for a blank line. A byte-order mark opening any line is
    dropped, not only the file's: files a Windows editor saved, joined with `cat` or `type`,
    have one at each join (JSON never starts with one)."""
    default = f"line-{number}"
    problem = None
    if isinstance(line, bytes):
        if line.startswith(codecs.BOM_UTF8):
            line = line[len(codecs.BOM_UTF8) :]
        if not line.strip():
            return None
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:  # still read it, to give the error line its own id
            text = line.decode("utf-8", errors="replace")
            problem = (
                f"line {number} is not valid UTF-8 (byte {line[exc.start]:#04x} at offset "
                f"{exc.start}); save the file as UTF-8"
            )
    else:
        text = line.removeprefix("\ufeff")
        if not text.strip():
            return None
    try:
        data = _json.loads(text)
    except ValueError as exc:
        return BatchItem(default, {}, problem or f"line {number} is not JSON: {exc}")
    if not isinstance(data, dict):
        return BatchItem(default, {}, problem or f"line {number} is not a JSON object")
    item = _item(data, default)
    return item if problem is None else replace(item, inputs={}, problem=problem)


def _item(data: dict[str, Any], default_id: str) -> BatchItem:
    """An input object: its `"id"` (or `default_id`) and its inputs, flat or under `"inputs"`."""
    data = dict(data)
    item_id = data.pop("id", default_id)
    if isinstance(item_id, bool) or not isinstance(item_id, str | int):
        return BatchItem(
            default_id, {}, f'"id" must be a string or an integer, not {item_id!r:.80}'
        )
    inputs = data.pop("inputs", data)
    if not isinstance(inputs, dict):
        return BatchItem(item_id, {}, "inputs must be an object")
    if inputs is not data and data:  # they would be dropped without a word
        beside = ", ".join(sorted(map(repr, data)))
        return BatchItem(
            item_id,
            {},
            f'a line with "inputs" holds only "id" beside it; move {beside} into "inputs"',
        )
    return BatchItem(item_id, inputs)


def _plan(task: Task[Any], source: Path, skip: set[str]) -> tuple[int, int, int]:
    """Check that `source`'s ids are unique (holding only a set of them); returns how many
    items will run, how many are skipped, and how many bytes of `source` were checked."""
    seen: set[str] = set()
    repeated: set[str] = set()
    to_run = skipped = 0
    with source.open("rb") as handle:
        for _, item in _numbered(handle):
            key = item.key
            if key in seen:
                repeated.add(key)
                continue
            seen.add(key)
            if key in skip:
                skipped += 1
            else:
                to_run += 1
        size = handle.tell()
    if repeated:
        raise _duplicates(task, source, repeated)
    return to_run, skipped, size


def _duplicates(task: Task[Any], source: Path, repeated: set[str], shown: int = 10) -> Exception:
    """The error naming the lines of the first `shown` repeated ids (a second pass over the file,
    taken only when there are duplicates)."""
    where: dict[str, list[str]] = {}
    with _file_lines(source) as lines:
        for number, item in _numbered(lines):
            if item.key in repeated and (item.key in where or len(where) < shown):
                explicit = item.id != f"line-{number}"
                where.setdefault(item.key, []).append(
                    str(number) if explicit else f"{number} (no id, so line-{number})"
                )
    listed = "; ".join(f"id {key!r} on lines {', '.join(at)}" for key, at in where.items())
    more = f"; and {len(repeated) - len(where)} more" if len(repeated) > len(where) else ""
    return TaskInputError(
        task.name,
        "id",
        f"every line of {source} needs its own id, nothing was run: {listed}{more}. Ids are "
        'compared as text (1 and "1" are the same id) and a line without one is line-N; '
        'give each line a distinct "id".',
    )


def done_ids(output: Path, *, include_errors: bool = False) -> set[str]:
    """Ids (as text) that have an output line in `output`, and with `include_errors` an error
    line too. A torn last line (from a killed run) is cut off first; the file is read line by
    line on `\\n`, never whole."""
    if not output.exists():
        return set()
    _batch_files.cut_torn_line(output)
    ids: set[str] = set()
    with _file_lines(output) as lines:
        for raw in lines:
            try:
                line = _json.loads(raw)
            except ValueError:
                continue
            if not isinstance(line, dict):
                continue
            item_id = line.get("id")
            if isinstance(item_id, bool) or not isinstance(item_id, str | int):
                continue
            if ("output" in line and "error" not in line) or (include_errors and "error" in line):
                ids.add(id_key(item_id))
    return ids


# running


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
    """One item's output line; a bad item, a failed call or any exception becomes an error line,
    so one item can never stop a batch."""
    if item.problem is not None:
        return BatchResult(item.id, error=_failure("TaskInputError", item.problem))
    try:
        run = await task.arun(**item.inputs)
    except Exception as exc:
        usage = getattr(exc, "usage", None)
        attempts = getattr(exc, "attempts", 0)
        return BatchResult(
            item.id,
            error=_failure(type(exc).__name__, str(exc) or repr(exc)),
            usage=usage if isinstance(usage, Usage) else Usage(),
            model=getattr(exc, "model", None),
            attempts=attempts if isinstance(attempts, int) else 0,
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
    starts per second); yields results as they finish, in completion order.

    A dict without an `"id"` is `item-N` (N its position). Ids must be unique: a list or tuple is
    checked before any call; a lazy iterable raises `TaskInputError` at the first repeat.
    """
    _check_pacing(task, concurrency=concurrency, rate=rate)
    numbered: Iterator[BatchItem] = (
        raw if isinstance(raw, BatchItem) else _item(raw, f"item-{index}")
        for index, raw in enumerate(items)
    )
    if isinstance(items, Sequence):
        listed = list(numbered)
        _check_unique(task, listed)
        numbered = iter(listed)
    else:
        numbered = _unique(task, numbered)
    async for result in _run(task, numbered, concurrency=concurrency, rate=rate):
        yield result


def _check_pacing(
    task: Task[Any], *, concurrency: int = 1, rate: float | None = None, poll_s: float = 1.0
) -> None:
    """Refuse pacing that cannot work before anything runs: a rate or poll interval of zero,
    below zero or NaN meant no limit at all (a provider hammered in a tight loop)."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise TaskInputError(
            task.name, None, f"concurrency must be at least 1, not {concurrency!r}"
        )
    for name, value, unit in (("rate", rate, "calls per second"), ("poll_s", poll_s, "seconds")):
        if value is not None and not (isinstance(value, int | float) and 0 < value < math.inf):
            raise TaskInputError(
                task.name, None, f"{name} must be a positive number of {unit}, not {value!r}"
            )


def _check_unique(task: Task[Any], items: Iterable[BatchItem]) -> None:
    for _ in _unique(task, items):
        pass


def _unique(task: Task[Any], items: Iterable[BatchItem]) -> Iterator[BatchItem]:
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        if item.key in seen:
            raise TaskInputError(
                task.name,
                "id",
                f"items {seen[item.key]} and {index} have the same id {item.key!r} (ids are "
                'compared as text: 1 and "1" are the same); give each item a distinct "id"',
            )
        seen[item.key] = index
        yield item


async def _run(
    task: Task[Any], items: Iterable[BatchItem], *, concurrency: int, rate: float | None
) -> AsyncIterator[BatchResult]:
    limiter = _RateLimiter(rate)
    source = iter(items)
    pending: set[asyncio.Task[BatchResult]] = set()
    # one run span, one span per item under it (items are their own asyncio tasks)
    traced = _telemetry.run_span(f"batch {task.name}", {"promptcast.task": task.name})
    counts = {"ok": 0, "error": 0}

    async def one(item: BatchItem) -> BatchResult:
        attributes = {"promptcast.task": task.name, "promptcast.batch.item_id": item.key}
        with _telemetry.run_span(f"batch.item {task.name}", attributes, parent=traced) as span:
            if item.problem is None:
                await limiter.wait()
            result = await run_item(task, item)
            outcome = "ok" if result.error is None else "error"
            counts[outcome] += 1
            span.set("promptcast.outcome", outcome)
            if result.error is not None:
                span.set("error.type", result.error["type"])
            return result

    def refill() -> None:
        for item in source:
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
        traced.set("promptcast.batch.ok", counts["ok"])
        traced.set("promptcast.batch.errors", counts["error"])
        traced.end()


@contextmanager
def _writing(source: Path, output: Path) -> Iterator[BinaryIO]:
    """`output` locked for appending, once it is known to be a batch output: resuming cuts its
    torn last line, which in any other file (the input file itself) is data of someone's."""
    if source.exists() and not source.is_file():  # a pipe (/dev/stdin), a folder
        raise ConfigurationError(
            f"{source} is not a regular file: a batch reads its input twice (every id is "
            "checked before the first call), so save the lines to a file and pass that"
        )
    if output.exists() and source.exists() and output.samefile(source):
        raise ConfigurationError(
            f"{output} is the input file: the results would be appended to the inputs being "
            "read. Write them to another file: -o results.jsonl"
        )
    if output.exists() and not output.is_file() and not output.is_dir():
        # a pipe or terminal (-o /dev/stdout) cannot be read back to resume, nor cut
        raise ConfigurationError(
            f"{output} is not a regular file: the results go to a file so that a rerun can "
            "resume from it; write to one (-o results.jsonl) and follow it with tail -f"
        )
    with ExitStack() as stack:
        try:
            out = stack.enter_context(_batch_files.append_exclusively(output))
        except OSError as exc:
            raise BatchOutputError(output, exc, written=None) from exc
        if out is None:
            raise BatchOutputBusyError(output)
        if not _batch_files.is_batch_output(output):
            raise ConfigurationError(
                f"{output} is not the output of a promptcast batch run (its first line is not "
                'a result line {"id": …}), so nothing was written to it: choose a new -o file, '
                "or the -o file of an earlier run to resume it"
            )
        yield out


def _emitter(
    out: BinaryIO,
    output: Path,
    stats: BatchStats,
    on_result: Callable[[BatchResult, BatchStats], None] | None,
) -> Callable[[BatchResult], None]:
    def emit(result: BatchResult) -> None:
        try:
            out.write(result.to_json().encode("utf-8") + b"\n")
            out.flush()
        except OSError as exc:  # a torn line it leaves is cut off when the run resumes
            raise BatchOutputError(output, exc, written=stats.done) from exc
        stats.add(result)
        if on_result is not None:
            on_result(result, stats)

    return emit


async def run_file(
    task: Task[Any],
    source: Path,
    output: Path,
    *,
    concurrency: int = 16,
    rate: float | None = None,
    retry_errors: bool = True,
    on_start: Callable[[BatchStats], None] | None = None,
    on_result: Callable[[BatchResult, BatchStats], None] | None = None,
) -> BatchStats:
    """Run `task` over the JSONL file `source`, appending to `output`; resumes where it stopped.

    Raises `TaskInputError` (nothing run) when two lines share an id, `BatchOutputBusyError`
    when another run is writing `output`, and `ConfigurationError` when `output` has a provider
    batch in flight. `on_start` gets the stats once the file is checked
    (`total` and `skipped` set), before the first call.
    """
    _check_pacing(task, concurrency=concurrency, rate=rate)
    with _writing(source, output) as out:
        state_file = _batch_files.state_path(output)
        if state_file.exists():
            raise ConfigurationError(
                f"{output} has a provider batch in flight (its id, or the record of its "
                f"submit, is saved in {state_file}): "
                "run with --provider-batch (run_file_provider_batch) to collect its paid results, "
                f"or delete {state_file} to run those items live"
            )
        skip = done_ids(output, include_errors=not retry_errors)
        to_run, skipped, checked = _plan(task, source, skip)
        stats = BatchStats(skipped=skipped, total=to_run)
        if on_start is not None:
            on_start(stats)
        emit = _emitter(out, output, stats, on_result)
        with _file_lines(source, checked) as lines:
            items = _located(task, read_items(lines, skip=skip), source)
            async for result in _run(task, items, concurrency=concurrency, rate=rate):
                emit(result)
    return stats


# provider batches

_CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
BATCH_MAX_REQUESTS = 100_000
BATCH_MAX_BYTES = 200 * 1024 * 1024  # under the 256 MB limit, leaving room for the envelope

_Chunk = dict[str, tuple[BatchItem, ModelRequest]]  # custom id -> (item, its request)


async def run_file_provider_batch(
    task: Task[Any],
    source: Path,
    output: Path,
    *,
    poll_s: float = 30.0,
    max_requests: int = BATCH_MAX_REQUESTS,
    retry_errors: bool = True,
    on_start: Callable[[BatchStats], None] | None = None,
    on_result: Callable[[BatchResult, BatchStats], None] | None = None,
    adopt_batch: str | None = None,
    resubmit: bool = False,
) -> BatchStats:
    """Like `run_file`, through Anthropic Message Batches (half the price, results within 24 h).

    Inputs go out in batches of at most `max_requests` requests and about 200 MB; each batch is
    polled every `poll_s` seconds until it ends. A reply that does not validate is run again
    live (with the normal re-asks), so every line ends validated or as an error line; expired,
    errored and canceled requests become error lines.

    A submitted batch's id is saved in `<output>.batch.json` before polling, and the file is
    removed once all its results are written: a run killed in between polls and reads that
    batch when started again, instead of submitting (and paying for) it a second time.

    Before each submit, a record of it (request count, digest, time, endpoint, the run's nonce
    that every custom id carries) is saved durably in that file. A run killed before the id came
    back leaves only the record; the next run lists the provider's batches created since then:
    exactly one of that size is adopted and collected, none means the submit never got there
    (submitted now, with a warning), several or a failed listing raise `UnsavedBatchError`
    naming them, and nothing is submitted. Then choose: `adopt_batch=ID` collects that batch
    (its results are refused if their custom ids are not this run's), `resubmit=True` submits
    the items anew (paying again for any batch the killed run got accepted).
    """
    from promptcast.backends import resolve

    _check_pacing(task, poll_s=poll_s)
    resolved, model_name = resolve(task.model)
    if not resolved.capabilities.batch:
        raise ConfigurationError(
            f"--provider-batch needs a model whose provider has a batch API (anthropic/…); task "
            f"{task.name!r} runs on {task.model}"
        )
    backend = typing.cast(ProviderBatches, resolved)
    batch_params = backend.batch_params
    try:  # recorded with each submit, to say where a stopped run's batch is
        endpoint = resolved.endpoint(model_name)
    except Exception:
        endpoint = ""
    state_file = _batch_files.state_path(output)
    with _writing(source, output) as out:
        skip = done_ids(output, include_errors=not retry_errors)
        to_run, skipped, checked = _plan(task, source, skip)
        stats = BatchStats(skipped=skipped, total=to_run)
        saved = _saved_state(state_file)
        _check_choice(saved, state_file, adopt_batch=adopt_batch, resubmit=resubmit)
        if on_start is not None:
            on_start(stats)
        emit = _emitter(out, output, stats, on_result)
        in_saved: set[str] = set()
        submitted: list[str] = []  # this run's batches, which a later record rules out
        chunk: _Chunk | None = None
        if saved is not None and not saved.accepted:  # killed mid-submit: was it accepted?
            if resubmit:
                logger.warning(
                    "--resubmit: submitting the %d request(s) recorded in %s again; a batch "
                    "the stopped run got accepted stays billed (cancel it in the console)",
                    len(saved.custom_ids),
                    state_file,
                )
                _batch_files.remove_state(state_file)
                saved = None
            else:
                chunk = _saved_chunk(task, source, saved, state_file, batch_params)
                saved = await _settle(backend, saved, state_file, model_name, adopt_batch)
        if saved is not None:  # a killed run's batch: read its results, never resubmit
            in_saved = set(saved.custom_ids.values())
            if chunk is None:
                chunk = _saved_chunk(task, source, saved, state_file, batch_params)
            try:
                await _collect(task, backend, saved.batch_id, chunk, poll_s, emit, skip, state_file)
            except UnsavedBatchError:  # another run's batch was adopted: back to the record
                if saved.submitting_at is not None:
                    _batch_files.write_state(state_file, replace(saved, batch_id=""))
                raise
            _batch_files.remove_state(state_file)
            submitted.append(saved.batch_id)
        pending: list[tuple[BatchItem, ModelRequest]] = []
        size = 0
        with _file_lines(source, checked) as lines:
            for item in _located(task, read_items(lines, skip=skip), source):
                if item.key in in_saved:
                    continue
                if item.problem is not None:
                    emit(BatchResult(item.id, error=_failure("TaskInputError", item.problem)))
                    continue
                try:
                    request = task.request(**item.inputs)
                    size += len(json.dumps(batch_params(request)))
                except Exception as exc:
                    emit(BatchResult(item.id, error=_failure(type(exc).__name__, str(exc))))
                    continue
                pending.append((item, request))
                if len(pending) >= max_requests or size >= BATCH_MAX_BYTES:
                    await _one_batch(
                        task, backend, pending, poll_s, emit, state_file, endpoint, submitted
                    )
                    pending, size = [], 0
        if pending:
            await _one_batch(task, backend, pending, poll_s, emit, state_file, endpoint, submitted)
    return stats


CLOCK_SLACK_S = 60.0
"""How far the provider's clock may run behind ours: a batch listed as created up to this long
before a submitting record's time may still be the one that record announced (more would take
this run's previous batch, submitted just before, for a candidate too)."""


def _check_choice(
    saved: _batch_files.ProviderBatchState | None,
    state_file: Path,
    *,
    adopt_batch: str | None,
    resubmit: bool,
) -> None:
    """Refuse `adopt_batch` and `resubmit` where they do not apply, before anything is sent."""
    if adopt_batch is not None and resubmit:
        raise ConfigurationError(
            "--adopt-batch and --resubmit exclude each other: adopt the batch the stopped run "
            "submitted, or submit its items again, not both"
        )
    if adopt_batch is not None and not _CUSTOM_ID.fullmatch(adopt_batch):
        raise ConfigurationError(f"--adopt-batch {adopt_batch!r} is not a batch id (msgbatch_…)")
    if saved is None:
        if adopt_batch is not None:
            raise ConfigurationError(
                f"--adopt-batch {adopt_batch}: {state_file} holds no record of a stopped "
                "submit to adopt it for, so which items it answers is unknown; nothing was run. "
                "Run without --adopt-batch"
            )
        return
    if saved.accepted and adopt_batch not in (None, saved.batch_id):
        raise ConfigurationError(
            f"--adopt-batch {adopt_batch}: {state_file} already holds provider batch "
            f"{saved.batch_id}, whose id was saved when it was submitted; run without "
            "--adopt-batch to collect it"
        )
    if saved.accepted and resubmit:
        raise ConfigurationError(
            f"--resubmit: {state_file} holds provider batch {saved.batch_id}, whose id was "
            "saved when it was submitted; run without --resubmit to collect it (nothing is "
            f"paid twice), or delete {state_file} to submit its items again (paying again)"
        )


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


async def _settle(
    backend: ProviderBatches,
    record: _batch_files.ProviderBatchState,
    state_file: Path,
    model: str,
    adopt_batch: str | None,
) -> _batch_files.ProviderBatchState | None:
    """The batch a run stopped mid-submit got accepted, saved as this run's to collect; None
    (the record removed) when the provider has none, so its items are submitted again."""
    count = len(record.custom_ids)
    at = record.submitting_at or 0.0
    if adopt_batch is None:
        listing = getattr(backend, "list_batches", None)
        try:
            if listing is None:
                raise ConfigurationError(f"{type(backend).__name__} cannot list its batches")
            listed = await listing(since=at - CLOCK_SLACK_S, model=model)
        except Exception as exc:
            raise UnsavedBatchError(
                f"{state_file} records a provider batch of {count} request(s) being submitted "
                f"at {_when(at)} when the run stopped, and listing the provider's batches to "
                f"find out whether it was accepted failed ({type(exc).__name__}: {exc}); "
                "nothing was submitted, as it may have been accepted and would be paid twice. "
                "Run the same command again once the API answers, or rerun with --adopt-batch "
                "ID (the batch's id, from the provider's console) or --resubmit (submit again, "
                "paying again if it was accepted)",
                state_file=str(state_file),
            ) from exc
        found = [b.id for b in listed if b.requests == count and b.id not in record.earlier]
        if not found:
            logger.warning(
                "%s records a provider batch of %d request(s) being submitted at %s when the run "
                "stopped; the provider has no batch of that size created since, so it was never "
                "accepted: submitting those requests now",
                state_file,
                count,
                _when(at),
            )
            _batch_files.remove_state(state_file)
            return None
        if len(found) > 1:
            raise UnsavedBatchError(
                f"{state_file} records a provider batch of {count} request(s) being submitted "
                f"at {_when(at)} when the run stopped, and the provider has {len(found)} "
                f"batches of that size created since: {', '.join(found)}. Which one is this "
                "run's cannot be told, so nothing was submitted. Rerun with --adopt-batch ID to "
                "collect one (its results are refused if they are not this run's), or with "
                "--resubmit to submit the items again (paying again; cancel the others in the "
                "provider's console)",
                state_file=str(state_file),
                candidates=found,
            )
        adopt_batch = found[0]
    else:  # the user's id: one that does not exist must not replace the record
        try:
            await backend.batch_ended(adopt_batch, model=model)
        except BackendError as exc:
            raise UnsavedBatchError(
                f"--adopt-batch {adopt_batch}: reading that batch failed ({exc}); {state_file} "
                "keeps its record and nothing was submitted. Check the id in the provider's "
                "console and rerun with it, or with --resubmit",
                state_file=str(state_file),
                candidates=(adopt_batch,),
            ) from exc
    adopted = replace(record, batch_id=adopt_batch)
    _save_before_submit(state_file, adopted, f"the id of provider batch {adopt_batch}")
    logger.warning(
        "%s recorded a provider batch of %d request(s) being submitted when the run stopped: "
        "collecting batch %s as that one",
        state_file,
        count,
        adopt_batch,
    )
    return adopted


def _save_before_submit(
    state_file: Path, state: _batch_files.ProviderBatchState, what: str
) -> None:
    """Save `state` while nothing is submitted yet; a failure says so."""
    try:
        _batch_files.write_state(state_file, state)
    except OSError as exc:
        raise BatchOutputError(
            state_file,
            exc,
            written=None,
            message=f"saving {what} in {state_file} failed ({exc.strerror or exc}); nothing was "
            "submitted: fix that (free disk space, permissions) and run the same command again",
        ) from exc


def _saved_state(state_file: Path) -> _batch_files.ProviderBatchState | None:
    try:
        return _batch_files.read_state(state_file)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"{state_file} (the saved id of a submitted provider batch) cannot be read: {exc}. "
            "Restore it, or delete it to submit those items again (the old batch stays billed)"
        ) from None


def _digest(chunk: _Chunk, batch_params: Callable[[ModelRequest], dict[str, Any]]) -> str:
    """A fingerprint of the submitted requests, to notice a changed input file or task."""
    hasher = hashlib.sha256()
    for custom_id in sorted(chunk):
        params = batch_params(chunk[custom_id][1])
        hasher.update(json.dumps([custom_id, params], sort_keys=True).encode("utf-8", "replace"))
    return hasher.hexdigest()


def _saved_chunk(
    task: Task[Any],
    source: Path,
    saved: _batch_files.ProviderBatchState,
    state_file: Path,
    batch_params: Callable[[ModelRequest], dict[str, Any]],
) -> _Chunk:
    """Rebuild a saved batch's requests from `source`; refuse when they are not the ones sent."""
    by_key = {key: custom_id for custom_id, key in saved.custom_ids.items()}
    chunk: _Chunk = {}
    problem = None
    if saved.task != task.name or saved.model != task.model:
        problem = f"it was submitted for task {saved.task!r} on {saved.model}"
    else:
        with _file_lines(source) as lines:
            for item in _located(task, read_items(lines), source):
                custom_id = by_key.get(item.key)
                if custom_id is not None and item.problem is None:
                    try:
                        chunk[custom_id] = (item, task.request(**item.inputs))
                    except Exception as exc:
                        problem = f"item {item.key!r} no longer renders: {exc}"
                        break
        missing = len(saved.custom_ids) - len(chunk)
        if problem is None and missing:
            problem = f"{missing} of its items are no longer in {source}"
        elif problem is None and _digest(chunk, batch_params) != saved.digest:
            problem = f"its requests differ from what {source} and task {task.name!r} give now"
    if problem is not None:
        what = f"provider batch {saved.batch_id}" if saved.accepted else "the provider batch"
        raise ConfigurationError(
            f"{what} (saved in {state_file}) cannot be resumed: "
            f"{problem}. Restore the input file and task, or delete {state_file} to submit "
            "those items again (the old batch stays billed)"
        )
    return chunk


async def _one_batch(
    task: Task[Any],
    backend: ProviderBatches,
    pending: list[tuple[BatchItem, ModelRequest]],
    poll_s: float,
    emit: Callable[[BatchResult], None],
    state_file: Path,
    endpoint: str,
    submitted: list[str],
) -> None:
    nonce = secrets.token_hex(5)  # this submit's mark, carried by every custom id
    chunk: _Chunk = {}
    for index, pair in enumerate(pending):  # the item's own id when the API accepts it as one
        custom_id = f"{pair[0].key}-{nonce}"
        if not _CUSTOM_ID.fullmatch(custom_id):
            custom_id = f"item-{index}-{nonce}"
        suffix = 0
        while custom_id in chunk:
            suffix += 1
            custom_id = f"item-{index}-{suffix}-{nonce}"
        chunk[custom_id] = pair
    record = _batch_files.ProviderBatchState(
        batch_id="",
        task=task.name,
        model=task.model,
        digest=_digest(chunk, backend.batch_params),
        custom_ids={cid: item.key for cid, (item, _) in chunk.items()},
        nonce=nonce,
        submitting_at=time.time(),
        endpoint=endpoint,
        earlier=tuple(submitted),
    )
    # durable before the submit: a kill after the provider accepts leaves this record
    _save_before_submit(state_file, record, "the record of a provider batch about to be submitted")
    try:
        batch_id = await backend.submit_batch([(cid, req) for cid, (_, req) in chunk.items()])
    except BackendError as exc:
        if exc.status is not None and 400 <= exc.status < 500:  # refused: nothing accepted
            _batch_files.remove_state(state_file)
        raise
    submitted.append(str(batch_id))
    state = replace(record, batch_id=str(batch_id))
    try:
        _batch_files.write_state(state_file, state)
    except OSError as exc:  # unsaved, a rerun would submit and pay for it again
        model = next(request.model for _, request in chunk.values())  # its endpoint's
        raise await _cancel_unsaved(backend, state, state_file, exc, model) from exc
    await _collect(task, backend, batch_id, chunk, poll_s, emit, frozenset())
    _batch_files.remove_state(state_file)


async def _cancel_unsaved(
    backend: ProviderBatches,
    state: _batch_files.ProviderBatchState,
    state_file: Path,
    error: OSError,
    model: str,
) -> BatchOutputError:
    """The error for a batch whose id could not be saved, once it is canceled (requests not
    processed yet are not billed; its submitting record is removed, so a rerun submits anew)
    or, when that fails too, with the id to find it by (the record stays: a rerun finds the
    batch at the provider and collects it)."""
    try:
        await backend.cancel_batch(state.batch_id, model=model)
    except BackendError as exc:
        outcome = (
            f"canceling it failed too ({exc}), so it runs and is billed: its id is "
            f"{state.batch_id} in the provider's console"
        )
        rerun = "it is looked up at the provider and collected, not submitted again"
    else:
        outcome = "it was canceled, so its requests are not billed"
        rerun = "its items are submitted again"
        _batch_files.remove_state(state_file)
    return BatchOutputError(
        state_file,
        error,
        written=None,
        message=(
            f"saving the id of provider batch {state.batch_id} in {state_file} failed "
            f"({error.strerror or error}); {outcome}. Fix that (free disk space, "
            f"permissions) and run the same command again: {rerun}"
        ),
    )


POLL_FAILURES = 10
"""Retryable failures in a row a batch's poll rides out: a day of polling meets some."""


async def _wait_for(
    backend: ProviderBatches, batch_id: str, model: str | None, poll_s: float
) -> None:
    """Poll until the batch has ended. An overloaded or failing status read (a retryable
    `BackendError`) is polled again; after `POLL_FAILURES` in a row, or another failure, the
    error says the batch is saved and a rerun collects it."""
    failures = 0
    while True:
        try:
            if await backend.batch_ended(batch_id, model=model):
                return
            failures = 0
        except BackendError as exc:
            failures += 1
            if not exc.retryable or failures >= POLL_FAILURES:
                raise BackendError(
                    f"polling provider batch {batch_id} failed ({exc}); it is saved, so run "
                    "the same command again to collect it (nothing is submitted twice)",
                    provider=exc.provider,
                    status=exc.status,
                    retryable=exc.retryable,
                ) from exc
            await asyncio.sleep(max(poll_s, exc.retry_after or 0.0))
            continue
        await asyncio.sleep(poll_s)


async def _collect(
    task: Task[Any],
    backend: ProviderBatches,
    batch_id: str,
    chunk: _Chunk,
    poll_s: float,
    emit: Callable[[BatchResult], None],
    skip: set[str] | frozenset[str],
    state_file: Path | None = None,
) -> None:
    """Wait for the batch to end, then write a line for each of its items not in `skip`; an
    item the results leave out (or never reach, when the API no longer has them) is an error
    line. Any other failure to read them raises, the saved state kept for a rerun; results of
    custom ids this run did not send (another run's batch, adopted) raise `UnsavedBatchError`
    naming `state_file`."""
    requests = {cid: req for cid, (_, req) in chunk.items()}
    # polled where it was submitted: the model's own endpoint and key when it has them
    model = next((request.model for request in requests.values()), None)
    await _wait_for(backend, batch_id, model, poll_s)
    seen: set[str] = set()
    gone: dict[str, str] | None = None
    results = aiter(backend.batch_results(batch_id, requests))
    while True:
        try:
            custom_id, reply = await anext(results)
        except StopAsyncIteration:
            break
        except Exception as exc:
            if isinstance(exc, BackendError) and exc.status in (404, 410):
                # the results are gone for good (deleted, past retention): their items are errors
                gone = _failure(
                    type(exc).__name__, f"batch {batch_id}: reading its results failed: {exc}"
                )
                break
            # a dropped or cut stream, an overloaded API, a key to fix: the paid results are
            # still there, and the saved state (kept, as this raises) lets a rerun read the
            # unwritten ones again
            raise BackendError(
                f"reading the results of provider batch {batch_id} failed "
                f"({type(exc).__name__}: {exc}); it is saved, so run the same command again to "
                "read them (nothing is submitted twice)",
                provider=getattr(exc, "provider", "batch"),
                retryable=True,
            ) from exc
        if custom_id not in chunk:  # an adopted batch that is another run's
            closing = getattr(results, "aclose", None)
            if closing is not None:
                await closing()
            raise _foreign(batch_id, custom_id, chunk, state_file)
        if custom_id in seen:
            continue
        seen.add(custom_id)
        item = chunk[custom_id][0]
        if item.key not in skip:
            emit(await _reply_line(task, batch_id, item, reply))
    for custom_id, (item, _) in chunk.items():
        if custom_id not in seen and item.key not in skip:
            error = gone or _failure(
                "BatchItemMissing", f"batch {batch_id} returned no result for this item"
            )
            emit(BatchResult(item.id, error=error))


def _foreign(
    batch_id: str, custom_id: str, chunk: _Chunk, state_file: Path | None
) -> UnsavedBatchError:
    ours = next(iter(chunk), "")
    kept = f"; {state_file} keeps the record of the stopped submit" if state_file else ""
    return UnsavedBatchError(
        f"provider batch {batch_id} answers custom id {custom_id!r}, which this run did not "
        f"submit (its custom ids are like {ours!r}, each ending in the run's mark): it is "
        f"another run's batch, so none of its results were written{kept}. Rerun with "
        "--adopt-batch ID of the right batch, or --resubmit to submit the items again "
        "(paying again)",
        state_file=str(state_file or ""),
        candidates=(batch_id,),
    )


async def _reply_line(
    task: Task[Any], batch_id: str, item: BatchItem, reply: ModelReply | str
) -> BatchResult:
    """One batch result as an output line: validated, run live when invalid, or an error."""
    if isinstance(reply, str):
        kind = "BatchItem" + reply.split(":")[0].capitalize()
        return BatchResult(item.id, error=_failure(kind, f"batch {batch_id}: {reply}"))
    model = task.model
    usage = Usage.of(  # priced through genai-prices' batch price context
        model,
        reply.input_tokens,
        reply.output_tokens,
        cache_read_tokens=reply.cache_read_tokens,
        cache_write_tokens=reply.cache_write_tokens,
        batch=True,
    )
    try:
        if reply.truncated:
            raise ValueError("truncated")
        output = task.validate_reply(reply)
    except ValueError:  # invalid or truncated: run it live, re-asks included
        live = await run_item(task, item)
        return replace(live, usage=usage + live.usage, attempts=live.attempts + 1)
    except Exception as exc:
        return BatchResult(
            item.id, error=_failure(type(exc).__name__, f"batch {batch_id}: {exc}"), model=model
        )
    return BatchResult(item.id, output, usage=usage, model=model, attempts=1)
