"""promptcast: prompt files become typed, tested functions on one shared foundation model.

```python
import promptcast as pc

tasks = pc.load_tasks("prompts/")
ticket = tasks.extract_ticket(message="Checkout crashes!")
```
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from promptcast import backends
from promptcast._config import (
    ProviderSettings,
    Settings,
    configure,
    get_config,
    override,
    reset_defaults,
)
from promptcast.batch import batch
from promptcast.errors import (
    BackendError,
    BudgetExceededError,
    ConfigurationError,
    OutputTruncatedError,
    OutputValidationError,
    PromptcastError,
    TaskDefinitionError,
    TaskInputError,
    TaskNotFoundError,
    UnsavedBatchError,
)
from promptcast.evals import EvalReport, aevaluate, evaluate
from promptcast.media import Document, DocumentInput, Image, ImageInput
from promptcast.render import Message, Prompt, fence
from promptcast.result import Attempt, Run, Usage
from promptcast.spec import TaskSpec
from promptcast.stream import AsyncStream, Stream, StreamClosedError, StreamInUseError
from promptcast.task import BoundTask, Task, TaskRegistry, builtin_tasks, load_tasks, task

try:
    __version__ = version("promptcast")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "AsyncStream",
    "Attempt",
    "BackendError",
    "BoundTask",
    "BudgetExceededError",
    "ConfigurationError",
    "Document",
    "DocumentInput",
    "EvalReport",
    "Image",
    "ImageInput",
    "Message",
    "OutputTruncatedError",
    "OutputValidationError",
    "Prompt",
    "PromptcastError",
    "ProviderSettings",
    "Run",
    "Settings",
    "Stream",
    "StreamClosedError",
    "StreamInUseError",
    "Task",
    "TaskDefinitionError",
    "TaskInputError",
    "TaskNotFoundError",
    "TaskRegistry",
    "TaskSpec",
    "UnsavedBatchError",
    "Usage",
    "__version__",
    "aevaluate",
    "backends",
    "batch",
    "builtin_tasks",
    "configure",
    "evaluate",
    "fence",
    "get_config",
    "load_tasks",
    "override",
    "reset_defaults",
    "task",
]
