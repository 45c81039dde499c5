"""The provider batch path: Anthropic Message Batches against a loopback fake, compared with the
live path on the same 250 inputs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import promptcast as pc
from promptcast.batch import BatchOutputBusyError, run_file, run_file_provider_batch
from promptcast.cli import app
from promptcast.testing import FakeAnthropic, ScriptedBackend, message, tool_use_block

TASK = "---\ninputs: {text: str}\noutput: {label: str, n: int}\nmax_tokens: 64\n---\nLabel {{ text }}\n"


def answer(request: dict[str, Any]) -> dict[str, Any]:
    """A deterministic answer per input, so live and batch outputs can be compared."""
    text = request["messages"][0]["content"]
    return message(
        [tool_use_block("LabelOutput", {"label": text.upper(), "n": len(text)})],
        input_tokens=50,
        output_tokens=10,
    )


@pytest.fixture
def setup(tmp_path: Path, fake_anthropic: FakeAnthropic) -> tuple[pc.Task[Any], Path]:
    (tmp_path / "label.jinja").write_text(TASK)
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(json.dumps({"id": f"id-{i}", "text": f"item {i}"}) + "\n" for i in range(250))
        + "not json\n"
    )
    fake_anthropic.handler = answer
    return pc.Task.from_file(tmp_path / "label.jinja"), source


def by_id(path: Path) -> dict[str, dict[str, Any]]:
    return {line["id"]: line for line in map(json.loads, path.read_text().splitlines())}


async def test_a_250_item_batch_matches_the_live_path(
    setup: tuple[pc.Task[Any], Path],
    tmp_path: Path,
    fake_anthropic: FakeAnthropic,
    close_async_clients: None,
) -> None:
    task, source = setup
    live, batched = tmp_path / "live.jsonl", tmp_path / "batch.jsonl"
    await run_file(task, source, live)
    live_requests = len(fake_anthropic.requests)
    fake_anthropic.batch_outcomes = {"id-7": "expired", "id-9": "errored"}
    stats = await run_file_provider_batch(task, source, batched, poll_s=0.01, max_requests=100)
    assert len(fake_anthropic.batches) == 3  # 250 requests in batches of at most 100
    assert len(fake_anthropic.requests) == live_requests + 248
    a, b = by_id(live), by_id(batched)
    assert set(a) == set(b) and len(b) == 251
    for key in a:
        if key in ("id-7", "id-9"):
            continue
        assert a[key].get("output") == b[key].get("output"), key
        assert a[key].get("error") == b[key].get("error"), key
    assert b["id-7"]["error"]["type"] == "BatchItemExpired"
    assert b["id-9"]["error"]["type"] == "BatchItemErrored"
    assert b["id-9"]["error"]["message"].endswith("max_tokens: too large")
    live_cost, batch_cost = a["id-1"]["usage"]["cost_usd"], b["id-1"]["usage"]["cost_usd"]
    assert batch_cost == pytest.approx(live_cost / 2)
    assert (stats.done, stats.failed) == (251, 3)


async def test_invalid_batch_replies_are_run_live(
    setup: tuple[pc.Task[Any], Path],
    tmp_path: Path,
    fake_anthropic: FakeAnthropic,
    close_async_clients: None,
) -> None:
    task, source = setup
    source.write_text(json.dumps({"id": "x", "text": "hi"}) + "\n")
    fake_anthropic.handler = None
    fake_anthropic.reply(message([tool_use_block("LabelOutput", {"label": "ok", "n": 2})]))
    bad = message([tool_use_block("LabelOutput", {"label": "ok", "n": "two"})])
    fake_anthropic.handler = lambda request: bad
    out = tmp_path / "out.jsonl"
    await run_file_provider_batch(task, source, out, poll_s=0.01)
    [line] = by_id(out).values()
    assert line["output"] == {"label": "ok", "n": 2} and line["attempts"] == 2


def test_cli_provider_batch_needs_an_anthropic_model(
    setup: tuple[pc.Task[Any], Path], tmp_path: Path
) -> None:
    _, source = setup
    with pc.override(backends={"test/x": ScriptedBackend([])}):
        result = CliRunner().invoke(
            app,
            [
                "batch",
                "label",
                str(source),
                "-o",
                str(tmp_path / "o"),
                "-p",
                str(tmp_path),
                "--provider-batch",
                "--model",
                "test/x",
            ],
        )
        assert result.exit_code == 1 and "batch API (anthropic/…)" in result.output


# a submitted batch survives a kill (issue 11, item 13)


async def start_and_cancel(
    task: pc.Task[Any], source: Path, out: Path, fake: FakeAnthropic
) -> dict[str, Any]:
    """Run until the first batch is submitted and saved, then cancel the run while it polls."""
    state = out.with_name(out.name + ".batch.json")
    fake.batch_polls = 10**9
    first = asyncio.ensure_future(
        run_file_provider_batch(task, source, out, poll_s=0.01, max_requests=100)
    )
    deadline = time.monotonic() + 30
    while not (state.exists() and json.loads(state.read_text())["batch_id"]):  # id saved
        assert not first.done() and time.monotonic() < deadline, "no state file was written"
        await asyncio.sleep(0.01)
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first
    fake.batch_polls = 0
    saved: dict[str, Any] = json.loads(state.read_text())
    assert list(fake.batches) == [saved["batch_id"]] and len(saved["custom_ids"]) == 100
    return saved


async def test_a_resumed_run_polls_the_saved_batch_instead_of_submitting_it_again(
    setup: tuple[pc.Task[Any], Path],
    tmp_path: Path,
    fake_anthropic: FakeAnthropic,
    close_async_clients: None,
) -> None:
    task, source = setup
    out = tmp_path / "out.jsonl"
    saved = await start_and_cancel(task, source, out, fake_anthropic)
    assert out.read_text() == ""
    # the kill came while results were being written: id-5 already has its line
    out.write_text(json.dumps({"id": "id-5", "output": {"label": "LABEL ITEM 5", "n": 12}}) + "\n")
    stats = await run_file_provider_batch(task, source, out, poll_s=0.01, max_requests=100)
    assert len(fake_anthropic.batches) == 3  # the saved batch of 100, then 100 and 50 new ones
    first_batch = fake_anthropic.batches[saved["batch_id"]]["requests"]
    sent = {saved["custom_ids"][r["custom_id"]] for r in first_batch}  # custom id -> item id
    assert sent == {f"id-{i}" for i in range(100)}
    assert not out.with_name("out.jsonl.batch.json").exists()
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(line["id"] for line in written) == sorted(
        [f"id-{i}" for i in range(250)] + ["line-251"]
    )
    assert by_id(out)["id-42"]["output"] == {"label": "LABEL ITEM 42", "n": 13}
    assert (stats.done, stats.skipped, stats.failed) == (250, 1, 1)


def test_a_provider_batch_killed_with_sigkill_is_collected_by_the_next_run(
    setup: tuple[pc.Task[Any], Path], tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    _, source = setup
    out = tmp_path / "out.jsonl"
    state = tmp_path / "out.jsonl.batch.json"
    command = [
        sys.executable,
        "-m",
        "promptcast.cli",
        "batch",
        "label",
        str(source),
        "-o",
        str(out),
        "-p",
        str(tmp_path),
        "--provider-batch",
        "--poll-seconds",
        "0.05",
    ]
    fake_anthropic.batch_polls = 10**9
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and first.poll() is None:
            if state.exists() and json.loads(state.read_text())["batch_id"]:  # the id is saved
                break
            time.sleep(0.02)
        assert state.exists()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    [batch_id] = fake_anthropic.batches
    assert json.loads(state.read_text())["batch_id"] == batch_id
    fake_anthropic.batch_polls = 0
    second = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert second.returncode == 1, second.stderr  # 1: the "not json" line is an error line
    assert list(fake_anthropic.batches) == [batch_id], "the batch was submitted twice"
    assert len(by_id(out)) == 251 and not state.exists()


@pytest.mark.parametrize("change", ["input", "task", "removed"])
async def test_a_saved_batch_that_no_longer_matches_is_refused(
    change: str,
    setup: tuple[pc.Task[Any], Path],
    tmp_path: Path,
    fake_anthropic: FakeAnthropic,
    close_async_clients: None,
) -> None:
    task, source = setup
    out = tmp_path / "out.jsonl"
    await start_and_cancel(task, source, out, fake_anthropic)
    if change == "input":
        source.write_text(source.read_text().replace('"item 3"', '"item three"'))
    elif change == "removed":
        source.write_text(source.read_text().replace('"id-3"', '"id-x"'))
    else:
        (tmp_path / "label.jinja").write_text(TASK.replace("Label", "Tag"))
        task = pc.Task.from_file(tmp_path / "label.jinja")
    with pytest.raises(pc.ConfigurationError, match=r"cannot be resumed.*out\.jsonl\.batch\.json"):
        await run_file_provider_batch(task, source, out, poll_s=0.01, max_requests=100)
    assert len(fake_anthropic.batches) == 1 and out.read_text() == ""


async def test_a_provider_batch_on_a_busy_output_is_refused(
    setup: tuple[pc.Task[Any], Path], tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    from promptcast._batch_files import append_exclusively

    task, source = setup
    out = tmp_path / "out.jsonl"
    with append_exclusively(out) as held:
        assert held is not None
        with pytest.raises(BatchOutputBusyError):
            await run_file_provider_batch(task, source, out, poll_s=0.01)
    assert fake_anthropic.batches == {}


# a reply that is not the provider's shape fails its item, not the run (item 14)


async def test_a_malformed_batch_result_is_an_error_line_and_the_run_goes_on(
    setup: tuple[pc.Task[Any], Path],
    tmp_path: Path,
    fake_anthropic: FakeAnthropic,
    close_async_clients: None,
) -> None:
    task, source = setup
    source.write_text(
        "".join(json.dumps({"id": f"id-{i}", "text": f"item {i}"}) + "\n" for i in range(6))
    )
    fake_anthropic.handler = lambda request: (
        {"hello": "world"}
        if request["messages"][0]["content"] == "Label item 3"
        else answer(request)
    )
    out = tmp_path / "out.jsonl"
    stats = await run_file_provider_batch(task, source, out, poll_s=0.01)
    lines = by_id(out)
    assert set(lines) == {f"id-{i}" for i in range(6)} and stats.done == 6
    assert all("output" in lines[f"id-{i}"] for i in (0, 1, 2, 4, 5))  # the others still count
    assert "not its API's shape" in lines["id-3"]["error"]["message"]
    assert not (tmp_path / "out.jsonl.batch.json").exists()


async def test_a_live_run_refuses_an_output_with_a_provider_batch_in_flight(
    setup: tuple[pc.Task[Any], Path],
    tmp_path: Path,
    fake_anthropic: FakeAnthropic,
    close_async_clients: None,
) -> None:
    task, source = setup
    out = tmp_path / "out.jsonl"
    await start_and_cancel(task, source, out, fake_anthropic)
    with pytest.raises(pc.ConfigurationError, match="provider batch in flight"):
        await run_file(task, source, out)
    assert fake_anthropic.requests == [] and out.read_text() == ""


async def test_ids_the_batch_api_refuses_are_saved_and_resumed(
    setup: tuple[pc.Task[Any], Path],
    tmp_path: Path,
    fake_anthropic: FakeAnthropic,
    close_async_clients: None,
) -> None:
    """Ids with characters a custom id cannot hold (U+2028, a lone surrogate, a space, an int)
    travel as item-N and come back under their own id and JSON type."""
    task, source = setup
    ids: list[Any] = ["a\u2028b", "s\ud800", "with space", 17, *(f"id-{i}" for i in range(200))]
    source.write_text(
        "".join(json.dumps({"id": i, "text": f"item {n}"}) + "\n" for n, i in enumerate(ids))
    )
    out = tmp_path / "out.jsonl"
    saved = await start_and_cancel(task, source, out, fake_anthropic)
    custom_ids = {cid.removesuffix(f"-{saved['nonce']}") for cid in saved["custom_ids"]}
    assert {"item-0", "item-1", "item-2", "17"} <= custom_ids
    await run_file_provider_batch(task, source, out, poll_s=0.01, max_requests=100)
    assert len(fake_anthropic.batches) == 3
    written = [json.loads(line) for line in out.read_bytes().split(b"\n")[:-1]]
    assert sorted(map(repr, (line["id"] for line in written))) == sorted(map(repr, ids))
    assert all("output" in line for line in written)
