"""One set of credential patterns: the scanner finds, and the scrubber removes, every class of
secret the backends can meet, in YAML and JSON cassettes; real recordings have no findings.

Secrets are assembled from pieces at run time (a seeded random body after each format's prefix),
so no key-shaped literal sits in the repository.
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from promptcast import _secrets
from promptcast.testing import FakeReply, FakeServer
from promptcast.testing.cassettes import find_secrets, recording, replay
from tests.conftest import ROOT

ALNUM = string.ascii_letters + string.digits
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"


def rand(label: str, n: int, alphabet: str = ALNUM) -> str:
    """A fixed random-looking body for `label` (the same on every run)."""
    rng = random.Random(label)
    return "".join(rng.choice(alphabet) for _ in range(n))


@dataclass(frozen=True)
class Planted:
    """A secret (`secret` must vanish) and where it travels: a request header, a response
    header, the URL's query, the request body or the response body."""

    label: str
    where: str  # "request_header" | "response_header" | "query" | "request_body" | "response_body"
    name: str  # header, query parameter or body field name
    value: str  # what is sent (may carry context such as "Bearer ")
    secret: str  # the part that must not survive


def planted() -> list[Planted]:
    sigv4_id = "AK" + "IA" + rand("sigv4-id", 16, string.ascii_uppercase + string.digits)
    sigv4_sig = rand("sigv4-sig", 64, HEX)
    sigv4 = (
        f"AWS4-HMAC-SHA256 Credential={sigv4_id}/20250101/us-east-1/bedrock/aws4_request, "
        f"SignedHeaders=host;x-amz-date, Signature={sigv4_sig}"
    )
    openai = "sk-" + "proj-" + rand("openai", 48, ALNUM + "_-")
    anthropic = "sk-" + "ant-" + "api03-" + rand("anthropic", 60, ALNUM + "_-")
    google = "AI" + "za" + rand("google", 35, ALNUM + "_-")
    google_query = "AI" + "za" + rand("google-query", 35, ALNUM + "_-")
    session_token = "IQoJb3JpZ2lu" + "X2VjE" + rand("sts", 200, B64)
    jwt = ".".join(
        [
            "ey" + "J" + rand("jwt-head", 30, ALNUM + "_-"),
            "ey" + "J" + rand("jwt-body", 60, ALNUM + "_-"),
            rand("jwt-sig", 43, ALNUM + "_-"),
        ]
    )
    basic = base64.b64encode(("user:" + rand("basic", 12)).encode()).decode()
    prefixed = {
        "groq": "gs" + "k_" + rand("groq", 52),
        "huggingface": "h" + "f_" + rand("hf", 34),
        "xai": "xa" + "i-" + rand("xai", 80),
        "perplexity": "ppl" + "x-" + rand("pplx", 48),
        "replicate": "r" + "8_" + rand("r8", 37),
        "github": "gh" + "p_" + rand("ghp", 36),
        "github-fine-grained": "github" + "_pat_" + rand("ghpat", 82, ALNUM + "_"),
        "gitlab": "gl" + "pat-" + rand("glpat", 20, ALNUM + "_-"),
        "openrouter": "sk-" + "or-v1-" + rand("openrouter", 64, HEX),
        "cerebras": "cs" + "k-" + rand("cerebras", 48),
        "nvidia": "nva" + "pi-" + rand("nvidia", 64, ALNUM + "_-"),
        "fireworks": "f" + "w_" + rand("fireworks", 24),
        "deepseek": "sk-" + rand("deepseek", 32, HEX),
        "google-oauth": "ya" + "29." + rand("ya29", 120, ALNUM + "_-"),
    }
    items = [
        Planted("bearer header", "request_header", "authorization", "Bearer " + openai, openai),
        Planted("anthropic header", "request_header", "x-api-key", anthropic, anthropic),
        Planted("azure api-key", "request_header", "api-key", rand("azure", 32, HEX), ""),
        Planted("x-goog-api-key", "request_header", "x-goog-api-key", google, google),
        Planted(
            "bedrock session token",
            "request_header",
            "x-amz-security-token",
            session_token,
            session_token,
        ),
        Planted("sigv4 authorization", "request_header", "Authorization", sigv4, sigv4_sig),
        Planted("cookie", "request_header", "cookie", "session=" + rand("cookie", 32), ""),
        Planted(
            "proxy basic auth", "request_header", "proxy-authorization", "Basic " + basic, basic
        ),
        Planted(
            "openai organization",
            "request_header",
            "openai-organization",
            "org-" + rand("org", 24),
            "",
        ),
        Planted(
            "set-cookie",
            "response_header",
            "set-cookie",
            "__cf_bm=" + rand("cf", 43, ALNUM + "._") + "; path=/; HttpOnly; Secure",
            "",
        ),
        Planted(
            "anthropic organization id",
            "response_header",
            "anthropic-organization-id",
            rand("anthropic-org", 36, HEX + "-"),
            "",
        ),
        Planted("?key= (Gemini)", "query", "key", google_query, google_query),
        Planted("?api_key=", "query", "api_key", rand("api_key-query", 40), ""),
        Planted("?access_token=", "query", "access_token", rand("access_token", 40), ""),
        Planted(
            "aws_secret_access_key field",
            "request_body",
            "aws_secret_access_key",
            rand("aws-secret", 40, B64),
            "",
        ),
        Planted("api_key field", "request_body", "api_key", rand("api_key-field", 40), ""),
        Planted(
            "AWS access key id in text",
            "request_body",
            "note",
            "the key " + "AK" + "IA" + rand("akia", 16, string.ascii_uppercase + string.digits),
            "",
        ),
        Planted(
            "AWS temporary key id in text",
            "request_body",
            "note2",
            "temp " + "AS" + "IA" + rand("asia", 16, string.ascii_uppercase + string.digits),
            "",
        ),
        Planted("JWT in text", "request_body", "note3", f"token {jwt} expired", jwt),
        Planted(
            "private key",
            "request_body",
            "note4",
            "-----BEGIN PRIVATE KEY-----\n" + rand("pem", 64, B64) + "\n-----END PRIVATE KEY-----",
            "",
        ),
        Planted(
            "database URL password",
            "request_body",
            "note5",
            "postgres://app:" + rand("dbpass", 20) + "@db.internal:5432/app",
            "",
        ),
        Planted(
            "SecretAccessKey (STS reply)",
            "response_body",
            "SecretAccessKey",
            rand("sts-secret", 40, B64),
            "",
        ),
        Planted(
            "SessionToken (STS reply)",
            "response_body",
            "SessionToken",
            "FwoGZXIvYXdz" + rand("sts-old", 180, B64),
            "",
        ),
        Planted(
            "lower-case bearer in an error",
            "response_body",
            "message",
            "invalid bearer " + rand("error-bearer", 40, ALNUM + "._-") + " for this org",
            "",
        ),
        Planted(
            "BEARER in an error",
            "response_body",
            "detail",
            "BEARER " + rand("error-bearer-2", 30) + " rejected",
            "",
        ),
        *(
            Planted(f"{provider} key in text", "response_body", provider, f"key {key} leaked", key)
            for provider, key in prefixed.items()
        ),
    ]
    return [_with_secret(item) for item in items]


