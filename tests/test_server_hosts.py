"""The Host check: a server without tokens on loopback answers only requests addressed to loopback
names or to PROMPTCAST_ALLOWED_HOSTS, so a DNS-rebinding web page cannot use it."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import promptcast as pc
from promptcast.errors import ConfigurationError
from promptcast.server import create_app
from promptcast.server.hosts import HostPolicy, host_name
from promptcast.testing import ScriptedBackend
from tests.serving import AUTH, TOKEN, running

TICKET = {"issue": "Checkout crashes", "urgency": "high", "product": "checkout"}

# what a rebinding page, a typo or a hostile client may put in Host
REFUSED = [
    "evil.example",
    "evil.example:8000",
    "localhost.evil.example",
    "127.0.0.1.nip.io",
    "127.0.0.1.evil.example:8000",
    "localhost.",
    "localhostx",
    "xlocalhost",
    "0x7f.0.0.1",
    "2130706433",
    "[::2]",
    "[::1",
    "::1",
    "localhost:port",
    "localhost:80:80",
    "local host",
    "user@localhost",
    "",
    " ",
    "evil.example\tlocalhost",
]
ACCEPTED = [
    "localhost",
    "LOCALHOST",
    "localhost:8000",
    "127.0.0.1",
    "127.0.0.1:65535",
    "127.1.2.3:9",
    "[::1]",
    "[::1]:8000",
    "[::ffff:127.0.0.1]:8000",
]


@pytest.fixture(scope="module")
def open_url() -> Iterator[str]:
    """A server without tokens on 127.0.0.1 whose `extract_ticket` runs on a scripted backend."""
    task = pc.builtin_tasks()["extract_ticket"].with_model("test/hosts")
    app = create_app(pc.TaskRegistry({"extract_ticket": task}), tokens=[], allowed_hosts=[])
    with running(app) as url:
        yield url


@pytest.fixture(autouse=True)
def _backend() -> None:
    pc.configure(backends={"test/hosts": ScriptedBackend(lambda _: TICKET)})


def raw_request(url: str, request: bytes) -> tuple[int, dict[str, Any]]:
    """Send `request` as bytes (Host as given, or none) and read the status and JSON body."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body.strip() else {}


def call(url: str, host: str) -> tuple[int, dict[str, Any]]:
    """POST a task call with this Host header, as bytes on the wire."""
    body = b'{"message": "Checkout crashes"}'
    request = (
        f"POST /v1/tasks/extract_ticket HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")
    return raw_request(url, request + body)


def listing(url: str, host: str) -> int:
    request = f"GET /v1/tasks HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    return raw_request(url, request.encode("latin-1"))[0]


@pytest.mark.parametrize("host", REFUSED)
def test_a_foreign_host_gets_421_and_the_task_never_runs(open_url: str, host: str) -> None:
    status, body = call(open_url, host)
    assert status == 421, body
    assert body["type"] == "urn:promptcast:problem:host-not-allowed"
    assert "PROMPTCAST_ALLOWED_HOSTS" in body["detail"]


@pytest.mark.parametrize("path", ["/v1/tasks", "/openapi.json", "/docs", "/metrics"])
def test_every_route_but_the_probes_checks_the_host(open_url: str, path: str) -> None:
    response = httpx.get(open_url + path, headers={"host": "evil.example"})
    assert response.status_code == 421


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_answer_whatever_the_host(open_url: str, path: str) -> None:
    assert httpx.get(open_url + path, headers={"host": "10.1.2.3:8000"}).status_code == 200


@pytest.mark.parametrize("host", ACCEPTED)
def test_loopback_names_are_answered(open_url: str, host: str) -> None:
    status, body = call(open_url, host)
    assert status == 200, body
    assert body["output"] == TICKET


def test_http_1_0_without_a_host_is_refused(open_url: str) -> None:
    status, body = raw_request(open_url, b"GET /v1/tasks HTTP/1.0\r\n\r\n")
    assert status == 421 and "no Host header" in body["detail"]


def test_allowed_hosts_are_answered_and_others_still_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROMPTCAST_ALLOWED_HOSTS", "api.example.com, Tasks.Internal:8443")
    pc.reset_defaults()
    with running(create_app(pc.TaskRegistry(), tokens=[])) as url:
        for host in ("api.example.com", "api.example.com:8000", "tasks.internal", "localhost"):
            assert listing(url, host) == 200, host
        for host in ("evil.example", "api.example.com.evil.example", "example.com"):
            assert listing(url, host) == 421, host


def test_with_tokens_the_host_is_checked_only_when_hosts_are_listed() -> None:
    registry = pc.TaskRegistry()
    with running(create_app(registry, tokens=[TOKEN], allowed_hosts=[])) as url:
        ok = httpx.get(url + "/v1/tasks", headers={**AUTH, "host": "any.example"})
        assert ok.status_code == 200  # the token is the guard
    with running(create_app(registry, tokens=[TOKEN], allowed_hosts=["api.example.com"])) as url:
        refused = httpx.get(url + "/v1/tasks", headers={**AUTH, "host": "any.example"})
        assert refused.status_code == 421
        assert httpx.get(url + "/v1/tasks", headers={**AUTH, "host": "api.example.com"}).is_success


def test_the_421_is_documented_where_it_can_happen() -> None:
    schema = create_app(pc.TaskRegistry(), tokens=[], allowed_hosts=[]).openapi()
    assert "421" in schema["paths"]["/v1/tasks"]["get"]["responses"]
    assert "421" not in schema["paths"]["/healthz"]["get"]["responses"]
    secured = create_app(pc.TaskRegistry(), tokens=[TOKEN], allowed_hosts=[]).openapi()
    assert "421" not in secured["paths"]["/v1/tasks"]["get"]["responses"]


@pytest.mark.parametrize(
    ("server", "secured", "listed", "checked"),
    [
        (("127.0.0.1", 8000), False, False, True),
        (("::1", 8000), False, False, True),
        (("::ffff:127.0.0.1", 8000), False, False, True),
        (("192.168.1.4", 8000), False, False, False),  # --insecure on a public address
        (("/run/promptcast.sock", None), False, False, True),  # a unix socket is local
        (None, False, False, True),  # unknown: checked
        (("127.0.0.1", 8000), True, False, False),
        (("192.168.1.4", 8000), True, True, True),
    ],
)
def test_when_the_host_is_checked(server: Any, secured: bool, listed: bool, checked: bool) -> None:
    policy = HostPolicy.of(["api.example.com"] if listed else [])
    assert policy.applies(server, secured) is checked


@pytest.mark.parametrize(
    "entry", ["http://api.example.com", "api.example.com/v1", "*.example.com", "a b", ""]
)
def test_a_malformed_allowed_host_is_a_configuration_error(entry: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        HostPolicy.of([entry])
    assert caught.value.env_var == "PROMPTCAST_ALLOWED_HOSTS"


def test_host_names_parse_like_a_browser_sends_them() -> None:
    assert host_name("API.Example.com:443") == "api.example.com"
    assert host_name("[::1]:8000") == "[::1]"
    assert host_name("[zz::1]") is None
    assert host_name("example.com:123456") is None
