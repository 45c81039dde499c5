"""Streaming: typed partial outputs while a reply arrives, then the validated `Run`.

A stream runs the very call plan `run()` runs (same re-asks, fallbacks, budgets, cache and usage),
except that each request goes through the backend's `stream()`: its deltas are parsed with jiter's
partial mode (`pydantic_core.from_json(..., allow_partial=...)`) and built leniently into output
model instances, so a consumer can render fields as they fill in. When an attempt is voided (its
reply did not validate, or the provider failed mid-stream and the call goes on), a `Restart` event
carries the new attempt number and `Stream.attempt` follows it. Once exhausted, `stream.run` holds
the final `Run`, validated strictly exactly as `run()` validates it.

Closing a stream early (`break`, `close()`, leaving a `with` block, a cancelled task) closes the
provider's stream: no connection is leaked and nothing more is generated.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import typing
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from functools import lru_cache
from types import TracebackType, UnionType
from typing import Annotated, Any, Generic, TypeVar, Union

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import from_json

from promptcast import cache as _cache
from promptcast.backends import _deadline as _reads
from promptcast.backends.base import ModelReply, StreamDelta
from promptcast.errors import BackendError, PromptcastError
from promptcast.result import Run
from promptcast.task import _CacheGet, _no_reply_in_time, _Plan, _Send, _Sleep, _Thrown

__all__ = [
    "AsyncStream",
    "Final",
    "Partial",
    "Restart",
    "Stream",
    "StreamClosedError",
    "StreamEvent",
    "StreamInUseError",
    "partial_output",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Partial(Generic[T]):
    """The output so far of attempt `attempt`: an output-model instance whose known fields only
    grow (text for free-text tasks)."""

    output: T
    attempt: int


@dataclass(frozen=True, slots=True)
class Restart:
    """Attempt `attempt` starts (on `model`): every earlier partial is void. `reason` says why the
    previous attempt ended: `"invalid"` (a re-ask or the next fallback follows) or `"error"`."""

    attempt: int
    model: str
    reason: str


@dataclass(frozen=True, slots=True)
class Final(Generic[T]):
    """The call is done: the validated output with usage, cost and attempts."""

    run: Run[T]


StreamEvent = Partial[T] | Restart | Final[T]


class StreamClosedError(PromptcastError, RuntimeError):
    """The stream was closed before its end, so it has no final `Run`."""


class StreamInUseError(PromptcastError, RuntimeError):
    """Another thread or task is reading this stream right now: a stream has one reader."""


def _in_use() -> StreamInUseError:
    return StreamInUseError(
        "this stream is being read by another thread or task right now; read a stream in one "
        "place (hand its partial outputs on with a queue), or start one stream per reader"
    )


def _closed(error: Exception | None) -> StreamClosedError:
    """Why a closed stream has nothing more: closed by its consumer, or ended by `error` (kept
    as the cause, and named, so a later `run` does not claim the caller closed it)."""
    if error is None:
        return StreamClosedError("this stream was closed; start a new one")
    closed = StreamClosedError(
        f"this stream ended with {type(error).__name__}: {error}; start a new one"
    )
    closed.__cause__ = error
    return closed


# partial outputs

_TRAILING_NUMBER = re.compile(r"[-+0-9.eE]+\Z")


def _parse_partial(text: str) -> Any:
    """The JSON value of the incomplete document `text` (jiter's partial mode: open strings,
    lists and objects are closed where they stop). A number at the very end may be cut in two
    (`12` of `125`), so it is left out until something follows it. `None` when unreadable."""
    try:
        value = from_json(text, allow_partial="trailing-strings")
        # a digit at the end is either in an open string (one more character shows in its value)
        # or ends a number that may go on: then the number is left out for now
        if text[-1:].isdigit() and from_json(text + "x", allow_partial="trailing-strings") == value:
            value = from_json(_TRAILING_NUMBER.sub("", text), allow_partial="trailing-strings")
        return value
    except (ValueError, TypeError):  # TypeError: a lone surrogate in the text, which jiter refuses
        return None


def partial_output(output_model: type[BaseModel] | None, text: str) -> Any:
    """The output so far of the answer text `text`: the text itself for free-text output, else
    an `output_model` instance built leniently from the JSON received so far (fields not yet
    known are `None` or their default; a value that does not validate yet is left out), or
    `None` when nothing is known yet."""
    if output_model is None:
        return text or None
    start = text.find("{")  # prompted mode: skip a code fence or a sentence before the JSON
    if start < 0:
        return None
    data = _parse_partial(text[start:])
    if not isinstance(data, dict):
        return None
    return _build(output_model, data)


class _Missing:
    pass


_MISSING = _Missing()


@lru_cache(maxsize=1024)
def _adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation)


def _build(model: type[BaseModel], data: dict[str, Any]) -> BaseModel:
    values: dict[str, Any] = {}
    known: set[str] = set()
    for name, field in model.model_fields.items():
        key = field.alias if field.alias in data else name
        value = _lenient(field.annotation, data[key]) if key in data else _MISSING
        if isinstance(value, _Missing):
            values[name] = (
                None
                if field.is_required()
                else field.get_default(call_default_factory=True, validated_data=values)
            )
        else:
            values[name] = value
            known.add(name)
    return model.model_construct(_fields_set=known, **values)


def _lenient(annotation: Any, value: Any) -> Any:
    """`value` validated as `annotation`, else the parts of it that validate (a nested model's
    known fields, a list's valid items), else `_MISSING`."""
    try:
        return _adapter(annotation).validate_python(value)
    except (ValidationError, TypeError):  # TypeError: an annotation pydantic cannot hash or take
        pass
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _build(annotation, value) if isinstance(value, dict) else _MISSING
    if origin is Annotated:
        return _lenient(args[0], value)
    if origin in (Union, UnionType):
        for option in args:
            if option is not type(None):
                found = _lenient(option, value)
                if not isinstance(found, _Missing):
                    return found
        return _MISSING
    if origin in (list, tuple, set, frozenset) and isinstance(value, list):
        item = args[0] if args else Any
        items = [_lenient(item, v) for v in value]
        return [i for i in items if not isinstance(i, _Missing)]
    return _MISSING


class _Partials:
    """The answer text of one attempt, and the last partial output built from it."""

    def __init__(self, output_model: type[BaseModel] | None) -> None:
        self.output_model = output_model
        self.text = ""
        self.last: Any = None

    def add(self, delta: str) -> Any:
        """The new partial output after `delta`, or `None` when it did not change."""
        self.text += delta
        value = partial_output(self.output_model, self.text)
        if value is None or value == self.last:
            return None
        if isinstance(value, BaseModel) and not value.model_fields_set:  # no field known yet
            return None
        self.last = value
        return value


def _stream_failed(step: _Send, message: str) -> BackendError:
    """A retryable failure of one streamed request: the plan retries it or falls back."""
    request = step.request
    return BackendError(
        message,
        provider=step.backend.provider,
        retryable=True,
        task=request.task,
        model=f"{step.backend.provider}/{request.model}",
    )


def _unfinished(step: _Send) -> BackendError:
    return _stream_failed(
        step, f"the {step.backend.provider} stream ended without a complete reply"
    )


class _Attempts:
    """What the drivers share: attempt numbering and restart events."""

    def __init__(self) -> None:
        self.attempt = 0
        self.outcome = "invalid"
        self.last: Any = None

    def start(self, step: _Send) -> Restart | None:
        self.attempt += 1
        self.last = None
        if self.attempt == 1:
            return None
        return Restart(self.attempt, f"{step.backend.provider}/{step.request.model}", self.outcome)

    def ended(self, result: ModelReply | _Thrown) -> ModelReply | _Thrown:
        self.outcome = "error" if isinstance(result, _Thrown) else "invalid"
        return result

    def final(self, run: Run[Any]) -> Iterator[StreamEvent[Any]]:
        if self.last is None or self.last != run.output:
            yield Partial(run.output, max(self.attempt, 1))
        yield Final(run)


def _deadline(step: _Send) -> float | None:
    timeout = step.request.timeout_s
    return None if timeout is None else time.perf_counter() + timeout


# the drivers: the call plan of `Task.run`, with each send streamed


def _started(plan: _Plan[T]) -> _Plan[T]:
    """`plan`, run now to its first step: it reads its settings (`override()`, `configure()`:
    model, backends, fallbacks, budgets, cache) where the stream is made, not in whichever thread
    or later block first iterates it. A missing backend or key fails here too."""
    try:
        first = next(plan)
    except StopIteration as done:
        run: Run[T] = done.value

        def finished() -> _Plan[T]:
            return run
            yield  # a generator that ends at once

        return finished()

    def resumed() -> _Plan[T]:
        try:
            result = yield first
            while True:
                try:
                    step = plan.send(result)
                except StopIteration as done:
                    return typing.cast(Run[T], done.value)
                result = yield step
        finally:
            plan.close()

    return resumed()


def events(plan: _Plan[T]) -> Iterator[StreamEvent[T]]:
    """Drive `plan` synchronously, streaming each request; returns the stream's events (the plan
    starts here, see `_started`)."""
    if not _reads.installed:  # before any connection is made: see promptcast.backends._deadline
        _reads.install()
    return _events(_started(plan))


def _events(plan: _Plan[T]) -> Iterator[StreamEvent[T]]:
    attempts = _Attempts()
    result: Any = None
    while True:
        try:
            step = plan.send(result)
        except StopIteration as done:
            yield from attempts.final(typing.cast(Run[T], done.value))
            return
        result = None
        if isinstance(step, _Send):
            restart = attempts.start(step)
            if restart is not None:
                yield restart
            result = attempts.ended((yield from _streamed(step, attempts)))
        elif isinstance(step, _Sleep):
            time.sleep(step.seconds)
        elif isinstance(step, _CacheGet):
            result = _cache.read(step.cache, step.key)
        else:
            _cache.write(step.cache, step.key, step.value, step.ttl_s)


def _streamed(
    step: _Send, attempts: _Attempts
) -> typing.Generator[Partial[Any], None, ModelReply | _Thrown]:
    partials = _Partials(step.request.output_model)
    deadline = _deadline(step)
    # each read of the reply waits at most the time left (a trickle within the read timeout
    # held a stream for ever); current while the backend reads, never while the consumer runs
    reads = _reads.Deadline(deadline)
    with reads:
        chunks = step.backend.stream(step.request)
    iterator = iter(chunks)
    try:
        while True:
            with reads:
                chunk = next(iterator, None)
            if chunk is None:
                return _Thrown(_unfinished(step))
            if isinstance(chunk, ModelReply):
                return chunk
            if deadline is not None and time.perf_counter() > deadline:
                return _Thrown(_no_reply_in_time(step))
            value = partials.add(chunk.text)
            if value is not None:
                attempts.last = value
                yield Partial(value, attempts.attempt)
    except BackendError as exc:
        return _Thrown(_no_reply_in_time(step, exc) if reads.expired else exc)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


class _Late:
    """The stream's next chunk did not come before the call's deadline."""


async def _anext_within(
    chunks: AsyncIterator[StreamDelta | ModelReply], reads: _reads.Deadline
) -> StreamDelta | ModelReply | _Late | None:
    """The next chunk (`None` at the end), waiting at most until the deadline: a trickle (a
    byte, or a keep-alive comment, within the SDK's read timeout) held the next event for ever."""
    if reads.at is None:
        return await anext(chunks, None)
    try:
        # the reads of a sync client in a worker thread (to_thread copies this context) too
        with reads:
            async with asyncio.timeout(reads.at - time.perf_counter()) as limit:
                return await anext(chunks, None)
    except TimeoutError:
        if limit.expired():
            return _Late()
        raise


def aevents(plan: _Plan[T]) -> AsyncIterator[StreamEvent[T]]:
    """`events` without blocking the event loop."""
    if not _reads.installed:  # a sync client run in a worker thread reads through it
        _reads.install()
    return _aevents(_started(plan))


async def _aevents(plan: _Plan[T]) -> AsyncIterator[StreamEvent[T]]:
    attempts = _Attempts()
    result: Any = None
    while True:
        try:
            step = plan.send(result)
        except StopIteration as done:
            for event in attempts.final(typing.cast(Run[T], done.value)):
                yield event
            return
        result = None
        if isinstance(step, _Send):
            restart = attempts.start(step)
            if restart is not None:
                yield restart
            partials = _Partials(step.request.output_model)
            deadline = _deadline(step)
            chunks = step.backend.astream(step.request)
            reads = _reads.Deadline(deadline)
            result = _Thrown(_unfinished(step))
            try:
                while (chunk := await _anext_within(chunks, reads)) is not None:
                    if isinstance(chunk, _Late):
                        result = _Thrown(_no_reply_in_time(step))
                        break
                    if isinstance(chunk, ModelReply):
                        result = chunk
                        break
                    if deadline is not None and time.perf_counter() > deadline:
                        result = _Thrown(_no_reply_in_time(step))
                        break
                    value = partials.add(chunk.text)
                    if value is not None:
                        attempts.last = value
                        yield Partial(value, attempts.attempt)
            except BackendError as exc:
                result = _Thrown(_no_reply_in_time(step, exc) if reads.expired else exc)
            finally:
                close = getattr(chunks, "aclose", None)
                if close is not None:
                    await close()
            attempts.ended(result)
        elif isinstance(step, _Sleep):
            await asyncio.sleep(step.seconds)
        elif isinstance(step, _CacheGet):
            result = await _cache.aread(step.cache, step.key, step.timeout_s)
        else:
            await _cache.awrite(step.cache, step.key, step.value, step.ttl_s, step.timeout_s)


# what the consumer holds


class Stream(Generic[T]):
    """The partial outputs of a call, then its `Run`: `for partial in stream: …`, then
    `stream.run`. `stream.events()` gives every event (`Partial`, `Restart`, `Final`) instead.

    `attempt` is the number of the attempt the latest partials belong to; it grows when an
    attempt is voided. Use it as a context manager, or `close()` it, to stop early.
    """

    def __init__(self, events: Iterator[StreamEvent[T]]) -> None:
        self._events = events
        self._run: Run[T] | None = None
        self._closed = False
        self._error: Exception | None = None
        self._turn = threading.Lock()  # held while the provider's stream is read
        self.attempt = 1

    def events(self) -> Iterator[StreamEvent[T]]:
        """Every event of the stream, in order; the last one is `Final`."""
        if self._closed:
            raise _closed(self._error)
        other_reader = False
        try:
            while not self._closed:  # closed from another thread: stop at the next event
                if not self._turn.acquire(blocking=False):
                    other_reader = True
                    raise _in_use()
                try:
                    event = next(self._events, None)
                finally:
                    self._turn.release()
                if event is None:
                    return
                if isinstance(event, Restart):
                    self.attempt = event.attempt
                elif isinstance(event, Final):
                    self._run = event.run
                yield event
        except Exception as exc:
            if not other_reader:  # the other reader's stream goes on untouched
                self._error = exc
            raise
        finally:
            if self._run is None and not other_reader:
                self.close()

    def __iter__(self) -> Iterator[T]:
        for event in self.events():
            if isinstance(event, Partial):
                yield event.output

    @property
    def run(self) -> Run[T]:
        """The final `Run`; reads the rest of the stream first when it is not over yet."""
        if self._run is None:
            for _ in self.events():
                pass
        if self._run is None:  # closed from another thread meanwhile
            raise _closed(self._error)
        return self._run

    @property
    def output(self) -> T:
        """The final, validated output (`run.output`)."""
        return self.run.output

    def close(self) -> None:
        """Stop: closes the provider's stream. A closed stream has no `run`. Called while
        another thread reads the stream, it stops that reader at its next event."""
        self._closed = True
        if self._turn.acquire(blocking=False):  # else the reader closes it at its next event
            try:
                close = getattr(self._events, "close", None)
                if close is not None:
                    close()
            finally:
                self._turn.release()

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._run is None:
            self.close()

    def __repr__(self) -> str:
        state = "done" if self._run else "closed" if self._closed else f"attempt {self.attempt}"
        return f"<Stream {state}>"


class AsyncStream(Generic[T]):
    """`Stream` for `async for`: `async for partial in stream: …`, then `stream.run`.

    `async with task.astream(…) as stream:` closes the provider's stream as soon as the block is
    left; a stream abandoned without it is closed when the event loop finalizes it.
    """

    def __init__(self, events: AsyncIterator[StreamEvent[T]]) -> None:
        self._events = events
        self._run: Run[T] | None = None
        self._closed = False
        self._error: Exception | None = None
        self._reading = False  # while the provider's stream is awaited
        self._closing: asyncio.Future[None] | None = None  # the first close, while it runs
        self.attempt = 1

    async def events(self) -> AsyncIterator[StreamEvent[T]]:
        """Every event of the stream, in order; the last one is `Final`."""
        if self._closed:
            raise _closed(self._error)
        other_reader = False
        try:
            while not self._closed:  # closed by another task: stop at the next event
                if self._reading:
                    other_reader = True
                    raise _in_use()
                self._reading = True
                try:
                    event = await anext(self._events, None)
                finally:
                    self._reading = False
                if event is None:
                    return
                if isinstance(event, Restart):
                    self.attempt = event.attempt
                elif isinstance(event, Final):
                    self._run = event.run
                yield event
        except Exception as exc:
            if not other_reader:  # the other reader's stream goes on untouched
                self._error = exc
            raise
        finally:
            if self._run is None and not other_reader:
                await self.aclose()

    async def __aiter__(self) -> AsyncIterator[T]:
        async for event in self.events():
            if isinstance(event, Partial):
                yield event.output

    @property
    def run(self) -> Run[T]:
        """The final `Run`, once the stream is over (`await stream.result()` reads to the end)."""
        if self._run is None:
            if self._error is not None:
                raise _closed(self._error)
            raise StreamClosedError(
                "the stream is not over: iterate it to the end, or `await stream.result()`"
                if not self._closed
                else "the stream was closed before its end, so it has no final run"
            )
        return self._run

    async def result(self) -> Run[T]:
        """Read the rest of the stream and return the final `Run`."""
        if self._run is None:
            async for _ in self.events():
                pass
        return self.run

    async def aclose(self) -> None:
        """Stop: closes the provider's stream. A closed stream has no `run`. Called while
        another task reads the stream, it stops that reader at its next event."""
        self._closed = True
        if self._reading:  # the reader closes it at its next event
            return
        if self._closing is not None:
            # a second close while the first awaits the provider's (`async with` left after a
            # `break`, and the loop finalizing the abandoned `async for`): the provider's stream
            # cannot be closed twice at once ("aclose(): asynchronous generator is already
            # running"), so this one waits for the first
            await asyncio.shield(self._closing)
            return
        close = getattr(self._events, "aclose", None)
        if close is None:
            return
        self._closing = asyncio.get_running_loop().create_future()
        try:
            await close()
        finally:
            self._closing.set_result(None)

    async def __aenter__(self) -> AsyncStream[T]:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._run is None:
            await self.aclose()

    def __repr__(self) -> str:
        state = "done" if self._run else "closed" if self._closed else f"attempt {self.attempt}"
        return f"<AsyncStream {state}>"
