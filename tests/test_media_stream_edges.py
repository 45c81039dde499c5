"""Edges of media inputs and of streaming as a library API: what a careless or hostile caller
hands in (pipes, devices, URLs with a line break), and streams used across threads or blocks."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import promptcast as pc
from promptcast.backends.scripted import ScriptedBackend
from promptcast.errors import BackendError
from promptcast.media import Document, Image
from tests.test_media import png

FILE_TASK = """\
---
inputs:
  screenshot: image
output: str
model: test/media
---
Describe {{ screenshot }}.
"""


def _specials(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    return {"named pipe": fifo, "device": Path("/dev/zero"), "folder": tmp_path}


# files that are not regular files


@pytest.mark.parametrize("kind", [Image, Document])
@pytest.mark.parametrize("special", ["named pipe", "device", "folder"])
def test_a_path_that_is_no_regular_file_is_refused_at_once(
    kind: type[Image] | type[Document], special: str, tmp_path: Path
) -> None:
    """A named pipe used to block forever waiting for a writer; /dev/zero was read up to the
    limit and refused as "5.0 MB, over the limit of 5.0 MB"."""
    path = _specials(tmp_path)[special]
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            kind.coerce(path)
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(5)
    assert not reader.is_alive(), f"reading a {special} hung"
    assert len(outcome) == 1 and type(outcome[0]) is ValueError, outcome
    assert str(path) in str(outcome[0])
    assert ("not a regular file" in str(outcome[0])) or special == "folder"


def test_a_pipe_given_to_a_task_is_an_input_error_naming_the_input(
    tmp_path: Path, write_task: Callable[..., Path]
) -> None:
    task = pc.Task.from_file(write_task("describe", FILE_TASK))
    backend = ScriptedBackend(["never"])
    with (
        pc.override(backends={"test/media": backend}),
        pytest.raises(pc.TaskInputError, match="not a regular file") as caught,
    ):
        task(screenshot=_specials(tmp_path)["named pipe"])
    assert caught.value.field == "screenshot"
    assert backend.requests == []


def test_a_regular_file_and_a_symlink_to_one_still_read(tmp_path: Path) -> None:
    (tmp_path / "shot.png").write_bytes(png())
    (tmp_path / "link.png").symlink_to(tmp_path / "shot.png")
    assert (
        Image.coerce(tmp_path / "link.png") == Image.coerce(tmp_path / "shot.png") == Image(png())
    )


# URLs


@pytest.mark.parametrize("tail", ["\n", "\r\n", " ", "\t", "\x00"])
@pytest.mark.parametrize("kind", [Image, Document])
def test_a_url_with_a_trailing_line_break_or_space_is_refused(
    kind: type[Image] | type[Document], tail: str
) -> None:
    """`^https?://[!-~]+$` let a final "\\n" through (`$` matches before it): the URL was sent
    to the provider with the line break in it."""
    url = "https://example.com/shot.png" + tail
    with pytest.raises(ValueError, match=r"http\(s\) URL"):
        kind.coerce(url)
    with pytest.raises(ValueError, match="must be http:// or https://"):
        kind(url=url)
    assert kind.coerce(url.removesuffix(tail)).url == url.removesuffix(tail)


# streams: the settings are those where the stream was made

ANSWER = {"answer": "Yes, it crushes ice.", "answered": True, "cited_document_ids": ["m-1"]}
INPUTS: dict[str, Any] = {"question": "Ice?", "documents": {"m-1": "Pulse crushes ice."}}


def _qa() -> pc.Task[Any]:
    return pc.builtin_tasks().answer_product_question.with_model("test/qa")


@pytest.mark.parametrize("where", ["another thread", "after the override block"])
def test_a_stream_uses_the_settings_where_it_was_made(where: str) -> None:
    """The plan read `override()` at the first iteration: a stream handed to a worker thread, or
    iterated after its `with pc.override(...)` block, failed with "no scripted backend is
    registered" (or would have used other settings)."""
    backend = ScriptedBackend([json.dumps(ANSWER)], chunk_chars=5)
    with pc.override(backends={"test/qa": backend}):
        stream = _qa().stream(**INPUTS)
        if where == "another thread":
            partials: list[Any] = []
            worker = threading.Thread(target=lambda: partials.extend(stream))
            worker.start()
            worker.join(10)
    if where != "another thread":
        partials = list(stream)
    assert partials and partials[-1].answer == ANSWER["answer"]
    assert stream.run.output.cited_document_ids == ["m-1"]
    assert len(backend.requests) == 1


def test_an_async_stream_uses_the_settings_where_it_was_made() -> None:
    backend = ScriptedBackend([json.dumps(ANSWER)], chunk_chars=5)

    async def made_in_block_read_after() -> Any:
        with pc.override(backends={"test/qa": backend}):
            stream = _qa().astream(**INPUTS)
        return (await asyncio.create_task(stream.result())).output

    assert asyncio.run(made_in_block_read_after()).answer == ANSWER["answer"]


def test_a_missing_backend_fails_when_the_stream_is_made() -> None:
    with pytest.raises(pc.ConfigurationError, match="no scripted backend"):
        _qa().stream(**INPUTS)
    with pytest.raises(pc.ConfigurationError, match="no scripted backend"):
        _qa().astream(**INPUTS)


def test_a_stream_made_and_closed_unread_sends_nothing() -> None:
    backend = ScriptedBackend([json.dumps(ANSWER)])
    with pc.override(backends={"test/qa": backend}):
        stream = _qa().stream(**INPUTS)
        stream.close()
        stream.close()
        with pytest.raises(pc.StreamClosedError):
            list(stream)
    assert backend.requests == [] and backend.streams_closed == 0


FAILURES: dict[str, list[Any]] = {
    "provider error": [BackendError("the provider is down", provider="test", retryable=False)],
    "invalid output every attempt": ['{"answer": 5}'] * 5,
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_a_failed_stream_names_its_error_afterwards_not_a_close(failure: str) -> None:
    """After a stream failed, `stream.run` and iterating again said "this stream was closed;
    start a new one", as if the caller had closed it, and lost the error."""
    backend = ScriptedBackend(list(FAILURES[failure]))
    with pc.override(backends={"test/qa": backend}):
        stream = _qa().stream(**INPUTS)
        with pytest.raises(pc.PromptcastError) as raised:
            list(stream)
        for again in (lambda: stream.run, lambda: list(stream)):
            with pytest.raises(pc.StreamClosedError, match=type(raised.value).__name__) as later:
                again()
            assert later.value.__cause__ is raised.value


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_a_failed_async_stream_names_its_error_afterwards(failure: str) -> None:
    backend = ScriptedBackend(list(FAILURES[failure]))

    async def read() -> None:
        stream = _qa().astream(**INPUTS)
        with pytest.raises(pc.PromptcastError) as raised:
            await stream.result()
        with pytest.raises(pc.StreamClosedError, match=type(raised.value).__name__) as later:
            _ = stream.run
        assert later.value.__cause__ is raised.value
        with pytest.raises(pc.StreamClosedError, match=type(raised.value).__name__):
            await stream.result()

    with pc.override(backends={"test/qa": backend}):
        asyncio.run(read())
