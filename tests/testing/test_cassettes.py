"""Cassette settings: JSON matching, secret scanning, and the record command."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner
from vcr.request import Request

from promptcast.cli import app
from promptcast.testing import FakeAnthropic
from promptcast.testing.cassettes import find_secrets, json_body_matcher, replay
from tests.conftest import ROOT, TEST_KEY

runner = CliRunner()
EXAMPLE = ROOT / "cassettes" / "examples" / "translate" / "example-0.yaml"


def request(body: str) -> Request:
    return Request("POST", "https://api.anthropic.com/v1/messages", body, {})


def test_json_bodies_match_whatever_the_key_order_and_spacing() -> None:
    json_body_matcher(request('{"a": 1, "b": [1, 2]}'), request('{"b":[1,2],"a":1}'))
    with pytest.raises(AssertionError):
        json_body_matcher(request('{"a": 1}'), request('{"a": 2}'))


def test_volatile_fields_can_be_ignored() -> None:
    one = request('{"model": "m", "metadata": {"user_id": "u1", "k": 1}}')
    two = request('{"model": "m", "metadata": {"user_id": "u2", "k": 1}}')
    with pytest.raises(AssertionError):
        json_body_matcher(one, two)
    json_body_matcher(one, two, ["metadata.user_id"])


def test_scan_passes_on_the_repository_cassettes() -> None:
    assert find_secrets([ROOT / "cassettes"]) == []
    result = runner.invoke(app, ["scan-cassettes", str(ROOT / "cassettes")])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("old", "new", "what"),
    [
        ("- REDACTED", "- sk-ant-api03-plantedKEYplantedKEY", "looks like a key"),
        ("- REDACTED", "- my-private-token", "header authorization is not REDACTED"),
    ],
)
def test_scan_finds_a_planted_secret(tmp_path: Path, old: str, new: str, what: str) -> None:
    copy = tmp_path / "leaky.yaml"
    shutil.copy(EXAMPLE, copy)
    copy.write_text(copy.read_text().replace(old, new, 1))
    result = runner.invoke(app, ["scan-cassettes", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{copy}:" in result.output and what in result.output


def test_record_writes_a_scrubbed_cassette_that_replays(
    write_task: Callable[..., Path], tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    write_task("shout", "---\ninputs: {text: str}\noutput: {loud: str}\n---\n{{ text }}\n")
    out = tmp_path / "cassettes" / "shout.yaml"
    result = runner.invoke(
        app, ["record", "shout", "-p", str(tmp_path), "-i", "text=hi", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert TEST_KEY not in out.read_text() and "REDACTED" in out.read_text()
    sent = len(fake_anthropic.requests)
    import promptcast as pc

    with replay(out):
        assert pc.load_tasks(tmp_path).shout(text="hi").loud == "example"  # type: ignore[attr-defined]
    assert len(fake_anthropic.requests) == sent


def test_record_an_example_out_of_range_is_an_input_error() -> None:
    result = runner.invoke(app, ["record", "translate", "--example", "7"])
    assert result.exit_code == 1 and "--example must be 0..1" in result.output


async def test_litellm_async_calls_record_and_replay(
    tmp_path: Path, fake_openai: object, close_async_clients: None
) -> None:
    """litellm runs on httpx (not aiohttp) so vcrpy sees its async requests too."""
    import promptcast as pc
    from promptcast.testing import FakeOpenAI
    from promptcast.testing.cassettes import NoRecordingError, recording

    assert isinstance(fake_openai, FakeOpenAI)
    task = pc.builtin_tasks()["translate"].with_model("openai/gpt-4o-mini")
    path = tmp_path / "litellm.yaml"
    with recording(path):
        recorded = await task.arun(text="Hallo")
    assert "sk-test-openai" not in path.read_text() and "REDACTED" in path.read_text()
    sent = len(fake_openai.requests)
    with replay(path):
        replayed = await task.arun(text="Hallo")
    assert replayed.output == recorded.output and len(fake_openai.requests) == sent
    with pytest.raises(NoRecordingError, match="No recording for task 'translate'"), replay(path):
        await task.arun(text="Servus")
