"""The edges of what a call goes through: caches, provider endpoints, retries and credentials,
each slow, hung, refusing or lying, against loopback servers only."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

import promptcast as pc
from promptcast._secrets import SECRET_HEADERS
from promptcast.backends._redirects import keep_credentials_on_origin
from promptcast.errors import BackendError

KEY = "sk-deps-edges-SECRET-0123456789abcdef"


class _Server:
    """A loopback HTTP server whose every POST/GET is answered by `reply(handler)`; it records
    the headers of each request it gets."""

    def __init__(self, reply: Callable[[BaseHTTPRequestHandler], None]) -> None:
        self.headers: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                outer.headers.append({k.lower(): v for k, v in self.headers.items()})
                reply(self)

            do_POST = do_GET = _any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _plain_500(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(500)
    handler.send_header("content-length", "0")
    handler.end_headers()


@pytest.fixture
def elsewhere() -> Iterator[_Server]:
    """Another origin, which a redirect points at: it must never see a key."""
    server = _Server(_plain_500)
    yield server
    server.close()


@pytest.fixture
def redirecting(elsewhere: _Server) -> Iterator[_Server]:
    """A provider base URL that answers every request with `307` to `elsewhere`."""

    def redirect(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(307)
        handler.send_header("location", elsewhere.base + handler.path)
        handler.send_header("content-length", "0")
        handler.end_headers()

    server = _Server(redirect)
    yield server
    server.close()


def _task(write_task: Callable[..., Path], model: str) -> pc.Task[Any]:
    text = f"---\ninputs: {{text: str}}\nmodel: {model}\n---\n{{{{ text }}}}\n"
    return pc.Task.from_file(write_task("redirected", text))


# (provider, model, the header its key travels in)
ROUTES = [
    ("azure", "azure/gpt-4o-mini", "api-key"),
    ("gemini", "gemini/gemini-2.0-flash", "x-goog-api-key"),
    ("openai", "openai/gpt-4o-mini", "authorization"),
]


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize(("provider", "model", "header"), ROUTES, ids=[r[0] for r in ROUTES])
def test_a_redirect_to_another_host_never_carries_the_key(
    write_task: Callable[..., Path],
    redirecting: _Server,
    elsewhere: _Server,
    provider: str,
    model: str,
    header: str,
    use_async: bool,
) -> None:
    """Azure's `api-key` and Gemini's `x-goog-api-key` followed a 307 to any host (httpx drops
    only `Authorization`); now no secret header leaves its origin."""
    base = redirecting.base + ("" if provider == "gemini" else "/v1")
    pc.configure(
        providers={provider: {"api_key": KEY, "base_url": base}}, max_retries=0, max_attempts=1
    )
    task = _task(write_task, model)
    with pytest.raises(BackendError):
        if use_async:
            import asyncio

            asyncio.run(task.arun(text="hi"))
        else:
            task.run(text="hi")
    if provider != "openai":  # the key did reach the configured host, in its own header
        assert redirecting.headers and redirecting.headers[0].get(header) == KEY
    assert elsewhere.headers, "the redirect was not followed at all"
    for seen in elsewhere.headers:
        assert not any(KEY in value for value in seen.values()), seen


@pytest.mark.parametrize("header", sorted(SECRET_HEADERS))
def test_no_secret_header_follows_a_cross_origin_redirect(
    redirecting: _Server, elsewhere: _Server, header: str
) -> None:
    keep_credentials_on_origin()
    with httpx.Client(follow_redirects=True) as client:
        client.post(redirecting.base + "/x", headers={header: KEY}, content=b"{}")
    assert redirecting.headers[0].get(header) == KEY
    assert header not in elsewhere.headers[0]


def test_a_same_origin_redirect_keeps_the_key(elsewhere: _Server) -> None:
    """Only a move to another origin drops credentials: a path redirect on the same server
    (a proxy adding a trailing slash) still authenticates."""
    hops: list[str] = []

    def once(handler: BaseHTTPRequestHandler) -> None:
        if not hops:
            hops.append(handler.path)
            handler.send_response(308)
            handler.send_header("location", "/moved")
            handler.send_header("content-length", "0")
            handler.end_headers()
        else:
            _plain_500(handler)

    server = _Server(once)
    try:
        keep_credentials_on_origin()
        with httpx.Client(follow_redirects=True) as client:
            client.post(server.base + "/x", headers={"x-api-key": KEY}, content=b"{}")
    finally:
        server.close()
    assert [h.get("x-api-key") for h in server.headers] == [KEY, KEY]


# Keys as they arrive from .env files, secret mounts and copy-paste.
PADDED = {
    "trailing-newline": KEY + "\n",
    "crlf": KEY + "\r\n",
    "spaces": "  " + KEY + " ",
    "tab": "\t" + KEY,
}
BROKEN = {
    "inner-newline": (KEY[:10] + "\n" + KEY[10:], "a line break"),
    "inner-space": (KEY[:10] + " " + KEY[10:], "a space"),
    "zero-width-space": (KEY + "\u200b", "U+200B"),
    "no-break-space": (KEY[:10] + "\u00a0" + KEY[10:], "U+00A0"),
    "escape": (KEY[:5] + "\x1b" + KEY[5:], "U+001B"),
}


def _set_key(provider: str, key: str, source: str, monkeypatch: pytest.MonkeyPatch) -> str:
    if source == "env":
        var = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}[provider]
        monkeypatch.setenv(var, key)
        return var
    pc.configure(providers={provider: {"api_key": key}})
    return f"configure(providers={{'{provider}': {{'api_key': …}}}})"


@pytest.fixture(params=["anthropic", "openai"])
def provider_fake(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Any]]:
    from promptcast.testing import FakeAnthropic, FakeOpenAI

    if request.param == "anthropic":
        with FakeAnthropic() as fake:
            monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
            yield "anthropic", fake
            from tests.conftest import anthropic_backend

            anthropic_backend().close()
    else:
        with FakeOpenAI() as fake:
            monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
            yield "openai", fake


@pytest.mark.parametrize("source", ["env", "configure"])
@pytest.mark.parametrize("padded", list(PADDED.values()), ids=list(PADDED))
def test_whitespace_around_a_key_is_dropped(
    write_task: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    provider_fake: tuple[str, Any],
    padded: str,
    source: str,
) -> None:
    """A key with a newline or spaces around it made the HTTP client refuse the header, and
    Anthropic's error then quoted the whole key; now it is sent trimmed."""
    provider, fake = provider_fake
    _set_key(provider, padded, source, monkeypatch)
    model = "anthropic/claude-sonnet-4-6" if provider == "anthropic" else "openai/gpt-4o-mini"
    pc.configure(max_retries=0)
    _task(write_task, model).run(text="hi")
    assert fake.request_headers[0]["authorization"] == "Bearer " + KEY


