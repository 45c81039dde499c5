"""Edges of offline testing: cassettes a hostile or careless hand wrote, bodies that are not
UTF-8, secrets hidden by escaping, and the scripted double misused.

Key-shaped values are assembled at run time, so no secret-looking literal sits in the repository.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import gzip
import json
import random
import string
import threading
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import promptcast as pc
from promptcast.cli import app
from promptcast.testing import FakeReply, FakeServer, ScriptedBackend, recording, replay
from promptcast.testing.cassettes import (
    CassetteInUseError,
    CassetteReadError,
    CassetteWriteError,
    PromptDriftError,
    find_secrets,
)

KEY = "sk-ant-" + "api03-" + "".join(random.Random(7).choices(string.ascii_letters, k=40))


class EchoServer(FakeServer):
    paths = ("/v1/messages",)
    name = "echo"

    def auto(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}


@pytest.fixture
def server() -> Iterator[EchoServer]:
    with EchoServer() as fake:
        yield fake


def post(base_url: str) -> httpx.Response:
    with httpx.Client() as client:
        return client.post(f"{base_url}/v1/messages", json={"model": "m"}, timeout=10)


# --- cassettes that must never be loaded as written ----------------------------------------------


def alias_bomb() -> str:
    lines = ['a: &a ["xxxxxxxxxx", "xxxxxxxxxx", "xxxxxxxxxx", "xxxxxxxxxx", "xxxxxxxxxx"]']
    previous = "a"
    for name in "bcdefghij":
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 10) + "]")
        previous = name
    lines += [
        "interactions:",
        '- request: {method: POST, uri: "http://x/v1/messages", headers: {}, parsed_body: {}}',
        "  response: {status: {code: 200, message: OK}, headers: {}, parsed_body: *j}",
        "version: 1",
    ]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_cassette_is_a_read_error_not_gigabytes(
    tmp_path: Path, server: EchoServer
) -> None:
    """Before: the replay expanded 5e9 strings (MemoryError after seconds, or the OOM killer)."""
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    with pytest.raises(CassetteReadError, match="aliases") as caught, replay(path):
        post(server.base_url)
    assert caught.value.cassette == str(path)


@pytest.mark.parametrize("json_format", [False, True], ids=["yaml", "json"])
def test_a_cassette_nested_too_deep_is_a_read_error_on_replay_and_scan(
    tmp_path: Path, server: EchoServer, json_format: bool
) -> None:
    """Before: a bare RecursionError out of replay() and out of scan-cassettes."""
    body = "[" * 50_000 + "]" * 50_000
    path = tmp_path / ("deep.json" if json_format else "deep.yaml")
    path.write_text(f'{{"interactions": {body}, "version": 1}}')
    # YAML: the loader's own bound; vcrpy's JSON format: json's recursion limit
    match = "RecursionError" if json_format else "nested more than 128 levels deep"
    options = {"serializer": "json"} if json_format else {}
    with pytest.raises(CassetteReadError, match=match) as caught, replay(path, **options):
        post(server.base_url)
    assert caught.value.cassette == str(path)
    assert find_secrets([path]) == []  # scanned as text lines only: nothing to report


def test_a_cassette_as_deep_as_a_recorded_body_gets_still_loads() -> None:
    import yaml

    from promptcast.testing.cassettes import _NoAliasLoader

    nested: object = "leaf"
    for _ in range(60):  # 120 levels: a list in a mapping, 60 times
        nested = {"k": [nested]}
    assert yaml.load(json.dumps({"interactions": nested}), Loader=_NoAliasLoader)


# --- bodies that are not UTF-8 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe\x00binary\x80",
        "caf\xe9 au lait".encode("latin-1"),
        bytes(range(256)),
    ],
    ids=["binary", "latin-1", "all-bytes"],
)
@pytest.mark.parametrize("serializer", ["yaml", "json"])
def test_a_response_body_that_is_not_utf8_replays_byte_for_byte(
    tmp_path: Path, raw: bytes, serializer: str
) -> None:
    """Before: recorded fine, then every replay died in vcrpy with a bare TypeError."""
    reply = FakeReply(raw=raw, headers={"content-type": "application/octet-stream"})
    with EchoServer(handler=lambda request: reply) as fake:
        path = tmp_path / f"cassette.{serializer}"
        with recording(path, serializer=serializer):
            live = post(fake.base_url)
        with replay(path, serializer=serializer):
            replayed = post(fake.base_url)
        assert len(fake.requests) == 1
    assert live.content == raw
    assert replayed.status_code == 200 and replayed.content == raw


# --- the scanner judges decoded values ---------------------------------------------------------


def escaped(text: str, how: str) -> str:
    first = text[0]
    if how == "yaml-x":
        return f"\\x{ord(first):02x}" + text[1:]
    if how == "unicode":
        return f"\\u{ord(first):04x}" + text[1:]
    if how == "all-unicode":
        return "".join(f"\\u{ord(c):04x}" for c in text)
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["yaml-x", "unicode", "all-unicode"])
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_the_scanner_finds_a_key_hidden_by_escapes(tmp_path: Path, how: str, suffix: str) -> None:
    """Before: `\\u0073k-ant-…` (or `\\x73k-…` in YAML) passed `promptcast scan-cassettes`."""
    if suffix == ".json" and how == "yaml-x":
        how = "unicode"  # JSON has no \\x escape
    value = escaped(KEY, how)
    if suffix == ".json":
        text = '{"interactions": [{"response": {"body": {"string": "' + value + '"}}}]}\n'
        line = 1
    else:
        text = f'interactions:\n- response:\n    parsed_body:\n      echo: "{value}"\n'
        line = 4
    path = tmp_path / f"cassette{suffix}"
    path.write_text(text)
    assert KEY not in path.read_text()
    findings = find_secrets([path])
    assert [(f.line, "sk-ant-" in f.what) for f in findings] == [(line, True)]


def test_the_scanner_still_reports_a_plain_key_once(tmp_path: Path) -> None:
    path = tmp_path / "cassette.yaml"
    path.write_text(f"interactions:\n- response:\n    parsed_body:\n      echo: {KEY}\n")
    assert len(find_secrets([path])) == 1


# --- the scripted double misused ---------------------------------------------------------------

LABELS = """---
inputs: {text: str}
output: {label: str, at: str}
model: test/labels
---
Label {{ text }}
"""


@pytest.fixture
def labels(tmp_path: Path) -> pc.Task[Any]:
    (tmp_path / "labels.jinja").write_text(LABELS)
    return pc.Task.from_file(tmp_path / "labels.jinja")


def test_too_few_replies_name_the_task_and_what_to_do(labels: pc.Task[Any]) -> None:
    backend = ScriptedBackend([{"label": "a", "at": "x"}])
    with pc.override(backends={"test/labels": backend}):
        labels.run(text="one")
        with pytest.raises(AssertionError) as caught:
            labels.run(text="two")
    message = str(caught.value)
    assert "request 2 (task 'labels')" in message and "given 1" in message
    assert "add a reply" in message


@pytest.mark.parametrize(
    ("reply", "label"),
    [
        ({"label": "a", "at": datetime.date(2026, 1, 2)}, "2026-01-02"),
        ({"label": "a", "at": datetime.datetime(2026, 1, 2, 3, 4, 5)}, "2026-01-02T03:04:05"),
        ({"label": "a", "at": decimal.Decimal("1.5")}, "1.5"),
        ({"label": "a", "at": uuid.UUID(int=1)}, str(uuid.UUID(int=1))),
        ({"label": "a", "at": Path("x/y")}, "x/y"),
    ],
    ids=["date", "datetime", "decimal", "uuid", "path"],
)
def test_a_reply_with_python_values_is_written_as_json(
    labels: pc.Task[Any], reply: dict[str, Any], label: str
) -> None:
    """Before: json.dumps' bare "Object of type date is not JSON serializable"."""
    with pc.override(backends={"test/labels": ScriptedBackend([reply])}):
        assert labels.run(text="x").output.at == label


