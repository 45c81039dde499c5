"""Tasks: a checked task file made callable, the registry of a folder of them, and `@task`.

A call is: validate inputs → render → one backend request → validate output, with re-asks when the
output does not validate. That loop is written once, as a generator that yields typed steps (send a
request, sleep, read or write the cache), and driven by a sync and an async driver; the async one
awaits every step, so no call blocks the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import time
import typing
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Generic, ParamSpec, TypeVar, overload

from pydantic import BaseModel, ValidationError

from promptcast import _modes, _telemetry
from promptcast import cache as _cache
from promptcast import media as _media
from promptcast._config import Settings, get_config, overridden
from promptcast._retry import backoff
from promptcast._tokens import text_tokens
from promptcast.backends import _deadline, resolve
from promptcast.backends.base import Backend, ModelReply, ModelRequest
from promptcast.errors import (
    BackendError,
    BudgetExceededError,
    OutputTruncatedError,
    OutputValidationError,
    TaskDefinitionError,
    TaskInputError,
    TaskNotFoundError,
)
from promptcast.pricing import cost_usd
from promptcast.render import Prompt, compile_template, content_text
from promptcast.result import Attempt, Run, Usage
from promptcast.spec import TASK_FILE_SUFFIXES, TaskSpec, parse_task_file

if typing.TYPE_CHECKING:
    from promptcast.stream import AsyncStream, Stream

__all__ = ["BoundTask", "Task", "TaskRegistry", "builtin_tasks", "load_tasks", "task"]

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")

BUILTIN_PROMPTS = Path(__file__).parent / "prompts"


# The steps a call yields to its driver; the driver sends back the step's result.


@dataclass(frozen=True, slots=True)
class _Send:
    """Send `request` to `backend`; the driver returns its `ModelReply` or throws `BackendError`."""

    backend: Backend
    request: ModelRequest
    span: _telemetry.RequestSpan = _telemetry.NO_REQUEST_SPAN  # current while it is sent


@dataclass(frozen=True, slots=True)
class _Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class _CacheGet:
    """Read `key`; the driver returns the stored text or `None` (a miss, a failure, a timeout)."""

    cache: _cache.Cache
    key: str
    timeout_s: float


@dataclass(frozen=True, slots=True)
class _CachePut:
    cache: _cache.Cache
    key: str
    value: str
    ttl_s: float | None
    timeout_s: float


_Step = _Send | _Sleep | _CacheGet | _CachePut
_Plan = Generator[_Step, Any, Run[T]]


class Task(Generic[T]):
    """One task file, checked and ready to call: `task(**inputs)` returns the validated output."""

    def __init__(self, spec: TaskSpec, *, model: str | None = None) -> None:
        self.spec = spec
        self._model = model
        self._render = compile_template(
            spec.template,
            task=spec.name,
            declared=set(spec.inputs),
            path=spec.path,
            first_line=spec.template_line,
            media=_media.media_inputs(spec),
        )
        self._media = bool(_media.media_inputs(spec))

    @classmethod
    def from_file(cls, path: str | Path) -> Task[Any]:
        """Load and check one task file."""
        return cls(parse_task_file(path))

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def description(self) -> str:
        return self.spec.description

    @property
    def output_model(self) -> type[BaseModel] | None:
        """The pydantic model of the output, or `None` for free text."""
        return self.spec.output_model

    @property
    def model(self) -> str:
        """The model string a call will use now: `with_model()`, then `pc.override(model=…)`,
        then the file's `model:`, then the configured default."""
        return self._model or overridden("model") or self.spec.model or get_config().model

    def with_model(self, model: str) -> Task[T]:
        """The same task pinned to another model (`"provider/model"`)."""
        return Task(self.spec, model=model)

    def __repr__(self) -> str:
        return f"<Task {self.name} v{self.spec.version} ({self.spec.path})>"

    # calling

    def render(self, /, **inputs: Any) -> Prompt:
        """The messages a call would send, without sending anything."""
        return self._render(self._check(inputs))

    def request(self, /, **inputs: Any) -> ModelRequest:
        """The first request a call would send to its model (for provider batch APIs)."""
        backend, model_name = resolve(self.model)
        return self._model_request(model_name, self.render(**inputs), backend)

    def _model_request(
        self, model_name: str, prompt: Prompt, backend: Backend | None = None
    ) -> ModelRequest:
        spec = self.spec
        if backend is None:
            backend = resolve(self.model)[0]
        mode = _modes.choose(
            backend.provider,
            model_name,
            task_mode=spec.output_mode,
            has_output=spec.output_model is not None,
            thinking=spec.thinking_budget is not None,
            supported=backend.capabilities.output_modes,
        )
        if mode == "prompted" and spec.output_model is not None:
            prompt = _modes.prompted_prompt(prompt, spec.output_model)
        return ModelRequest(
            model=model_name,
            prompt=prompt,
            output_model=spec.output_model,
            max_tokens=spec.max_tokens,
            temperature=spec.temperature,
            task=spec.name,
            template_hash=spec.template_hash,
            output_mode=mode,
            thinking_budget=spec.thinking_budget,
            prompt_caching=spec.prompt_caching and get_config().prompt_caching,
        )

    def validate_reply(self, reply: ModelReply, inputs: Mapping[str, Any] | None = None) -> T:
        """The validated output of a reply (to the call with `inputs`); raises pydantic's
        `ValidationError` when invalid."""
        return self._validate(reply, None if inputs is None else self._check(inputs))

    def __call__(self, /, **inputs: Any) -> T:
        return self.run(**inputs).output

    async def acall(self, /, **inputs: Any) -> T:
        return (await self.arun(**inputs)).output

    def run(self, /, **inputs: Any) -> Run[T]:
        """Call the model and return the output with its usage, cost and attempts."""
        if not _deadline.installed:  # before any connection is made: see _deadline
            _deadline.install()
        plan = self._plan(inputs)
        result: Any = None
        try:
            while True:
                step = plan.send(result)
                result = None
                if isinstance(step, _Send):
                    deadline: _deadline.Deadline | None = None
                    try:
                        with step.span:
                            if step.request.timeout_s is None:
                                result = step.backend.request(step.request)
                            else:  # as in arun: the whole reply within timeout_s, not each read
                                with _deadline.within(step.request.timeout_s) as deadline:
                                    result = step.backend.request(step.request)
                    except BackendError as exc:
                        if deadline is not None and deadline.expired:
                            exc = _no_reply_in_time(step, exc)
                        result = _Thrown(exc)
                elif isinstance(step, _Sleep):
                    time.sleep(step.seconds)
                elif isinstance(step, _CacheGet):
                    result = _cache.read(step.cache, step.key)
                else:
                    _cache.write(step.cache, step.key, step.value, step.ttl_s)
        except StopIteration as done:
            return typing.cast(Run[T], done.value)

    async def arun(self, /, **inputs: Any) -> Run[T]:
        """`run` without blocking the event loop: requests, waits and cache I/O are awaited."""
        plan = self._plan(inputs)
        result: Any = None
        try:
            while True:
                step = plan.send(result)
                result = None
                if isinstance(step, _Send):
                    deadline: _deadline.Deadline | None = None
                    try:
                        with step.span:
                            if step.request.timeout_s is None:
                                result = await step.backend.arequest(step.request)
                            else:  # the SDKs' timeout bounds each read, not the reply: a server
                                # sending a byte a second held a call with timeout_s for ever
                                async with asyncio.timeout(step.request.timeout_s):
                                    # and a sync client run in a worker thread (to_thread copies
                                    # this context) stops reading then, instead of going on
                                    with _deadline.within(step.request.timeout_s) as deadline:
                                        result = await step.backend.arequest(step.request)
                    except BackendError as exc:
                        if deadline is not None and deadline.expired:
                            exc = _no_reply_in_time(step, exc)
                        result = _Thrown(exc)
                    except TimeoutError:
                        result = _Thrown(_no_reply_in_time(step))
                elif isinstance(step, _Sleep):
                    await asyncio.sleep(step.seconds)
                elif isinstance(step, _CacheGet):
                    result = await _cache.aread(step.cache, step.key, step.timeout_s)
                else:
                    await _cache.awrite(
                        step.cache, step.key, step.value, step.ttl_s, step.timeout_s
                    )
        except StopIteration as done:
            return typing.cast(Run[T], done.value)

    def stream(self, /, **inputs: Any) -> Stream[T]:
        """Call the model, streaming: iterate the partial outputs (output-model instances whose
        fields fill in as the reply arrives), then read `stream.run`. Re-asks, fallbacks, budgets
        and usage work as in `run()`; a voided attempt raises `stream.attempt`."""
        from promptcast.stream import Stream, events

        self._check(inputs)  # a wrong input fails here, not at the first iteration
        return Stream(events(self._plan(inputs)))

    def astream(self, /, **inputs: Any) -> AsyncStream[T]:
        """`stream` for `async for`; use `async with task.astream(…) as stream:` to stop early."""
        from promptcast.stream import AsyncStream, aevents

        self._check(inputs)
        return AsyncStream(aevents(self._plan(inputs)))

    # the call, written once

    def _check(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        try:
            checked = self.spec.input_model.model_validate(dict(inputs))
        except ValidationError as exc:
            err = exc.errors()[0]
            field = str(err["loc"][0]) if err["loc"] else None
            undeclared = [str(name) for name in inputs if name not in self.spec.inputs]
            if field is None and undeclared:  # a name pydantic cannot read (a lone surrogate)
                field = undeclared[0]
            declared = ", ".join(self.spec.inputs) or "none"
            if err["type"] == "missing":
                message = f"is required; pass {field}=… (declared inputs: {declared})"
            elif err["type"] == "extra_forbidden" or field in undeclared:
                message = f"is not declared by the task (declared inputs: {declared})"
            elif field in self.spec.inputs:
                message = f"{err['msg']} (expected {self.spec.inputs[field].type_text})"
            else:
                message = err["msg"]
            if err["type"] == "media_too_large":
                raise _media.MediaTooLargeError(self.name, field, err["msg"]) from None
            raise TaskInputError(self.name, field, message) from None
        values = {name: getattr(checked, name) for name in self.spec.inputs}
        if self._media:
            _media.check_total(self.name, values.values())
        return values

    def _plan(self, inputs: Mapping[str, Any]) -> _Plan[T]:
        """`_steps` inside the call's task span (OpenTelemetry), which ends when the plan does."""
        traced = _telemetry.task_span(self.spec)
        try:
            run = yield from self._steps(inputs, traced)
        except BaseException as exc:
            traced.fail(exc)
            raise
        traced.finish(run)
        return run

    def _steps(self, inputs: Mapping[str, Any], traced: _telemetry.TaskSpan) -> _Plan[T]:
        """The whole call as a generator of steps (`_Send`, `_Sleep`, `_CacheGet`, `_CachePut`);
        receives each step's result (a failed send comes back as `_Thrown`); returns the `Run`.

        Models are tried in order (the task's model, then its fallbacks); each gets up to
        `max_attempts` requests (re-asks after invalid output), and each request up to
        `max_retries` transport retries. So one call makes at most
        `(1 + len(fallbacks)) * max_attempts * (1 + max_retries)` provider requests. With a
        response cache, an identical earlier success is returned first, with no request at all.
        """
        checked = self._check(inputs)
        prompt = self._render(checked)
        config = get_config()
        spec = self.spec
        fallbacks = overridden("fallbacks") or spec.fallbacks or config.fallbacks
        models = list(dict.fromkeys([self.model, *fallbacks]))
        routes = [(model, *resolve(model)) for model in models]
        for _, backend, model_name in routes:  # a missing key or URL fails before any request
            backend.check(model_name)
        max_attempts = spec.max_attempts or config.max_attempts
        budget = spec.budget
        max_cost = (budget.max_cost_usd if budget else None) or config.max_cost_usd
        timeout = (budget.timeout_s if budget else None) or config.timeout_s
        started = time.perf_counter()
        call = _Call(self, started + timeout if timeout else None, timeout, max_cost, config)
        call.traced = traced
        cache = _cache.shared_cache(config)
        key: str | None = None
        if cache is not None:
            key = self._cache_key(*routes[0], prompt)
            raw = yield _CacheGet(cache, key, config.cache_timeout_s)
            hit = _cache.decode(raw, spec, models[0], started)
            if hit is not None:
                return hit
        failure: BackendError | OutputValidationError | None = None
        for model, backend, model_name in routes:
            request = self._model_request(model_name, prompt, backend)
            reply: ModelReply | None = None
            errors: list[dict[str, Any]] = []
            try:
                for attempt in range(1, max_attempts + 1):
                    call.check_budget(model, request)
                    reply, spent = yield from call.send(model, backend, request, attempt)
                    call.usage += spent
                    if reply.truncated:
                        call.log(model, "truncated", spent, "max_tokens")
                        raise OutputTruncatedError(
                            f"the reply stopped at max_tokens={spec.max_tokens} before the "
                            f"output was complete; raise max_tokens in {spec.path}",
                            raw_output=reply.text,
                            **call.context(model),
                        )
                    try:
                        output = self._validate(reply, checked)
                    except ValidationError as exc:
                        errors = [dict(e) for e in exc.errors(include_url=False)]
                        feedback = _feedback(errors)
                        call.log(model, "invalid", spent, feedback)
                        if attempt < max_attempts:
                            request = backend.reask(request, reply, feedback)
                        continue
                    call.log(model, "ok", spent)
                    if cache is not None:
                        if model != models[0]:  # keep it under the key of the model that answered
                            key = self._cache_key(model, backend, model_name, prompt)
                        assert key is not None
                        yield _CachePut(
                            cache,
                            key,
                            _cache.encode(output, model, request.output_mode),
                            config.cache_ttl_s,
                            config.cache_timeout_s,
                        )
                    return Run(
                        output=output,
                        usage=call.usage,
                        model=model,
                        task=spec.name,
                        task_version=spec.version,
                        template_hash=spec.template_hash,
                        latency_s=time.perf_counter() - started,
                        attempt_log=tuple(call.attempts),
                        output_mode=request.output_mode,
                    )
                failure = OutputValidationError(
                    f"no valid output after {max_attempts} attempt(s); last errors: "
                    f"{_feedback(errors)}",
                    raw_output=reply.text if reply else None,
                    errors=errors,
                    **call.context(model),
                )
            except (BackendError, OutputTruncatedError) as exc:
                failure = exc
        assert failure is not None
        if len(models) > 1:
            failure.args = (f"{failure.args[0]} (tried {', '.join(models)})",)
        failure.usage, failure.attempts = call.usage, len(call.attempts)
        failure.attempt_log = tuple(call.attempts)
        raise failure

    def _cache_key(self, model: str, backend: Backend, model_name: str, prompt: Prompt) -> str:
        spec = self.spec
        return _cache.cache_key(
            model,
            spec.template_hash,
            _media.described_prompt(prompt) if self._media else prompt,
            spec.output_model,
            spec.max_tokens,
            spec.temperature,
            endpoint=backend.endpoint(model_name),
            output_mode=backend.output_mode(self._model_request(model_name, prompt, backend)),
        )

    def _validate(self, reply: ModelReply, inputs: Mapping[str, Any] | None = None) -> T:
        """The output of `reply`, validated with the call's inputs as validation context (so an
        output model can check an answer against them, e.g. a label against the given labels)."""
        model = self.spec.output_model
        if model is None:
            text = reply.data if isinstance(reply.data, str) else reply.text
            if not text.strip():
                raise ValidationError.from_exception_data(
                    "output", [{"type": "missing", "loc": ("output",), "input": text}]
                )
            return typing.cast(T, text)
        if reply.data is None:
            raise ValidationError.from_exception_data(
                model.__name__,
                [
                    {
                        "type": "model_type",
                        "loc": (),
                        "input": reply.text,
                        "ctx": {"class_name": model.__name__},
                    }
                ],
            )
        context = {"inputs": dict(inputs)} if inputs is not None else None
        return typing.cast(T, model.model_validate(reply.data, context=context))


@dataclass(frozen=True, slots=True)
class _Thrown:
    """A send that failed: the driver hands the error back as a value, and the plan raises it
    where it decides (so the traceback stays the provider's, not the generator's)."""

    error: BackendError


def _no_reply_in_time(step: _Send, cause: BaseException | None = None) -> BackendError:
    request = step.request
    within = f" within {request.timeout_s:.3g} s" if request.timeout_s is not None else ""
    error = BackendError(
        f"no complete reply{within} (the server is slow, or sends its reply slowly)",
        provider=step.backend.provider,
        retryable=True,
        timed_out=True,
        task=request.task,
        model=f"{step.backend.provider}/{request.model}",
    )
    error.__cause__ = cause  # the sync path's: the SDK's timeout error the deadline caused
    return error


class _Call:
    """The running totals of one call: usage, the attempt log, the deadline and the budget."""

    def __init__(
        self,
        task: Task[Any],
        deadline: float | None,
        timeout: float | None,
        max_cost: float | None,
        config: Settings,
    ) -> None:
        self.task = task
        self.deadline = deadline
        self.timeout = timeout
        self.max_cost = max_cost
        self.max_retries = config.max_retries
        self.cap = config.retry_max_wait_s
        self.usage = Usage()
        self.attempts: list[Attempt] = []
        self._sent = 0.0
        self.traced = _telemetry.NO_TASK_SPAN

    def context(self, model: str) -> dict[str, Any]:
        return {
            "task": self.task.name,
            "model": model,
            "usage": self.usage,
            "attempts": len(self.attempts),
            "attempt_log": tuple(self.attempts),
        }

    def log(self, model: str, status: str, usage: Usage, error: str | None = None) -> None:
        self.attempts.append(Attempt(model, status, usage, time.perf_counter() - self._sent, error))

    def remaining(self, model: str) -> float | None:
        if self.deadline is None:
            return None
        left = self.deadline - time.perf_counter()
        if left <= 0:
            raise BudgetExceededError(
                f"the call ran out of its timeout_s={self.timeout:g}",
                limit="timeout_s",
                **self.context(model),
            )
        return left

    def check_budget(self, model: str, request: ModelRequest) -> None:
        """Refuse to send a request whose estimated cost does not fit what is left."""
        if self.max_cost is None:
            return
        provider = model.partition("/")[0]
        estimate = cost_usd(model, _estimate_input_tokens(request, provider), request.max_tokens)
        spent = self.usage.cost_usd or 0.0
        if estimate is not None and spent + estimate > self.max_cost:
            raise BudgetExceededError(
                f"the next request could cost ${estimate:.6f} (input estimate plus max_tokens="
                f"{request.max_tokens}) with ${spent:.6f} spent, over max_cost_usd="
                f"{self.max_cost:g}; raise the budget or lower max_tokens",
                limit="max_cost_usd",
                **self.context(model),
            )

    def send(
        self, model: str, backend: Backend, request: ModelRequest, attempt: int = 1
    ) -> Generator[_Step, Any, tuple[ModelReply, Usage]]:
        """One request with transport retries; returns the reply and its usage, or raises the
        last `BackendError` when they run out. Each request is one client span (retries are
        siblings), a child of the task span; a span prices the usage, so it is priced once."""
        for retry in range(self.max_retries + 1):
            timeout = self.remaining(model)
            self._sent = time.perf_counter()
            sent = replace(request, timeout_s=timeout) if timeout is not None else request
            span = _telemetry.request_span(
                backend, sent, attempt=attempt, retry=retry, parent=self.traced
            )
            result = yield _Send(backend, sent, span)
            if not isinstance(result, _Thrown):
                reply = typing.cast(ModelReply, result)
                spent = Usage.of(
                    model,
                    reply.input_tokens,
                    reply.output_tokens,
                    cache_read_tokens=reply.cache_read_tokens,
                    cache_write_tokens=reply.cache_write_tokens,
                )
                span.ok(reply, spent)
                return reply, spent
            exc = result.error
            span.failed(exc)
            self.log(model, "error", Usage(), str(exc))
            if not exc.retryable or retry == self.max_retries:
                raise exc
            wait = backoff(retry, exc.retry_after, self.cap)
            if self.deadline is not None and time.perf_counter() + wait >= self.deadline:
                raise BudgetExceededError(
                    f"the call ran out of its timeout_s={self.timeout:g} ({exc})",
                    limit="timeout_s",
                    **self.context(model),
                ) from exc
            yield _Sleep(wait)
        raise AssertionError("unreachable")


def _estimate_input_tokens(request: ModelRequest, provider: str = "anthropic") -> int:
    """A cheap upper-side guess: the text sent by `promptcast._tokens.text_tokens` (a quarter of a
    token per English character, more in other scripts), and images and documents by the
    provider's formula (`promptcast.media.estimate_tokens`)."""
    prompt = request.prompt
    contents = [prompt.system or "", *(m["content"] for m in prompt.messages)]
    tokens = sum(text_tokens(content_text(c)) for c in contents)
    tokens += text_tokens(json.dumps(list(request.history), default=str, ensure_ascii=False))
    if request.output_model is not None:
        schema = request.output_model.model_json_schema()
        tokens += text_tokens(json.dumps(schema, ensure_ascii=False))
    media = sum(
        _media.estimate_tokens(part["value"], provider)
        for content in contents
        if not isinstance(content, str)
        for part in content
        if part["type"] == "media"
    )
    return tokens + 8 + media


def _feedback(errors: list[dict[str, Any]]) -> str:
    lines = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(answer)"
        lines.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(lines)


class TaskRegistry(Mapping[str, Task[Any]]):
    """Tasks by name; `registry.extract_ticket` and `registry["extract_ticket"]` both work."""

    def __init__(self, tasks: Mapping[str, Task[Any]] | None = None) -> None:
        self._tasks: dict[str, Task[Any]] = dict(tasks or {})

    def __getitem__(self, name: str) -> Task[Any]:
        try:
            return self._tasks[name]
        except KeyError:
            raise TaskNotFoundError(name, known=list(self._tasks)) from None

    def __getattr__(self, name: str) -> Task[Any]:
        if name.startswith("_"):  # private and dunder lookups (copy, pickle) stay ordinary
            raise AttributeError(name)
        return self[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def __dir__(self) -> list[str]:
        return [*super().__dir__(), *self._tasks]

    def __repr__(self) -> str:
        return f"<TaskRegistry {sorted(self._tasks)}>"

    def add(self, task: Task[Any]) -> None:
        """Add a task; a second task of the same name is an error."""
        if task.name in self._tasks:
            first = self._tasks[task.name].spec.path
            raise TaskDefinitionError(
                f"task name {task.name!r} is already used by {first}", file=task.spec.path, line=1
            )
        self._tasks[task.name] = task


def load_tasks(*dirs: str | Path) -> TaskRegistry:
    """Load every task file (`*.jinja`, and Prompty's `*.prompty` and Dotprompt's `*.prompt`)
    in the given folders (default: `PROMPTCAST_PROMPTS`)."""
    folders = [Path(d) for d in dirs] or [Path(d) for d in get_config().prompts]
    registry = TaskRegistry()
    for folder in folders:
        if not folder.is_dir():
            raise TaskDefinitionError("no such folder of task files", file=str(folder))
        for path in sorted(p for p in folder.iterdir() if p.suffix in TASK_FILE_SUFFIXES):
            registry.add(Task.from_file(path))
    return registry


@functools.cache
def builtin_tasks() -> TaskRegistry:
    """The tasks that ship with promptcast (`extract_ticket`, `translate`, …)."""
    return load_tasks(BUILTIN_PROMPTS)


class BoundTask(Generic[P, R]):
    """A task behind a typed Python signature; made by `@task`."""

    def __init__(self, task: Task[R], func: Callable[P, R]) -> None:
        self.task = task
        self._signature = inspect.signature(func)
        functools.update_wrapper(self, func)

    def _inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        try:
            return dict(self._signature.bind(*args, **kwargs).arguments)
        except TypeError as exc:
            raise TaskInputError(self.task.name, None, str(exc)) from None

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.task.run(**self._inputs(args, kwargs)).output

    def run(self, *args: P.args, **kwargs: P.kwargs) -> Run[R]:
        return self.task.run(**self._inputs(args, kwargs))

    async def acall(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return (await self.task.arun(**self._inputs(args, kwargs))).output

    def arun(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[Run[R]]:
        return self.task.arun(**self._inputs(args, kwargs))

    def stream(self, *args: P.args, **kwargs: P.kwargs) -> Stream[R]:
        return self.task.stream(**self._inputs(args, kwargs))

    def astream(self, *args: P.args, **kwargs: P.kwargs) -> AsyncStream[R]:
        return self.task.astream(**self._inputs(args, kwargs))

    def render(self, *args: P.args, **kwargs: P.kwargs) -> Prompt:
        return self.task.render(**self._inputs(args, kwargs))

    def __repr__(self) -> str:
        return f"<BoundTask {self.task.name} -> {self.task.spec.output_text}>"


@overload
def task(source: str | Path) -> Callable[[Callable[P, R]], BoundTask[P, R]]: ...
@overload
def task(source: Task[Any]) -> Callable[[Callable[P, R]], BoundTask[P, R]]: ...
def task(source: str | Path | Task[Any]) -> Callable[[Callable[P, R]], BoundTask[P, R]]:
    """Bind a task file to a typed signature; the signature is checked against the file.

    A relative path is resolved next to the module that defines the function.
    """

    def bind(func: Callable[P, R]) -> BoundTask[P, R]:
        loaded = source if isinstance(source, Task) else Task.from_file(_near(func, source))
        _check_signature(loaded, func)
        return BoundTask(typing.cast(Task[R], loaded), func)

    return bind


def _near(func: Callable[..., Any], path: str | Path) -> Path:
    path = Path(path)
    if path.is_absolute():
        return path
    module_file = inspect.getsourcefile(func)
    if module_file:
        candidate = Path(module_file).parent / path
        if candidate.exists():
            return candidate
    return path


def _check_signature(loaded: Task[Any], func: Callable[..., Any]) -> None:
    spec = loaded.spec
    where = f"{func.__module__}.{func.__qualname__}"

    def fail(message: str) -> typing.NoReturn:
        raise TaskDefinitionError(f"@task binding {where}: {message}", file=spec.path)

    try:
        hints = typing.get_type_hints(func)
    except Exception as exc:
        fail(f"cannot read its type hints ({exc})")
    params = inspect.signature(func).parameters
    if set(params) != set(spec.inputs):
        fail(f"parameters {sorted(params)} differ from the file's inputs {sorted(spec.inputs)}")
    for name, param in params.items():
        declared = spec.inputs[name]
        if name not in hints:
            fail(f"parameter {name!r} has no type annotation; the file says {declared.type_text}")
        if hints[name] != declared.type:
            fail(f"parameter {name!r} is {hints[name]!r} but the file says {declared.type_text}")
        has_default = param.default is not inspect.Parameter.empty
        if has_default != (not declared.required) or (
            has_default and param.default != declared.default
        ):
            expected = "no default" if declared.required else f"default {declared.default!r}"
            fail(f"parameter {name!r} must have {expected}, as in the file")
    expected_return = spec.output_model or str
    if hints.get("return") is not expected_return:
        fail(f"return type is {hints.get('return')!r} but the file's output is {spec.output_text}")
