"""An evaluation is a bulk run: `save=` / `--save FILE` keeps each finished case, a rerun resumes
without paying twice, and the response cache never stands in for a model's cost and latency."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

import promptcast as pc
from promptcast import _batch_files
from promptcast.backends.base import ModelRequest
from promptcast.cli import app
from promptcast.errors import ConfigurationError
from promptcast.evals import EvalReport, EvalSaveBusyError, EvalSaveError, evaluate, load_cases
from promptcast.pricing import cost_usd
from promptcast.spec import Example
from promptcast.testing import FakeAnthropic, ScriptedBackend
from tests.conftest import TEST_KEY

TASK = """
---
inputs: {text: str}
output: {label: str}
model: test/a
---
Label {{ text }}
"""

MODELS = ["test/a", "test/b"]
TEXTS = [f"item-{i}" for i in range(6)]


class Stop(BaseException):
    """Stands for a kill: not an `Exception`, so no case swallows it and the run ends."""


class Calls:
    """A scripted handler for both models that counts calls per (model, text) and can stop the
    run at the n-th call, as a kill would."""

    def __init__(self) -> None:
        self.count: Counter[tuple[str, str]] = Counter()
        self.stop_at: int | None = None
        self.fail: set[str] = set()

    def backend(self, model: str) -> ScriptedBackend:
        def answer(request: ModelRequest) -> Any:
            text = request.prompt.as_text().split("Label ", 1)[1].strip()
            if self.stop_at is not None and sum(self.count.values()) + 1 >= self.stop_at:
                raise Stop
            self.count[(model, text)] += 1
            if text in self.fail:
                raise ConnectionError("provider down")
            # model b gets the odd items wrong
            wrong = model == "test/b" and int(text[-1:]) % 2 == 1 if text[-1].isdigit() else False
            return {"label": "no" if wrong else text}

        return ScriptedBackend(answer)

    def total(self) -> int:
        return sum(self.count.values())


@pytest.fixture
def calls() -> Iterator[Calls]:
    counter = Calls()
    with pc.override(backends={m: counter.backend(m) for m in MODELS}, max_retries=0):
        yield counter


@pytest.fixture
def labels(write_task: Callable[..., Path]) -> pc.Task[Any]:
    return pc.Task.from_file(write_task("labels", TASK))


def cases(texts: list[str] = TEXTS) -> list[Example]:
    return [Example({"text": t}, {"label": t}) for t in texts]


def saved_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_latency(report: EvalReport) -> dict[str, Any]:
    """The report minus what a clock measures (two runs never take the same microseconds)."""
    data = report.model_dump()
    for row in data["models"]:
        row.pop("mean_latency_s")
        row.pop("p95_latency_s")
    for row in data["results"]:
        row.pop("latency_s")
    return data


# resume


@pytest.mark.parametrize("stop_at", [1, 2, 5, 12])
def test_a_stopped_run_resumes_to_the_report_of_an_uninterrupted_run(
    labels: pc.Task[Any], calls: Calls, tmp_path: Path, stop_at: int
) -> None:
    full = evaluate(labels, MODELS, cases(), concurrency=1)
    full_calls = calls.total()
    calls.count.clear()

    save = tmp_path / "results.jsonl"
    calls.stop_at = stop_at
    with pytest.raises(Stop):
        evaluate(labels, MODELS, cases(), concurrency=1, save=save)
    first = dict(calls.count)
    written = saved_lines(save) if save.exists() else []
    assert len(written) == stop_at - 1  # each finished case is on disk at once

    calls.stop_at = None
    calls.count.clear()
    resumed = evaluate(labels, MODELS, cases(), concurrency=1, save=save)
    assert without_latency(resumed) == without_latency(full)
    # no saved case was called again; every other one once
    assert not set(first) & set(calls.count)
    assert calls.total() == full_calls - len(written)
    assert max(calls.count.values()) == 1
    # the saved cases keep the latency they were measured with
    latencies = {(r.model, r.case): r.latency_s for r in resumed.results}
    for line in written:
        assert latencies[(line["model"], line["case"])] == line["latency_s"]
        assert line["attempts"] == 1 and line["template_hash"] == labels.spec.template_hash

    # a third run calls nothing and reports the same
    calls.count.clear()
    again = evaluate(labels, MODELS, cases(), save=save)
    assert calls.total() == 0 and again == resumed


async def test_aevaluate_saves_and_resumes(
    labels: pc.Task[Any], calls: Calls, tmp_path: Path
) -> None:
    save = tmp_path / "results.jsonl"
    first = await pc.aevaluate(labels, MODELS, cases(), save=save)
    calls.count.clear()
    second = await pc.aevaluate(labels, MODELS, cases(), save=str(save))
    assert calls.total() == 0 and second == first
    assert len(saved_lines(save)) == len(MODELS) * len(TEXTS)


def test_a_torn_last_line_is_cut_and_its_case_run_again(
    labels: pc.Task[Any], calls: Calls, tmp_path: Path
) -> None:
    save = tmp_path / "results.jsonl"
    evaluate(labels, MODELS, cases(), save=save)
    text = save.read_text()
    kept, last = text.rstrip("\n").rsplit("\n", 1)
    save.write_text(kept + "\n" + last[: len(last) // 2])  # killed while writing its last line
    torn = json.loads(last)
    calls.count.clear()
    report = evaluate(labels, MODELS, cases(), save=save)
    assert dict(calls.count) == {(torn["model"], TEXTS[torn["case"]]): 1}
    assert all(r.outcome != "error" for r in report.results)
    assert len(saved_lines(save)) == len(MODELS) * len(TEXTS)  # every line whole JSON


def test_errored_cases_run_again_and_the_last_line_wins(
    labels: pc.Task[Any], calls: Calls, tmp_path: Path
) -> None:
    save = tmp_path / "results.jsonl"
    calls.fail = {"item-2"}
    first = evaluate(labels, MODELS, cases(), save=save)
    assert first.models[0].errors == first.models[1].errors == 1
    calls.fail = set()
    calls.count.clear()
    second = evaluate(labels, MODELS, cases(), save=save)
    assert dict(calls.count) == {("test/a", "item-2"): 1, ("test/b", "item-2"): 1}
    assert second.models[0].errors == 0 and second.models[0].passed == len(TEXTS)
    calls.count.clear()
    assert evaluate(labels, MODELS, cases(), save=save) == second
    assert calls.total() == 0


def test_cases_are_known_by_content_not_position(
    labels: pc.Task[Any], calls: Calls, tmp_path: Path
) -> None:
    """A case inserted at the top, and a case repeated word for word, keep the results."""
    save = tmp_path / "results.jsonl"
    evaluate(labels, MODELS, cases(), save=save)
    calls.count.clear()
    grown = [Example({"text": "extra"}, {"label": "extra"}), *cases(), cases()[0]]
    report = evaluate(labels, MODELS, grown, save=save)
    # the new case and the second copy of item-0 run; nothing else does
    assert calls.count == Counter(
        {("test/a", "extra"): 1, ("test/b", "extra"): 1, ("test/a", "item-0"): 1}
        | {("test/b", "item-0"): 1}
    )
    assert [r.case for r in report.results] == list(range(len(grown))) * len(MODELS)
    for result in report.results:
        text = grown[result.case].inputs["text"]
        assert result.passed == (result.model == "test/a" or text == "extra" or text[-1] in "024")
    calls.count.clear()
    assert evaluate(labels, MODELS, grown, save=save) == report
    assert calls.total() == 0


# lines that no longer apply


@pytest.mark.parametrize(
    ("change", "ignored", "reason"),
    [
        ("template", 12, "another template hash"),
        ("models", 6, "a model not asked for"),
        ("cases", 4, "a case no longer among the cases"),
        ("scorer", 12, "another scorer"),
    ],
)
def test_lines_that_no_longer_apply_are_ignored_and_said_once(
    write_task: Callable[..., Path],
    calls: Calls,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    change: str,
    ignored: int,
    reason: str,
) -> None:
    save = tmp_path / "results.jsonl"
    evaluate(pc.Task.from_file(write_task("labels", TASK)), MODELS, cases(), save=save)
    calls.count.clear()
    task = pc.Task.from_file(
        write_task("labels", TASK.replace("Label {{ text }}", "Label {{ text }}\n"))
        if change == "template"
        else write_task("labels", TASK)
    )
    models = MODELS[:1] if change == "models" else MODELS
    chosen = cases(TEXTS[:4]) if change == "cases" else cases()

    def exact(output: Any, case: Example) -> float:
        return 1.0 if output.label == case.inputs["text"] else 0.0

    scorer = exact if change == "scorer" else None
    with caplog.at_level(logging.WARNING, logger="promptcast.evals"):
        report = evaluate(task, models, chosen, save=save, scorer=scorer)
    messages = [r.getMessage() for r in caplog.records if r.name == "promptcast.evals"]
    assert len(messages) == 1
    assert f"{ignored} saved line(s)" in messages[0] and reason in messages[0]
    expected_calls = 12 if change in ("template", "scorer") else 0
    assert calls.total() == expected_calls
    assert len(report.results) == len(models) * len(chosen)


# files that are not eval results, or are in use


@pytest.mark.parametrize(
    "content",
    [
        b'{"id": "a", "output": {"label": "x"}}\n',  # a batch output
        b'{"inputs": {"text": "a"}, "expect": {"label": "a"}}\n',  # a cases file
        b"name,score\nx,1\n",  # a CSV
        b"[1, 2]\n",  # JSON, not an object
        b'{"kind": "something.else"}\n',
        b"\xff\xfe binary\n",
    ],
)
def test_a_file_that_is_not_eval_results_is_refused_untouched(
    labels: pc.Task[Any], calls: Calls, tmp_path: Path, content: bytes
) -> None:
    save = tmp_path / "precious.jsonl"
    save.write_bytes(content + b'{"torn": ')
    before = save.stat().st_mtime_ns
    with pytest.raises(ConfigurationError, match="not the results file of a promptcast eval"):
        evaluate(labels, MODELS, cases(), save=save)
    assert save.read_bytes() == content + b'{"torn": '
    assert save.stat().st_mtime_ns == before
    assert calls.total() == 0


def test_a_second_writer_is_refused_before_any_call(
    labels: pc.Task[Any], calls: Calls, tmp_path: Path
) -> None:
    save = tmp_path / "results.jsonl"
    with _batch_files.append_exclusively(save) as held:
        assert held is not None
        with pytest.raises(EvalSaveBusyError, match="another promptcast eval run"):
            evaluate(labels, MODELS, cases(), save=save)
    assert calls.total() == 0
    evaluate(labels, MODELS, cases(), save=save)  # the lock went with its holder
    assert calls.total() == 12


@pytest.mark.parametrize("where", ["folder", "missing-folder"])
def test_a_save_path_that_cannot_be_written_is_a_clear_error(
    labels: pc.Task[Any], calls: Calls, tmp_path: Path, where: str
) -> None:
    save = tmp_path if where == "folder" else tmp_path / "nope" / "results.jsonl"
    with pytest.raises(pc.PromptcastError, match="nothing was run"):
        evaluate(labels, MODELS, cases(), save=save)
    assert calls.total() == 0


def test_a_pipe_is_refused(labels: pc.Task[Any], calls: Calls, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ConfigurationError, match="not a regular file"):
        evaluate(labels, MODELS, cases(), save=fifo)
    assert calls.total() == 0


@pytest.mark.parametrize(
    "content",
    [
        b"",  # a new, empty file
        b'{"kind": "promptcast.eval", "model": "te',  # killed while writing its first line
    ],
)
def test_an_empty_or_half_written_file_is_an_eval_results_file(
    labels: pc.Task[Any], calls: Calls, tmp_path: Path, content: bytes
) -> None:
    save = tmp_path / "results.jsonl"
    save.write_bytes(content)
    evaluate(labels, MODELS, cases(), save=save)
    assert calls.total() == 12 and len(saved_lines(save)) == 12


@pytest.mark.parametrize(
    ("content", "fits"),
    [
        (b"", True),
        (b'{"kind": "k"', True),
        (b'\xef\xbb\xbf{"kind": "k"}\n', True),
        (b'{"kind": "k"}\nanything\n', True),
        (b'{"kind": "other"}\n', False),
        (b"[]\n", False),
        (b"text\n", False),
        (b"text", False),
    ],
)
def test_first_line_fits(tmp_path: Path, content: bytes, fits: bool) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(content)
    assert _batch_files.first_line_fits(path, lambda line: line.get("kind") == "k") is fits


# the response cache is bypassed


def test_an_eval_measures_real_calls_not_cache_hits(
    fake_anthropic: FakeAnthropic, tmp_path: Path, write_task: Callable[..., Path]
) -> None:
    claude = "anthropic/claude-sonnet-4-6"
    task = pc.Task.from_file(write_task("labels", TASK.replace("test/a", claude)))
    pc.configure(cache=f"sqlite:///{tmp_path / 'cache.db'}")
    task(text="warm")  # the cache answers this input from now on...
    assert task.run(text="warm").cached
    before = len(fake_anthropic.requests)
    report = evaluate(task, [claude], cases(["warm", "warm2"]))
    # ...but not inside an eval: both cases were real, paid calls
    assert len(fake_anthropic.requests) - before == 2
    again = evaluate(task, [claude], cases(["warm", "warm2"]))
    assert len(fake_anthropic.requests) - before == 4
    for r in [*report.results, *again.results]:
        assert r.input_tokens > 0 and r.cost_usd == pytest.approx(
            cost_usd(claude, r.input_tokens, r.output_tokens)
        )
        assert r.cost_usd > 0  # type: ignore[operator]
    assert task.run(text="warm").cached  # outside the eval the cache is as configured


# the command line


def test_cli_save_resumes_and_prints_the_whole_report(
    labels: pc.Task[Any], calls: Calls, tmp_path: Path
) -> None:
    runner = CliRunner()
    source = tmp_path / "cases.jsonl"
    source.write_text(
        "".join(json.dumps({"inputs": {"text": t}, "expect": {"label": t}}) + "\n" for t in TEXTS)
    )
    save = tmp_path / "results.jsonl"
    args = ["eval", "labels", "-p", str(tmp_path), "--models", ",".join(MODELS)]
    args += ["--cases", str(source), "--save", str(save), "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    calls.count.clear()
    second = runner.invoke(app, args)
    assert second.exit_code == 0 and calls.total() == 0
    assert json.loads(second.stdout) == json.loads(first.stdout)
    # loading the cases file again gives the same keys (media paths and all)
    assert len(load_cases(source, labels)) == len(TEXTS)


def test_cli_refuses_a_cases_file_as_save(
    labels: pc.Task[Any], calls: Calls, tmp_path: Path
) -> None:
    source = tmp_path / "cases.jsonl"
    source.write_text(json.dumps({"inputs": {"text": "a"}, "expect": {"label": "a"}}) + "\n")
    before = source.read_bytes()
    result = CliRunner().invoke(
        app,
        [
            *("eval", "labels", "-p", str(tmp_path), "--models", "test/a"),
            *("--cases", str(source), "--save", str(source)),
        ],
    )
    assert result.exit_code != 0 and "not the results file" in result.output
    assert source.read_bytes() == before and calls.total() == 0


def test_sigkill_of_a_real_eval_then_a_rerun_pays_each_case_once(tmp_path: Path) -> None:
    """`promptcast eval … --save` killed with SIGKILL mid-run: the rerun calls only what was not
    saved (at most the calls in flight at the kill again) and prints the complete report."""
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "labels.jinja").write_text(
        TASK.replace("model: test/a", "model: anthropic/claude-sonnet-4-6").lstrip()
    )
    total, concurrency = 24, 2
    source = tmp_path / "cases.jsonl"
    source.write_text(
        "".join(
            json.dumps({"inputs": {"text": f"<{i:03d}>"}, "expect_contains": {"label": ""}}) + "\n"
            for i in range(total)
        )
    )
    save = tmp_path / "results.jsonl"

    def slow(request: dict[str, Any]) -> Any:
        from promptcast.testing._fake_anthropic import _auto

        time.sleep(0.1)
        return _auto(request)

    with FakeAnthropic(handler=slow) as fake:
        env = {
            **os.environ,
            "ANTHROPIC_BASE_URL": fake.base_url,
            "ANTHROPIC_API_KEY": TEST_KEY,
            "PROMPTCAST_MAX_RETRIES": "0",
            "PROMPTCAST_CACHE": f"sqlite:///{tmp_path / 'cache.db'}",
        }
        command = [sys.executable, "-m", "promptcast.cli", "eval", "labels", "-p", str(prompts)]
        command += ["--cases", str(source), "--save", str(save), "--json"]
        command += ["--concurrency", str(concurrency)]
        first = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (
            not save.exists() or save.read_bytes().count(b"\n") < 6
        ):
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
        _batch_files.cut_torn_line(save)
        saved_first = {line["key"] for line in saved_lines(save)}
        assert 6 <= len(saved_first) < total
        asked_first = len(fake.requests)

        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr
        report = json.loads(second.stdout)
        assert [r["case"] for r in report["results"]] == list(range(total))
        assert report["models"][0]["cases"] == report["models"][0]["passed"] == total
        asked = Counter(json.dumps(r["messages"]).split("Label ")[1][:5] for r in fake.requests)
        texts = [json.loads(line)["inputs"]["text"] for line in source.read_text().splitlines()]
        # every case was called once, but those in flight at the kill, at most twice
        assert set(asked) == set(texts)
        assert sum(n > 1 for n in asked.values()) <= concurrency
        assert len(fake.requests) - asked_first == total - len(saved_first)
        lines_by_key = Counter(line["key"] for line in saved_lines(save))
        assert len(lines_by_key) == total and max(lines_by_key.values()) == 1


class _FillsUp:
    """A file handle on a disk that is full after `room` writes."""

    def __init__(self, handle: Any, room: int) -> None:
        self._handle, self._room = handle, room

    def write(self, data: bytes) -> int:
        if self._room == 0:
            raise OSError(28, "No space left on device")
        self._room -= 1
        return int(self._handle.write(data))

    def flush(self) -> None:
        self._handle.flush()


@pytest.mark.parametrize("room", [0, 3])
def test_a_write_that_fails_stops_the_run_and_keeps_what_was_saved(
    labels: pc.Task[Any],
    calls: Calls,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    room: int,
) -> None:
    real = _batch_files.append_exclusively

    @contextmanager
    def full_disk(path: Path) -> Iterator[Any]:
        with real(path) as handle:
            yield _FillsUp(handle, room)

    monkeypatch.setattr(_batch_files, "append_exclusively", full_disk)
    save = tmp_path / "results.jsonl"
    with pytest.raises(EvalSaveError, match=f"the {room} result\\(s\\) this run saved"):
        evaluate(labels, MODELS, cases(), save=save, concurrency=2)
    # no more calls once a result could not be kept: at most those already in flight
    assert calls.total() <= room + 2
    assert len(saved_lines(save)) == room
    monkeypatch.setattr(_batch_files, "append_exclusively", real)
    calls.count.clear()
    evaluate(labels, MODELS, cases(), save=save)
    assert calls.total() == 12 - room


@pytest.mark.parametrize("saving", [True, False])
def test_cli_ctrl_c_says_where_the_results_are(
    labels: pc.Task[Any], tmp_path: Path, saving: bool
) -> None:
    answered = 0

    def answer(request: ModelRequest) -> Any:
        nonlocal answered
        if answered == 3:  # Ctrl-C, as the terminal sends it
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
        answered += 1
        return {"label": "x"}

    save, source = tmp_path / "results.jsonl", tmp_path / "cases.jsonl"
    source.write_text("".join(json.dumps({"inputs": {"text": t}}) + "\n" for t in TEXTS))
    args = ["eval", "labels", "-p", str(tmp_path), "--models", "test/a", "--concurrency", "1"]
    args += ["--cases", str(source)] + (["--save", str(save)] if saving else [])
    with pc.override(backends={"test/a": ScriptedBackend(answer)}):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 130
        said = " ".join(result.stderr.split())
        if not saving:
            assert "no result was kept; pass --save FILE" in said and not save.exists()
            return
        # the line may wrap inside the path: compare without the whitespace
        expected = f"finished cases are in {save}; run the same command again"
        assert "".join(expected.split()) in "".join(said.split())
        kept, before = len(saved_lines(save)), answered
        assert 3 <= kept < len(TEXTS)  # the call in hand when Ctrl-C came may finish first
        again = CliRunner().invoke(app, [*args, "--json"])
    assert again.exit_code == 0, again.output
    assert answered - before == len(TEXTS) - kept  # only the unsaved cases were called
    assert json.loads(again.stdout)["models"][0]["cases"] == len(TEXTS)


class _Point(BaseModel):
    x: int


@pytest.mark.parametrize(
    "value",
    [
        "text",
        7,
        None,
        ["a", {"b": 1}],
        Path("shots/1.png"),
        b"\x00\x01image bytes",
        frozenset({"x", "y"}),
        _Point(x=1),
    ],
)
def test_case_keys_are_stable_and_tell_cases_apart(value: Any) -> None:
    from promptcast._eval_saved import case_keys

    def build() -> list[Example]:
        return [
            Example({"text": value}, {"label": "a"}),
            Example({"text": value}, {"label": "b"}),  # other expectations
            Example({"text": value}, {"label": "a"}, None, "named"),  # a name
            Example({"text": value}, {"label": "a"}),  # a repeat
        ]

    keys = case_keys(build())
    assert keys == case_keys(build())  # the same cases, loaded again: the same keys
    assert len(set(keys)) == 4 and keys[3] == f"{keys[0]}#2"