def generator_handler(request: Any) -> Any:
    yield {"label": "a", "at": "x"}


@pytest.mark.parametrize(
    ("backend", "what"),
    [
        (lambda: ScriptedBackend([{"label": object()}]), "not JSON"),
        (lambda: ScriptedBackend([lambda: None]), "not JSON"),
        (lambda: ScriptedBackend(generator_handler), "a generator"),
    ],
    ids=["object", "function", "generator-handler"],
)
@pytest.mark.parametrize("call", ["run", "arun"])
def test_a_reply_that_cannot_be_json_says_which_and_what_a_reply_is(
    labels: pc.Task[Any], backend: Any, what: str, call: str
) -> None:
    with pc.override(backends={"test/labels": backend()}), pytest.raises(TypeError) as caught:
        if call == "run":
            labels.run(text="x")
        else:
            asyncio.run(labels.arun(text="x"))
    message = str(caught.value)
    assert "request 1 (task 'labels')" in message and what in message
    assert "a reply is a ModelReply, a pydantic model" in message


@pytest.mark.parametrize("item", [ValueError, ValueError("boom")], ids=["class", "instance"])
def test_an_exception_reply_is_raised_as_class_or_instance(labels: pc.Task[Any], item: Any) -> None:
    """Before: an exception class was "Object of type type is not JSON serializable"."""
    backend = ScriptedBackend([item])
    with pc.override(backends={"test/labels": backend}), pytest.raises(ValueError) as caught:
        labels.run(text="x")
    assert type(caught.value) is ValueError