@pytest.mark.parametrize("source", ["env", "configure"])
@pytest.mark.parametrize(("key", "named"), list(BROKEN.values()), ids=list(BROKEN))
def test_a_key_no_header_can_carry_is_a_configuration_error(
    write_task: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    provider_fake: tuple[str, Any],
    key: str,
    named: str,
    source: str,
) -> None:
    provider, fake = provider_fake
    where = _set_key(provider, key, source, monkeypatch)
    model = "anthropic/claude-sonnet-4-6" if provider == "anthropic" else "openai/gpt-4o-mini"
    with pytest.raises(pc.ConfigurationError) as caught:
        _task(write_task, model).run(text="hi")
    message = str(caught.value)
    assert where in message and named in message
    assert KEY[12:20] not in message and KEY[12:20] not in repr(caught.value)
    assert caught.value.env_var == (where if source == "env" else None)
    assert fake.requests == []


def test_an_illegal_header_error_never_quotes_the_key() -> None:
    """A client handed in with a broken key: the transport's 'Illegal header value b"…"' is
    scrubbed before it becomes the BackendError's message."""
    import anthropic

    from promptcast.backends.anthropic import AnthropicBackend
    from promptcast.backends.base import ModelRequest
    from promptcast.render import Prompt
    from promptcast.testing import FakeAnthropic

    request = ModelRequest(
        model="claude-sonnet-4-6",
        prompt=Prompt(system=None, messages=[{"role": "user", "content": "hi"}]),
        output_model=None,
    )
    with FakeAnthropic() as fake:
        client = anthropic.Anthropic(api_key=KEY + "\n", base_url=fake.base_url)
        with pytest.raises(BackendError) as caught:
            AnthropicBackend(client=client).request(request)
        assert fake.requests == []
    assert "Illegal header value" in str(caught.value)
    assert KEY[12:] not in str(caught.value)
    client.close()