def _with_secret(item: Planted) -> Planted:
    """Items planted without an explicit secret: the token after the context words."""
    if item.secret:
        return item
    value = item.value
    for context in ("the key ", "temp ", "session=", "__cf_bm=", "invalid bearer ", "BEARER "):
        if value.startswith(context):
            value = value[len(context) :]
    if value.startswith("-----BEGIN"):
        value = value.splitlines()[1]
    if value.startswith("postgres://"):
        value = value.split(":")[2].split("@")[0]
    token = value.split()[0].rstrip(";")
    return Planted(item.label, item.where, item.name, item.value, token)


PLANTED = planted()


def test_the_catalogue_covers_every_class() -> None:
    assert len(PLANTED) >= 26
    assert len({p.secret for p in PLANTED}) == len(PLANTED)
    assert {p.where for p in PLANTED} == {
        "request_header",
        "response_header",
        "query",
        "request_body",
        "response_body",
    }


def raw_cassette() -> dict[str, Any]:
    """A vcrpy-shaped cassette holding every planted secret, unscrubbed."""
    query = "&".join(f"{p.name}={p.value}" for p in PLANTED if p.where == "query")
    return {
        "version": 1,
        "interactions": [
            {
                "request": {
                    "method": "POST",
                    "uri": f"https://gateway.example/v1/messages?alt=json&{query}",
                    "headers": {
                        "content-type": ["application/json"],
                        **{p.name: [p.value] for p in PLANTED if p.where == "request_header"},
                    },
                    "parsed_body": {
                        "model": "claude-sonnet-4-6",
                        **{p.name: p.value for p in PLANTED if p.where == "request_body"},
                    },
                },
                "response": {
                    "status": {"code": 200, "message": "OK"},
                    "headers": {
                        "request-id": ["req_011CVabcdefGHIJKLmnop"],
                        **{p.name: [p.value] for p in PLANTED if p.where == "response_header"},
                    },
                    "parsed_body": {
                        "id": "msg_01XyZabcdefGHIJKLmnopQRS",
                        **{p.name: p.value for p in PLANTED if p.where == "response_body"},
                    },
                },
            }
        ],
    }


