"""Bulk and evaluation runs at their edges: files that are not what they should be, cases that
cannot pass, scorers that break, arguments that would hang."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from typer.testing import CliRunner

import promptcast as pc
from promptcast import _batch_files
from promptcast.batch import BatchOutputError, read_items, run_file, run_file_provider_batch
from promptcast.cli import app
from promptcast.evals import aevaluate, load_cases
from promptcast.spec import Example
from promptcast.testing import (
    FakeAnthropic,
    FakeReply,
    ScriptedBackend,
    error_reply,
    message,
    tool_use_block,
)

TASK = """
---
inputs: {text: str}
output: {label: str}
model: test/labels
---
Label {{ text }}
"""


@pytest.fixture
def labels(write_task: Callable[..., Path]) -> Iterator[pc.Task[Any]]:
    with pc.override(backends={"test/labels": ScriptedBackend(lambda request: {"label": "ok"})}):
        yield pc.Task.from_file(write_task("labels", TASK))


def jsonl(*rows: Any) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


# the output file must be a batch output


def _same(source: Path, tmp_path: Path) -> Path:
    return source


def _hard_link(source: Path, tmp_path: Path) -> Path:
    link = tmp_path / "link.jsonl"
    os.link(source, link)
    return link


def _symlink(source: Path, tmp_path: Path) -> Path:
    link = tmp_path / "sym.jsonl"
    link.symlink_to(source)
    return link


@pytest.mark.parametrize("provider_batch", [False, True])
@pytest.mark.parametrize("alias", [_same, _hard_link, _symlink])
@pytest.mark.parametrize("last_newline", [True, False])
async def test_the_input_file_as_output_is_refused_and_left_as_it_was(
    provider_batch: bool,
    alias: Callable[[Path, Path], Path],
    last_newline: bool,
    labels: pc.Task[Any],
    fake_anthropic: FakeAnthropic,
    tmp_path: Path,
) -> None:
    source = tmp_path / "in.jsonl"
    text = jsonl({"id": 1, "text": "a"}, {"id": 2, "text": "b"})
    text = text if last_newline else text.rstrip("\n")
    source.write_text(text)
    task = labels.with_model("anthropic/claude-sonnet-4-6") if provider_batch else labels
    runner = run_file_provider_batch if provider_batch else run_file
    with pytest.raises(pc.ConfigurationError, match="is the input file"):
        await runner(task, source, alias(source, tmp_path))
    assert fake_anthropic.requests == []
    assert source.read_text() == text


@pytest.mark.parametrize(
    "content",
    [
        "my notes\nlast line without a newline",
        "id,text\n1,hello",
        '{"text": "an input line"}\n',
        '["id"]\n',
        "\n",
    ],
)
async def test_an_output_that_is_not_a_batch_output_is_refused_and_left_as_it_was(
    content: str, labels: pc.Task[Any], tmp_path: Path
) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "notes.txt"
    source.write_text(jsonl({"id": 1, "text": "a"}))
    out.write_text(content)
    with pytest.raises(pc.ConfigurationError, match="not the output of a promptcast batch run"):
        await run_file(labels, source, out)
    assert out.read_text() == content


@pytest.mark.parametrize("content", ["", "{", '{"id": 1, "outp', '{"id": ', "\ufeff", "\ufeff{"])
async def test_an_empty_output_or_one_torn_line_still_resumes(
    content: str, labels: pc.Task[Any], tmp_path: Path
) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(jsonl({"id": 1, "text": "a"}))
    out.write_text(content)
    stats = await run_file(labels, source, out)
    assert (stats.done, stats.failed) == (1, 0)
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [1]


def test_cli_refuses_the_input_file_as_output(tmp_path: Path) -> None:
    (tmp_path / "labels.jinja").write_text(TASK.lstrip())
    source = tmp_path / "in.jsonl"
    source.write_text(jsonl({"text": "a"}))
    with pc.override(backends={"test/labels": ScriptedBackend(lambda request: {"label": "ok"})}):
        result = CliRunner().invoke(
            app, ["batch", "labels", str(source), "-o", str(source), "-p", str(tmp_path)]
        )
    assert result.exit_code == 1 and "is the input file" in result.output
    assert "Traceback" not in result.output
    assert source.read_text() == jsonl({"text": "a"})


# the output cannot be written: a typed error, the lines before it kept, the run resumable


class _FailingWrites:
    """A handle that writes half of its `fail_at`th line, then raises `error` (a full disk)."""

    def __init__(self, handle: BinaryIO, error: OSError, fail_at: int) -> None:
        self.handle, self.error, self.fail_at, self.count = handle, error, fail_at, 0

    def write(self, data: bytes) -> int:
        self.count += 1
        if self.count == self.fail_at:
            self.handle.write(data[: len(data) // 2])
            self.handle.flush()
            raise self.error
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        OSError(errno.EIO, "Input/output error"),
    ],
    ids=["ENOSPC", "EDQUOT", "EIO"],
)
async def test_a_write_failing_mid_line_is_a_typed_error_and_the_run_resumes(
    error: OSError, labels: pc.Task[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(jsonl(*({"id": i, "text": str(i)} for i in range(20))))
    real = _batch_files.append_exclusively

    @contextlib.contextmanager
    def failing(path: Path) -> Iterator[Any]:
        with real(path) as handle:
            yield None if handle is None else _FailingWrites(handle, error, fail_at=5)

    monkeypatch.setattr(_batch_files, "append_exclusively", failing)
    with pytest.raises(
        BatchOutputError, match="the 4 line\\(s\\) this run wrote before are kept"
    ) as caught:
        await run_file(labels, source, out, concurrency=3)
    assert isinstance(caught.value, OSError) and caught.value.errno == error.errno
    assert str(out) in str(caught.value) and error.strerror in str(caught.value)
    assert not out.read_bytes().endswith(b"\n")  # the torn half line is there
    monkeypatch.setattr(_batch_files, "append_exclusively", real)
    stats = await run_file(labels, source, out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert (stats.skipped, stats.done, stats.failed) == (4, 16, 0)
    assert sorted(row["id"] for row in rows) == list(range(20))
    assert all("output" in row for row in rows)


@pytest.mark.parametrize("make", ["missing-folder", "a-folder"])
async def test_an_output_that_cannot_be_opened_is_a_typed_error_and_nothing_runs(
    make: str, tmp_path: Path, write_task: Callable[..., Path]
) -> None:
    out = tmp_path / "out.jsonl"
    if make == "a-folder":
        out.mkdir()
    else:
        out = tmp_path / "missing" / "out.jsonl"
    source = tmp_path / "in.jsonl"
    source.write_text(jsonl({"text": "a"}))
    backend = ScriptedBackend(lambda request: {"label": "ok"})
    with pc.override(backends={"test/labels": backend}):
        task = pc.Task.from_file(write_task("labels", TASK))
        with pytest.raises(
            BatchOutputError, match=f"cannot open {re.escape(str(out))} .*nothing was run"
        ):
            await run_file(task, source, out)
    assert backend.requests == []


# input lines that would lose or misplace an input without a word


@pytest.mark.parametrize(
    ("row", "moved"),
    [
        ({"id": 1, "inputs": {"text": "b"}, "text": "c"}, "'text'"),
        ({"id": 1, "inputs": {"text": "b"}, "note": "c", "lang": "de"}, "'lang', 'note'"),
        ({"inputs": {"text": "b"}, "extra": None}, "'extra'"),
    ],
)
async def test_keys_beside_inputs_are_an_error_line_not_dropped(
    row: dict[str, Any], moved: str, labels: pc.Task[Any], tmp_path: Path
) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(jsonl(row, {"id": 2, "inputs": {"text": "fine"}}))
    stats = await run_file(labels, source, out)
    written = {json.loads(line)["id"]: json.loads(line) for line in out.read_text().splitlines()}
    assert (stats.done, stats.failed) == (2, 1) and "output" in written[2]
    error = written[row.get("id", "line-1")]["error"]
    assert error["type"] == "TaskInputError"
    assert f'holds only "id" beside it; move {moved} into "inputs"' in error["message"]


@pytest.mark.parametrize(
    "row", [{"id": "7", "text": "a"}, {"id": 7, "inputs": {"text": "a"}}, {"text": "a"}]
)
async def test_a_required_task_input_named_id_says_where_it_goes(
    row: dict[str, Any], write_task: Callable[..., Path], tmp_path: Path
) -> None:
    backend = ScriptedBackend(lambda request: {"label": "ok"})
    with pc.override(backends={"test/labels": backend}):
        task = pc.Task.from_file(
            write_task("tickets", TASK.replace("{text: str}", "{id: str, text: str}"))
        )
        source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        source.write_text(jsonl(row, {"id": "x", "inputs": {"id": "T-1", "text": "b"}}))
        stats = await run_file(task, source, out)
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert (stats.done, stats.failed) == (2, 1) and len(backend.requests) == 1
    [error] = [line["error"] for line in written if "error" in line]
    assert 'has an input named "id"' in error["message"]
    assert '{"id": "item-1", "inputs": {"id": …, …}}' in error["message"]


# eval: cases files


def _texts(cases: list[Example]) -> list[Any]:
    return [case.inputs["text"] for case in cases]


@pytest.mark.parametrize("inside", ["\u2028", "\u2029", "\x85"])
@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_a_cases_line_is_split_at_newlines_only(inside: str, ending: str, tmp_path: Path) -> None:
    path = tmp_path / "cases.jsonl"
    rows = [
        {"inputs": {"text": f"a{inside}b"}},
        {"inputs": {"text": "c"}, "expect": {"label": "x"}},
    ]
    text = ending.join(json.dumps(row, ensure_ascii=False) for row in rows)  # no final newline
    path.write_bytes(b"\xef\xbb\xbf" + (ending + text + ending + ending).encode("utf-8"))
    cases = load_cases(path)
    assert _texts(cases) == [f"a{inside}b", "c"] and [c.line for c in cases] == [2, 3]


@pytest.mark.parametrize("make", ["missing", "folder", "latin-1"])
def test_a_cases_file_that_cannot_be_read_is_a_task_input_error(make: str, tmp_path: Path) -> None:
    path = tmp_path / "cases.jsonl"
    if make == "folder":
        path.mkdir()
    elif make == "latin-1":
        path.write_bytes('{"inputs": {"text": "café"}}\n'.encode("latin-1"))
    with pytest.raises(pc.TaskInputError, match=r"--cases .*cases\.jsonl cannot be read"):
        load_cases(path)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("[1]", "a JSON list, not an object"),
        ('"text"', "a JSON str, not an object"),
        ("{nope", "not JSON"),
        ("{}", '"inputs" must be an object'),
        ('{"inputs": "a"}', '"inputs" must be an object'),
        ('{"inputs": [["text", "a"]]}', '"inputs" must be an object'),
        ('{"inputs": {}, "expect": "ok"}', '"expect" must be an object'),
        ('{"inputs": {}, "expect": ["ok"]}', '"expect" must be an object'),
        ('{"inputs": {}, "expect_contains": 3}', '"expect_contains" must be a string or'),
        ('{"inputs": {}, "name": 7}', '"name" must be a string'),
    ],
)
def test_a_line_that_is_not_a_case_names_its_line(line: str, problem: str, tmp_path: Path) -> None:
    path = tmp_path / "cases.jsonl"
    path.write_text('{"inputs": {"text": "fine"}}\n' + line + "\n")
    with pytest.raises(pc.TaskInputError, match=f"cases.jsonl:2: not a case: {re.escape(problem)}"):
        load_cases(path)


def test_cli_eval_with_a_missing_cases_file_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "labels.jinja").write_text(TASK.lstrip())
    missing = tmp_path / "nope.jsonl"
    with pc.override(backends={"test/labels": ScriptedBackend(lambda request: {"label": "ok"})}):
        result = CliRunner().invoke(
            app, ["eval", "labels", "--cases", str(missing), "-p", str(tmp_path)]
        )
    assert result.exit_code == 1 and "cannot be read" in result.output
    assert "Traceback" not in result.output


# eval: cases that can never pass, arguments that would hang or double count


@pytest.fixture
def counted(write_task: Callable[..., Path]) -> Iterator[tuple[pc.Task[Any], ScriptedBackend]]:
    backend = ScriptedBackend(lambda request: {"label": "ok"})
    with pc.override(backends={"test/labels": backend, "test/other": backend}):
        yield pc.Task.from_file(write_task("labels", TASK)), backend


@pytest.mark.parametrize(
    ("expect", "problem"),
    [
        ({"labl": "ok"}, "its expect names ['labl'], which the output has not (its fields: label)"),
        ({"label": "ok", "score": 1}, "its expect names ['score']"),
        ("ok", "its expect is 'ok', not an object of output fields"),
        (None, "its expect_contains names ['lable'], which the output has not"),
        (
            {},
            "its expect_contains is the text 'o', which only a text output has; name the "
            "field, as in {'label': 'o'}",
        ),
    ],
)
async def test_a_case_whose_expect_does_not_fit_the_output_is_refused_before_any_call(
    expect: Any, problem: str, counted: tuple[pc.Task[Any], ScriptedBackend]
) -> None:
    task, backend = counted
    contains: Any = {"lable": "o"} if expect is None else "o" if expect == {} else {"label": "o"}
    cases = [
        Example({"text": "a"}, {"label": "ok"}, {"label": "o"}),
        Example({"text": "b"}, expect, contains, line=4),
    ]
    with pytest.raises(
        pc.TaskInputError, match=re.escape(f"case on line 4 can never pass: {problem}")
    ):
        await aevaluate(task, ["test/labels"], cases)
    assert backend.requests == []


async def test_a_text_task_refuses_an_expect_that_is_not_an_object(
    write_task: Callable[..., Path],
) -> None:
    backend = ScriptedBackend(lambda request: "fine")
    with pc.override(backends={"test/labels": backend}):
        task = pc.Task.from_file(
            write_task("echo", "---\ninputs: {text: str}\nmodel: test/labels\n---\n{{ text }}\n")
        )
        with pytest.raises(pc.TaskInputError, match=r"case 0 can never pass: its expect is 'fine'"):
            await aevaluate(task, ["test/labels"], [Example({"text": "a"}, "fine")])  # type: ignore[arg-type]
    assert backend.requests == []


@pytest.mark.parametrize(
    ("models", "concurrency", "problem"),
    [
        ([], 8, "no models to compare"),
        (["test/labels"], 0, "concurrency must be at least 1, not 0"),
        (["test/labels"], -2, "not -2"),
    ],
)
async def test_no_models_or_no_concurrency_is_refused_instead_of_hanging(
    models: list[str], concurrency: int, problem: str, counted: tuple[pc.Task[Any], ScriptedBackend]
) -> None:
    task, backend = counted
    with pytest.raises(pc.TaskInputError, match=problem):
        await asyncio.wait_for(
            aevaluate(task, models, [Example({"text": "a"})], concurrency=concurrency), 5
        )
    assert backend.requests == []


async def test_a_model_named_twice_is_compared_once(
    counted: tuple[pc.Task[Any], ScriptedBackend],
) -> None:
    task, backend = counted
    report = await aevaluate(
        task, ["test/labels", "test/other", "test/labels"], [Example({"text": "a"})]
    )
    assert [(m.model, m.cases) for m in report.models] == [("test/labels", 1), ("test/other", 1)]
    assert len(report.results) == len(backend.requests) == 2


# eval: one case's failure is that case's, never the comparison's


def _raises(output: Any, case: Example) -> float:
    raise KeyError("confidence")


@pytest.mark.parametrize(
    ("scorer", "detail"),
    [
        (_raises, "picky raised KeyError: 'confidence'"),
        (lambda output, case: None, "returned None, not a number from 0 to 1"),
        (lambda output, case: "0.5", "returned '0.5', not a number from 0 to 1"),
        (lambda output, case: math.nan, "returned nan, not a number from 0 to 1"),
        (lambda output, case: [1.0], "returned [1.0], not a number from 0 to 1"),
    ],
)
async def test_a_scorer_that_breaks_fails_its_case_and_the_others_are_scored(
    scorer: Callable[[Any, Example], Any],
    detail: str,
    counted: tuple[pc.Task[Any], ScriptedBackend],
) -> None:
    task, _ = counted

    def picky(output: Any, case: Example) -> Any:
        return 1.0 if case.inputs["text"] == "good" else scorer(output, case)

    cases = [Example({"text": "good"}), Example({"text": "bad"})]
    report = await aevaluate(task, ["test/labels"], cases, scorer=picky)
    good, bad = sorted(report.results, key=lambda r: r.case)
    assert (good.outcome, good.score) == ("ok", 1.0)
    assert (bad.outcome, bad.score, bad.passed) == ("error", 0.0, False)
    assert bad.detail is not None and detail in bad.detail
    assert bad.input_tokens > 0  # the call ran and was paid for: its numbers are kept
    [row] = report.models
    assert (row.cases, row.passed, row.errors) == (2, 1, 1)


@pytest.mark.parametrize("score", [1, 0, 2, -1, 0.25, Fraction(1, 2)])
async def test_a_scorer_returning_any_real_number_is_clamped(
    score: Any, counted: tuple[pc.Task[Any], ScriptedBackend]
) -> None:
    task, _ = counted
    report = await aevaluate(
        task, ["test/labels"], [Example({"text": "a"})], scorer=lambda output, case: score
    )
    assert report.results[0].score == min(1.0, max(0.0, float(score)))


async def test_an_unexpected_exception_in_a_call_is_an_errored_case(
    write_task: Callable[..., Path],
) -> None:
    def handler(request: Any) -> Any:
        if "boom" in str(request):
            raise RuntimeError("handler bug")
        return {"label": "ok"}

    with pc.override(backends={"test/labels": ScriptedBackend(handler)}):
        task = pc.Task.from_file(write_task("labels", TASK))
        report = await aevaluate(
            task, ["test/labels"], [Example({"text": "boom"}), Example({"text": "fine"})]
        )
    outcomes = sorted((r.case, r.outcome, r.detail) for r in report.results)
    assert outcomes[1] == (1, "ok", None)
    assert outcomes[0][:2] == (0, "error") and "RuntimeError: handler bug" in str(outcomes[0][2])


def test_cli_eval_chart_into_a_missing_folder_prints_the_report_then_one_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "labels.jinja").write_text(TASK.lstrip())
    cases = tmp_path / "cases.jsonl"
    cases.write_text(json.dumps({"inputs": {"text": "a"}, "expect": {"label": "ok"}}) + "\n")
    chart = tmp_path / "missing" / "chart.html"
    with pc.override(backends={"test/labels": ScriptedBackend(lambda request: {"label": "ok"})}):
        result = CliRunner().invoke(
            app,
            [
                "eval",
                "labels",
                "--cases",
                str(cases),
                "--chart",
                str(chart),
                "--json",
                "-p",
                str(tmp_path),
            ],
        )
    assert result.exit_code == 1 and "No such file or directory" in result.stderr
    assert "Traceback" not in result.output
    assert json.loads(result.stdout)["models"][0]["passed"] == 1


def test_cli_eval_with_only_commas_for_models_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "labels.jinja").write_text(TASK.lstrip())
    cases = tmp_path / "cases.jsonl"
    cases.write_text(json.dumps({"inputs": {"text": "a"}}) + "\n")
    with pc.override(backends={"test/labels": ScriptedBackend(lambda request: {"label": "ok"})}):
        result = CliRunner().invoke(
            app, ["eval", "labels", "--models", " , ", "--cases", str(cases), "-p", str(tmp_path)]
        )
    assert result.exit_code == 1 and "no models to compare" in result.output


# provider batches: polled where they were submitted


def _label(request: dict[str, Any]) -> dict[str, Any]:
    text = request["messages"][0]["content"]
    return message([tool_use_block("LabelOutput", {"label": text.upper()})])


@pytest.mark.parametrize("default", ["another-account", "no-key"])
async def test_a_provider_batch_on_a_model_with_its_own_endpoint_is_polled_there(
    default: str,
    fake_anthropic: FakeAnthropic,
    close_async_clients: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "label.jinja").write_text(
        "---\ninputs: {text: str}\noutput: {label: str}\nmodel: anthropic/claude-sonnet-4-6\n"
        "max_tokens: 64\n---\nLabel {{ text }}\n"
    )
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(jsonl(*({"id": f"i{i}", "text": f"t{i}"} for i in range(3))))
    with FakeAnthropic() as own:
        own.handler = _label
        key = "sk-ant-api03-" + "m" * 90
        pc.configure(
            models={"anthropic/claude-sonnet-4-6": {"base_url": own.base_url, "api_key": key}}
        )
        if default == "no-key":
            monkeypatch.delenv("ANTHROPIC_API_KEY")
        task = pc.Task.from_file(tmp_path / "label.jinja")
        stats = await run_file_provider_batch(task, source, out, poll_s=0.01)
    assert (stats.done, stats.failed) == (3, 0)
    assert len(own.batches) == 1 and fake_anthropic.batches == {} and fake_anthropic.requests == []
    rows = sorted(map(json.loads, out.read_text().splitlines()), key=lambda row: row["id"])
    assert [row["output"]["label"] for row in rows] == ["LABEL T0", "LABEL T1", "LABEL T2"]
    assert not _batch_files.state_path(out).exists()


class _FlakyPolls(FakeAnthropic):
    """Message Batches whose status reads fail with `failures` (status codes) first, and whose
    results reads fail with `result_failures` first (a status code, or "cut": the results end
    half way through a line)."""

    def __init__(self, failures: list[int], result_failures: list[int | str] | None = None) -> None:
        super().__init__(_label)
        self.failures = list(failures)
        self.result_failures = list(result_failures or [])

    def get(self, path: str) -> FakeReply:
        results = path.split("?")[0].endswith("/results")
        queue = self.result_failures if results else self.failures
        if not queue:
            return super().get(path)
        failure = queue.pop(0)
        if failure == "cut":
            whole = super().get(path)
            assert whole.raw is not None
            return replace(whole, raw=whole.raw[: whole.raw.index(b"\n") + 40])
        assert isinstance(failure, int)
        return error_reply(failure, "overloaded_error" if failure == 529 else "api_error", "busy")


@pytest.fixture
def flaky_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[pc.Task[Any], Path]:
    (tmp_path / "label.jinja").write_text(
        "---\ninputs: {text: str}\noutput: {label: str}\nmodel: anthropic/claude-sonnet-4-6\n"
        "max_tokens: 64\n---\nLabel {{ text }}\n"
    )
    source = tmp_path / "in.jsonl"
    source.write_text(jsonl(*({"id": f"i{i}", "text": f"t{i}"} for i in range(3))))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-" + "p" * 90)
    return pc.Task.from_file(tmp_path / "label.jinja"), source


@pytest.mark.parametrize("failures", [[529], [500, 502, 503], [429, 529, 500, 504]])
async def test_a_provider_batch_poll_failing_for_a_while_keeps_polling(
    failures: list[int],
    flaky_batch: tuple[pc.Task[Any], Path],
    close_async_clients: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task, source = flaky_batch
    out = tmp_path / "out.jsonl"
    with _FlakyPolls(failures) as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        stats = await run_file_provider_batch(task, source, out, poll_s=0.01)
    assert (stats.done, stats.failed) == (3, 0) and len(fake.batches) == 1
    assert fake.failures == []


async def test_a_provider_batch_poll_that_keeps_failing_says_the_batch_is_saved(
    flaky_batch: tuple[pc.Task[Any], Path],
    close_async_clients: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task, source = flaky_batch
    out = tmp_path / "out.jsonl"
    with _FlakyPolls([500] * 50) as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        with pytest.raises(pc.BackendError, match="run the same command again to collect it"):
            await run_file_provider_batch(task, source, out, poll_s=0.01)
        assert _batch_files.state_path(out).exists()  # kept: the next run polls it, not resubmits
        fake.failures.clear()
        stats = await run_file_provider_batch(task, source, out, poll_s=0.01)
    assert (stats.done, stats.failed) == (3, 0) and len(fake.batches) == 1


@pytest.mark.parametrize("failure", [500, 529, 401, 403, "cut"])
async def test_results_that_fail_to_read_are_read_again_by_a_rerun_not_bought_again(
    failure: int | str,
    flaky_batch: tuple[pc.Task[Any], Path],
    close_async_clients: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task, source = flaky_batch
    out = tmp_path / "out.jsonl"
    with _FlakyPolls([], [failure]) as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        with pytest.raises(pc.BackendError, match="run the same command again to read them"):
            await run_file_provider_batch(task, source, out, poll_s=0.01)
        assert _batch_files.state_path(out).exists()
        stats = await run_file_provider_batch(task, source, out, poll_s=0.01)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(fake.batches) == 1  # read again, not submitted again
    assert sorted(row["id"] for row in rows) == ["i0", "i1", "i2"]
    assert all("output" in row for row in rows) and stats.failed == 0
    assert not _batch_files.state_path(out).exists()


@pytest.mark.parametrize("status", [404, 410])
async def test_results_gone_for_good_are_error_lines_and_the_batch_is_forgotten(
    status: int,
    flaky_batch: tuple[pc.Task[Any], Path],
    close_async_clients: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task, source = flaky_batch
    out = tmp_path / "out.jsonl"
    with _FlakyPolls([], [status]) as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        stats = await run_file_provider_batch(task, source, out, poll_s=0.01)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert (stats.done, stats.failed) == (3, 3)
    assert all("reading its results failed" in row["error"]["message"] for row in rows)
    assert not _batch_files.state_path(out).exists()


@pytest.mark.parametrize(
    ("inputs", "named"),
    [
        ({}, "input 'text': is required"),
        ({"text": "a", "txt": "b"}, "input 'txt'"),
        ({"text": ["a", "list"]}, "input 'text'"),
    ],
)
async def test_a_case_whose_inputs_do_not_fit_the_task_is_refused_before_any_call(
    inputs: dict[str, Any], named: str, counted: tuple[pc.Task[Any], ScriptedBackend]
) -> None:
    task, backend = counted
    cases = [Example({"text": "fine"}), Example(inputs, line=2)]
    with pytest.raises(
        pc.TaskInputError, match="case on line 2 can never pass: its inputs"
    ) as caught:
        await aevaluate(task, ["test/labels", "test/other"], cases)
    assert named in str(caught.value) and "nothing was run" in str(caught.value)
    assert backend.requests == []


@pytest.mark.parametrize("content", ["", "\n\n", "\r\n  \r\n", "\ufeff\n"])
def test_cli_eval_with_a_cases_file_without_cases_says_the_file_is_empty(
    content: str, tmp_path: Path
) -> None:
    (tmp_path / "labels.jinja").write_text(TASK.lstrip())
    cases = tmp_path / "cases.jsonl"
    cases.write_text(content, encoding="utf-8")
    with pc.override(backends={"test/labels": ScriptedBackend(lambda request: {"label": "ok"})}):
        result = CliRunner().invoke(
            app, ["eval", "labels", "--cases", str(cases), "-p", str(tmp_path)]
        )
    assert result.exit_code == 1 and "the cases given (--cases FILE) hold none" in result.output
    assert "add examples: to the task file" not in result.output


async def _async_half(output: Any, case: Example) -> float:
    await asyncio.sleep(0)
    return 0.5


async def _async_raises(output: Any, case: Example) -> float:
    raise ValueError("async scorer bug")


@pytest.mark.parametrize(
    ("scorer", "outcome", "score", "detail"),
    [
        (_async_half, "failed", 0.5, None),
        (_async_raises, "error", 0.0, "raised ValueError: async scorer bug"),
    ],
)
async def test_an_async_scorer_is_awaited(
    scorer: Any,
    outcome: str,
    score: float,
    detail: str | None,
    counted: tuple[pc.Task[Any], ScriptedBackend],
) -> None:
    task, _ = counted
    report = await aevaluate(task, ["test/labels"], [Example({"text": "a"})], scorer=scorer)
    [result] = report.results
    assert (result.outcome, result.score) == (outcome, score)
    assert (result.detail is None) if detail is None else (detail in str(result.detail))


@pytest.mark.parametrize("scorer", [0.5, "module:function", {"label": 1.0}])
async def test_a_scorer_that_is_not_a_function_is_refused_before_any_call(
    scorer: Any, counted: tuple[pc.Task[Any], ScriptedBackend]
) -> None:
    task, backend = counted
    with pytest.raises(pc.TaskInputError, match="is not a function"):
        await aevaluate(task, ["test/labels"], [Example({"text": "a"})], scorer=scorer)
    assert backend.requests == []


# output lines are strict JSON


def _strict(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("shape", ["field", "list", "dict"])
async def test_nan_and_infinity_in_an_output_are_written_as_null(
    value: float, shape: str, write_task: Callable[..., Path], tmp_path: Path
) -> None:
    output = {
        "field": ("{label: str, score: float}", {"label": "ok", "score": value}),
        "list": ('{label: str, scores: "list[float]"}', {"label": "ok", "scores": [1.5, value]}),
        "dict": ('{label: str, by: "dict[str, float]"}', {"label": "ok", "by": {"a": value}}),
    }[shape]
    backend = ScriptedBackend(lambda request: output[1])
    with pc.override(backends={"test/labels": backend}):
        task = pc.Task.from_file(write_task("scores", TASK.replace("{label: str}", output[0])))
        source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        source.write_text(jsonl({"id": 1, "text": "a"}))
        stats = await run_file(task, source, out)
    [line] = out.read_text().splitlines()
    written = _strict(line)["output"]
    assert stats.failed == 0
    expected = {
        "field": {"label": "ok", "score": None},
        "list": {"label": "ok", "scores": [1.5, None]},
        "dict": {"label": "ok", "by": {"a": None}},
    }
    assert written == expected[shape]


# an input file that grows during the run


@pytest.mark.parametrize("torn", [False, True])
async def test_lines_appended_during_a_run_wait_for_the_next_run(
    torn: bool, labels: pc.Task[Any], tmp_path: Path
) -> None:
    """A producer still writing the input: what it appends after the file was checked (a
    repeated id among it) is not run now, so no id runs twice and the total holds."""
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    first = jsonl(*({"id": i, "text": str(i)} for i in range(5)))
    source.write_text(first[:-8] if torn else first)  # torn: the producer is mid-line

    def append(stats: Any) -> None:
        with source.open("w") as handle:
            handle.write(first + jsonl({"id": 2, "text": "again"}, {"id": 9, "text": "new"}))

    stats = await run_file(labels, source, out, concurrency=2, on_start=append)
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == [0, 1, 2, 3, 4]  # a line torn when checked is read whole when run
    assert stats.done == stats.total == 5
    source.write_text(first + jsonl({"id": 9, "text": "new"}))
    second = await run_file(labels, source, out)
    assert (second.done, second.skipped, second.failed) == (1, 5, 0)


# files joined with cat: a byte-order mark at each join


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
@pytest.mark.parametrize("parts", [2, 3])
async def test_files_joined_with_a_bom_at_each_join_are_read_whole(
    ending: str, parts: int, labels: pc.Task[Any], tmp_path: Path
) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    joined = b"".join(
        b"\xef\xbb\xbf" + (json.dumps({"id": f"{n}-0", "text": "a"}) + ending).encode()
        for n in range(parts)
    )
    source.write_bytes(joined)
    stats = await run_file(labels, source, out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert (stats.done, stats.failed) == (parts, 0) and all("output" in row for row in rows)
    assert sorted(read.id for read in read_items(source.read_bytes().splitlines(True))) == [
        f"{n}-0" for n in range(parts)
    ]


def test_cases_files_joined_with_a_bom_at_each_join_are_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "cases.jsonl"
    part = b"\xef\xbb\xbf" + json.dumps({"inputs": {"text": "a"}}).encode() + b"\r\n"
    path.write_bytes(part * 3)
    assert [case.line for case in load_cases(path)] == [1, 2, 3]


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
async def test_an_output_saved_again_by_an_editor_with_a_bom_still_resumes(
    ending: str, labels: pc.Task[Any], tmp_path: Path
) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(jsonl({"id": 1, "text": "a"}, {"id": 2, "text": "b"}))
    await run_file(labels, source, out)
    saved = out.read_text(encoding="utf-8").splitlines()[:1]  # Notepad: kept line 1 only
    out.write_bytes(("\ufeff" + ending.join(saved) + ending).encode("utf-8"))
    stats = await run_file(labels, source, out)
    assert (stats.skipped, stats.done) == (1, 1)


# Ctrl-C in the middle


def test_a_keyboard_interrupt_mid_run_keeps_every_finished_line_and_the_rerun_runs_the_rest(
    write_task: Callable[..., Path], tmp_path: Path
) -> None:
    calls: list[str] = []

    def handler(request: Any) -> Any:
        calls.append(str(request))
        if len(calls) == 7:
            raise KeyboardInterrupt
        return {"label": "ok"}

    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(jsonl(*({"id": i, "text": str(i)} for i in range(30))))
    with pc.override(backends={"test/labels": ScriptedBackend(handler)}):
        task = pc.Task.from_file(write_task("labels", TASK))
        with pytest.raises(KeyboardInterrupt):
            asyncio.run(run_file(task, source, out, concurrency=3))
        kept = [json.loads(line)["id"] for line in out.read_text().splitlines()]
        assert 0 < len(kept) < 7 and len(set(kept)) == len(kept)
        stats = asyncio.run(run_file(task, source, out, concurrency=3))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(row["id"] for row in rows) == list(range(30))
    assert (stats.skipped, stats.done, stats.failed) == (len(kept), 30 - len(kept), 0)


@pytest.mark.parametrize("kind", ["pipe", "dev-null"])
async def test_an_output_that_is_not_a_regular_file_is_refused_without_waiting(
    kind: str, labels: pc.Task[Any], tmp_path: Path
) -> None:
    """`-o /dev/stdout` into a pipe: reading it back to resume would wait forever."""
    source = tmp_path / "in.jsonl"
    source.write_text(jsonl({"text": "a"}))
    read_end, write_end = os.pipe()
    try:
        out = Path(f"/proc/self/fd/{write_end}") if kind == "pipe" else Path(os.devnull)
        with pytest.raises(pc.ConfigurationError, match="is not a regular file"):
            await asyncio.wait_for(run_file(labels, source, out), 10)
    finally:
        os.close(read_end)
        os.close(write_end)


@pytest.mark.parametrize("kind", ["pipe", "folder"])
async def test_an_input_that_is_not_a_regular_file_is_refused_and_no_output_is_made(
    kind: str, labels: pc.Task[Any], tmp_path: Path
) -> None:
    """`promptcast batch t /dev/stdin`: a pipe read once to check the ids is empty the second
    time, so the run would end having run nothing."""
    read_end, write_end = os.pipe()
    os.write(write_end, jsonl({"text": "a"}).encode())
    os.close(write_end)
    try:
        source = Path(f"/proc/self/fd/{read_end}") if kind == "pipe" else tmp_path
        out = tmp_path / "out.jsonl"
        with pytest.raises(pc.ConfigurationError, match="is not a regular file"):
            await run_file(labels, source, out)
    finally:
        os.close(read_end)
    assert not out.exists()


def test_cli_batch_on_a_folder_says_it_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "labels.jinja").write_text(TASK.lstrip())
    out = tmp_path / "out.jsonl"
    with pc.override(backends={"test/labels": ScriptedBackend(lambda request: {"label": "ok"})}):
        result = CliRunner().invoke(
            app, ["batch", "labels", str(tmp_path), "-o", str(out), "-p", str(tmp_path)]
        )
    assert result.exit_code == 1 and "is not a regular file" in result.output
    assert "no such input file" not in result.output and not out.exists()


@pytest.mark.parametrize(
    "rewrite",
    [
        lambda row: json.dumps(row, separators=(",", ":")),  # jq -c
        lambda row: json.dumps(row, sort_keys=True),  # keys sorted: "attempts" first
        lambda row: " " + json.dumps(row).replace(": ", " : "),
    ],
    ids=["compact", "sorted-keys", "spaced"],
)
async def test_an_output_rewritten_by_a_json_tool_still_resumes(
    rewrite: Callable[[Any], str], labels: pc.Task[Any], tmp_path: Path
) -> None:
    """`jq -c 'select(.output)' out.jsonl > kept.jsonl`, then resume into kept.jsonl."""
    source, out, kept = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "kept.jsonl"
    source.write_text(jsonl({"id": 1, "text": "a"}, {"id": 2, "text": "b"}))
    await run_file(labels, source, out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    kept.write_text(rewrite(next(row for row in rows if row["id"] == 1)) + "\n")
    stats = await run_file(labels, source, kept)
    assert (stats.skipped, stats.done) == (1, 1)


# eval cases: media file names are relative to the cases file, as in a batch input file

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x00\x00\x00\x00:~\x9bU"
    b"\x00\x00\x00\nIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82"
)


@pytest.mark.parametrize("missing", [False, True])
def test_cli_eval_cases_take_media_paths_relative_to_the_cases_file(
    missing: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shot.jinja").write_text(
        "---\ninputs: {shot: image}\noutput: {label: str}\nmodel: test/labels\n---\nLook.\n"
    )
    folder = tmp_path / "evals"
    (folder / "shots").mkdir(parents=True)
    (folder / "shots" / "1.png").write_bytes(PNG)
    name = "shots/missing.png" if missing else "shots/1.png"
    cases = folder / "cases.jsonl"
    cases.write_text(json.dumps({"inputs": {"shot": name}, "expect": {"label": "ok"}}) + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    backend = ScriptedBackend(lambda request: {"label": "ok"})
    with pc.override(backends={"test/labels": backend}):
        result = CliRunner().invoke(
            app, ["eval", "shot", "--cases", str(cases), "--json", "-p", str(tmp_path)]
        )
    if missing:
        assert result.exit_code == 1 and "missing.png" in result.output
        assert "can never pass" in result.output and backend.requests == []
    else:
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["models"][0]["passed"] == 1


# pacing that cannot work is refused before anything runs


@pytest.mark.parametrize(
    ("pacing", "problem"),
    [
        ({"rate": 0.0}, "rate must be a positive number of calls per second, not 0.0"),
        ({"rate": -2.0}, "rate must be a positive number"),
        ({"rate": math.nan}, "rate must be a positive number"),
        ({"rate": math.inf}, "rate must be a positive number"),
        ({"concurrency": 0}, "concurrency must be at least 1, not 0"),
        ({"concurrency": 2.5}, "concurrency must be at least 1, not 2.5"),
    ],
)
async def test_a_batch_with_impossible_pacing_is_refused_before_any_call(
    pacing: dict[str, Any], problem: str, labels: pc.Task[Any], tmp_path: Path
) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(jsonl({"id": "a", "text": "x"}))
    with pytest.raises(pc.TaskInputError, match=re.escape(problem)):
        async for _ in pc.batch(labels, [{"text": "x"}], **pacing):
            pass
    with pytest.raises(pc.TaskInputError, match=re.escape(problem)):
        await run_file(labels, source, out, **pacing)
    assert not out.exists()


@pytest.mark.parametrize("poll_s", [0.0, -1.0, math.nan, math.inf])
async def test_a_provider_batch_polled_without_a_pause_is_refused_before_submitting(
    poll_s: float, flaky_batch: tuple[pc.Task[Any], Path], fake_anthropic: FakeAnthropic
) -> None:
    task, source = flaky_batch
    out = source.with_name("out.jsonl")
    with pytest.raises(pc.TaskInputError, match="poll_s must be a positive number of seconds"):
        await run_file_provider_batch(task, source, out, poll_s=poll_s)
    assert fake_anthropic.batches == {} and not out.exists()


def test_cli_refuses_a_zero_poll_interval(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["batch", "x", "in.jsonl", "-o", "out.jsonl", "--provider-batch", "--poll-seconds", "0"],
    )
    assert result.exit_code == 2 and "--poll-seconds" in result.output


# a submitted batch whose id cannot be saved


@pytest.mark.parametrize("cancel_fails", [False, True])
async def test_a_batch_whose_id_cannot_be_saved_is_canceled_not_left_to_bill_twice(
    cancel_fails: bool,
    flaky_batch: tuple[pc.Task[Any], Path],
    fake_anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task, source = flaky_batch
    out = source.with_name("out.jsonl")
    fake_anthropic.batch_polls = 10**9  # still in progress when it is canceled

    real = _batch_files.write_state

    def full_disk(path: Path, state: Any) -> None:
        if not state.batch_id:  # the record before the submit is saved; the id is not
            return real(path, state)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_batch_files, "write_state", full_disk)
    if cancel_fails:
        failing = error_reply(529, "overloaded_error", "busy")
        answer = fake_anthropic._answer
        monkeypatch.setattr(
            fake_anthropic,
            "_answer",
            lambda path, raw, headers: (
                failing if path.endswith("/cancel") else answer(path, raw, headers)
            ),
        )
    with pytest.raises(BatchOutputError) as raised:
        await run_file_provider_batch(task, source, out, poll_s=0.01)
    (batch_id,) = fake_anthropic.batches
    message = str(raised.value)
    assert batch_id in message and "No space left on device" in message
    assert str(_batch_files.state_path(out)) in message
    if cancel_fails:
        assert fake_anthropic.canceled == [] and "canceling it failed too" in message
        assert "billed" in message
    else:
        assert fake_anthropic.canceled == [batch_id] and "not billed" in message
    # the disk has room again: the rerun submits once more and completes
    monkeypatch.setattr(_batch_files, "write_state", real)
    fake_anthropic.batch_polls = 1
    stats = await run_file_provider_batch(task, source, out, poll_s=0.01)
    # canceled: submitted anew; still running: found at the provider and collected, not rebought
    assert (stats.done, stats.failed) == (3, 0)
    assert len(fake_anthropic.batches) == (1 if cancel_fails else 2)
