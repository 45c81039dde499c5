"""The response bodies the OpenAPI document shows besides each task's own schemas, and the one
result model per task (its typed output inside the usage and provenance every call returns)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from promptcast.task import Task

__all__ = [
    "CallUsage",
    "ExampleInfo",
    "Health",
    "InputInfo",
    "Ready",
    "TaskDetail",
    "TaskList",
    "TaskSummary",
    "detail",
    "result_model",
]


class CallUsage(BaseModel):
    """Tokens and cost of one task call, summed over its provider requests."""

    input_tokens: int = Field(description="Uncached input tokens.")
    output_tokens: int
    cache_read_tokens: int = Field(default=0, description="Input tokens read from the cache.")
    cache_write_tokens: int = Field(default=0, description="Input tokens written to the cache.")
    cost_usd: float | None = Field(description="US dollars; null when the price is unknown.")


class TaskSummary(BaseModel):
    name: str
    description: str
    version: int | str
    output: str = Field(description="The output type as written in the task file.")
    url: str = Field(description="Where to POST the inputs.")


class TaskList(BaseModel):
    tasks: list[TaskSummary]


class InputInfo(BaseModel):
    type: str
    required: bool
    default: Any = None
    description: str | None = None


class ExampleInfo(BaseModel):
    inputs: dict[str, Any]
    expect: dict[str, Any] | None = None
    expect_contains: dict[str, str] | str | None = None


class TaskDetail(BaseModel):
    name: str
    description: str
    version: int | str
    template_hash: str
    model: str
    output: str
    url: str
    inputs: dict[str, InputInfo]
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    examples: list[ExampleInfo]


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    tasks: int


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def result_model(task: Task[Any]) -> type[BaseModel]:
    """`<Task>Result`: the validated output of `task` with its usage, model and provenance."""
    output: Any = task.spec.output_model or str
    model: type[BaseModel] = create_model(
        f"{_camel(task.name)}Result",
        __config__=ConfigDict(title=f"{_camel(task.name)}Result"),
        output=(output, Field(description=f"The validated output of {task.name}.")),
        usage=(CallUsage, ...),
        model=(str, Field(description="The model string the call used.")),
        task=(str, ...),
        task_version=(int | str, ...),
        template_hash=(str, Field(description="Changes whenever the task file does.")),
        attempts=(int, Field(description="Provider requests made, re-asks included.")),
    )
    return model


@lru_cache(maxsize=1024)
def _schemas(task: Task[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The input and output JSON schemas of a task: fixed by its file, so built once."""
    spec = task.spec
    output = spec.output_model.model_json_schema() if spec.output_model else {"type": "string"}
    return spec.input_model.model_json_schema(), output


def detail(task: Task[Any]) -> TaskDetail:
    """`GET /v1/tasks/{name}`; built per request, as the model may change with the settings."""
    spec = task.spec
    input_schema, output_schema = _schemas(task)
    return TaskDetail(
        name=spec.name,
        description=spec.description,
        version=spec.version,
        template_hash=spec.template_hash,
        model=task.model,
        output=spec.output_text,
        url=f"/v1/tasks/{spec.name}",
        inputs={
            n: InputInfo(
                type=i.type_text,
                required=i.required,
                default=None if i.required else i.default,
                description=i.description,
            )
            for n, i in spec.inputs.items()
        },
        input_schema=input_schema,
        output_schema=output_schema,
        examples=[
            ExampleInfo(inputs=e.inputs, expect=e.expect, expect_contains=e.expect_contains)
            for e in spec.examples
        ],
    )
