"""The HTTP service at its edges: odd bodies, headers and paths, providers that lie, and event
streams whose values hold line breaks. Every answer is the service's problem JSON or a stream a
line-splitting client still reads right."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

import promptcast as pc
from promptcast.errors import BackendError, ConfigurationError
from promptcast.server import create_app
from promptcast.server.logs import JsonFormatter
from promptcast.server.problems import problem_for_error
from promptcast.testing import FakeAnthropic, FakeReply, ScriptedBackend
from tests.conftest import TEST_KEY
from tests.serving import AUTH, TOKEN, metric, running
from tests.test_media import data_url, png

TICKET = {"issue": "Checkout crashes", "urgency": "high", "product": "checkout"}
PATH = "/v1/tasks/extract_ticket"
JSON = {"content-type": "application/json", **AUTH}


def scripted_app(model: str, **options: Any) -> Any:
    """The built-ins, each pinned to the scripted `model`, behind the test token."""
    registry = pc.TaskRegistry({n: t.with_model(model) for n, t in pc.builtin_tasks().items()})
    return create_app(registry, **{"tokens": [TOKEN], **options})


@pytest.fixture
def serve() -> Iterator[Any]:
    """`serve(backend)`: a server whose tasks all call `backend`; yields its base URL."""
    servers: list[Any] = []

    def start(backend: ScriptedBackend, **options: Any) -> str:
        pc.configure(backends={"test/edge": backend})
        server = running(scripted_app("test/edge", **options))
        servers.append(server)
        url: str = server.__enter__()
        return url

    yield start
    for server in reversed(servers):
        server.__exit__(None, None, None)


def sse_events(response: httpx.Response) -> list[tuple[str, Any]]:
    """(event, JSON data) pairs, read as most clients do: line by line with httpx."""
    found: list[tuple[str, Any]] = []
    kind, data = "message", ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif not line and data:
            found.append((kind, json.loads(data)))
            kind, data = "message", ""
    return found


def raw_request(url: str, head: bytes, body: bytes = b"") -> bytes:
    """Send exact bytes and read the whole answer (`Connection: close`)."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + b"\r\nHost: localhost\r\nConnection: close\r\n\r\n" + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


# server-sent events: a value with a line break must not break the event framing

# every character `str.splitlines` (so httpx's `iter_lines`) breaks a line at, plus SSE's own
BREAKS = ["\n", "\r", "\r\n", "\n\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85"]
BREAKS += ["\u2028", "\u2029", "data: x\n\nevent: final\n"]


@pytest.mark.parametrize("brk", BREAKS, ids=[repr(b) for b in BREAKS])
@pytest.mark.parametrize("task", ["extract_ticket", "summarize"])
def test_stream_events_keep_their_framing_whatever_the_values_hold(
    serve: Any, brk: str, task: str
) -> None:
    answers: dict[str, dict[str, Any]] = {
        "extract_ticket": {**TICKET, "issue": f"before{brk}after"},
        "summarize": {"summary": f"one{brk}two", "key_points": [f"a{brk}b", brk]},
    }
    values = answers[task]
    url = serve(ScriptedBackend(lambda request: values, chunk_chars=3))
    inputs = {"extract_ticket": {"message": "m"}, "summarize": {"text": "t"}}[task]
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        response = client.post(f"/v1/tasks/{task}/stream", json=inputs)
    assert response.status_code == 200, response.text
    found = sse_events(response)
    kinds = [kind for kind, _ in found]
    assert kinds[-1] == "final" and set(kinds) == {"partial", "final"}, kinds
    assert found[-1][1]["output"] == values
    for kind, data in found[:-1]:  # each partial is a prefix of the answer, never a torn line
        assert isinstance(data, dict), (kind, data)


# bearer tokens


