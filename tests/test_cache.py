"""Response cache: hits make no provider request (counted at the fake server), misses on any change
of template, inputs or model, TTL expiry, sqlite shared across threads and processes, and redis
against a real `redis-server` started here on a loopback port."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import promptcast as pc
from promptcast.backends import resolve
from promptcast.cache import (
    RedisCache,
    SQLiteCache,
    cache_key,
    close_caches,
    open_cache,
    shared_cache,
)
from promptcast.render import Prompt
from promptcast.testing import FakeAnthropic, ScriptedBackend, message, tool_use_block
from tests.conftest import ROOT

TASK = """
---
inputs: {text: str}
output: {summary: str}
model: anthropic/claude-sonnet-4-6
max_tokens: 200
---
{% role "system" %}Summarize.{% endrole %}
{{ text }}
"""
OTHER_TEMPLATE = TASK.replace("Summarize.", "Summarize in one line.")


@pytest.fixture(autouse=True)
def _no_cache_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("PROMPTCAST_CACHE", raising=False)
    monkeypatch.delenv("PROMPTCAST_CACHE_TTL_S", raising=False)
    pc.reset_defaults()
    yield
    close_caches()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _redis_command(port: int, command: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(command)
        return sock.recv(64)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real redis-server on a free loopback port, with no persistence; yields the port."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail(
            "redis-server is not on PATH: the redis cache tests need a real server. Install it "
            "with `apt-get install redis-server` (.ci/run does this).",
            pytrace=False,
        )
    folder = tmp_path_factory.mktemp("redis")
    for _ in range(3):  # another process may take the free port before redis binds it
        port = _free_port()
        args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        proc = subprocess.Popen(
            [exe, *args, "--dir", str(folder)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if _redis_command(port, b"PING\r\n").startswith(b"+PONG"):
                    break
            except OSError:
                time.sleep(0.02)
        else:
            assert proc.stdout is not None
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            log = proc.stdout.read().decode(errors="replace")
            proc.stdout.close()
            if "Address already in use" in log:
                continue
            pytest.fail(f"redis-server did not start on port {port}:\n{log}", pytrace=False)
        break
    else:
        pytest.fail("redis-server found no free port in 3 tries", pytrace=False)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.fixture(params=["sqlite", "redis"])
def cache_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty cache of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cache.db'}"
    port: int = request.getfixturevalue("redis_server")
    assert _redis_command(port, b"FLUSHALL\r\n").startswith(b"+OK")
    return f"redis://127.0.0.1:{port}/0"


@pytest.fixture
def make_task(write_task: Callable[..., Path]) -> Callable[..., pc.Task[Any]]:
    def make(text: str = TASK) -> pc.Task[Any]:
        return pc.Task.from_file(write_task("summarize", text))

    return make


def test_second_identical_call_makes_no_request(
    cache_url: str, make_task: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic
) -> None:
    pc.configure(cache=cache_url)
    task = make_task()
    first = task.run(text="The blender is loud.")
    second = task.run(text="The blender is loud.")
    assert len(fake_anthropic.requests) == 1
    assert not first.cached and first.usage.input_tokens > 0 and first.attempts == 1
    assert second.cached and second.output == first.output
    assert type(second.output) is type(first.output)
    assert second.output_mode == first.output_mode == "native"  # the mode of the call that answered
    assert (second.usage.input_tokens, second.usage.output_tokens, second.usage.cost_usd) == (
        0,
        0,
        0.0,
    )
    assert second.attempts == 0 and second.model == first.model == "anthropic/claude-sonnet-4-6"
    assert (second.template_hash, second.task) == (first.template_hash, "summarize")
    assert task(text="The blender is loud.") == first.output
    assert len(fake_anthropic.requests) == 1


async def test_async_calls_use_the_cache_too(
    make_task: Callable[..., pc.Task[Any]],
    fake_anthropic: FakeAnthropic,
    close_async_clients: None,
    tmp_path: Path,
) -> None:
    pc.configure(cache=f"sqlite:///{tmp_path / 'cache.db'}")
    task = make_task()
    first = await task.arun(text="x")
    assert (await task.arun(text="x")).cached and task.run(text="x").cached
    assert await task.acall(text="x") == first.output
    assert len(fake_anthropic.requests) == 1


def test_a_changed_template_or_model_misses(
    cache_url: str, make_task: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic
) -> None:
    pc.configure(cache=cache_url)
    assert not make_task(TASK).run(text="x").cached
    changed = make_task(OTHER_TEMPLATE)
    assert not changed.run(text="x").cached
    assert len(fake_anthropic.requests) == 2
    assert not changed.with_model("anthropic/claude-haiku-4-5").run(text="x").cached
    assert len(fake_anthropic.requests) == 3
    assert make_task(TASK).run(text="x").cached and changed.run(text="x").cached
    assert len(fake_anthropic.requests) == 3


def test_different_inputs_miss(
    cache_url: str, make_task: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic
) -> None:
    pc.configure(cache=cache_url)
    task = make_task()
    assert not task.run(text="one").cached
    assert not task.run(text="two").cached
    assert task.run(text="one").cached
    assert len(fake_anthropic.requests) == 2


def test_entries_expire_after_the_ttl(
    cache_url: str, make_task: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic
) -> None:
    pc.configure(cache=cache_url, cache_ttl_s=0.3)
    task = make_task()
    task.run(text="x")
    assert task.run(text="x").cached
    time.sleep(0.4)
    assert not task.run(text="x").cached
    assert len(fake_anthropic.requests) == 2
    assert task.run(text="x").cached


def test_failed_calls_are_not_cached(
    make_task: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    pc.configure(cache=f"sqlite:///{tmp_path / 'cache.db'}")
    bad = message([tool_use_block("SummarizeOutput", {"wrong": "field"})])
    fake_anthropic.reply(bad, bad, bad)
    task = make_task()
    with pytest.raises(pc.OutputValidationError):
        task.run(text="x")
    fake_anthropic.reply(bad, message([tool_use_block("SummarizeOutput", {"summary": "ok"})]))
    run = task.run(text="x")  # a miss: re-asked once, then valid
    assert (run.cached, run.attempts, run.output.summary) == (False, 2, "ok")
    again = task.run(text="x")
    assert again.cached and again.output.summary == "ok"
    assert len(fake_anthropic.requests) == 5


def test_free_text_output_and_the_answering_fallback_are_cached(
    write_task: Callable[..., Path], tmp_path: Path
) -> None:
    first = ScriptedBackend([RuntimeError("down")])
    second = ScriptedBackend(["Bonjour"])
    pc.configure(
        cache=f"sqlite:///{tmp_path / 'cache.db'}",
        backends={"test/first": first, "test/second": second},
    )
    path = write_task("hello", "---\ninputs: {text: str}\noutput: str\n---\n{{ text }}\n")
    task = pc.Task.from_file(path)
    with pytest.raises(RuntimeError):
        task.with_model("test/first").run(text="hi")
    assert task.with_model("test/second").run(text="hi").output == "Bonjour"
    hit = task.with_model("test/second").run(text="hi")
    assert (hit.cached, hit.output, hit.model) == (True, "Bonjour", "test/second")
    assert len(second.requests) == 1


def test_off_means_no_cache(
    make_task: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    task = make_task()
    assert pc.get_config().cache == "off"
    assert not task.run(text="x").cached and not task.run(text="x").cached
    pc.configure(cache="off")
    assert not task.run(text="x").cached
    assert len(fake_anthropic.requests) == 3
    assert open_cache("off") is None
    assert not list(tmp_path.glob("*.db"))


def test_environment_selects_the_cache_and_its_ttl(
    monkeypatch: pytest.MonkeyPatch,
    make_task: Callable[..., pc.Task[Any]],
    fake_anthropic: FakeAnthropic,
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'cache.db'}"
    monkeypatch.setenv("PROMPTCAST_CACHE", url)
    monkeypatch.setenv("PROMPTCAST_CACHE_TTL_S", "60")
    pc.reset_defaults()
    assert (pc.get_config().cache, pc.get_config().cache_ttl_s) == (url, 60.0)
    task = make_task()
    task.run(text="x")
    assert task.run(text="x").cached
    assert len(fake_anthropic.requests) == 1
    assert (tmp_path / "nested" / "cache.db").is_file()
    pc.configure(cache="off")  # configure() wins over the environment
    assert not task.run(text="x").cached


@pytest.mark.parametrize(
    "value", ["mysql://db/cache", "sqlite://", "sqlite:///", "redis", "cache.db", "on"]
)
def test_a_bad_cache_url_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    with pytest.raises(pc.ConfigurationError, match="sqlite:///path") as info:
        pc.configure(cache=value)
    assert info.value.env_var == "PROMPTCAST_CACHE"
    monkeypatch.setenv("PROMPTCAST_CACHE", value)
    pc.reset_defaults()
    with pytest.raises(pc.ConfigurationError, match="PROMPTCAST_CACHE") as info:
        pc.get_config()
    assert info.value.env_var == "PROMPTCAST_CACHE"


def test_other_bad_cache_settings_are_configuration_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(pc.ConfigurationError, match="get, set and close"):
        pc.configure(cache=42)
    monkeypatch.setenv("PROMPTCAST_CACHE_TTL_S", "soon")
    pc.reset_defaults()
    with pytest.raises(pc.ConfigurationError, match="PROMPTCAST_CACHE_TTL_S") as info:
        pc.get_config()
    assert info.value.env_var == "PROMPTCAST_CACHE_TTL_S"
    with pytest.raises(pc.ConfigurationError):
        pc.configure(cache_ttl_s=-1)


def test_redis_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(pc.ConfigurationError, match=r"promptcast\[redis\]") as info:
        open_cache("redis://127.0.0.1:1/0")
    assert (info.value.extra, info.value.env_var) == ("redis", "PROMPTCAST_CACHE")


def test_sqlite_urls_follow_sqlalchemy(tmp_path: Path) -> None:
    relative = open_cache("sqlite:///.promptcast-cache.db")
    absolute = open_cache(f"sqlite:///{tmp_path}/c.db")
    assert isinstance(relative, SQLiteCache) and relative.path == Path(".promptcast-cache.db")
    assert isinstance(absolute, SQLiteCache) and absolute.path == tmp_path / "c.db"
    assert not Path(".promptcast-cache.db").exists()  # nothing is opened before first use


def test_redis_url_password_stays_out_of_messages(redis_server: int) -> None:
    cache = open_cache(f"redis://:hunter2@127.0.0.1:{redis_server}/0")
    assert isinstance(cache, RedisCache) and "hunter2" not in repr(cache)
    cache.close()


def test_redis_cache_reconnects_after_the_server_drops_it(redis_server: int) -> None:
    cache = open_cache(f"redis://127.0.0.1:{redis_server}/0")
    assert isinstance(cache, RedisCache)
    cache.set("k", "v", ttl_s=60)
    assert _redis_command(redis_server, b"CLIENT KILL TYPE normal\r\n").startswith(b":")
    assert cache.get("k") == "v"
    results: list[str | None] = []
    worker = threading.Thread(target=lambda: results.append(cache.get("k")))
    worker.start()
    worker.join()
    assert results == ["v"] and len(cache._conns) == 2  # one connection per thread
    cache.close()


def test_cache_key_covers_the_whole_request() -> None:
    class A(BaseModel):
        x: int

    class B(BaseModel):
        x: str

    prompt = Prompt("sys", [{"role": "user", "content": "hi"}])
    base = ("anthropic/m", "h1", prompt, A, 100, None)
    key = cache_key(*base)
    assert key == cache_key("anthropic/m", "h1", Prompt("sys", [{"role": "user", "content": "hi"}]), A, 100, None)  # fmt: skip
    variants = [
        ("anthropic/other", "h1", prompt, A, 100, None),
        ("anthropic/m", "h2", prompt, A, 100, None),
        ("anthropic/m", "h1", Prompt("other", prompt.messages), A, 100, None),
        ("anthropic/m", "h1", Prompt(None, [{"role": "user", "content": "sys\nhi"}]), A, 100, None),
        ("anthropic/m", "h1", prompt, B, 100, None),
        ("anthropic/m", "h1", prompt, None, 100, None),
        ("anthropic/m", "h1", prompt, A, 101, None),
        ("anthropic/m", "h1", prompt, A, 100, 0.0),
    ]
    keys = {cache_key(*v) for v in variants}  # type: ignore[arg-type]
    assert len(keys) == len(variants) and key not in keys


class _Broken:
    def get(self, key: str) -> str | None:
        raise ConnectionError("cache is down")

    def set(self, key: str, value: str, ttl_s: float | None = None) -> None:
        raise ConnectionError("cache is down")

    def close(self) -> None:
        pass


def test_a_failing_cache_never_breaks_a_call(
    make_task: Callable[..., pc.Task[Any]],
    fake_anthropic: FakeAnthropic,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pc.configure(cache=_Broken())
    task = make_task()
    with caplog.at_level(logging.WARNING, logger="promptcast.cache"):
        assert not task.run(text="x").cached and not task.run(text="x").cached
    assert len(fake_anthropic.requests) == 2
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1 and "ConnectionError" in failures[0].getMessage()


def test_threads_share_one_sqlite_cache(tmp_path: Path) -> None:
    cache = SQLiteCache(tmp_path / "cache.db")
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(200):
                cache.set(f"{n}-{i}", f"value {n} {i}")
                assert cache.get(f"{n}-{i}") == f"value {n} {i}"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(cache.get(f"{n}-199") == f"value {n} 199" for n in range(8))
    cache.close()


WORKER = textwrap.dedent("""
    import os, sys, threading, time
    from promptcast.cache import SQLiteCache

    path, me, other, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    cache = SQLiteCache(path)
    while not os.path.exists(path + ".go"):  # both processes start together
        time.sleep(0.002)
    errors = []

    def work(t):
        try:
            for i in range(n):
                cache.set(f"{me}-{t}-{i}", f"{me} {t} {i} " + "x" * 300, ttl_s=3600)
                assert cache.get(f"{me}-{t}-{i}") is not None
                cache.get(f"{other}-{t}-{i}")
        except BaseException as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    deadline = time.monotonic() + 60
    while True:  # the other process's entries, each exactly as written
        missing = [
            (t, i) for t in range(4) for i in range(n)
            if cache.get(f"{other}-{t}-{i}") != f"{other} {t} {i} " + "x" * 300
        ]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    cache.close()
    print(f"errors={errors} missing={len(missing)}")