class _LyingCache:
    """A store that answers every read with `value`, whatever the key (and takes writes)."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.writes: list[str] = []

    def get(self, key: str) -> Any:
        return self.value

    def set(self, key: str, value: str, ttl_s: float | None = None) -> None:
        self.writes.append(value)

    def close(self) -> None:
        pass


CORRUPT_ENTRIES = {
    "truncated": '{"model": "m", "output": {"summ',
    "empty": "",
    "not-json": "<html>gateway</html>",
    "json-null": "null",
    "a-list": '[{"output": {"summary": "stale"}}]',
    "a-number": "42",
    "no-output": '{"model": "m"}',
    "another-schema": '{"model": "m", "output": {"title": "stale", "pages": 3}}',
    "wrong-type": '{"model": "m", "output": {"summary": ["stale"]}}',
    "deeply-nested": '{"output": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "nested-in-output": '{"output": {"summary": ' + "[" * 50_000 + "]" * 50_000 + "}}",
    "bytes-not-utf8": b'{"output": {"summary": "\xff\xfe"}}',
    "a-dict-object": {"output": {"summary": "stale"}},
}

SUMMARY_TASK = """\
---
inputs: {text: str}
output: {summary: str}
model: anthropic/claude-sonnet-4-6
---
{{ text }}
"""


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("entry", list(CORRUPT_ENTRIES.values()), ids=list(CORRUPT_ENTRIES))
def test_a_corrupt_cache_entry_is_a_miss_and_the_model_answers(
    write_task: Callable[..., Path], fake_anthropic: Any, entry: Any, use_async: bool
) -> None:
    """A deeply nested entry raised RecursionError out of the call; every entry that is not
    this task's output is now a miss: the model answers, and its answer is stored."""
    from promptcast.testing import message, tool_use_block

    fake_anthropic.reply(message([tool_use_block("SummarizeOutput", {"summary": "fresh"})]))
    cache = _LyingCache(entry)
    pc.configure(cache=cache)
    task = pc.Task.from_file(write_task("summarize", SUMMARY_TASK))
    if use_async:
        import asyncio

        run = asyncio.run(task.arun(text="x"))
    else:
        run = task.run(text="x")
    assert run.output.summary == "fresh" and not run.cached
    assert len(fake_anthropic.requests) == 1 and len(cache.writes) == 1


@pytest.mark.parametrize(
    "text", ["line\u2028sep", "para\u2029sep", "nul\x00byte", "emoji 🧪", "\ud7ff"]
)
def test_an_entry_with_any_unicode_reads_back_as_written(
    write_task: Callable[..., Path], fake_anthropic: Any, tmp_path: Path, text: str
) -> None:
    from promptcast.testing import message, tool_use_block

    fake_anthropic.reply(message([tool_use_block("SummarizeOutput", {"summary": text})]))
    pc.configure(cache=f"sqlite:///{tmp_path / 'cache.db'}")
    task = pc.Task.from_file(write_task("summarize", SUMMARY_TASK))
    first, second = task.run(text="x"), task.run(text="x")
    assert first.output.summary == second.output.summary == text
    assert second.cached and len(fake_anthropic.requests) == 1


def test_a_sqlite_file_held_locked_by_another_program_costs_a_call_little(
    write_task: Callable[..., Path], fake_anthropic: Any, tmp_path: Path
) -> None:
    """A cache file that another program holds in a long write transaction before promptcast
    ever switched it to WAL: each sync call waited 5 s for the read and 5 s for the write;
    now each operation gives up after about its timeout, and the cache works once released."""
    import sqlite3
    import time

    path = tmp_path / "cache.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("CREATE TABLE other_program (a)")
    pc.configure(cache=f"sqlite:///{path}", cache_timeout_s=0.1)
    task = pc.Task.from_file(write_task("summarize", SUMMARY_TASK))
    assert not task.run(text="x").cached  # imports and clients warmed up
    started = time.perf_counter()
    assert not task.run(text="x").cached
    assert time.perf_counter() - started < 2.0  # was over 10 s
    holder.execute("COMMIT")
    holder.close()
    assert not task.run(text="x").cached  # stored now
    assert task.run(text="x").cached
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


@pytest.mark.parametrize(
    "value",
    [
        "inf",
        "Infinity",
        "-inf",
        "nan",
        "1e400",
        "99999999999",
        "Fri, 31 Dec 9999 23:59:59 GMT",
        "abc",
        "-5",
        "",
        "Mon, 01 Jan 0001 00:00:00 GMT",
    ],
)
def test_any_retry_after_is_a_finite_bounded_wait_or_none(value: str) -> None:
    """`inf` or a date in the year 9999 made a batch poll sleep for ever (it sleeps what the
    header says); every value is now `None` or between 0 and an hour."""
    import math

    from promptcast._retry import MAX_RETRY_AFTER_S, parse_retry_after

    parsed = parse_retry_after(value)
    assert parsed is None or (math.isfinite(parsed) and 0 <= parsed <= MAX_RETRY_AFTER_S)


