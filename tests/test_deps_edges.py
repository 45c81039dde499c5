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