def write_raw(path: Path) -> str:
    data = raw_cassette()
    if path.suffix == ".json":
        text = json.dumps(data, indent=2)
    else:
        text = yaml.safe_dump(data, sort_keys=False, width=10**6, allow_unicode=True)
    path.write_text(text)
    return text


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_the_scanner_finds_every_planted_secret(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"leaky{suffix}"
    text = write_raw(path)
    flagged = {finding.line for finding in find_secrets([path])}
    lines = text.splitlines()
    missed = [
        p.label
        for p in PLANTED
        if not flagged & {i for i, line in enumerate(lines, 1) if p.secret in line}
    ]
    assert missed == [], f"{len(missed)} of {len(PLANTED)} planted secrets not found"


@pytest.mark.parametrize("item", PLANTED, ids=[p.label for p in PLANTED])
def test_scrub_removes_each_secret_and_keeps_its_context(item: Planted) -> None:
    line = f"{item.name}: {item.value}" if "header" in item.where else item.value
    if item.where == "query":
        line = f"GET https://gateway.example/v1?{item.name}={item.value}&alt=json"
    if item.where == "request_body" and item.name.startswith(("aws_", "api_")):
        line = json.dumps({item.name: item.value})
    if item.where == "response_body" and item.name[0].isupper():
        line = json.dumps({item.name: item.value})
    scrubbed = _secrets.scrub(line)
    assert item.secret not in scrubbed
    assert _secrets.PLACEHOLDER in scrubbed
    assert _secrets.find(line) and not _secrets.find(scrubbed)
    assert _secrets.scrub(scrubbed) == scrubbed
    if "header" in item.where:
        assert scrubbed.startswith(f"{item.name}: ")


class EchoServer(FakeServer):
    """Answers with every planted response secret in its headers and body."""

    paths = ("/v1/messages",)
    name = "echo"

    def auto(self, request: dict[str, Any]) -> dict[str, Any]:
        return {}


def echo_reply(request: dict[str, Any]) -> FakeReply:
    body = {"id": "msg_01XyZabcdefGHIJKLmnopQRS", "echo": request.get("model")}
    body |= {p.name: p.value for p in PLANTED if p.where == "response_body"}
    headers = {p.name: p.value for p in PLANTED if p.where == "response_header"}
    return FakeReply(body, headers=headers)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with EchoServer(handler=echo_reply) as server:
        yield server


def send(base_url: str) -> httpx.Response:
    headers = {p.name: p.value for p in PLANTED if p.where == "request_header"}
    query = [(p.name, p.value) for p in PLANTED if p.where == "query"]
    body = {"model": "claude-sonnet-4-6"}
    body |= {p.name: p.value for p in PLANTED if p.where == "request_body"}
    with httpx.Client() as client:
        return client.post(
            f"{base_url}/v1/messages", params=query, headers=headers, json=body, timeout=10
        )


@pytest.mark.parametrize("serializer", ["yaml", "json"])
def test_a_recording_holds_none_of_the_secrets_and_still_replays(
    tmp_path: Path, echo: EchoServer, serializer: str
) -> None:
    path = tmp_path / f"cassette.{serializer}"
    with recording(path, serializer=serializer):
        live = send(echo.base_url)
    assert live.status_code == 200
    text = path.read_text()
    leaked = [p.label for p in PLANTED if p.secret in text or p.value in text]
    assert leaked == []
    assert find_secrets([path]) == []
    assert "claude-sonnet-4-6" in text and "msg_01XyZabcdefGHIJKLmnopQRS" in text
    sent = len(echo.requests)
    with replay(path, serializer=serializer):
        replayed = send(echo.base_url)
    assert replayed.status_code == 200 and len(echo.requests) == sent
    assert replayed.json()["id"] == "msg_01XyZabcdefGHIJKLmnopQRS"


# --- no false positives ------------------------------------------------------------------------


def clean_lines() -> list[str]:
    """Ordinary, long, random-looking values a real cassette holds."""
    png = base64.b64encode(random.Random("png").randbytes(30_000)).decode()
    return [
        "msg_01XyZabcdefGHIJKLmnopQRS",
        "toolu_01A09q90qw90lq917835lq9",
        "req_011CVabcdefGHIJKLmnopqrs",
        "chatcmpl-" + rand("chatcmpl", 29),
        "call_" + rand("call", 24),
        "resp_" + rand("resp", 48, HEX),
        "batch_" + rand("batch", 24),
        "file-" + rand("file", 24),
        "fp_" + rand("fp", 10, HEX),
        "x-request-id: " + rand("uuid", 8, HEX) + "-" + rand("uuid2", 4, HEX),
        "cf-ray: 8f2a" + rand("ray", 12, HEX) + "-FRA",
        'etag: W/"' + rand("etag", 40, HEX) + '"',
        "sha256:" + rand("sha", 64, HEX),
        "data:image/png;base64," + png,
        "Authorization is required: send a bearer authentication header.",
        "The password: resetting it sends a link.",
        "max_tokens: 2048, input_tokens: 512, cache_read_input_tokens: 0",
        "authorization: REDACTED",
        "x-api-key: [REDACTED]",
        "https://api.anthropic.com/v1/messages?beta=true",
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent"
        "?key=REDACTED",
        "The task-runner-configuration-management-service is down.",
        "sk-learn and risk-adjusted skill-based routing",
        "anthropic-ratelimit-tokens-reset: 2025-01-01T00:00:00Z",
        "openai-processing-ms: 412",
    ]


@pytest.mark.parametrize("line", clean_lines(), ids=lambda line: line[:30])
def test_ordinary_values_are_no_secrets(line: str) -> None:
    assert _secrets.find(line) == []
    assert _secrets.scrub(line) == line


def test_the_repository_cassettes_have_no_findings_and_scrub_to_themselves() -> None:
    cassettes = sorted((ROOT / "cassettes").rglob("*.yaml"))
    assert cassettes
    assert find_secrets(cassettes) == []
    for path in cassettes:
        text = path.read_text()
        assert _secrets.scrub(text) == text, path
