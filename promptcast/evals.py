"""Evaluation: one task's cases on several models, compared on score, latency, tokens and cost.

Cases default to the task file's `examples:`; a case passes when its output meets `expect`
(subset match on fields) and `expect_contains` (case-insensitive substring), or when a custom
scorer (`module:function(output, case) -> float in 0..1`) returns 1. Everything runs through the
normal call path, so it works live, against fakes, or offline from cassettes.

An evaluation measures real calls: the response cache (`PROMPTCAST_CACHE`, `configure(cache=…)`)
is off for its calls, so the cost and latency compared are the models', not a cache hit's. To
resume a run that was stopped, save its results (`save=`, `--save FILE`): see `_eval_saved`.
"""

from __future__ import annotations

import asyncio
import html
import inspect
import math
import numbers
import statistics
import time
import typing
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr

from promptcast import _batch_files, _eval_saved, _json, _telemetry
from promptcast._config import override
from promptcast._eval_saved import EvalSaveBusyError, EvalSaveError
from promptcast._files import read_text
from promptcast._secrets import scrub
from promptcast.errors import OutputValidationError, PromptcastError, TaskInputError
from promptcast.media import media_inputs
from promptcast.result import Usage
from promptcast.spec import Example
from promptcast.task import Task

__all__ = [
    "CaseResult",
    "EvalReport",
    "EvalSaveBusyError",
    "EvalSaveError",
    "ModelScore",
    "Scorer",
    "aevaluate",
    "evaluate",
    "expectation_problems",
    "load_cases",
    "summary_rows",
    "to_html_chart",
    "to_markdown",
]

Scorer = Callable[[Any, Example], float | Awaitable[float]]


class CaseResult(BaseModel):
    """One case on one model."""

    model: str
    case: int
    score: float = Field(ge=0, le=1)
    passed: bool
    latency_s: float
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float | None = None
    outcome: str = Field(
        description="ok, failed (scored below 1), invalid (output never "
        "validated) or error (provider or budget failure, or the scorer failed)"
    )
    detail: str | None = None
    _attempts: int = PrivateAttr(default=0)  # provider requests made: saved, not reported


class ModelScore(BaseModel):
    """The summary row of one model."""

    model: str
    cases: int
    passed: int
    mean_score: float
    validation_failures: int
    errors: int
    mean_latency_s: float
    p95_latency_s: float
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float | None = Field(description="total; null when a price is unknown")
    cost_per_case_usd: float | None


class EvalReport(BaseModel):
    """What `promptcast eval --json` prints; `promptcast eval --schema` prints its JSON schema."""

    task: str
    task_version: int | str
    template_hash: str
    models: list[ModelScore]
    results: list[CaseResult]


def expectation_problems(output: Any, example: Example) -> list[str]:
    """What in `output` misses the example's `expect` / `expect_contains` (empty: it passes)."""
    data = output.model_dump(mode="json") if hasattr(output, "model_dump") else output
    problems = []
    for key, value in (example.expect or {}).items():
        got = data.get(key) if isinstance(data, dict) else data
        if got != value:
            problems.append(f"{key}: expected {value!r}, got {got!r}")
    contains = example.expect_contains or {}
    pairs = contains.items() if isinstance(contains, dict) else [("output", contains)]
    for key, part in pairs:
        got = data.get(key) if isinstance(data, dict) else data
        if str(part).lower() not in str(got).lower():
            problems.append(f"{key}: expected to contain {part!r}, got {got!r}")
    return problems


