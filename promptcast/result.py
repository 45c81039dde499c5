"""What a call returns besides its output: `Run` (output, usage, attempts, model) and `Usage`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Attempt", "Run", "Usage"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens and cost. `cost_usd` is `None` when the model's price is unknown."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0

    def __add__(self, other: Usage) -> Usage:
        cost = (
            None
            if self.cost_usd is None or other.cost_usd is None
            else round(self.cost_usd + other.cost_usd, 10)
        )
        return Usage(
            self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens, cost
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class Attempt:
    """One provider request of a call: which model, how it ended, what it cost."""

    model: str
    status: str  # "ok", "invalid", "truncated" or "error"
    usage: Usage
    latency_s: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Run(Generic[T]):
    """The result of one task call: the validated output and everything it took to get it."""

    output: T
    usage: Usage
    model: str
    task: str
    task_version: int | str
    template_hash: str
    latency_s: float
    attempt_log: tuple[Attempt, ...] = field(default=())

    @property
    def attempts(self) -> int:
        """How many provider requests the call made (1 when the first reply was valid)."""
        return len(self.attempt_log)