# --- compressed bodies are scrubbed, or not written ----------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, as some servers send
        ("gzip, gzip", lambda data: gzip.compress(gzip.compress(data))),
    ],
    ids=["gzip", "x-gzip", "deflate", "raw-deflate", "gzip-twice"],
)
def test_a_compressed_response_left_compressed_by_vcrpy_is_decoded_and_scrubbed(
    tmp_path: Path, encoding: str, compress: Any
) -> None:
    """Before: with decode_compressed_response off (or an encoding vcrpy skips), the body went
    to disk compressed, key and all, where neither the scrubber nor the scanner could see it."""
    body = json.dumps({"echo": f"invalid x-api-key {KEY}"}).encode()
    reply = FakeReply(raw=compress(body), headers={"content-encoding": encoding})
    path = tmp_path / "cassette.yaml"
    with EchoServer(handler=lambda request: reply) as fake:
        with recording(path, decode_compressed_response=False):
            post(fake.base_url)
        with replay(path, decode_compressed_response=False):
            replayed = post(fake.base_url)
    assert KEY not in replayed.text and "[REDACTED]" in replayed.json()["echo"]
    assert "content-encoding" not in path.read_text().lower()


@pytest.mark.parametrize("encoding", ["zstd", "br", "compress", "x-custom"])
def test_a_body_in_an_encoding_that_cannot_be_decoded_is_not_written(
    tmp_path: Path, encoding: str
) -> None:
    """Before: written as opaque bytes (a key inside it on disk, unseen by scan-cassettes)."""
    path = tmp_path / "cassette.yaml"
    path.write_text("version: 1\ninteractions: []\n")
    good = path.read_bytes()
    reply = FakeReply(
        raw=b"\x28\xb5\x2f\xfd" + KEY.encode(), headers={"content-encoding": encoding}
    )
    with (
        EchoServer(handler=lambda request: reply) as fake,
        pytest.raises(CassetteWriteError, match=repr(encoding)),
        recording(path),
    ):
        post(fake.base_url)
    assert path.read_bytes() == good


# --- prompt drift that cannot be seen --------------------------------------------------------

GREET = """---
inputs: {name: str}
output: {greeting: str}
model: anthropic/claude-sonnet-4-6
---
Greet {{ name }} warmly.
"""


@pytest.mark.parametrize(
    ("changed", "shown"),
    [
        ("Greet\u00a0{{ name }} warmly.", "+Greet\\u00a0Ada warmly."),
        ("Greet\u2028{{ name }} warmly.", "+Greet\\u2028Ada warmly."),
        ("Greet \u200b{{ name }} warmly.", "+Greet \\u200bAda warmly."),
        ("Greet\t{{ name }} warmly.", "+Greet\\u0009Ada warmly."),
        ("Greet {{ name }} warmly.  \nBye.", "+Greet Ada warmly.\\x20\\x20"),
    ],
    ids=["nbsp", "u2028", "zero-width", "tab", "trailing-spaces"],
)
def test_drift_in_invisible_characters_is_spelled_out(
    tmp_path: Path, fake_anthropic: Any, changed: str, shown: str
) -> None:
    """Before: the diff read `-Greet Ada warmly.` / `+Greet Ada warmly.` (U+2028 even showed as
    a line break the provider never saw)."""
    path = tmp_path / "greet.jinja"
    cassette = tmp_path / "cassette.yaml"
    path.write_text(GREET)
    with recording(cassette):
        pc.Task.from_file(path).run(name="Ada")
    path.write_text(GREET.replace("Greet {{ name }} warmly.", changed))
    with pytest.raises(PromptDriftError) as caught, replay(cassette):
        pc.Task.from_file(path).run(name="Ada")
    lines = str(caught.value).splitlines()
    assert "-Greet Ada warmly." in lines and shown in lines


