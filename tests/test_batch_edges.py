"""Bulk and evaluation runs at their edges: files that are not what they should be, cases that
cannot pass, scorers that break, arguments that would hang."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import promptcast as pc
from promptcast.batch import run_file, run_file_provider_batch
from promptcast.cli import app
from promptcast.testing import FakeAnthropic, ScriptedBackend

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


@pytest.mark.parametrize("content", ["", "{", '{"id": 1, "outp', '{"id": '])
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
