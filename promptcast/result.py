"""What a call returns besides its output: `Run` (output, usage, attempts, model) and `Usage`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, NamedTuple, TypeVar

__all__ = ["Attempt", "Run", "Usage"]

T = TypeVar("T")


class Usage:
    """Tokens and cost. `cost_usd` is `None` when a model's price is unknown.

    `input_tokens` counts only uncached input; tokens written to and read from the provider's
    prompt cache are `cache_write_tokens` and `cache_read_tokens` (each priced at its own rate),
    and `output_tokens` includes thinking. The price lookup runs when `cost_usd` is first read,
    not on the call's hot path: a caller that never reads the cost never pays for it.
    """

    __slots__ = (
        "_cost",
        "_unpriced",
        "cache_read_tokens",
        "cache_write_tokens",
        "input_tokens",
        "output_tokens",
    )

    def __init__(
        self,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float | None = 0.0,
        *,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> None:
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.cache_read_tokens = cache_read_tokens
        self.cache_write_tokens = cache_write_tokens
        self._cost = cost_usd
        self._unpriced: tuple[_Priced, ...] = ()

    @classmethod
    def of(
        cls,
        model: str,
        input_tokens: int,
        output_tokens: int,
        *,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        batch: bool = False,
    ) -> Usage:
        """The usage of one request to `model`, priced on first read (at the provider's batch
        price with `batch=True`)."""
        usage = cls(
            input_tokens,
            output_tokens,
            cache_read_tokens=cache_read_tokens,
            cache_write_tokens=cache_write_tokens,
        )
        usage._unpriced = (
            _Priced(
                model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, batch
            ),
        )
        return usage

    @property
    def cost_usd(self) -> float | None:
        if self._unpriced:
            from promptcast.pricing import cost_usd

            total = self._cost
            for p in self._unpriced:
                total = _add_cost(
                    total,
                    cost_usd(
                        p.model,
                        p.input_tokens,
                        p.output_tokens,
                        cache_read_tokens=p.cache_read_tokens,
                        cache_write_tokens=p.cache_write_tokens,
                        batch=p.batch,
                    ),
                )
            self._cost, self._unpriced = total, ()
        return self._cost

    @property
    def total_tokens(self) -> int:
        """Every input token (uncached, written to and read from the cache) plus output."""
        return (
            self.input_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
            + self.output_tokens
        )

    def __add__(self, other: Usage) -> Usage:
        total = Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            _add_cost(self._cost, other._cost),
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
        )
        total._unpriced = self._unpriced + other._unpriced
        return total

    def _key(self) -> tuple[int, int, int, int, float | None]:
        return (
            self.input_tokens,
            self.output_tokens,
            self.cache_read_tokens,
            self.cache_write_tokens,
            self.cost_usd,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Usage):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        cached = (
            f", cache_read_tokens={self.cache_read_tokens}, "
            f"cache_write_tokens={self.cache_write_tokens}"
            if self.cache_read_tokens or self.cache_write_tokens
            else ""
        )
        return (
            f"Usage(input_tokens={self.input_tokens}, output_tokens={self.output_tokens}"
            f"{cached}, cost_usd={self.cost_usd!r})"
        )


class _Priced(NamedTuple):
    """One request's tokens, kept until the cost is first read."""

    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    batch: bool


def _add_cost(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a + b, 10)


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
    """The result of one task call: the validated output and everything it took to get it.

    A cached run (`cached=True`) made no provider request: its usage is zero and `attempts` is 0.
    """

    output: T
    usage: Usage
    model: str
    task: str
    task_version: int | str
    template_hash: str
    latency_s: float
    attempt_log: tuple[Attempt, ...] = field(default=())
    cached: bool = False  # answered from the response cache: no request, zero usage and cost
    output_mode: str = "tool"  # how the answer's shape was asked for: native, tool, prompted, text

    @property
    def attempts(self) -> int:
        """How many provider requests the call made (1 when the first reply was valid)."""
        return len(self.attempt_log)