@pytest.mark.parametrize(
    "sent",
    [
        b"--b\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\n\x00\xff--b--",
        "caf\xe9".encode("latin-1"),
        bytes(range(256)),
    ],
    ids=["multipart-png", "latin-1", "all-bytes"],
)
@pytest.mark.parametrize("serializer", ["yaml", "json"])
def test_a_request_body_that_is_not_utf8_records_and_replays(
    tmp_path: Path, sent: bytes, serializer: str
) -> None:
    """Before: YAML stored it with U+FFFD in place of the bytes, so the replay never matched
    ("No recording" for a request that was recorded); JSON failed to write with a bare
    TypeError after the live call."""
    path = tmp_path / f"cassette.{serializer}"
    with EchoServer() as fake:
        with recording(path, serializer=serializer):
            live = httpx.post(f"{fake.base_url}/v1/messages", content=sent, timeout=10)
        with replay(path, serializer=serializer):
            replayed = httpx.post(f"{fake.base_url}/v1/messages", content=sent, timeout=10)
    assert replayed.status_code == live.status_code and replayed.content == live.content


@pytest.mark.parametrize("folder", ["old.yaml", "fixtures.json", "a/b.yml"])
def test_scan_cassettes_skips_a_folder_named_like_a_cassette(tmp_path: Path, folder: str) -> None:
    """Before: IsADirectoryError and a traceback from `promptcast scan-cassettes`."""
    (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "leak.yaml").write_text(f"interactions:\n- echo: {KEY}\n")
    result = CliRunner().invoke(app, ["scan-cassettes", str(tmp_path)])
    assert result.exit_code == 1 and result.exception is not None
    assert isinstance(result.exception, SystemExit)
    assert f"{tmp_path / 'leak.yaml'}:2:" in result.output


# --- one cassette block at a time across threads -------------------------------------------------


class WhoServer(FakeServer):
    paths = ("/v1/messages",)
    name = "who"

    def auto(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"who": request.get("m")}


@pytest.mark.parametrize("second", ["replay", "recording"])
def test_a_cassette_block_in_a_second_thread_is_refused_and_nothing_goes_live(
    tmp_path: Path, second: str
) -> None:
    """Before: the second thread's requests were matched against the first thread's cassette
    ("no recording" naming the wrong file), and when one block ended it unpatched the other's,
    whose requests then went to the network."""
    first, other = tmp_path / "a.yaml", tmp_path / "b.yaml"
    with WhoServer() as fake:
        for path, tag in ((first, "a"), (other, "b")):
            with recording(path):
                httpx.post(f"{fake.base_url}/v1/messages", json={"m": tag}, timeout=10)
        live = len(fake.requests)
        errors: list[BaseException] = []
        inside, done = threading.Event(), threading.Event()

        def hold() -> None:
            with replay(first):
                inside.set()
                done.wait(10)
                reply = httpx.post(f"{fake.base_url}/v1/messages", json={"m": "a"}, timeout=10)
                assert reply.json() == {"who": "a"}

        def enter() -> None:
            block = replay(other) if second == "replay" else recording(tmp_path / "c.yaml")
            try:
                with block:
                    httpx.post(f"{fake.base_url}/v1/messages", json={"m": "b"}, timeout=10)
            except BaseException as exc:
                errors.append(exc)

        holder = threading.Thread(target=hold)
        holder.start()
        assert inside.wait(10)
        intruder = threading.Thread(target=enter)
        intruder.start()
        intruder.join(10)
        done.set()
        holder.join(10)
        assert len(fake.requests) == live
    assert [type(e) for e in errors] == [CassetteInUseError]
    assert str(first) in str(errors[0]) and "pytest-xdist" in str(errors[0])
    assert not (tmp_path / "c.yaml").exists()


def test_cassette_blocks_still_nest_in_one_thread_and_follow_each_other(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    with WhoServer() as fake:
        with recording(path):
            httpx.post(f"{fake.base_url}/v1/messages", json={"m": "a"}, timeout=10)
        for _ in range(2):
            with replay(path), replay(path):
                reply = httpx.post(f"{fake.base_url}/v1/messages", json={"m": "a"}, timeout=10)
            assert reply.json() == {"who": "a"}
        assert len(fake.requests) == 1
