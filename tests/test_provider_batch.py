"""The provider batch path: Anthropic Message Batches against a loopback fake, compared with the
live path on the same 250 inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import promptcast as pc
from promptcast.batch import run_file, run_file_provider_batch
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
    pc.configure(backends={"test/x": ScriptedBackend([])})
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
    assert result.exit_code == 1 and "needs an anthropic/" in result.output