def test_the_401_says_how_to_send_the_token(serve: Any) -> None:
    url = serve(ScriptedBackend([TICKET]))
    response = httpx.post(url + PATH, json={"message": "m"})
    assert response.status_code == 401
    detail = response.json()["detail"]
    assert "Bearer" in detail and "PROMPTCAST_API_TOKENS" in detail, detail
    assert "[REDACTED]" not in detail


@pytest.mark.parametrize(
    "tokens",
    [(TOKEN, "wrong"), ("wrong", TOKEN), (TOKEN, TOKEN), ("wrong", "wrong")],
    ids=["good-bad", "bad-good", "good-good", "bad-bad"],
)
def test_two_authorization_headers_are_refused_whatever_their_order(
    serve: Any, tokens: tuple[str, str]
) -> None:
    """One request, one credential: a proxy that checks the first header and a server that
    checks the last must not disagree about who is calling."""
    url = serve(ScriptedBackend(lambda request: TICKET))
    body = b'{"message": "m"}'
    head = (
        b"POST " + PATH.encode() + b" HTTP/1.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"Authorization: Bearer " + tokens[0].encode() + b"\r\n"
        b"Authorization: Bearer " + tokens[1].encode()
    )
    answer = raw_request(url, head, body)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] == b"401", answer[:300]
    problem = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert problem["type"] == "urn:promptcast:problem:unauthorized"
    assert "one Authorization header" in problem["detail"]


# a call that fails in an unexpected way


class BreaksMidStream(ScriptedBackend):
    """Streams `chunks` of a reply, then raises an exception no backend should let out."""

    def __init__(self, chunks: list[str]) -> None:
        super().__init__(lambda request: RuntimeError(f"bug in a backend; key {FAKE_KEY}"))
        self.chunks = chunks

    async def astream(self, request: Any) -> Any:
        from promptcast.backends.base import StreamDelta

        for chunk in self.chunks:
            yield StreamDelta(chunk)
        raise RuntimeError(f"bug in a backend; key {FAKE_KEY}")


FAKE_KEY = "sk-ant-api03-" + "k" * 40


@pytest.mark.parametrize(
    ("route", "chunks"),
    [
        (PATH, []),
        (PATH + "/stream", []),
        (PATH + "/stream", ['{"issue": "Checkout']),
        (PATH + "/stream", ['{"issue": "a", ', '"urgency']),
    ],
)
def test_an_unexpected_failure_is_a_problem_naming_the_task_counted_once(
    serve: Any, route: str, chunks: list[str]
) -> None:
    url = serve(BreaksMidStream(chunks))
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        response = client.post(route, json={"message": "m"})  # no torn body
        scraped = client.get("/metrics").text
    assert "Traceback" not in response.text and FAKE_KEY not in response.text
    if chunks:
        assert response.status_code == 200
        kinds = [kind for kind, _ in sse_events(response)]
        assert kinds[0] == "partial" and kinds[-1] == "error", kinds
        problem = sse_events(response)[-1][1]
    else:
        assert response.status_code == 500
        problem = response.json()
    assert problem["type"] == "urn:promptcast:problem:internal-error"
    assert problem["status"] == 500 and problem["request_id"] == response.headers["x-request-id"]
    assert problem["task"] == "extract_ticket"
    labels = {"task": "extract_ticket", "model": "test/edge"}
    assert metric(scraped, "promptcast_task_calls_total", status="500", **labels) == 1
    assert metric(scraped, "promptcast_task_calls_total", status="499", **labels) == 0
    assert metric(scraped, "promptcast_calls_in_flight") == 0


# a provider that answers with something else than its API's reply


