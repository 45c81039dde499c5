"""The backend seam: one request in, one reply out.

A backend turns a rendered `ModelRequest` into a `ModelReply` for one provider. Everything else
(input checks, rendering, validation, re-asks, usage and cost) lives above it, so a new provider is
one file that implements `request` and `arequest`.
"""

from __future__ import annotations

import abc
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from pydantic import BaseModel

from promptcast import _json
from promptcast.errors import BackendError
from promptcast.media import media_header
from promptcast.render import Prompt

__all__ = [
    "Backend",
    "Capabilities",
    "ModelReply",
    "ModelRequest",
    "ProviderBatchInfo",
    "ProviderBatches",
    "StreamDelta",
    "is_transport_failure",
    "json_in_text",
    "malformed_reply",
    "token_count",
]


@dataclass(frozen=True)
class ModelRequest:
    """What to send: the provider's model name, the prompt and the shape of the answer.

    `output_model` is `None` for free-text output. `history` holds provider-shaped messages added
    after the prompt, e.g. a failed reply and its validation error on a re-ask.
    """

    model: str
    prompt: Prompt
    output_model: type[BaseModel] | None
    max_tokens: int = 1024
    temperature: float | None = None
    task: str | None = None
    template_hash: str | None = None
    timeout_s: float | None = None
    history: tuple[Any, ...] = ()
    # how the answer's shape is asked for: "native" (constrained decoding), "tool" (a forced tool
    # call), "prompted" (the schema in the prompt, JSON read from text); "text" when
    # `output_model` is None. Resolved before the request is built (`promptcast._modes`).
    output_mode: str = "tool"
    thinking_budget: int | None = None
    prompt_caching: bool = False

    def tracing_headers(self) -> dict[str, str]:
        """Headers naming the task and its template hash: they let a replayed test tell prompt
        drift from a missing recording, and a proxy's logs tell tasks apart."""
        headers = {}
        if self.task:
            headers["x-promptcast-task"] = self.task
        if self.template_hash:
            headers["x-promptcast-template-hash"] = self.template_hash
        media = media_header(self.prompt)
        if media:
            headers["x-promptcast-media"] = media
        return headers


@dataclass(frozen=True)
class ModelReply:
    """What came back, before validation.

    `data` is the structured answer (e.g. a tool call's input) or the text for free-text output,
    `None` when the reply holds no answer at all; `text` is the raw answer for error messages.
    """

    data: Any
    text: str
    input_tokens: int = 0  # uncached input only
    output_tokens: int = 0  # thinking included
    truncated: bool = False
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    raw: Any = field(default=None, repr=False)
    # what the provider says about the reply, for traces (GenAI semantic conventions)
    response_id: str | None = None
    response_model: str | None = None
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class StreamDelta:
    """A piece of the answer as it arrives: the next characters of the answer's text (the JSON of
    the output in tool, native and prompted modes; the text itself for free-text output).
    Thinking and other blocks never arrive as deltas."""

    text: str


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do beyond one request: the task loop and the server ask, never guess."""

    batch: bool = False
    streaming: bool = False
    output_modes: frozenset[str] = frozenset({"tool"})


@dataclass(frozen=True)
class ProviderBatchInfo:
    """One batch as the provider lists it: enough to find a batch whose id was never saved."""

    id: str
    created_at: float
    """When the provider created it, in epoch seconds."""
    requests: int
    """How many requests it holds, whatever their state."""


class ProviderBatches(Protocol):
    """What a backend whose `capabilities.batch` is true offers: the provider's batch API (half
    price, results within a day)."""

    def batch_params(self, request: ModelRequest) -> dict[str, Any]:
        """The request as one entry of a provider batch (no timeout, no per-request headers)."""
        ...

    async def submit_batch(self, requests: list[tuple[str, ModelRequest]]) -> str:
        """Submit `(custom_id, request)` pairs as one batch; returns its id."""
        ...

    async def batch_ended(self, batch_id: str, *, model: str | None = None) -> bool:
        """Whether the batch has finished processing."""
        ...

    async def cancel_batch(self, batch_id: str, *, model: str | None = None) -> None:
        """Cancel the batch: requests not processed yet are not billed."""
        ...

    async def list_batches(
        self, *, since: float, model: str | None = None
    ) -> list[ProviderBatchInfo]:
        """The batches created at or after `since` (epoch seconds), newest first: a run killed
        between submitting and saving the id finds its batch among them."""
        ...

    def batch_results(
        self, batch_id: str, requests: dict[str, ModelRequest]
    ) -> AsyncIterator[tuple[str, ModelReply | str]]:
        """Each request's reply, or why it has none ("expired", "errored: …", "canceled")."""
        ...


