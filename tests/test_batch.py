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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import promptcast as pc
from promptcast.batch import BatchItem, batch, done_ids, read_items, run_file
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
def labels(write_task: Callable[..., Path]) -> pc.Task[Any]:
    pc.configure(backends={"test/labels": ScriptedBackend(lambda request: {"label": "ok"})})
    return pc.Task.from_file(write_task("labels", TASK))


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

    pc.configure(backends={"test/labels": ScriptedBackend(slow)})
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
        assert 0 < len(finished_first) < total
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode in (0, 1), second.stderr

        written = lines(out)
        ids = Counter(line["id"] for line in written)
        assert len(written) == total and set(ids) == {f"id-{i:05d}" for i in range(total)}
        assert max(ids.values()) == 1
        errors = sum("error" in line for line in written)
        assert 0.02 * total < errors < 0.08 * total
        asked = Counter(
            json.loads(json.dumps(r))["messages"][0]["content"][-6:-1] for r in fake.requests
        )
        assert all(asked[item[3:]] <= 1 for item in finished_first), "a finished id was re-run"
        assert len(fake.requests) <= total + 32  # only calls in flight at the kill are redone


async def test_plain_dicts_without_ids_get_distinct_ids(labels: pc.Task[Any]) -> None:
    """Items passed as dicts are numbered by position, not by how many calls are in flight."""
    items = [{"text": str(i)} for i in range(10)]
    results = [r async for r in batch(labels, items, concurrency=3)]
    assert sorted(r.id for r in results) == sorted(f"item-{i}" for i in range(10))