def _trickle(handler: BaseHTTPRequestHandler) -> None:
    """Headers at once, then a reply body one byte every 0.2 s, for up to 20 s: each read
    arrives well within any read timeout, the reply never ends."""
    import time

    handler.send_response(200)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", "100000")
    handler.end_headers()
    try:
        for _ in range(100):
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(0.2)
    except OSError:  # the client gave up
        pass


@pytest.mark.parametrize(
    ("provider", "model"),
    [("anthropic", "anthropic/claude-sonnet-4-6"), ("openai", "openai/gpt-4o-mini")],
    ids=["anthropic", "openai"],
)
def test_a_reply_that_trickles_in_ends_an_async_call_at_its_timeout(
    write_task: Callable[..., Path], provider: str, model: str
) -> None:
    """A server that sends a byte every 0.2 s never trips the SDKs' read timeout, so an async
    call with timeout_s=1 ran for as long as the server kept sending (20 s here); it now ends
    with BudgetExceededError at its timeout."""
    import asyncio
    import time

    import anthropic  # noqa: F401 - imports are not part of what is timed

    from promptcast.backends.litellm import _litellm

    _litellm()
    server = _Server(_trickle)
    try:
        base = server.base + ("/v1" if provider == "openai" else "")
        pc.configure(providers={provider: {"api_key": KEY, "base_url": base}}, timeout_s=1.0)
        task = _task(write_task, model)
        started = time.perf_counter()
        with pytest.raises(pc.BudgetExceededError) as caught:
            asyncio.run(task.arun(text="hi"))
        assert time.perf_counter() - started < 3.0
        assert caught.value.limit == "timeout_s"
        assert "no complete reply within" in str(caught.value)
    finally:
        server.close()


KEY_SOURCES = {
    "env": lambda provider, model, base: ({}, ""),  # the provider's own variables, set below
    "providers": lambda provider, model, base: (
        {"providers": {provider: {"api_key": KEY, "base_url": base}}},
        f"configure(providers={{'{provider}': {{'api_key': …}}}})",
    ),
    "models": lambda provider, model, base: (
        {"models": {model: {"api_key": KEY, "base_url": base}}},
        f"configure(models={{'{model}': {{'api_key': …}}}})",
    ),
}


@pytest.mark.parametrize("source", list(KEY_SOURCES))
@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_refused_key_names_where_it_is_set_and_is_not_retried(
    write_task: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, provider: str, source: str
) -> None:
    """HTTP 401 said only 'authentication_error': now it says which variable or configure()
    entry holds the key that was refused (never the key), and nothing is retried."""
    from promptcast.testing import FakeAnthropic, FakeOpenAI, error_reply

    fake: Any = FakeAnthropic() if provider == "anthropic" else FakeOpenAI()
    with fake:
        fake.handler = lambda request: error_reply(401, "authentication_error", "invalid key")
        model = "anthropic/claude-sonnet-4-6" if provider == "anthropic" else "openai/gpt-4o-mini"
        settings, where = KEY_SOURCES[source](provider, model, fake.base_url)
        variable = "ANTHROPIC_API_KEY" if provider == "anthropic" else "OPENAI_API_KEY"
        if source == "env":
            monkeypatch.setenv(variable, KEY)
            monkeypatch.setenv(variable.replace("API_KEY", "BASE_URL"), fake.base_url)
            where = variable
        pc.configure(**settings, max_retries=3)
        with pytest.raises(BackendError) as caught:
            _task(write_task, model).run(text="hi")
        if provider == "anthropic":
            from tests.conftest import anthropic_backend

            anthropic_backend().close()
    message = str(caught.value)
    assert caught.value.status == 401 and not caught.value.retryable
    assert f"the API key was refused: check {where}" in message
    assert KEY[10:] not in message
    assert len(fake.requests) == 1


