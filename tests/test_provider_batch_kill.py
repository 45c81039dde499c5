"""A provider batch run stopped between the provider accepting a batch and its id being saved:
the next run finds that batch instead of paying for it twice, and asks when it cannot tell."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import promptcast as pc
from promptcast import _batch_files
from promptcast.batch import (
    BatchOutputError,
    _digest,
    read_items,
    run_file,
    run_file_provider_batch,
)
from promptcast.cli import app
from promptcast.errors import UnsavedBatchError
from promptcast.testing import FakeAnthropic, FakeReply, message, tool_use_block
from promptcast.testing._fake_anthropic import error_reply
from tests.conftest import TEST_KEY, anthropic_backend

TASK = "---\ninputs: {text: str}\noutput: {label: str, n: int}\nmax_tokens: 64\n---\nLabel {{ text }}\n"
IDS = [f"id-{i}" for i in range(6)]


def answer(request: dict[str, Any]) -> dict[str, Any]:
    text = request["messages"][0]["content"]
    return message([tool_use_block("LabelOutput", {"label": text.upper(), "n": len(text)})])


@pytest.fixture(scope="module")
def shared_fake() -> Iterator[FakeAnthropic]:
    """One fake for the module: stopping one takes half a second (its serve loop's poll)."""
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def fake_anthropic(
    shared_fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeAnthropic]:
    """The shared fake, emptied, with the SDK pointed at it."""
    fake = shared_fake
    fake.batches.clear()
    fake.requests.clear()
    fake.canceled.clear()
    fake.batch_outcomes = {}
    fake.before_create = fake.after_create = None
    fake.list_page_size = 20
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", TEST_KEY)
    yield fake
    anthropic_backend().close()


@pytest.fixture
def setup(tmp_path: Path, fake_anthropic: FakeAnthropic) -> tuple[pc.Task[Any], Path, Path]:
    (tmp_path / "label.jinja").write_text(TASK)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": f"item {i}"}) + "\n" for i in IDS))
    fake_anthropic.handler = answer
    fake_anthropic.batch_polls = 0
    return pc.Task.from_file(tmp_path / "label.jinja"), source, tmp_path / "out.jsonl"


def state_of(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_batch_files.state_path(out).read_text())
    return data


def complete(out: Path) -> None:
    """Every id has exactly one line, an output, and the saved state is gone."""
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == IDS
    assert all(line["output"]["label"] == f"LABEL ITEM {line['id'].upper()}" for line in lines)
    assert not _batch_files.state_path(out).exists()


class Killed(BaseException):
    """Stands for SIGKILL in-process: nothing after it runs, no handler catches it."""


async def killed_after_accept(
    task: pc.Task[Any],
    source: Path,
    out: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    max_requests: int = 100,
    saved_ids: int = 0,
) -> dict[str, Any]:
    """Run until the provider accepted a batch, and stop just before its id is saved (after
    `saved_ids` ids of earlier batches were)."""
    real = _batch_files.write_state
    saved = 0

    def write(path: Path, state: _batch_files.ProviderBatchState) -> None:
        nonlocal saved
        if state.batch_id:
            saved += 1
            if saved > saved_ids:
                raise Killed
        real(path, state)

    monkeypatch.setattr(_batch_files, "write_state", write)
    with pytest.raises(Killed):
        await run_file_provider_batch(task, source, out, poll_s=0.01, max_requests=max_requests)
    monkeypatch.setattr(_batch_files, "write_state", real)
    return state_of(out)


@pytest.fixture
async def killed(
    setup: tuple[pc.Task[Any], Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    close_async_clients: None,
) -> tuple[pc.Task[Any], Path, Path]:
    """`setup`, after a run the provider accepted a batch from was stopped before saving its id."""
    await killed_after_accept(*setup, monkeypatch)
    return setup


def command(source: Path, out: Path, *extra: str) -> list[str]:
    where = ["-o", str(out), "-p", str(source.parent)]
    return [
        "batch",
        "label",
        str(source),
        *where,
        "--provider-batch",
        "--poll-seconds",
        "0.05",
        *extra,
    ]


def kill_during_submit(source: Path, out: Path, fake: FakeAnthropic, hook: str) -> list[str]:
    """`promptcast batch --provider-batch` in a process SIGKILLed while the fake holds its
    submit (before accepting it or after); returns the command."""
    arrived, release = threading.Event(), threading.Event()

    def before() -> bool:
        arrived.set()
        release.wait(60)
        return False  # the connection is dropped: nothing was accepted

    def after(batch_id: str) -> None:
        arrived.set()
        release.wait(60)

    if hook == "before":
        fake.before_create = before
    else:
        fake.after_create = after
    argv = [sys.executable, "-m", "promptcast.cli", *command(source, out)]
    first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert arrived.wait(60), "the run never submitted"
        record = state_of(out)  # saved before the submit went out
        assert record["batch_id"] == "" and len(record["custom_ids"]) == len(IDS)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
        fake.before_create = fake.after_create = None
        release.set()
    return argv


# the real thing: a process SIGKILLed mid-submit, then run again


def test_killed_after_the_provider_accepted_the_rerun_collects_that_batch(
    setup: tuple[pc.Task[Any], Path, Path],
    fake_anthropic: FakeAnthropic,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, source, out = setup
    kill_during_submit(source, out, fake_anthropic, "after")
    [batch_id] = fake_anthropic.batches
    second = CliRunner().invoke(app, command(source, out))  # the rerun, in-process
    assert second.exit_code == 0, second.output
    assert list(fake_anthropic.batches) == [batch_id]  # the accepted one, not bought again
    assert f"collecting batch {batch_id}" in caplog.text
    complete(out)


def test_killed_before_the_provider_accepted_the_rerun_submits_once_and_says_so(
    setup: tuple[pc.Task[Any], Path, Path], fake_anthropic: FakeAnthropic
) -> None:
    _, source, out = setup
    argv = kill_during_submit(source, out, fake_anthropic, "before")
    assert fake_anthropic.batches == {}
    second = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert len(fake_anthropic.batches) == 1
    assert "never accepted" in second.stderr and "submitting those requests now" in second.stderr
    complete(out)


# in-process: what the record holds, and each way a rerun decides


async def test_the_record_says_what_is_being_submitted_and_each_custom_id_carries_its_nonce(
    setup: tuple[pc.Task[Any], Path, Path],
    fake_anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
    close_async_clients: None,
) -> None:
    task, source, out = setup
    before = time.time()
    record = await killed_after_accept(task, source, out, monkeypatch)
    assert record["version"] == 2 and record["batch_id"] == "" and record["task"] == "label"
    assert before <= record["submitting_at"] <= time.time()
    assert record["endpoint"] == fake_anthropic.base_url and len(record["digest"]) == 64
    nonce = record["nonce"]
    assert len(nonce) == 10 and sorted(record["custom_ids"].values()) == IDS
    [batch] = fake_anthropic.batches.values()
    sent = [entry["custom_id"] for entry in batch["requests"]]
    assert sorted(sent) == sorted(record["custom_ids"]) and all(
        cid.endswith(f"-{nonce}") for cid in sent
    )
    # a second run marks its custom ids with another nonce
    await run_file_provider_batch(task, source, out, poll_s=0.01, resubmit=True)
    latest = list(fake_anthropic.batches.values())[-1]["requests"]
    assert not any(entry["custom_id"].endswith(f"-{nonce}") for entry in latest)


def test_the_record_and_its_rename_are_synced_to_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real = os.fsync

    def fsync(descriptor: int) -> None:
        synced.append("folder" if stat.S_ISDIR(os.fstat(descriptor).st_mode) else "file")
        real(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    state = _batch_files.ProviderBatchState(
        "", "t", "anthropic/m", "0" * 64, {"a-n": "a"}, nonce="n", submitting_at=time.time()
    )
    _batch_files.write_state(tmp_path / "s.json", state)
    assert synced == ["file", "folder"]
    assert _batch_files.read_state(tmp_path / "s.json") == state


async def test_an_accepted_batch_among_many_others_is_found_across_pages(
    setup: tuple[pc.Task[Any], Path, Path],
    fake_anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
    close_async_clients: None,
) -> None:
    """Batches of the same size made before the record (beyond the clock slack) are not it;
    newer ones of other sizes fill pages before it."""
    task, source, out = setup
    for _ in range(3):  # last week's batches of the same inputs
        fake_anthropic.add_batch(
            [{"custom_id": "x"}] * len(IDS), created_at=time.time() - 7 * 86400
        )
    record = await killed_after_accept(task, source, out, monkeypatch)
    accepted = list(fake_anthropic.batches)[-1]
    for size in (1, 2, 3, 4, 5):  # other runs' batches since
        fake_anthropic.add_batch([{"custom_id": "x"}] * size)
    fake_anthropic.list_page_size = 2
    assert record["batch_id"] == ""
    stats = await run_file_provider_batch(task, source, out, poll_s=0.01)
    assert stats.done == len(IDS) and len(fake_anthropic.batches) == 9  # nothing new submitted
    assert fake_anthropic.batches[accepted]["polls"] > 0
    complete(out)


def two_candidates(fake: FakeAnthropic) -> str:
    """Another run's batch of the same size, made at about the same time (the same inputs
    through another -o file: its custom ids carry that run's nonce)."""
    first = next(iter(fake.batches.values()))["requests"]
    return fake.add_batch(
        [{**entry, "custom_id": f"{entry['custom_id'][:-10]}ffffffffff"} for entry in first]
    )


async def test_two_candidate_batches_are_a_typed_error_naming_both_and_nothing_is_submitted(
    killed: tuple[pc.Task[Any], Path, Path],
    fake_anthropic: FakeAnthropic,
) -> None:
    task, source, out = killed
    [ours] = fake_anthropic.batches
    other = two_candidates(fake_anthropic)
    with pytest.raises(UnsavedBatchError) as raised:
        await run_file_provider_batch(task, source, out, poll_s=0.01)
    error = raised.value
    assert set(error.candidates) == {ours, other}
    state_file = str(_batch_files.state_path(out))
    assert error.state_file == state_file and state_file in str(error)
    assert ours in str(error) and other in str(error)
    assert "--adopt-batch" in str(error) and "--resubmit" in str(error)
    assert len(fake_anthropic.batches) == 2 and out.read_text() == ""
    assert state_of(out)["batch_id"] == ""  # the record stays for the choice


@pytest.mark.parametrize("choice", ["adopt", "resubmit"])
def test_cli_two_candidates_then_adopt_batch_or_resubmit_completes(
    choice: str,
    setup: tuple[pc.Task[Any], Path, Path],
    fake_anthropic: FakeAnthropic,
) -> None:
    _, source, out = setup
    fake_anthropic.after_create = lambda batch_id: two_candidates(fake_anthropic)

    real = _batch_files.write_state

    def write(path: Path, state: _batch_files.ProviderBatchState) -> None:
        if state.batch_id:
            raise Killed
        real(path, state)

    runner = CliRunner()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_batch_files, "write_state", write)
        with pytest.raises(Killed):
            runner.invoke(app, command(source, out), catch_exceptions=False)
    fake_anthropic.after_create = None
    ours, other = fake_anthropic.batches
    refused = runner.invoke(app, command(source, out))
    assert refused.exit_code == 1
    flat = " ".join(refused.output.split())
    assert ours in flat and other in flat and "--adopt-batch" in flat
    assert len(fake_anthropic.batches) == 2
    extra = ["--adopt-batch", ours] if choice == "adopt" else ["--resubmit"]
    done = runner.invoke(app, command(source, out, *extra))
    assert done.exit_code == 0, done.output
    assert len(fake_anthropic.batches) == (2 if choice == "adopt" else 3)
    complete(out)


async def test_adopting_another_runs_batch_refuses_its_results_and_keeps_the_record(
    killed: tuple[pc.Task[Any], Path, Path],
    fake_anthropic: FakeAnthropic,
) -> None:
    task, source, out = killed
    [ours] = fake_anthropic.batches
    other = two_candidates(fake_anthropic)
    with pytest.raises(UnsavedBatchError, match="another run's batch") as raised:
        await run_file_provider_batch(task, source, out, poll_s=0.01, adopt_batch=other)
    assert raised.value.candidates == (other,)
    assert str(_batch_files.state_path(out)) in str(raised.value)
    assert out.read_text() == "" and state_of(out)["batch_id"] == ""
    await run_file_provider_batch(task, source, out, poll_s=0.01, adopt_batch=ours)
    assert len(fake_anthropic.batches) == 2
    complete(out)


def listing_fails(fake: FakeAnthropic, failure: int | str) -> Callable[[str], FakeReply]:
    real = fake.get

    def get(path: str) -> FakeReply:
        if path.split("?")[0] != "/v1/messages/batches":
            return real(path)
        if failure == "drop":
            return FakeReply(drop=True)
        return error_reply(int(failure), "api_error", "listing is down")

    return get


@pytest.mark.parametrize("failure", [500, 529, 403, 404, "drop"])
async def test_a_listing_that_fails_is_a_typed_error_and_nothing_is_submitted(
    failure: int | str,
    killed: tuple[pc.Task[Any], Path, Path],
    fake_anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task, source, out = killed
    monkeypatch.setattr(fake_anthropic, "get", listing_fails(fake_anthropic, failure))
    with pytest.raises(UnsavedBatchError) as raised:
        await run_file_provider_batch(task, source, out, poll_s=0.01)
    message_text = str(raised.value)
    assert (
        str(_batch_files.state_path(out)) in message_text
        and "nothing was submitted" in message_text
    )
    assert "--adopt-batch" in message_text and "--resubmit" in message_text
    assert len(fake_anthropic.batches) == 1 and out.read_text() == ""
    assert state_of(out)["batch_id"] == ""


async def test_a_state_file_of_the_previous_format_is_still_collected(
    setup: tuple[pc.Task[Any], Path, Path],
    fake_anthropic: FakeAnthropic,
    close_async_clients: None,
) -> None:
    """Version 1: no record, no nonce, custom ids that are the item ids."""
    task, source, out = setup
    items = {item.key: item for item in read_items(source.read_bytes().splitlines())}
    chunk = {key: (item, task.request(**item.inputs)) for key, item in items.items()}
    from promptcast.backends.anthropic import batch_params

    batch_id = fake_anthropic.add_batch(
        [{"custom_id": key, "params": batch_params(request)} for key, (_, request) in chunk.items()]
    )
    old = {
        "version": 1,
        "batch_id": batch_id,
        "task": task.name,
        "model": task.model,
        "digest": _digest(chunk, batch_params),
        "custom_ids": {key: key for key in chunk},
    }
    _batch_files.state_path(out).write_text(json.dumps(old))
    stats = await run_file_provider_batch(task, source, out, poll_s=0.01)
    assert stats.done == len(IDS) and list(fake_anthropic.batches) == [batch_id]
    complete(out)


@pytest.mark.parametrize(
    ("failure", "kept"), [(400, False), (413, False), (429, False), ("drop", True)]
)
async def test_a_submit_the_provider_refuses_leaves_no_record_one_cut_off_keeps_it(
    failure: int | str,
    kept: bool,
    setup: tuple[pc.Task[Any], Path, Path],
    fake_anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
    close_async_clients: None,
) -> None:
    """An answered refusal means nothing was accepted; a connection cut off without an answer
    may have been accepted, so the record stays for the next run to look it up."""
    task, source, out = setup
    real = fake_anthropic._answer
    refusal = (
        FakeReply(drop=True)
        if failure == "drop"
        else error_reply(int(failure), "invalid_request_error", "refused")
    )
    monkeypatch.setattr(
        fake_anthropic,
        "_answer",
        lambda path, raw, headers: (
            refusal if path == "/v1/messages/batches" else real(path, raw, headers)
        ),
    )
    with pytest.raises(pc.BackendError):
        await run_file_provider_batch(task, source, out, poll_s=0.01)
    assert _batch_files.state_path(out).exists() is kept
    monkeypatch.setattr(fake_anthropic, "_answer", real)
    await run_file_provider_batch(task, source, out, poll_s=0.01)
    assert len(fake_anthropic.batches) == 1
    complete(out)


@pytest.mark.parametrize(
    ("state", "options", "problem"),
    [
        (None, {"adopt_batch": "msgbatch_1"}, "holds no record"),
        ("record", {"adopt_batch": "msgbatch_1", "resubmit": True}, "exclude each other"),
        ("record", {"adopt_batch": "not an id!"}, "is not a batch id"),
        ("saved", {"adopt_batch": "msgbatch_other"}, "already holds provider batch"),
        ("saved", {"resubmit": True}, "run without --resubmit to collect it"),
    ],
)
async def test_adopt_and_resubmit_are_refused_where_they_do_not_apply(
    state: str | None,
    options: dict[str, Any],
    problem: str,
    setup: tuple[pc.Task[Any], Path, Path],
    fake_anthropic: FakeAnthropic,
) -> None:
    task, source, out = setup
    if state is not None:
        saved = _batch_files.ProviderBatchState(
            "msgbatch_saved" if state == "saved" else "",
            task.name,
            task.model,
            "0" * 64,
            {"id-0-0123456789": "id-0"},
            nonce="0123456789",
            submitting_at=time.time(),
        )
        _batch_files.write_state(_batch_files.state_path(out), saved)
    with pytest.raises(pc.ConfigurationError, match=problem):
        await run_file_provider_batch(task, source, out, poll_s=0.01, **options)
    assert fake_anthropic.batches == {} and fake_anthropic.requests == []


@pytest.mark.parametrize("option", [["--resubmit"], ["--adopt-batch", "msgbatch_1"]])
def test_cli_adopt_batch_and_resubmit_need_provider_batch(
    option: list[str], setup: tuple[pc.Task[Any], Path, Path], fake_anthropic: FakeAnthropic
) -> None:
    _, source, out = setup
    argv = ["batch", "label", str(source), "-o", str(out), "-p", str(source.parent), *option]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 1 and "--provider-batch" in result.output
    assert fake_anthropic.requests == [] and not out.exists()


@pytest.mark.parametrize(
    "broken",
    [
        {"batch_id": ""},  # a record without its time
        {"batch_id": None, "submitting_at": "yesterday"},
        {"earlier": 7},
    ],
)
async def test_a_damaged_record_is_refused_and_nothing_is_submitted(
    broken: dict[str, Any],
    setup: tuple[pc.Task[Any], Path, Path],
    fake_anthropic: FakeAnthropic,
) -> None:
    task, source, out = setup
    data = {"version": 2, "task": task.name, "model": task.model, "digest": "0" * 64}
    data |= {"custom_ids": {"id-0-0123456789": "id-0"}, "batch_id": "msgbatch_1", **broken}
    _batch_files.state_path(out).write_text(json.dumps(data))
    with pytest.raises(pc.ConfigurationError, match="cannot be read"):
        await run_file_provider_batch(task, source, out, poll_s=0.01)
    assert fake_anthropic.requests == [] and fake_anthropic.batches == {}


@pytest.mark.parametrize("failure", ["no such batch", "overloaded"])
async def test_an_adopted_batch_that_cannot_be_read_keeps_the_record(
    failure: str,
    killed: tuple[pc.Task[Any], Path, Path],
    fake_anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A mistyped id, or an API that does not answer: the record stays for the next try."""
    task, source, out = killed
    [ours] = fake_anthropic.batches
    adopted = "msgbatch_typo" if failure == "no such batch" else ours
    if failure == "overloaded":
        real = fake_anthropic.get
        busy = error_reply(529, "overloaded_error", "Overloaded")
        monkeypatch.setattr(
            fake_anthropic, "get", lambda path: busy if path.endswith(ours) else real(path)
        )
    with pytest.raises(UnsavedBatchError, match=f"--adopt-batch {adopted}: reading that batch"):
        await run_file_provider_batch(task, source, out, poll_s=0.01, adopt_batch=adopted)
    assert state_of(out)["batch_id"] == "" and len(fake_anthropic.batches) == 1
    monkeypatch.undo()
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_anthropic.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", TEST_KEY)
    await run_file_provider_batch(task, source, out, poll_s=0.01)  # found by listing after all
    assert len(fake_anthropic.batches) == 1
    complete(out)


async def test_a_live_run_refuses_an_output_with_a_submit_record(
    killed: tuple[pc.Task[Any], Path, Path],
    fake_anthropic: FakeAnthropic,
) -> None:
    task, source, out = killed
    requests = len(fake_anthropic.requests)
    with pytest.raises(pc.ConfigurationError, match="record of its submit"):
        await run_file(task, source, out)
    assert len(fake_anthropic.requests) == requests and out.read_text() == ""


async def test_the_runs_earlier_batch_of_the_same_size_is_no_candidate(
    setup: tuple[pc.Task[Any], Path, Path],
    fake_anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
    close_async_clients: None,
) -> None:
    """Six items in batches of three: the first is collected, the kill comes as the second is
    accepted; the first, created a moment before, has the same size but is not it."""
    task, source, out = setup
    record = await killed_after_accept(task, source, out, monkeypatch, max_requests=3, saved_ids=1)
    first, second = fake_anthropic.batches
    assert record["earlier"] == [first] and len(record["custom_ids"]) == 3
    assert len(out.read_text().splitlines()) == 3
    stats = await run_file_provider_batch(task, source, out, poll_s=0.01, max_requests=3)
    assert stats.done == 3 and list(fake_anthropic.batches) == [first, second]
    complete(out)


@pytest.mark.parametrize("stop", ["killed after accept", "id not saved"])
async def test_a_model_with_its_own_endpoint_is_looked_up_and_canceled_there(
    stop: str,
    tmp_path: Path,
    fake_anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
    close_async_clients: None,
) -> None:
    """`configure(models=…)` sends the batch to that model's account: the listing that looks
    for it, and the cancel of one whose id could not be saved, go there too."""
    (tmp_path / "label.jinja").write_text(
        TASK.replace("max_tokens", "model: anthropic/claude-sonnet-4-6\nmax_tokens")
    )
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": f"item {i}"}) + "\n" for i in IDS))
    with FakeAnthropic(answer) as own:
        own.batch_polls = 0
        key = "sk-ant-api03-" + "m" * 90
        pc.configure(
            models={"anthropic/claude-sonnet-4-6": {"base_url": own.base_url, "api_key": key}}
        )
        task = pc.Task.from_file(tmp_path / "label.jinja")
        if stop == "killed after accept":
            record = await killed_after_accept(task, source, out, monkeypatch)
            assert record["endpoint"] == own.base_url
            fake_anthropic.add_batch([{"custom_id": "x"}] * len(IDS))  # the default account's
            await run_file_provider_batch(task, source, out, poll_s=0.01)
            assert len(own.batches) == 1  # found where it was sent, not bought again
            complete(out)
        else:
            real = _batch_files.write_state

            def full_disk(path: Path, state: _batch_files.ProviderBatchState) -> None:
                if state.batch_id:
                    raise OSError(28, "No space left on device")
                real(path, state)

            monkeypatch.setattr(_batch_files, "write_state", full_disk)
            with pytest.raises(BatchOutputError, match="it was canceled"):
                await run_file_provider_batch(task, source, out, poll_s=0.01)
            assert own.canceled == list(own.batches) and len(own.canceled) == 1
            assert not _batch_files.state_path(out).exists()  # canceled: a rerun submits anew
    assert fake_anthropic.canceled == [] and fake_anthropic.requests == []