LIES = {
    "html-page": FakeReply(raw=b"<html><body>502 Bad Gateway</body></html>"),
    "truncated-json": FakeReply(raw=b'{"id": "msg_1", "type": "message", "content": [{"ty'),
    "wrong-shape": FakeReply(body={"hello": "world"}),
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_a_provider_that_answers_garbage_is_not_called_unreachable(
    lie: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPTCAST_MAX_RETRIES", "0")
    monkeypatch.setenv("ANTHROPIC_API_KEY", TEST_KEY)
    with FakeAnthropic() as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        fake.reply(*[LIES[lie]] * 3)
        with running(create_app(tokens=[TOKEN])) as url:
            response = httpx.post(url + PATH, json={"message": "m"}, headers=AUTH, timeout=30)
    assert response.status_code == 502, response.text
    problem = response.json()
    assert problem["type"] == "urn:promptcast:problem:provider-error"
    assert problem["task"] == "extract_ticket"
    assert "sent no usable reply" in problem["detail"], problem["detail"]


def test_an_unreachable_or_silent_provider_is_told_apart(
    silent_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPTCAST_MAX_RETRIES", "0")
    monkeypatch.setenv("PROMPTCAST_TIMEOUT_S", "0.5")
    monkeypatch.setenv("ANTHROPIC_API_KEY", TEST_KEY)
    found = {}
    for name, base in {"refused": closed_port(), "silent": silent_server}.items():
        monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{base}")
        pc.reset_defaults()
        with running(create_app(tokens=[TOKEN])) as url:
            response = httpx.post(url + PATH, json={"message": "m"}, headers=AUTH, timeout=30)
        found[name] = (response.status_code, response.json()["detail"])
    assert found["refused"][0] == 502 and "could not be reached" in found["refused"][1]
    assert found["silent"][0] == 504 and "did not answer in time" in found["silent"][1], found


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# bodies in other encodings

TEXT = '{"message": "Die Kasse stürzt ab, 5 €"}'


@pytest.mark.parametrize("route", [PATH, PATH + "/stream"])
def test_a_utf8_body_with_a_byte_order_mark_is_read(serve: Any, route: str) -> None:
    backend = ScriptedBackend(lambda request: TICKET)
    url = serve(backend)
    body = b"\xef\xbb\xbf" + TEXT.encode()
    response = httpx.post(url + route, content=body, headers=JSON, timeout=30)
    assert response.status_code == 200, response.text
    (request,) = backend.requests
    assert "Die Kasse stürzt ab, 5 €" in repr(request.prompt)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "cp1252"])
@pytest.mark.parametrize("route", [PATH, PATH + "/stream"])
def test_a_body_not_in_utf8_gets_a_422_saying_so(serve: Any, encoding: str, route: str) -> None:
    url = serve(ScriptedBackend([]))
    response = httpx.post(url + route, content=TEXT.encode(encoding), headers=JSON, timeout=30)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["task"] == "extract_ticket" and problem["field"] == "body"
    assert "not UTF-8" in problem["detail"], problem["detail"]


# log lines


@pytest.mark.parametrize("brk", ["\x85", "\u2028", "\u2029", "\n", "\r"], ids=repr)
def test_each_log_line_stays_one_line_whatever_the_request_holds(
    serve: Any, brk: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="promptcast.server")  # DEBUG: the inputs are logged too
    url = serve(ScriptedBackend(lambda request: TICKET))
    message = f"line one{brk}line two"
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        assert client.post(PATH, json={"message": message}).status_code == 200
        missing = client.post(f"/v1/tasks/no{quote(brk)}such", json={})
        assert missing.status_code == 404
    lines = [
        JsonFormatter().format(r)
        for r in caplog.records
        if r.name == "promptcast.server" and getattr(r, "event", None) == "request"
    ]
    assert len(lines) == 2
    for line in lines:
        assert line.splitlines() == [line], line
    called, unknown = (json.loads(line) for line in lines)
    assert called["inputs"]["message"] == message
    assert unknown["path"] == f"/v1/tasks/no{brk}such"


# Host headers


@pytest.mark.parametrize(
    "hosts",
    [
        ("evil.example", "localhost"),
        ("localhost", "evil.example"),
        ("api.example.com", "evil.example"),
        ("evil.example", "api.example.com"),
        ("localhost", "localhost"),
    ],
    ids=["evil-first", "evil-last", "allowed-first", "allowed-last", "same-twice"],
)
def test_two_host_headers_are_refused_whatever_their_order(
    serve: Any, hosts: tuple[str, str]
) -> None:
    url = serve(ScriptedBackend(lambda request: TICKET), allowed_hosts=["api.example.com"])
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        request = f"GET /v1/tasks HTTP/1.1\r\nHost: {hosts[0]}\r\nHost: {hosts[1]}\r\n"
        sock.sendall(
            f"{request}Connection: close\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split()[1] == b"421", answer[:300]
    problem = json.loads(body)
    assert problem["type"] == "urn:promptcast:problem:host-not-allowed"
    assert f"{hosts[0]}, {hosts[1]}" in problem["detail"]


# clients that leave


@pytest.mark.parametrize("route", [PATH, PATH + "/stream"])
def test_a_client_that_leaves_while_waiting_in_line_costs_no_provider_call(
    serve: Any, route: str
) -> None:
    calls: list[str] = []

    async def slow(request: Any) -> dict[str, Any]:
        calls.append(repr(request.prompt))
        await asyncio.sleep(1.0)
        return TICKET

    url = serve(ScriptedBackend(slow), max_concurrency=1)
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        holder = threading.Thread(
            target=client.post, args=(route,), kwargs={"json": {"message": "first"}}
        )
        holder.start()
        time.sleep(0.2)  # the first call holds the only slot
        for _ in range(3):
            with pytest.raises(httpx.ReadTimeout):
                client.post(route, json={"message": "gone"}, timeout=httpx.Timeout(10, read=0.1))
        holder.join()
        time.sleep(0.5)  # a call the server failed to cancel would start now
        scraped = client.get("/metrics").text
    assert len(calls) == 1 and "first" in calls[0], calls
    labels = {"task": "extract_ticket", "model": "test/edge"}
    assert metric(scraped, "promptcast_task_calls_total", status="499", **labels) == 3
    assert metric(scraped, "promptcast_task_calls_total", status="200", **labels) == 1
    assert metric(scraped, "promptcast_http_responses_total", status="499") == 3
    assert metric(scraped, "promptcast_calls_waiting") == 0
    assert metric(scraped, "promptcast_calls_in_flight") == 0


# probes


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_answer_head_as_get_without_a_body(serve: Any, path: str) -> None:
    url = serve(ScriptedBackend(lambda request: TICKET))
    with httpx.Client(base_url=url, timeout=30) as client:
        got, head = client.get(path), client.head(path)
    assert got.status_code == head.status_code, (got.text, head.text)
    assert head.content == b"" and head.headers["content-type"] == got.headers["content-type"]


# model output no UTF-8 encoder takes


@pytest.mark.parametrize(
    "value", ["\ud83d", "\udc00", "\U0001f600"], ids=["lone-high", "lone-low", "pair"]
)
@pytest.mark.parametrize("route", [PATH, PATH + "/stream"])
def test_a_lone_surrogate_in_the_output_is_sent_as_its_json_escape(
    serve: Any, route: str, value: str
) -> None:
    """A model that cuts an emoji's escape pair in half: the JSON reply holds `\\ud83d` alone,
    which json reads into a str that no UTF-8 encoder (nor pydantic's serializer) takes."""
    reply = json.dumps({**TICKET, "issue": f"a{value}b"})  # ASCII: each half as its escape
    url = serve(ScriptedBackend(lambda request: reply, chunk_chars=4))
    response = httpx.post(url + route, json={"message": "m"}, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    if route.endswith("/stream"):
        found = sse_events(response)
        assert [kind for kind, _ in found][-1] == "final"
        output = found[-1][1]["output"]
    else:
        output = json.loads(response.content)["output"]
    assert output["issue"] == f"a{value}b"


# a key sent where a name goes


KEY = "sk-ant-api03-" + "Q" * 40


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (PATH, {"message": "m", KEY: 1}),  # an undeclared input named by a key
        ("/v1/tasks/answer_product_question", {"question": "q", "documents": {KEY: 1}}),
        (f"/v1/tasks/{KEY}", {}),  # a key as the task name
        (f"{PATH}/{KEY}", {}),  # under a task's path
    ],
    ids=["input-name", "pointer", "task-name", "sub-path"],
)
def test_a_key_sent_as_a_name_is_not_echoed_in_the_problem(
    serve: Any, path: str, body: dict[str, Any]
) -> None:
    url = serve(ScriptedBackend(lambda request: TICKET))
    response = httpx.post(url + path, json=body, headers=AUTH, timeout=30)
    assert response.status_code in (404, 422), response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "Q" * 20 not in response.text, response.text


def test_a_key_in_a_redirected_path_stays_out_of_the_log_record(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A trailing slash gets a 307 for any path: its log record (whatever formats it) must not
    carry a key sent in that path."""
    caplog.set_level("INFO", logger="promptcast.server")
    url = serve(ScriptedBackend(lambda request: TICKET))
    response = httpx.post(f"{url}/v1/tasks/{KEY}/", json={}, headers=AUTH, timeout=30)
    assert response.status_code == 307
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "request"]
    assert "Q" * 20 not in record.getMessage() and "Q" * 20 not in getattr(record, "path", "")


# metrics when a fallback answers


@pytest.mark.parametrize("route", [PATH, PATH + "/stream"])
def test_each_provider_request_is_counted_under_the_model_it_went_to(route: str) -> None:
    down = BackendError("overloaded", provider="test", status=503, retryable=True)
    first = ScriptedBackend([down], tokens=(0, 0))
    second = ScriptedBackend([TICKET], tokens=(100, 20))
    pc.configure(
        backends={"test/first": first, "test/second": second},
        fallbacks=["test/second"],
        max_retries=0,
    )
    task = pc.builtin_tasks()["extract_ticket"].with_model("test/first")
    app = create_app(pc.TaskRegistry({"extract_ticket": task}), tokens=[TOKEN])
    with running(app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        response = client.post(route, json={"message": "m"})
        scraped = client.get("/metrics").text
    assert response.status_code == 200, response.text
    assert len(first.requests) == 1 and len(second.requests) == 1
    for model, requests, tokens_in in (("test/first", 1, 0), ("test/second", 1, 100)):
        labels = {"task": "extract_ticket", "model": model}
        assert metric(scraped, "promptcast_provider_requests_total", **labels) == requests, model
        assert metric(scraped, "promptcast_tokens_total", kind="input", **labels) == tokens_in


@pytest.mark.parametrize("route", [PATH, PATH + "/stream"])
def test_a_failed_calls_provider_requests_and_tokens_are_counted(route: str) -> None:
    """During an outage the request counter must show the load sent, not stop at zero."""
    first = ScriptedBackend(["not json", "still not json"], tokens=(40, 7))  # spends, invalid
    down = BackendError("overloaded", provider="test", status=503, retryable=True)
    second = ScriptedBackend([down], tokens=(0, 0))
    pc.configure(
        backends={"test/first": first, "test/second": second},
        fallbacks=["test/second"],
        max_retries=0,
        max_attempts=2,
    )
    task = pc.builtin_tasks()["extract_ticket"].with_model("test/first")
    app = create_app(pc.TaskRegistry({"extract_ticket": task}), tokens=[TOKEN])
    with running(app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        response = client.post(route, json={"message": "m"})
        scraped = client.get("/metrics").text
    if response.status_code == 200:  # the stream began (a restart event): it ends in error
        assert [kind for kind, _ in sse_events(response)][-1] == "error"
    else:
        assert response.status_code in (502, 503), response.text
    for model, requests, tokens_in in (("test/first", 2, 80), ("test/second", 1, 0)):
        labels = {"task": "extract_ticket", "model": model}
        assert metric(scraped, "promptcast_provider_requests_total", **labels) == requests, model
        assert metric(scraped, "promptcast_tokens_total", kind="input", **labels) == tokens_in


# readiness


@pytest.mark.parametrize("where", ["config", "task file"])
def test_not_ready_while_a_fallback_cannot_be_called(
    where: str, write_task: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every call checks its fallbacks' keys before its first request: a fallback without its
    key fails every call (503), so /readyz must not say ready."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    fallback = "openai/gpt-4o-mini"
    pc.configure(
        backends={"test/edge": ScriptedBackend(lambda request: "fine")},
        fallbacks=[fallback] if where == "config" else [],
    )
    listed = f"fallbacks: [{fallback}]\n" if where == "task file" else ""
    path = write_task("echo", f"---\nmodel: test/edge\n{listed}---\nSay {{{{ 1 }}}}\n")
    app = create_app(pc.TaskRegistry(pc.load_tasks(path.parent)), tokens=[TOKEN])
    with running(app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        ready = client.get("/readyz")
        called = client.post("/v1/tasks/echo", json={})
    assert called.status_code == 503, called.text
    assert called.json()["task"] == "echo"
    assert ready.status_code == 503, ready.text
    assert ready.json()["type"] == "urn:promptcast:problem:not-ready"


# DEBUG log lines


@pytest.mark.parametrize("route", [PATH, PATH + "/stream"])
def test_the_debug_log_line_describes_media_without_its_data(
    serve: Any, route: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="promptcast.server")
    url = serve(ScriptedBackend(lambda request: TICKET))
    image = png(3, 3)
    inputs = {"message": "It crashed", "screenshot": data_url(image)}
    response = httpx.post(url + route, json=inputs, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    (line,) = [
        json.loads(JsonFormatter().format(r))
        for r in caplog.records
        if getattr(r, "event", None) == "request"
    ]
    assert line["inputs"]["message"] == "It crashed"
    assert base64.b64encode(image).decode() not in json.dumps(line)
    assert "image/png" in json.dumps(line["inputs"]["screenshot"])


# a call refused by the task's own checks, after the route's


@pytest.mark.parametrize("route", [PATH, PATH + "/stream"])
def test_media_over_the_per_call_limit_get_413_and_give_their_slot_back(
    serve: Any, route: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each image passes the route's checks, all of a call's together do not (the task checks
    that when the call starts): a 413 each time, and the concurrency slot is free again."""
    monkeypatch.setattr("promptcast.media.MAX_REQUEST_MEDIA_BYTES", 10)
    url = serve(ScriptedBackend(lambda request: TICKET), max_concurrency=1)
    inputs = {"message": "It crashed", "screenshot": data_url(png(3, 3))}
    with httpx.Client(base_url=url, headers=AUTH, timeout=10) as client:
        for _ in range(2):
            refused = client.post(route, json=inputs)
            assert refused.status_code == 413, refused.text
            assert refused.json()["type"] == "urn:promptcast:problem:media-too-large"
            assert refused.json()["task"] == "extract_ticket"
        assert client.post(route, json={"message": "m"}).status_code == 200
        scraped = client.get("/metrics").text
    assert metric(scraped, "promptcast_calls_in_flight") == 0
    assert metric(scraped, "promptcast_http_responses_total", status="500") == 0


# create_app's own limits


@pytest.mark.parametrize("name", ["max_concurrency", "max_body_bytes"])
@pytest.mark.parametrize("value", [0, -1, 2.5, True, "8"])
def test_create_app_refuses_a_limit_no_call_could_pass(name: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=rf"create_app\({name}=") as refused:
        create_app(tokens=[TOKEN], **{name: value})
    assert refused.value.env_var == f"PROMPTCAST_{name.upper()}"


@pytest.mark.parametrize("name", ["tokens", "allowed_hosts"])
@pytest.mark.parametrize("value", ["secret-token-123", b"secret-token-123"])
def test_create_app_refuses_one_string_for_a_list(name: str, value: Any) -> None:
    """A string is an iterable of one-character strings: as tokens, 'Bearer s' would pass."""
    with pytest.raises(ConfigurationError, match=rf"create_app\({name}=…\) takes a list"):
        create_app(**{name: value})


@pytest.mark.parametrize("configured", [f"{TOKEN}\n", f"  {TOKEN}\t", f"\r\n{TOKEN}\r\n"])
def test_a_token_given_with_surrounding_whitespace_still_lets_its_caller_in(
    configured: str,
) -> None:
    """`tokens=[Path("token").read_text()]`: the file's newline is not part of the token."""
    pc.configure(backends={"test/edge": ScriptedBackend(lambda request: TICKET)})
    with running(scripted_app("test/edge", tokens=[configured, "  "])) as url:
        allowed = httpx.get(f"{url}/v1/tasks", headers=AUTH, timeout=30)
        blank = httpx.get(f"{url}/v1/tasks", headers={"authorization": "Bearer"}, timeout=30)
    assert allowed.status_code == 200, allowed.text
    assert blank.status_code == 401


@pytest.mark.parametrize("route", [PATH, PATH + "/stream"])
@pytest.mark.parametrize(
    "content_type", ["text/plain", "multipart/form-data; boundary=x", "application/jsonx", None]
)
def test_a_415_is_counted_and_logged_as_the_tasks(
    serve: Any, route: str, content_type: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="promptcast.server")
    url = serve(ScriptedBackend([]))
    headers = {**AUTH, **({"content-type": content_type} if content_type else {})}
    with httpx.Client(base_url=url, timeout=30) as client:
        refused = client.post(route, content=b'{"message": "m"}', headers=headers)
        scraped = client.get("/metrics", headers=AUTH).text
    assert refused.status_code == 415 and refused.json()["task"] == "extract_ticket"
    labels = {"task": "extract_ticket", "model": "test/edge"}
    assert metric(scraped, "promptcast_task_calls_total", status="415", **labels) == 1
    (line,) = [
        r
        for r in caplog.records
        if getattr(r, "event", None) == "request" and getattr(r, "status", None) == 415
    ]
    assert getattr(line, "task", None) == "extract_ticket"
    assert getattr(line, "error", None) == "unsupported-media-type"


@pytest.mark.parametrize(
    ("error", "status", "said"),
    [
        (BackendError("no complete reply", provider="p", timed_out=True), 504, "in time"),
        (BackendError("cannot reach p (ReadTimeout: timed out)", provider="p"), 504, "in time"),
        (BackendError("cannot reach p (ConnectError)", provider="p"), 502, "be reached"),
        (BackendError("p sent a reply that is not its API's shape", provider="p"), 502, "usable"),
        (BackendError("upstream", provider="p", status=504), 504, "HTTP 504"),
    ],
    ids=["deadline", "sdk-timeout", "refused", "garbage", "gateway-504"],
)
def test_provider_failures_get_the_status_and_words_of_what_happened(
    error: BackendError, status: int, said: str
) -> None:
    body, _ = problem_for_error(error)
    assert body["status"] == status and said in body["detail"], body


@pytest.mark.parametrize("route", [PATH, PATH + "/stream"])
@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "GZIP"])
def test_a_compressed_body_gets_a_415_naming_the_coding(
    serve: Any, route: str, coding: str
) -> None:
    """Read as JSON, gzip bytes would get a 422 saying they are not UTF-8."""
    url = serve(ScriptedBackend([]))
    body = gzip.compress(b'{"message": "m"}')
    headers = {**JSON, "content-encoding": coding}
    response = httpx.post(url + route, content=body, headers=headers, timeout=30)
    assert response.status_code == 415, response.text
    assert response.headers["accept-encoding"] == "identity"
    problem = response.json()
    assert problem["task"] == "extract_ticket" and coding.lower() in problem["detail"]
    assert "uncompressed" in problem["detail"]
