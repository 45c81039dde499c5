"""The exception tree.

```
PromptcastError
├── TaskDefinitionError      a task file is wrong (file, line)        ┐
├── TaskNotFoundError        no task by that name (close matches)     │ you wrote it wrong:
├── TaskInputError           a call's inputs are wrong (task, field)  │ fix the file, the call
├── ConfigurationError       settings or install (env var, extra)     ┘ or the environment
├── BackendError             the provider failed (provider, status, retryable)  ┐
├── BudgetExceededError      a call would cost or take more than allowed        │ it failed at
└── OutputValidationError    the model never produced valid output              │ run time
    └── OutputTruncatedError the reply hit max_tokens                           ┘
```

Run-time errors carry the task name and the usage spent so far, so a failure is never a silent
cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from promptcast.result import Attempt, Usage

__all__ = [
    "BackendError",
    "BudgetExceededError",
    "ConfigurationError",
    "OutputTruncatedError",
    "OutputValidationError",
    "PromptcastError",
    "TaskDefinitionError",
    "TaskInputError",
    "TaskNotFoundError",
    "UnsavedBatchError",
]


class PromptcastError(Exception):
    """Base class of every error promptcast raises on purpose."""


class TaskDefinitionError(PromptcastError):
    """A task file (or a `@task` binding) is wrong; `file` and `line` say where."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        self.file = file
        self.line = line
        self.reason = message
        where = f"{file}:{line}: " if file and line else f"{file}: " if file else ""
        super().__init__(f"{where}{message}")


class TaskNotFoundError(PromptcastError, LookupError):
    """No task by that name; `matches` holds the closest names."""

    def __init__(self, name: str, *, known: Sequence[str] = ()) -> None:
        import difflib

        self.name = name
        self.matches = difflib.get_close_matches(name, list(known), n=3)
        hint = f" Did you mean {', '.join(map(repr, self.matches))}?" if self.matches else ""
        listing = f" Known tasks: {', '.join(sorted(known))}." if known else " No tasks are loaded."
        super().__init__(f"No task named {name!r}.{hint}{listing}")


class TaskInputError(PromptcastError, ValueError):
    """A call's inputs do not match the task's declared inputs; nothing was sent."""

    def __init__(self, task: str, field: str | None, message: str) -> None:
        self.task = task
        self.field = field
        where = f" input {field!r}" if field is not None else ""  # '' is a name too
        super().__init__(f"Task {task!r}{where}: {message}")


class ConfigurationError(PromptcastError):
    """Settings or installation are wrong; `env_var` or `extra` names what to change."""

    def __init__(self, message: str, *, env_var: str | None = None, extra: str | None = None):
        self.env_var = env_var
        self.extra = extra
        super().__init__(message)


class UnsavedBatchError(PromptcastError):
    """A provider batch run was stopped between submitting a batch and saving its id, and which
    batch the provider accepted, if any, cannot be told: guessing would bill it twice or write
    another run's results. `state_file` holds the record; `candidates` are the batch ids that
    may be it. Rerun choosing: `--adopt-batch ID` (`adopt_batch=`) or `--resubmit`."""

    def __init__(self, message: str, *, state_file: str, candidates: Sequence[str] = ()) -> None:
        self.state_file = state_file
        self.candidates = tuple(candidates)
        super().__init__(message)


class _RunError(PromptcastError):
    def __init__(
        self,
        message: str,
        *,
        task: str | None = None,
        model: str | None = None,
        usage: Usage | None = None,
        attempts: int = 0,
        attempt_log: tuple[Attempt, ...] = (),
    ) -> None:
        self.task = task
        self.model = model
        self.usage = usage
        self.attempts = attempts
        self.attempt_log = attempt_log  # the requests made before it: model, outcome, usage
        prefix = f"Task {task!r}" if task else "Call"
        on = f" on {model}" if model else ""
        super().__init__(f"{prefix}{on}: {message}")


class BackendError(_RunError):
    """The provider failed. `retryable` says whether trying again may help; `retry_after` is the
    provider's requested wait in seconds, when it sent one; `timed_out`, that no complete reply
    came in time (the server answers it with 504, not 502)."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        timed_out: bool = False,
        **context: Any,
    ) -> None:
        self.provider = provider
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.timed_out = timed_out
        super().__init__(message, **context)


class BudgetExceededError(_RunError):
    """The call would spend more money (`limit="max_cost_usd"`) or time (`limit="timeout_s"`)
    than its budget allows."""

    def __init__(self, message: str, *, limit: str, **context: Any) -> None:
        self.limit = limit
        super().__init__(message, **context)


class OutputValidationError(_RunError):
    """Every attempt returned output that failed the task's output schema.

    `raw_output` is the last reply as text, `errors` the last validation errors.
    """

    def __init__(
        self,
        message: str,
        *,
        raw_output: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        **context: Any,
    ) -> None:
        self.raw_output = raw_output
        self.errors = errors or []
        super().__init__(message, **context)


class OutputTruncatedError(OutputValidationError):
    """The reply stopped at `max_tokens` before the output was complete."""
