"""JSON nested too deeply for Python's reader, wherever promptcast reads JSON from outside.

`json.loads` recurses once per `[`/`{`: 100,000 of them raised `RecursionError`, which every
reader below (treating unreadable JSON as a `ValueError`) let escape as an untyped traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

import promptcast as pc
from promptcast import _batch_files
from promptcast._eval_saved import SavedResults
from promptcast.backends import local
from promptcast.backends.base import ModelRequest, json_in_text
from promptcast.batch import done_ids, run_file
from promptcast.cli import app
from promptcast.evals import load_cases
from promptcast.render import Prompt
from promptcast.server.logs import JsonFormatter
from promptcast.testing import ScriptedBackend

DEPTH = 100_000
DEEP_LIST = "[" * DEPTH + "]" * DEPTH
DEEP = '{"text": ' + DEEP_LIST + "}"

TASK = """\
---
inputs: {text: str}
output: {label: str}
model: test/deep
---
Label {{ text }}
"""


@pytest.fixture
def task(write_task: Callable[..., Path]) -> pc.Task[Any]:
    return pc.Task.from_file(write_task("labels", TASK))


def test_cli_input_json_nested_too_deep_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "labels.jinja").write_text(TASK)
    inputs = tmp_path / "inputs.json"
    inputs.write_text(DEEP)
    result = CliRunner().invoke(
        app, ["render", "labels", "--input-json", str(inputs), "-p", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "cannot read --input-json" in result.output and "nested more deeply" in result.output
    assert not isinstance(result.exception, RecursionError)


def test_a_batch_line_nested_too_deep_is_that_items_error_and_the_rest_run(
    task: pc.Task[Any], tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "text": "one"}\n' + DEEP + '\n{"id": "c", "text": "three"}\n')
    output = tmp_path / "out.jsonl"
    with pc.override(backends={"test/deep": ScriptedBackend(lambda r: {"label": "x"})}):
        asyncio.run(run_file(task, source, output))
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    by_id = {line["id"]: line for line in lines}
    assert sorted(by_id) == ["a", "c", "line-2"]  # written as each finishes
    assert "not JSON" in by_id["line-2"]["error"]["message"]
    assert by_id["a"]["output"] == by_id["c"]["output"] == {"label": "x"}


def test_a_batch_output_line_nested_too_deep_is_not_a_done_id(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    output.write_text('{"id": "a", "output": {"label": "x"}}\n' + DEEP + "\n")
    assert done_ids(output) == {"a"}
    deep_first = tmp_path / "deep.jsonl"
    deep_first.write_text(DEEP + "\n")
    assert _batch_files.first_line_fits(deep_first, lambda line: True) is False


def test_a_provider_batch_state_nested_too_deep_is_unreadable_not_a_crash(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.json"
    state.write_text(DEEP)
    with pytest.raises(ValueError, match="nested more deeply"):
        _batch_files.read_state(state)


def test_an_eval_case_nested_too_deep_names_its_line(tmp_path: Path) -> None:
    cases = tmp_path / "cases.jsonl"
    cases.write_text('{"inputs": {"text": "fine"}}\n' + DEEP + "\n")
    with pytest.raises(pc.TaskInputError, match=r"cases\.jsonl:2: not a case: not JSON"):
        load_cases(cases)


def test_saved_eval_results_nested_too_deep_are_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text(DEEP + "\n")
    with path.open("ab") as handle:
        saved = SavedResults(path, handle, {"task": "labels"})
        saved.load(["test/deep"], ["case"])
    assert saved.done == {}
    assert "1 for not a result line" in caplog.text


class Label(BaseModel):
    label: str


def request() -> ModelRequest:
    return ModelRequest(
        model="m", prompt=Prompt(None, ({"role": "user", "content": "q"},)), output_model=Label
    )


@pytest.mark.parametrize(
    "reply", [DEEP, "Here it is: " + DEEP, "```json\n" + DEEP + "\n```", '{"label": ' + DEEP_LIST]
)
def test_a_model_reply_nested_too_deep_is_no_json_object(reply: str) -> None:
    assert json_in_text(reply) is None
    parsed = local._reply(
        request(), reply, input_tokens=1, output_tokens=1, finish_reason="stop", response_id=None
    )
    assert parsed.data is None


def test_a_call_whose_model_answers_json_nested_too_deep_fails_typed(
    task: pc.Task[Any],
) -> None:
    with (
        pc.override(backends={"test/deep": ScriptedBackend(lambda r: DEEP)}),
        pytest.raises(pc.OutputValidationError),
    ):
        task(text="x")


def test_a_log_message_that_looks_like_deep_json_is_still_logged() -> None:
    record = logging.LogRecord("promptcast", logging.INFO, __file__, 1, DEEP, None, None)
    line = JsonFormatter().format(record)
    assert json.loads(line)["message"] == DEEP
