"""Bulk runs: error lines instead of crashes, one line per id, resume after a kill."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import promptcast as pc
from promptcast.batch import (
    BatchItem,
    BatchOutputBusyError,
    batch,
    done_ids,
    read_items,
    run_file,
)
from promptcast.testing import FakeAnthropic, ScriptedBackend, error_reply
from tests.conftest import TEST_KEY

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


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_bad_lines_become_error_lines_and_ids_are_kept(
    labels: pc.Task[Any], tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        '{"id": "a", "text": "one"}\nnot json\n[1, 2]\n{"id": "b", "txt": "typo"}\n'
        '\n{"text": "no id"}\n'
    )
    out = tmp_path / "out.jsonl"
    stats = await run_file(labels, source, out, concurrency=2)
    results = {line["id"]: line for line in lines(out)}
    assert set(results) == {"a", "line-2", "line-3", "b", "line-6"}
    assert results["a"]["output"] == {"label": "ok"} and results["a"]["attempts"] == 1
    assert results["a"]["usage"] == {"input_tokens": 10, "output_tokens": 5, "cost_usd": 0.0}
    assert "not JSON" in results["line-2"]["error"]["message"]
    assert (
        results["b"]["error"]["type"] == "TaskInputError"
        and "'text'" in results["b"]["error"]["message"]
    )
    assert (stats.done, stats.failed) == (5, 3)


async def test_a_rerun_skips_finished_ids_and_drops_a_torn_line(
    labels: pc.Task[Any], tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(json.dumps({"id": f"n{i}", "text": str(i)}) + "\n" for i in range(20))
    )
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "n3", "output": {"label": "ok"}}\n{"id": "n4", "outp')
    assert done_ids(out) == {"n3"} and out.read_text().endswith("}\n")
    stats = await run_file(labels, source, out)
    ids = [line["id"] for line in lines(out)]
    assert sorted(ids) == sorted(f"n{i}" for i in range(20)) and stats.skipped == 1


async def test_concurrency_is_bounded(labels: pc.Task[Any]) -> None:
    import asyncio

    active = peak = 0

    async def slow(request: Any) -> dict[str, str]:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        return {"label": "ok"}

    with pc.override(backends={"test/labels": ScriptedBackend(slow)}):
        items = [BatchItem(str(i), {"text": str(i)}) for i in range(50)]
        results = [r async for r in batch(labels, items, concurrency=7)]
        assert len(results) == 50 and peak == 7


def test_read_items_is_lazy() -> None:
    def endless() -> Any:
        n = 0
        while True:
            n += 1
            yield json.dumps({"text": str(n)})

    items = read_items(endless())
    assert [next(items).id for _ in range(3)] == ["line-1", "line-2", "line-3"]


def test_ten_thousand_lines_killed_half_way_then_resumed(
    write_task: Callable[..., Path], tmp_path: Path
) -> None:
    task_dir = tmp_path / "prompts"
    task_dir.mkdir()
    (task_dir / "labels.jsonl").write_text("")
    (task_dir / "labels.jinja").write_text(
        TASK.replace("model: test/labels", "max_tokens: 50").lstrip()
    )
    total = 10_000
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(
            json.dumps({"id": f"id-{i:05d}", "text": f"<{i:05d}>"}) + "\n" for i in range(total)
        )
    )
    out = tmp_path / "out.jsonl"
    rng = random.Random(7)

    def flaky(request: dict[str, Any]) -> Any:
        if rng.random() < 0.05:
            return error_reply(500, "api_error", "Internal server error")
        from promptcast.testing._fake_anthropic import _auto

        return _auto(request)

    with FakeAnthropic(handler=flaky) as fake:
        env = {
            **os.environ,
            "ANTHROPIC_BASE_URL": fake.base_url,
            "ANTHROPIC_API_KEY": TEST_KEY,
            "PROMPTCAST_MAX_RETRIES": "0",
        }
        command = [
            sys.executable,
            "-m",
            "promptcast.cli",
            "batch",
            "labels",
            str(source),
            "-o",
            str(out),
            "-p",
            str(task_dir),
            "--concurrency",
            "32",
        ]
        first = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not out.exists() or out.stat().st_size < 400_000):
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
        finished_first = done_ids(out)
        errored_first = done_ids(out, include_errors=True) - finished_first
        assert 0 < len(finished_first) < total and errored_first
        # --keep-errors: the first run's error lines count as done, so each id gets one line
        second = subprocess.run(
            [*command, "--keep-errors"], env=env, capture_output=True, text=True, timeout=300
        )
        assert second.returncode in (0, 1), second.stderr

        written = lines(out)
        ids = Counter(line["id"] for line in written)
        assert len(written) == total and set(ids) == {f"id-{i:05d}" for i in range(total)}
        assert max(ids.values()) == 1
        errors = {line["id"] for line in written if "error" in line}
        assert 0.02 * total < len(errors) < 0.08 * total
        asked = Counter(
            json.loads(json.dumps(r))["messages"][0]["content"][-6:-1] for r in fake.requests
        )
        assert all(asked[item[3:]] <= 1 for item in finished_first), "a finished id was re-run"
        assert errored_first <= errors and not any(asked[i[3:]] > 1 for i in errored_first)
        assert len(fake.requests) <= total + 32  # only calls in flight at the kill are redone

        # the default resume runs exactly the errored ids again, appending after their old lines
        before = len(fake.requests)
        third = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert third.returncode in (0, 1), third.stderr
        assert len(fake.requests) - before == len(errors)
        rerun = lines(out)[total:]
        assert sorted(line["id"] for line in rerun) == sorted(errors)
        last = {line["id"]: line for line in lines(out)}
        assert sum("error" in line for line in last.values()) < 0.2 * len(errors)


async def test_plain_dicts_without_ids_get_distinct_ids(labels: pc.Task[Any]) -> None:
    """Items passed as dicts are numbered by position, not by how many calls are in flight."""
    items = [{"text": str(i)} for i in range(10)]
    results = [r async for r in batch(labels, items, concurrency=3)]
    assert sorted(r.id for r in results) == sorted(f"item-{i}" for i in range(10))


# ids (issue 11, item 9)


def jsonl(*rows: Any) -> str:
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


@pytest.mark.parametrize(
    ("rows", "named"),
    [
        pytest.param(
            [{"id": 1, "text": "a"}, {"id": "1", "text": "b"}],
            ["id '1' on lines 1, 2"],
            id="int-vs-string",
        ),
        pytest.param(
            [{"id": "line-3", "text": "a"}, {"id": "x", "text": "b"}, {"text": "c"}],
            ["id 'line-3' on lines 1, 3 (no id, so line-3)"],
            id="explicit-vs-default",
        ),
        pytest.param(
            [{"id": "a", "text": "1"}, {"id": "b", "text": "2"}, {"id": "a", "text": "3"}],
            ["id 'a' on lines 1, 3"],
            id="plain-duplicate",
        ),
        pytest.param(
            [{"id": 7, "text": "1"}, {"id": 7, "text": "2"}, {"id": 7, "text": "3"}],
            ["id '7' on lines 1, 2, 3"],
            id="three-times",
        ),
        pytest.param(
            ["not json", {"id": "line-1", "text": "b"}, {"id": "q", "text": "c"}, "[1]"],
            ["id 'line-1' on lines 1 (no id, so line-1), 2"],
            id="bad-line-vs-explicit",
        ),
        pytest.param(
            [{"id": "a", "text": "1"}, {"id": 2, "text": "2"}, {"id": "a"}, {"id": "2"}],
            ["id 'a' on lines 1, 3", "id '2' on lines 2, 4"],
            id="two-ids",
        ),
    ],
)
async def test_repeated_ids_refuse_the_run_naming_the_lines(
    rows: list[Any], named: list[str], tmp_path: Path, write_task: Callable[..., Path]
) -> None:
    backend = ScriptedBackend(lambda request: {"label": "ok"})
    with pc.override(backends={"test/labels": backend}):
        task = pc.Task.from_file(write_task("labels", TASK))
        source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        source.write_text(jsonl(*rows))
        with pytest.raises(pc.TaskInputError) as caught:
            await run_file(task, source, out)
        for text in named:
            assert text in str(caught.value)
        assert backend.requests == [] and out.read_text() == ""


def test_cli_refuses_repeated_ids(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from promptcast.cli import app

    (tmp_path / "labels.jinja").write_text(TASK.lstrip())
    backend = ScriptedBackend(lambda request: {"label": "ok"})
    with pc.override(backends={"test/labels": backend}):
        source = tmp_path / "in.jsonl"
        source.write_text(jsonl({"id": 1, "text": "a"}, {"id": "1", "text": "b"}))
        result = CliRunner().invoke(
            app, ["batch", "labels", str(source), "-o", str(tmp_path / "o"), "-p", str(tmp_path)]
        )
        assert result.exit_code == 1 and "id '1' on lines 1, 2" in result.output
        assert backend.requests == []


async def test_an_output_id_keeps_its_json_type_and_resumes(
    labels: pc.Task[Any], tmp_path: Path
) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(jsonl({"id": 1, "text": "a"}, {"id": "2", "text": "b"}, {"text": "c"}))
    await run_file(labels, source, out)
    assert sorted(map(repr, (line["id"] for line in lines(out)))) == ["'2'", "'line-3'", "1"]
    assert done_ids(out) == {"1", "2", "line-3"}
    again = await run_file(labels, source, out)
    assert (again.done, again.skipped) == (0, 3)


@pytest.mark.parametrize("bad", [True, False, None, 1.5, [1], {"a": 1}])
async def test_an_id_that_is_not_a_string_or_integer_is_an_error_line(
    bad: Any, labels: pc.Task[Any], tmp_path: Path
) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(jsonl({"id": "ok", "text": "a"}, {"id": bad, "text": "b"}))
    await run_file(labels, source, out)
    results = {line["id"]: line for line in lines(out)}
    assert set(results) == {"ok", "line-2"}
    assert "must be a string or an integer" in results["line-2"]["error"]["message"]


async def test_batch_checks_a_list_of_items_before_any_call(labels: pc.Task[Any]) -> None:
    backend = ScriptedBackend(lambda request: {"label": "ok"})
    with pc.override(backends={"test/labels": backend}):
        items: list[Any] = [{"id": 1, "text": "a"}, BatchItem("x", {"text": "b"}), {"id": "1"}]
        with pytest.raises(pc.TaskInputError, match="items 0 and 2 have the same id '1'"):
            [r async for r in batch(labels, items)]
        assert backend.requests == []


async def test_batch_stops_at_a_repeated_id_in_a_lazy_iterable(labels: pc.Task[Any]) -> None:
    items = (BatchItem(i % 3, {"text": str(i)}) for i in range(10))
    with pytest.raises(pc.TaskInputError, match="items 0 and 3 have the same id '0'"):
        [r async for r in batch(labels, items, concurrency=1)]


# reading lines (item 10)


def echo(request: Any) -> dict[str, str]:
    return {"label": request.prompt.messages[0]["content"].removeprefix("Label ")}


@pytest.mark.parametrize(
    "separator", ["\u2028", "\u2029", "\x85", "\u000b\u2028", "\r\u2028\x85"], ids=repr
)
async def test_unicode_line_separators_inside_strings_split_nothing_and_resume(
    separator: str, tmp_path: Path, write_task: Callable[..., Path]
) -> None:
    """Raw U+2028, U+2029 and NEL are legal inside JSON strings; they must not split a line,
    in the input or in the output read on resume (raw C0 controls are escaped by json)."""
    backend = ScriptedBackend(echo)
    with pc.override(backends={"test/labels": backend}):
        task = pc.Task.from_file(write_task("labels", TASK))
        source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        rows = [{"id": f"a{separator}{i}", "text": f"x{separator}y{i}"} for i in range(5)]
        source.write_bytes(jsonl(*(json.dumps(r, ensure_ascii=False) for r in rows)).encode())
        stats = await run_file(task, source, out)
        assert (stats.done, stats.failed) == (5, 0)
        assert out.read_bytes().count(b"\n") == 5
        results = {line["id"]: line for line in map(json.loads, out.read_bytes().split(b"\n")[:-1])}
        assert results[f"a{separator}3"]["output"] == {"label": f"x{separator}y3"}
        again = await run_file(task, source, out)
        assert (again.done, again.skipped, len(backend.requests)) == (0, 5, 5)


@pytest.mark.parametrize("control", ["\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"], ids=repr)
async def test_raw_control_characters_do_not_split_a_line(
    control: str, labels: pc.Task[Any], tmp_path: Path
) -> None:
    """str.splitlines() and text mode split on these; the reader splits on \\n only, so the
    broken line stays one (error) line and the line numbers after it stay right."""
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_bytes(f'{{"text": "a{control}b"}}\n{{"text": "c"}}\n'.encode())
    await run_file(labels, source, out)
    results = {line["id"]: line for line in lines(out)}
    assert set(results) == {"line-1", "line-2"}
    assert "not JSON" in results["line-1"]["error"]["message"]
    assert results["line-2"]["output"] == {"label": "ok"}


async def test_crlf_files_and_a_bom_are_read(labels: pc.Task[Any], tmp_path: Path) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_bytes(b'\xef\xbb\xbf{"id": "a", "text": "1"}\r\n{"id": "b", "text": "2"}\r\n')
    stats = await run_file(labels, source, out)
    assert (stats.done, stats.failed) == (2, 0)
    assert {line["id"] for line in lines(out)} == {"a", "b"}


@pytest.mark.parametrize(
    "raw", [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xe2\x82", b"\x80abc"], ids=repr
)
async def test_invalid_utf8_fails_only_its_line(
    raw: bytes, labels: pc.Task[Any], tmp_path: Path
) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_bytes(
        b'{"id": "a", "text": "1"}\n{"id": "b", "text": "x'
        + raw
        + b'y"}\n{"text": "'
        + raw
        + b'"}\n{"id": "d", "text": "4"}\n'
    )
    stats = await run_file(labels, source, out)
    results = {line["id"]: line for line in lines(out)}
    assert set(results) == {"a", "b", "line-3", "d"}
    for bad in ("b", "line-3"):
        assert results[bad]["error"]["type"] == "TaskInputError"
        assert "not valid UTF-8" in results[bad]["error"]["message"]
    assert (stats.done, stats.failed) == (4, 2)


async def test_a_lone_surrogate_in_an_output_is_written_escaped(
    tmp_path: Path, write_task: Callable[..., Path]
) -> None:
    # a lone surrogate as an input is refused before any call, so the model writes it
    with pc.override(backends={"test/labels": ScriptedBackend(lambda r: {"label": "\udfff"})}):
        task = pc.Task.from_file(write_task("labels", TASK))
        source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        source.write_text('{"id": "s\\ud800", "text": "x"}\n')
        await run_file(task, source, out)
        [line] = lines(out)
        assert line["id"] == "s\ud800" and line["output"] == {"label": "\udfff"}
        assert done_ids(out) == {"s\ud800"}


# one writer (item 11)


async def test_a_second_run_on_the_same_output_fails_at_once(
    tmp_path: Path, write_task: Callable[..., Path]
) -> None:
    import asyncio

    release = asyncio.Event()

    async def wait(request: Any) -> dict[str, str]:
        await release.wait()
        return {"label": "ok"}

    backend = ScriptedBackend(wait)
    with pc.override(backends={"test/labels": backend}):
        task = pc.Task.from_file(write_task("labels", TASK))
        source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        source.write_text(jsonl(*({"text": str(i)} for i in range(4))))
        first = asyncio.ensure_future(run_file(task, source, out))
        while not backend.requests:
            await asyncio.sleep(0.001)
        with pytest.raises(BatchOutputBusyError, match="another promptcast batch"):
            await asyncio.wait_for(run_file(task, source, out), timeout=10)
        release.set()
        assert (await first).done == 4
        assert len(backend.requests) == 4 and len(lines(out)) == 4


def test_the_cli_refuses_an_output_held_by_another_process_until_it_dies(tmp_path: Path) -> None:
    """A process killed with SIGKILL releases its lock: the OS drops it with the process."""
    from typer.testing import CliRunner

    from promptcast.cli import app

    (tmp_path / "labels.jinja").write_text(TASK.lstrip())
    backend = ScriptedBackend(lambda request: {"label": "ok"})
    with pc.override(backends={"test/labels": backend}):
        source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        source.write_text(jsonl({"text": "a"}))
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys, time; from pathlib import Path\n"
                "from promptcast._batch_files import append_exclusively\n"
                "with append_exclusively(Path(sys.argv[1])) as out:\n"
                "    assert out is not None; print('locked', flush=True); time.sleep(600)\n",
                str(out),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
            args = ["batch", "labels", str(source), "-o", str(out), "-p", str(tmp_path)]
            busy = CliRunner().invoke(app, args)
            assert (
                busy.exit_code == 1 and "being written by another promptcast batch" in busy.output
            )
            assert backend.requests == [] and out.read_text() == ""
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait()
            if holder.stdout is not None:
                holder.stdout.close()
        done = CliRunner().invoke(app, args)
        assert done.exit_code == 0, done.output
        assert [line["output"] for line in lines(out)] == [{"label": "ok"}]


# resume retries errors (item 12)


@pytest.mark.parametrize("retry_errors", [True, False])
async def test_resume_runs_errored_ids_again_unless_told_to_keep_them(
    retry_errors: bool, tmp_path: Path, write_task: Callable[..., Path]
) -> None:
    pc.configure(max_retries=0)
    failures = iter([pc.BackendError("overloaded", provider="test", status=529, retryable=True)])

    def flaky(request: Any) -> Any:
        return next(failures, {"label": "ok"})

    backend = ScriptedBackend(flaky)
    with pc.override(backends={"test/labels": backend}):
        task = pc.Task.from_file(write_task("labels", TASK))
        source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        source.write_text(jsonl({"id": "a", "text": "1"}, {"id": "b", "txt": "typo"}))
        first = await run_file(task, source, out, concurrency=1)
        assert (first.done, first.failed) == (2, 2) and done_ids(out) == set()
        source.write_text(jsonl({"id": "a", "text": "1"}, {"id": "b", "text": "fixed"}))
        second = await run_file(task, source, out, retry_errors=retry_errors)
        written = lines(out)
        if retry_errors:
            assert (second.done, second.failed, second.skipped) == (2, 0, 0)
            assert [(line["id"], "output" in line) for line in written[2:]] in (
                [("a", True), ("b", True)],
                [("b", True), ("a", True)],
            )
            assert done_ids(out) == {"a", "b"}
        else:
            assert (second.done, second.skipped) == (0, 2) and len(written) == 2
            assert done_ids(out, include_errors=True) == {"a", "b"}


def test_cli_keep_errors_flag(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from promptcast.cli import app

    (tmp_path / "labels.jinja").write_text(TASK.lstrip())
    with pc.override(backends={"test/labels": ScriptedBackend(lambda request: {"label": "ok"})}):
        source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        source.write_text(jsonl({"id": "a", "text": "1"}))
        out.write_text(
            json.dumps({"id": "a", "error": {"type": "BackendError", "message": "x"}}) + "\n"
        )
        args = ["batch", "labels", str(source), "-o", str(out), "-p", str(tmp_path)]
        kept = CliRunner().invoke(app, [*args, "--keep-errors"])
        assert kept.exit_code == 0 and "0 done (0 failed), 1 already in" in kept.output
        retried = CliRunner().invoke(app, args)
        assert retried.exit_code == 0 and "1 done (0 failed), 0 already in" in retried.output
        assert [("output" in line) for line in lines(out)] == [False, True]


# one item never stops a batch (item 14) and error lines carry no secrets (item 4)


@pytest.mark.parametrize(
    "exc",
    [
        pc.BackendError("reply is not the provider's shape", provider="test", retryable=True),
        AttributeError("'dict' object has no attribute 'content'"),
        KeyError("content"),
        TypeError("unsupported operand"),
        ZeroDivisionError("division by zero"),
        RuntimeError(""),
    ],
    ids=lambda exc: type(exc).__name__,
)
async def test_an_exception_in_one_item_is_an_error_line_and_the_batch_goes_on(
    exc: Exception, tmp_path: Path, write_task: Callable[..., Path]
) -> None:
    pc.configure(max_retries=0)

    def handler(request: Any) -> Any:
        return exc if "<7>" in request.prompt.messages[0]["content"] else {"label": "ok"}

    with pc.override(backends={"test/labels": ScriptedBackend(handler)}):
        task = pc.Task.from_file(write_task("labels", TASK))
        source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        source.write_text(jsonl(*({"id": i, "text": f"<{i}>"} for i in range(20))))
        stats = await run_file(task, source, out, concurrency=4)
        results = {line["id"]: line for line in lines(out)}
        assert set(results) == set(range(20)) and (stats.done, stats.failed) == (20, 1)
        assert results[7]["error"]["type"] == type(exc).__name__
        assert results[7]["error"]["message"]


SECRETS = [
    "sk-ant-api03-" + "A1b2C3d4E5f6G7h8I9j0" * 3,
    "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "bearer abcdefABCDEF0123456789abcdef",
]


@pytest.mark.parametrize("secret", SECRETS, ids=["anthropic-key", "bearer-jwt", "bearer-lower"])
async def test_error_lines_are_scrubbed_of_credentials(
    secret: str, tmp_path: Path, write_task: Callable[..., Path]
) -> None:
    pc.configure(max_retries=0)
    error = pc.BackendError(
        f"401 invalid x-api-key; request had Authorization: {secret}", provider="test", status=401
    )
    with pc.override(
        backends={"test/labels": ScriptedBackend([error, ValueError(f"echo {secret}"), error])}
    ):
        task = pc.Task.from_file(write_task("labels", TASK))
        source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        source.write_text(jsonl({"id": "a", "text": "1"}, {"id": "b", "text": "2"}))
        await run_file(task, source, out, concurrency=1)
        text = out.read_text()
        token = secret.split()[-1]
        assert token not in text and token[-12:] not in text
        assert [line["error"]["type"] for line in lines(out)] == ["BackendError", "ValueError"]
        results = [r async for r in batch(task, [BatchItem("c", {"text": "3"})])]
        assert results[0].error is not None and token not in results[0].error["message"]