NOT_A_MESSAGE_STREAM = {
    "empty": [],
    "html": [b"<html><body>502 Bad Gateway</body></html>\n\n"],
    "other-events": [b'data: {"hello": "world"}\n\n', b"data: [1, 2, 3]\n\n"],
    "ping-only": [b'event: ping\ndata: {"type": "ping"}\n\n'],
}


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize(
    "frames", list(NOT_A_MESSAGE_STREAM.values()), ids=list(NOT_A_MESSAGE_STREAM)
)
def test_a_200_stream_with_no_message_is_a_retryable_backend_error(
    write_task: Callable[..., Path], fake_anthropic: Any, frames: list[bytes], use_async: bool
) -> None:
    """An event stream that ends without `message_start` raised a bare AssertionError out of
    the anthropic SDK's `get_final_message`; it is now a retryable BackendError that says the
    base URL may not be the API, and the retry gets a fresh request."""
    from promptcast.testing import FakeReply

    fake_anthropic.handler = lambda request: FakeReply(
        events=frames, headers={"content-type": "text/event-stream"}
    )
    pc.configure(max_retries=1, retry_max_wait_s=0.01)
    task = pc.Task.from_file(write_task("summarize", SUMMARY_TASK))
    with pytest.raises(BackendError) as caught:
        if use_async:
            import asyncio

            async def consume() -> None:
                async with task.astream(text="x") as stream:
                    async for _ in stream:
                        pass

            asyncio.run(consume())
        else:
            for _ in task.stream(text="x"):
                pass
    assert caught.value.retryable and "without a message" in str(caught.value)
    assert len(fake_anthropic.requests) == 2


@pytest.mark.parametrize("source", ["env", "configure"])
@pytest.mark.parametrize(
    "suffix", [" ", "\n", "//", "/ \r\n"], ids=["space", "newline", "slashes", "mixed"]
)
def test_a_base_url_with_trailing_whitespace_or_slashes_still_reaches_the_api(
    write_task: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    provider_fake: tuple[str, Any],
    suffix: str,
    source: str,
) -> None:
    """The OpenAI-compatible route pasted a base URL's trailing space or slashes into the path
    (`/v1%20/chat/completions`: 404); base URLs are now trimmed like keys."""
    provider, fake = provider_fake
    base = fake.base_url + suffix
    if source == "env":
        monkeypatch.setenv(f"{provider.upper()}_BASE_URL", base)
        monkeypatch.setenv(f"{provider.upper()}_API_KEY", KEY)
    else:
        pc.configure(providers={provider: {"api_key": KEY, "base_url": base}})
    model = "anthropic/claude-sonnet-4-6" if provider == "anthropic" else "openai/gpt-4o-mini"
    pc.configure(max_retries=0)
    _task(write_task, model).run(text="hi")
    assert len(fake.requests) == 1


def test_a_bad_base_url_error_never_shows_its_password() -> None:
    with pytest.raises(pc.ConfigurationError) as caught:
        pc.configure(providers={"openai": {"base_url": "ftp://me:hunter2secret@example.test"}})
    assert "hunter2secret" not in str(caught.value)


def _conflicted(text: str) -> str:
    lines = text.splitlines()
    middle = len(lines) // 2
    return "\n".join(
        ["<<<<<<< HEAD", *lines[:middle], "=======", *lines[middle:], ">>>>>>> other", ""]
    )


BROKEN_CASSETTES: dict[str, Callable[[str], bytes]] = {
    "merge-conflict": lambda good: _conflicted(good).encode(),
    "cut-off": lambda good: good[: len(good) // 2].encode(),
    "a-list": lambda good: b"- 1\n- 2\n",
    "a-scalar": lambda good: b"hello\n",
    "no-request": lambda good: b"interactions:\n- response: {}\nversion: 1\n",
    "broken-utf8": lambda good: good.encode()[:40] + b"\xff\xfe" + good.encode()[40:],
    "tab-indented": lambda good: good.replace("  ", "\t", 1).encode(),
}


@pytest.mark.parametrize("breakage", list(BROKEN_CASSETTES.values()), ids=list(BROKEN_CASSETTES))
def test_a_cassette_that_cannot_be_read_is_a_typed_error_naming_it(
    write_task: Callable[..., Path],
    fake_anthropic: Any,
    tmp_path: Path,
    breakage: Callable[[str], bytes],
) -> None:
    """A merge conflict or cut-off cassette raised yaml's ScannerError, KeyError or
    AttributeError without the file's name (broken UTF-8 read as 'no recording', to be
    recorded over); each is now a CassetteReadError naming the file and what to do."""
    from promptcast.testing.cassettes import CassetteReadError, recording, replay

    task = pc.Task.from_file(write_task("summarize", SUMMARY_TASK))
    cassette = tmp_path / "summarize.yaml"
    with recording(cassette):
        task.run(text="x")
    cassette.write_bytes(breakage(cassette.read_text(encoding="utf-8")))
    before = cassette.read_bytes()
    with pytest.raises(CassetteReadError) as caught, replay(cassette):
        task.run(text="x")
    assert str(cassette) in str(caught.value) and caught.value.cassette == str(cassette)
    assert "record again" in str(caught.value)
    assert cassette.read_bytes() == before  # nothing written over it