def load_cases(path: str | Path, task: Task[Any] | None = None) -> list[Example]:
    """Cases from JSONL: `{"inputs": {…}, "expect": {…}, "expect_contains": {…}}` per line.

    Lines end at `\\n` only (`str.splitlines` would also split inside a JSON string at U+2028,
    U+2029 or NEL), and each line is checked whole here, so a bad case stops the eval before
    any call rather than crashing it half way. Given the `task`, its image and document inputs
    given as file names are paths relative to the cases file, as in a batch input file."""
    media = media_inputs(task.spec) if task is not None else frozenset()
    try:
        text = read_text(Path(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskInputError(
            "eval", None, f"--cases {path} cannot be read ({exc}); give a UTF-8 JSONL file"
        ) from None
    cases = []
    for number, line in enumerate(text.split("\n"), 1):
        line = line.removeprefix("\ufeff")  # files joined with cat: a BOM at each join
        if not line.strip():
            continue
        try:
            data = _json.loads(line)
            problem = _case_problem(data)
        except ValueError as exc:
            problem = f"not JSON ({exc})"
        if problem is not None:
            raise TaskInputError(
                "eval",
                None,
                f"{path}:{number}: not a case: {problem}; a case is "
                '{"inputs": {…}, "expect": {…}, "expect_contains": {…} or "text"}',
            )
        inputs = data["inputs"]
        if media:
            inputs = _batch_files.media_paths(inputs, media, Path(path).parent)
        cases.append(
            Example(
                inputs,
                data.get("expect"),
                data.get("expect_contains"),
                data.get("name"),
                number,
            )
        )
    return cases


def _case_problem(data: Any) -> str | None:
    """Why a parsed cases line is not a case, or None."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    if not isinstance(data.get("inputs"), dict):
        return '"inputs" must be an object'
    if data.get("expect") is not None and not isinstance(data["expect"], dict):
        return '"expect" must be an object of output fields'
    contains = data.get("expect_contains")
    if contains is not None and not isinstance(contains, dict | str):
        return '"expect_contains" must be a string or an object of output fields'
    if data.get("name") is not None and not isinstance(data["name"], str):
        return '"name" must be a string'
    return None


async def _one(
    task: Task[Any], model: str, index: int, case: Example, scorer: Scorer | None
) -> CaseResult:
    started = time.perf_counter()
    try:
        run = await task.with_model(model).arun(**case.inputs)
    except Exception as exc:  # one case's failure, expected or not, never ends the comparison
        usage = getattr(exc, "usage", None)
        usage = usage if isinstance(usage, Usage) else None
        outcome = "invalid" if isinstance(exc, OutputValidationError) else "error"
        message = str(exc) if isinstance(exc, PromptcastError) else f"{type(exc).__name__}: {exc}"
        attempts = getattr(exc, "attempts", 0)
        failed = CaseResult(
            model=model,
            case=index,
            score=0.0,
            passed=False,
            latency_s=time.perf_counter() - started,
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            cache_read_tokens=usage.cache_read_tokens if usage else 0,
            cache_write_tokens=usage.cache_write_tokens if usage else 0,
            cost_usd=usage.cost_usd if usage else None,
            outcome=outcome,
            detail=scrub(message),  # reports are saved and shared: no credentials in them
        )
        failed._attempts = attempts if isinstance(attempts, int) else 0
        return failed
    if scorer is not None:
        scored, detail = await _scored(scorer, run.output, case)
    else:
        problems = expectation_problems(run.output, case)
        scored, detail = (0.0, "; ".join(problems)) if problems else (1.0, None)
    score = scored or 0.0
    result = CaseResult(
        model=model,
        case=index,
        score=score,
        passed=score >= 1.0,
        latency_s=run.latency_s,
        input_tokens=run.usage.input_tokens,
        output_tokens=run.usage.output_tokens,
        cache_read_tokens=run.usage.cache_read_tokens,
        cache_write_tokens=run.usage.cache_write_tokens,
        cost_usd=run.usage.cost_usd,
        # a scorer that failed: the call's numbers are kept, it ran and was paid for
        outcome="error" if scored is None else "ok" if score >= 1.0 else "failed",
        detail=detail,
    )
    result._attempts = run.attempts
    return result


def _scorer_name(scorer: Scorer) -> str:
    """What names a scorer in saved results: scores saved under another scorer are not reused."""
    module = getattr(scorer, "__module__", None)
    name = getattr(scorer, "__qualname__", None) or type(scorer).__qualname__
    return f"{module}:{name}" if module else name


async def _scored(scorer: Scorer, output: Any, case: Example) -> tuple[float | None, str | None]:
    """The scorer's score clamped to 0..1, or None and why: a scorer that raises or returns
    something that is not a number fails its case, not the whole (paid-for) comparison. An
    `async def` scorer is awaited (calling it only made a coroutine, never run)."""
    name = getattr(scorer, "__qualname__", repr(scorer))
    try:
        value = scorer(output, case)
        if inspect.isawaitable(value):
            value = await value
    except Exception as exc:
        return None, scrub(f"the scorer {name} raised {type(exc).__name__}: {exc}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        return None, f"the scorer {name} returned {value!r:.80}, not a number from 0 to 1"
    return min(1.0, max(0.0, float(value))), None


def _summary(model: str, results: list[CaseResult]) -> ModelScore:
    latencies = sorted(r.latency_s for r in results) or [0.0]
    costs = [r.cost_usd for r in results]
    total = None if any(c is None for c in costs) else round(sum(c or 0.0 for c in costs), 10)
    p95 = latencies[min(len(latencies) - 1, math.ceil(0.95 * len(latencies)) - 1)]
    return ModelScore(
        model=model,
        cases=len(results),
        passed=sum(r.passed for r in results),
        mean_score=statistics.fmean(r.score for r in results) if results else 0.0,
        validation_failures=sum(r.outcome == "invalid" for r in results),
        errors=sum(r.outcome == "error" for r in results),
        mean_latency_s=statistics.fmean(latencies),
        p95_latency_s=p95,
        input_tokens=sum(r.input_tokens for r in results),
        output_tokens=sum(r.output_tokens for r in results),
        cache_read_tokens=sum(r.cache_read_tokens for r in results),
        cache_write_tokens=sum(r.cache_write_tokens for r in results),
        cost_usd=total,
        cost_per_case_usd=None if total is None or not results else total / len(results),
    )


async def aevaluate(
    task: Task[Any],
    models: Sequence[str],
    cases: Iterable[Example] | None = None,
    *,
    scorer: Scorer | None = None,
    concurrency: int = 8,
    save: str | Path | None = None,
) -> EvalReport:
    """Run every case on every model (at most `concurrency` calls at once) and summarise.

    The response cache is off for these calls: the report compares the models' real cost and
    latency. With `save`, each finished case is appended to that JSONL file at once; a rerun
    with the same file skips the (model, case) pairs saved for this task's template (errored
    ones run again) and reports saved and new results together, as one uninterrupted run
    would. Raises `EvalSaveBusyError` when another run is saving to the file, and
    `ConfigurationError` (nothing written) when it is not an eval results file.
    """
    chosen = list(task.spec.examples if cases is None else cases)
    if not chosen:
        raise TaskInputError(
            task.name,
            None,
            "no cases: add examples: to the task file or pass cases (--cases FILE)"
            if cases is None
            else "no cases: the cases given (--cases FILE) hold none; add a line per case, "
            '{"inputs": {…}, "expect": {…}}',
        )
    if scorer is not None and not callable(scorer):
        raise TaskInputError(
            task.name, None, f"the scorer {scorer!r:.80} is not a function(output, case) -> 0..1"
        )
    models = list(dict.fromkeys(models))  # a model named twice would count its cases twice
    if not models:
        raise TaskInputError(task.name, None, "no models to compare: pass --models a,b")
    if concurrency < 1:  # a semaphore of 0 would wait forever
        raise TaskInputError(task.name, None, f"concurrency must be at least 1, not {concurrency}")
    _check_expectations(task, chosen)
    gate = asyncio.Semaphore(concurrency)
    keys = _eval_saved.case_keys(chosen)
    stack = ExitStack()
    saved: _eval_saved.SavedResults | None = None
    if save is not None:
        identity = {
            "kind": _eval_saved.KIND,
            "version": 1,
            "task": task.name,
            "template_hash": task.spec.template_hash,
            "scorer": None if scorer is None else _scorer_name(scorer),
        }
        with ExitStack() as opening:  # a file that cannot be read is released at once
            saved = opening.enter_context(_eval_saved.opened(Path(save), identity))
            saved.load(models, keys)
            stack = opening.pop_all()

    async def bounded(model: str, index: int, case: Example) -> CaseResult:
        if saved is not None:
            earlier = saved.saved(model, keys[index], index, CaseResult)
            if earlier is not None:
                return typing.cast(CaseResult, earlier)
        attributes = {"promptcast.task": task.name, "promptcast.eval.model": model}
        async with gate:
            if saved is not None and saved.failure is not None:
                raise saved.failure  # results can no longer be kept: pay for no more calls
            with _telemetry.run_span(f"eval.case {task.name}", attributes) as span:
                span.set("promptcast.eval.case", index)
                result = await _one(task, model, index, case, scorer)
                span.set("promptcast.outcome", result.outcome)
                span.set("promptcast.eval.score", result.score)
        if saved is not None:
            saved.append(result, keys[index], result._attempts)
        return result

    # one run span, one span per (model, case) under it; the cache off: real calls are measured
    with (
        stack,
        override(cache="off"),
        _telemetry.run_span(f"eval {task.name}", {"promptcast.task": task.name}),
    ):
        results = await asyncio.gather(
            *(bounded(model, i, case) for model in models for i, case in enumerate(chosen))
        )
    return EvalReport(
        task=task.name,
        task_version=task.spec.version,
        template_hash=task.spec.template_hash,
        models=[_summary(m, [r for r in results if r.model == m]) for m in models],
        results=list(results),
    )


def _check_expectations(task: Task[Any], cases: list[Example]) -> None:
    """Refuse, before any call, a case whose inputs do not fit the task or whose `expect` or
    `expect_contains` names a field the output has not: it could never pass, on any model."""
    model = task.spec.output_model
    fields = set(model.model_fields) if model is not None else None
    for index, case in enumerate(cases):
        contains = case.expect_contains
        named = {
            "expect": set(case.expect) if isinstance(case.expect, dict) else set(),
            "expect_contains": set(contains) if isinstance(contains, dict) else set(),
        }
        if not isinstance(case.expect, dict | None):
            problem = f"its expect is {case.expect!r:.80}, not an object of output fields"
        elif fields is not None and any(names - fields for names in named.values()):
            key, names = next((k, sorted(v - fields)) for k, v in named.items() if v - fields)
            problem = (
                f"its {key} names {names}, which the output has not (its fields: "
                f"{', '.join(sorted(fields))})"
            )
        elif (unfit := _input_problem(task, case)) is not None:
            problem = unfit
        elif fields is not None and isinstance(contains, str) and "output" not in fields:
            problem = (
                f"its expect_contains is the text {contains!r:.40}, which only a text output "
                f"has; name the field, as in {{{sorted(fields)[0]!r}: {contains!r:.40}}}"
            )
        else:
            continue
        where = f"the case on line {case.line}" if case.line is not None else f"case {index}"
        raise TaskInputError(
            task.name, None, f"{where} can never pass: {problem}; fix it (nothing was run)"
        )


def _input_problem(task: Task[Any], case: Example) -> str | None:
    """Why the case's inputs do not render the task's prompt (a missing, unknown or mistyped
    input), or None: such a case would fail on every model, after the others were paid for."""
    try:
        task.render(**case.inputs)
    except TaskInputError as exc:
        return f"its inputs do not fit the task: {exc}"
    return None


def evaluate(
    task: Task[Any],
    models: Sequence[str],
    cases: Iterable[Example] | None = None,
    *,
    scorer: Scorer | None = None,
    concurrency: int = 8,
    save: str | Path | None = None,
) -> EvalReport:
    """`aevaluate` for synchronous code."""
    return asyncio.run(
        aevaluate(task, models, cases, scorer=scorer, concurrency=concurrency, save=save)
    )


SUMMARY_COLUMNS = (
    "model",
    "passed",
    "score",
    "invalid",
    "errors",
    "mean ms",
    "p95 ms",
    "tokens",
    "cost",
    "cost/case",
)


def summary_rows(report: EvalReport) -> list[list[str]]:
    """The summary table's cells, one row per model (for the terminal and for Markdown)."""
    return [
        [
            m.model,
            f"{m.passed}/{m.cases}",
            f"{m.mean_score:.2f}",
            str(m.validation_failures),
            str(m.errors),
            f"{m.mean_latency_s * 1000:.0f}",
            f"{m.p95_latency_s * 1000:.0f}",
            str(m.input_tokens + m.cache_read_tokens + m.cache_write_tokens + m.output_tokens),
            _money(m.cost_usd, m.model),
            _money(m.cost_per_case_usd, m.model),
        ]
        for m in report.models
    ]


def to_markdown(report: EvalReport) -> str:
    """The summary table as Markdown, for pull requests and reports."""
    lines = [
        f"### {report.task} v{report.task_version}",
        "",
        "| " + " | ".join(SUMMARY_COLUMNS) + " |",
        "|" + "---|" * len(SUMMARY_COLUMNS),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in summary_rows(report)]
    return "\n".join(lines) + "\n"


def to_html_chart(report: EvalReport) -> str:
    """A self-contained HTML page with an SVG chart of total cost against mean score."""
    width, height, pad = 640, 400, 60
    costs = [m.cost_usd or 0.0 for m in report.models]
    top = max(costs) * 1.15 or 1.0
    points = []
    for m, cost in zip(report.models, costs, strict=True):
        x = pad + (width - 2 * pad) * (cost / top)
        y = height - pad - (height - 2 * pad) * m.mean_score
        label = html.escape(f"{m.model} ({m.passed}/{m.cases}, {_money(m.cost_usd, m.model)})")
        points.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="#3465a4"/>'
            f'<text x="{x + 9:.1f}" y="{y + 4:.1f}" font-size="12">{label}</text>'
        )
    title = html.escape(f"{report.task} v{report.task_version}: cost vs score")
    return (
        f"<!doctype html><meta charset='utf-8'><title>{title}</title><h3>{title}</h3>"
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#000"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#000"/>'
        f'<text x="{width / 2}" y="{height - 20}" font-size="12">total cost (USD, 0 to '
        f'{top:.4g})</text><text x="10" y="{pad - 10}" font-size="12">mean score (0 to 1)</text>'
        + "".join(points)
        + "</svg>"
    )


def _money(value: float | None, model: str) -> str:
    if value is None:  # a model on your own hardware has no price per token; others' is unknown
        return "none (own hardware)" if model.startswith("local/") else "unknown"
    return f"${value:.6f}"