""")


def test_two_processes_share_one_sqlite_file_without_corrupting_it(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    n = 250
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), me, other, str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for me, other in (("a", "b"), ("b", "a"))
    ]
    time.sleep(0.3)  # let both import and wait at the start line
    (tmp_path / "shared.db.go").touch()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.strip() == "errors=[] missing=0", err
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT count(*) FROM promptcast_cache").fetchone() == (2 * 4 * n,)
    conn.close()


def test_import_promptcast_does_not_import_redis() -> None:
    code = (
        "import sys, promptcast, promptcast.cache; "
        "promptcast.configure(cache='redis://127.0.0.1:1/0'); "
        "print('redis' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _slow_free_text(delay_s: float) -> tuple[str, ScriptedBackend]:
    async def answer(request: Any) -> str:
        await asyncio.sleep(delay_s)
        return "a summary"

    return "test/slow", ScriptedBackend(answer)


async def _timed_calls(task: pc.Task[Any], count: int) -> float:
    started = time.perf_counter()
    runs = await asyncio.gather(*(task.arun(text=f"text {n}") for n in range(count)))
    assert all(run.output == "a summary" and not run.cached for run in runs)
    return time.perf_counter() - started


async def test_a_cache_that_never_answers_does_not_serialise_async_calls(
    silent_server: int,
    write_task: Callable[..., Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """16 concurrent calls against a hung Redis take less than twice as long as one."""
    task = pc.Task.from_file(
        write_task("free", "---\ninputs: {text: str}\noutput: str\n---\n{{ text }}")
    )
    model, backend = _slow_free_text(0.2)
    url = f"redis://127.0.0.1:{silent_server}/0"
    with (
        caplog.at_level(logging.WARNING, "promptcast.cache"),
        pc.override(model=model, backends={model: backend}, cache=url, cache_timeout_s=0.2),
    ):
        one = await _timed_calls(task, 1)
        sixteen = await _timed_calls(task, 16)
        cache = shared_cache(pc.get_config())
        assert cache is not None
        await cache.aclose()  # type: ignore[attr-defined]
    assert one < 1.5, one  # a get and a put, each given up after 0.2 s, around a 0.2 s call
    assert sixteen < 2 * one, (one, sixteen)
    warnings = [r for r in caplog.records if "failed to" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not once per call


async def test_a_locked_sqlite_file_does_not_freeze_async_calls(
    tmp_path: Path, write_task: Callable[..., Path]
) -> None:
    """Another process holding SQLite's write lock costs each call at most the cache timeout."""
    path = tmp_path / "cache.db"
    task = pc.Task.from_file(
        write_task("free", "---\ninputs: {text: str}\noutput: str\n---\n{{ text }}")
    )
    model, backend = _slow_free_text(0.0)
    with pc.override(model=model, backends={model: backend}, cache=f"sqlite:///{path}"):
        await task.arun(text="warm")  # creates the file and its table
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None);"
                "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(30)",
                str(path),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
            took = await _timed_calls(task, 8)
        finally:
            holder.kill()
            holder.wait()
            assert holder.stdout is not None
            holder.stdout.close()
    assert took < 2.0, took


