"""The backend seam: one request in, one reply out.

A backend turns a rendered `ModelRequest` into a `ModelReply` for one provider. Everything else
(input checks, rendering, validation, re-asks, usage and cost) lives above it, so a new provider is
one file that implements `request` and `arequest`.
"""

from __future__ import annotations

import abc
import json
import re
import sys
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel

from promptcast.render import Prompt

__all__ = ["Backend", "ModelReply", "ModelRequest", "json_in_text", "raise_if_cassette_miss"]


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

    def tracing_headers(self) -> dict[str, str]:
        """Headers naming the task and its template hash: they let a replayed test tell prompt
        drift from a missing recording, and a proxy's logs tell tasks apart."""
        headers = {}
        if self.task:
            headers["x-promptcast-task"] = self.task
        if self.template_hash:
            headers["x-promptcast-template-hash"] = self.template_hash
        return headers


@dataclass(frozen=True)
class ModelReply:
    """What came back, before validation.

    `data` is the structured answer (e.g. a tool call's input) or the text for free-text output,
    `None` when the reply holds no answer at all; `text` is the raw answer for error messages.
    """

    data: Any
    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    truncated: bool = False
    raw: Any = field(default=None, repr=False)


class Backend(abc.ABC):
    """One provider. Subclasses implement `request` and `arequest`; `reask` has a default."""

    provider: str = "unknown"

    @abc.abstractmethod
    def request(self, request: ModelRequest) -> ModelReply:
        """Send one request and wait for its reply."""

    @abc.abstractmethod
    async def arequest(self, request: ModelRequest) -> ModelReply:
        """Send one request without blocking the event loop."""

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


_FENCED = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL)


def json_in_text(text: str) -> Any:
    """A JSON object the model wrote as text instead of calling the tool, or `None`."""
    candidates = [m.group(1) for m in _FENCED.finditer(text)]
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def raise_if_cassette_miss(exc: BaseException) -> None:
    """Under a replaying cassette, a request with no recording is a test problem, not a network
    one: say which task and cassette, and how to record it."""
    if "vcr" in sys.modules:
        from promptcast.testing.cassettes import cassette_miss

        miss = cassette_miss(exc)
        if miss is not None:
            raise miss from None