class Backend(abc.ABC):
    """One provider. Subclasses implement `request` and `arequest`; the rest has defaults.

    A backend owns its SDK clients and its provider's settings: it reads its own credentials
    (`promptcast._config.endpoint_settings`), closes only the clients it created, and keeps
    provider objects (SDK replies, re-ask history) to itself.
    """

    provider: str = "unknown"
    capabilities: Capabilities = Capabilities()

    @abc.abstractmethod
    def request(self, request: ModelRequest) -> ModelReply:
        """Send one request and wait for its reply."""

    @abc.abstractmethod
    async def arequest(self, request: ModelRequest) -> ModelReply:
        """Send one request without blocking the event loop."""

    def stream(self, request: ModelRequest) -> Iterator[StreamDelta | ModelReply]:
        """Send one request as a stream: `StreamDelta`s as the answer arrives, then the complete
        `ModelReply` (last). Closing the iterator early closes the provider's stream."""
        raise _no_streaming(self, request)
        yield  # pragma: no cover - makes this a generator

    async def astream(self, request: ModelRequest) -> AsyncIterator[StreamDelta | ModelReply]:
        """`stream` without blocking the event loop."""
        raise _no_streaming(self, request)
        yield  # pragma: no cover - makes this an async generator

    def check(self, model: str) -> None:  # noqa: B027 - a hook: nothing to check by default
        """Raise `ConfigurationError` when `model` cannot be called as configured (no credential,
        no base URL), before anything is sent. No I/O."""

    async def acheck(self, model: str, *, reachable: bool = False) -> None:
        """`check`, and with `reachable=True` also that the provider answers (a `BackendError`
        when it does not). The default only checks the configuration."""
        self.check(model)

    def endpoint(self, model: str) -> str:
        """Where requests for `model` go (a base URL): part of the response cache key, so an
        answer from one server is never served for another. Never includes a credential."""
        return f"{self.provider}:"

    def output_mode(self, request: ModelRequest) -> str:
        """How the answer's shape is asked for (`native`, `tool`, `prompted`, `text`): the
        request's resolved mode (part of the response cache key)."""
        return "text" if request.output_model is None else request.output_mode

    def warm_up(self, request: ModelRequest) -> None:  # noqa: B027 - a hook
        """Do the one-time work of a first request now (SDK import, schema building)."""

    def close(self) -> None:  # noqa: B027 - a hook: nothing to close by default
        """Close the clients this backend created (never one it was given)."""

    async def aclose(self) -> None:  # noqa: B027 - a hook
        """Close the running event loop's clients that this backend created."""

    def reask(self, request: ModelRequest, reply: ModelReply, error: str) -> ModelRequest:
        """The next request after `reply` failed validation with `error`.

        The default appends the reply and the error as a plain assistant/user exchange; providers
        with tool calls override it to answer the tool call instead.
        """
        history = (
            {"role": "assistant", "content": reply.text or "(no answer)"},
            {
                "role": "user",
                "content": f"Your answer did not validate:\n{error}\nAnswer again, fixing the errors.",
            },
        )
        return replace(request, history=request.history + history)


def _no_streaming(backend: Backend, request: ModelRequest) -> BackendError:
    return BackendError(
        f"the {backend.provider} backend cannot stream replies; call the task with run()/arun(), "
        "or use a model whose backend streams (anthropic/…, litellm providers, test/…)",
        provider=backend.provider,
        retryable=False,
        task=request.task,
        model=f"{backend.provider}/{request.model}",
    )


_FENCED = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL)


def json_in_text(text: str) -> Any:
    """A JSON object the model wrote as text instead of calling the tool, or `None`."""
    candidates = [m.group(1) for m in _FENCED.finditer(text)]
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            value = _json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def is_transport_failure(exc: BaseException) -> bool:
    """Whether an SDK's connection error was the network failing (worth a retry), rather than
    something else raised inside the HTTP transport (a test recorder's refusal, a bug)."""
    cause: BaseException | None = exc.__cause__ or exc.__context__
    seen = 0
    while cause is not None and seen < 10:
        if isinstance(cause, (OSError, TimeoutError)) or any(
            # httpx's and httpx2's (the anthropic SDK's fork) transport errors, matched by name so
            # that neither is imported here
            kind.__name__ in _TRANSPORT_ERRORS and kind.__module__.partition(".")[0] in _HTTP
            for kind in type(cause).__mro__
        ):
            return True
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    return False


_TRANSPORT_ERRORS = frozenset({"TransportError", "TimeoutException", "ConnectError"})
_HTTP = frozenset({"httpx", "httpx2", "httpcore", "httpcore2"})


def token_count(value: Any, name: str, *, optional: bool = False) -> int:
    """A token count from a provider's usage: a non-negative int (`None` is 0 where the API may
    leave the count out). Anything else (a string, a float, a negative number, from a proxy or a
    server that only looks like the API) raises `ValueError`, which the backends report as a
    reply that is not the API's shape, before it can price or budget anything wrongly."""
    if value is None and optional:
        return 0
    if type(value) is float and value.is_integer():  # 12.0 from a JSON encoder that has no ints
        value = int(value)
    if type(value) is not int or not 0 <= value <= _MAX_TOKENS:  # bool is an int, and no count
        raise ValueError(f"usage.{name} is {_short(value)}, not a count of tokens")
    return value


_MAX_TOKENS = 2**53  # no request comes near; beyond it JSON readers lose exactness


def _short(value: Any) -> str:
    """A bad count as an error may show it: a huge int by its size (`str` of one over 4,300
    digits raises), anything else cut to 80 characters."""
    if isinstance(value, int) and abs(value) > _MAX_TOKENS:
        return f"a {value.bit_length()}-bit integer"
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def malformed_reply(provider: str, request: ModelRequest, exc: BaseException) -> BackendError:
    """A 2xx reply that is not the provider's shape (a proxy's error page, another API): retryable,
    so fallbacks run and bulk runs record it and go on."""
    return BackendError(
        f"{provider} sent a reply that is not its API's shape ({type(exc).__name__}: {exc}); "
        "check the base URL points at the provider's API",
        provider=provider,
        retryable=True,
        task=request.task,
        model=f"{provider}/{request.model}",
    )