def test_the_same_request_to_two_base_urls_misses_twice(
    tmp_path: Path, make_task: Callable[..., pc.Task[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key-0123456789abcdef")
    task = make_task()
    with FakeAnthropic() as first, FakeAnthropic() as second:
        pc.configure(cache=f"sqlite:///{tmp_path / 'cache.db'}")
        try:
            for fake in (first, second, first):
                with pc.override(providers={"anthropic": {"base_url": fake.base_url}}):
                    task.run(text="The blender is loud.")
        finally:
            resolve("anthropic/any")[0].close()
        assert (len(first.requests), len(second.requests)) == (1, 1)


def test_the_cache_key_never_holds_the_api_key(
    tmp_path: Path, make_task: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic
) -> None:
    """A key rotation keeps the cache warm: the key is no part of it."""
    pc.configure(cache=f"sqlite:///{tmp_path / 'cache.db'}")
    task = make_task()
    with pc.override(providers={"anthropic": {"api_key": "sk-ant-first-key-000000"}}):
        task.run(text="The blender is loud.")
    with pc.override(providers={"anthropic": {"api_key": "sk-ant-second-key-11111"}}):
        assert task.run(text="The blender is loud.").cached
    assert len(fake_anthropic.requests) == 1


def test_a_scope_with_another_cache_timeout_gets_a_store_with_that_timeout(tmp_path: Path) -> None:
    """The sync path relies on the store's own timeouts (SQLite busy wait, Redis sockets)."""
    url = f"sqlite:///{tmp_path / 'cache.db'}"
    pc.configure(cache=url)
    default = shared_cache(pc.get_config())
    with pc.override(cache_timeout_s=0.05):
        scoped = shared_cache(pc.get_config())
    assert isinstance(default, SQLiteCache) and isinstance(scoped, SQLiteCache)
    assert (default.timeout_s, scoped.timeout_s) == (0.25, 0.05)
    assert shared_cache(pc.get_config()) is default
