"""Cassettes: vcrpy settings shared by the test suite, the pytest plugin and `promptcast demo`.

Bodies are stored as parsed JSON so recordings read well in review; requests match on method,
host, path and the JSON-normalised body, so a changed prompt fails to match (drift) instead of
replaying a stale answer; secrets are replaced by a visible placeholder before anything is written.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "REDACTED",
    "SECRET_REQUEST_HEADERS",
    "SECRET_RESPONSE_HEADERS",
    "json_body_matcher",
    "replay",
    "scrub_response",
    "serializer",
    "vcr_config",
]

REDACTED = "REDACTED"
SECRET_REQUEST_HEADERS = (
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "openai-organization",
    "openai-project",
    "anthropic-organization-id",
    "cookie",
)
SECRET_RESPONSE_HEADERS = ("set-cookie", "openai-organization", "anthropic-organization-id")


def _parse(body: Any) -> Any:
    if body is None or body == b"" or body == "":
        return None
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        return json.loads(body)
    except (TypeError, ValueError):
        return None


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (prompts) as literal blocks, so a cassette diff reads like the prompt."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value and not value.endswith((" ", "\t")) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


class _JsonBodySerializer:
    """YAML cassettes whose JSON bodies are kept as `parsed_body` mappings."""

    @staticmethod
    def serialize(cassette: dict[str, Any]) -> str:
        data = json.loads(json.dumps(cassette, default=_bytes_to_str))
        for interaction in data["interactions"]:
            request, response = interaction["request"], interaction["response"]
            parsed = _parse(request.get("body"))
            if parsed is not None:
                request["parsed_body"] = parsed
                del request["body"]
            parsed = _parse(response.get("body", {}).get("string"))
            if parsed is not None:
                response["parsed_body"] = parsed
                del response["body"]
        return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)

    @staticmethod
    def deserialize(text: str) -> dict[str, Any]:
        data: dict[str, Any] = yaml.safe_load(text) or {"interactions": [], "version": 1}
        for interaction in data.get("interactions", []):
            request, response = interaction["request"], interaction["response"]
            if "parsed_body" in request:
                request["body"] = json.dumps(request.pop("parsed_body"))
            if "parsed_body" in response:
                response["body"] = {"string": json.dumps(response.pop("parsed_body"))}
                # the body is re-serialised, so its recorded length no longer holds
                headers = response.get("headers", {})
                for name in [n for n in headers if n.lower() == "content-length"]:
                    del headers[name]
        return data


def _bytes_to_str(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"cannot store {type(value).__name__} in a cassette")


serializer = _JsonBodySerializer()


def json_body_matcher(r1: Any, r2: Any) -> None:
    """Bodies are equal as JSON (key order and whitespace ignored), else byte for byte."""
    a, b = _parse(r1.body), _parse(r2.body)
    if a is None or b is None:
        assert r1.body == r2.body, "request bodies differ"
    else:
        assert a == b, "request JSON bodies differ"


def scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    """Replace secret response headers with the placeholder."""
    headers = response.get("headers", {})
    for name in list(headers):
        if name.lower() in SECRET_RESPONSE_HEADERS:
            headers[name] = [REDACTED]
    return response


def vcr_config(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments for `vcr.VCR(...)` / pytest-recording's `vcr_config` fixture.

    No `record_mode` here: pytest-recording takes it from `--record-mode` (default `none`).
    """
    config: dict[str, Any] = {
        "filter_headers": [(name, REDACTED) for name in SECRET_REQUEST_HEADERS],
        "filter_query_parameters": [("key", REDACTED)],
        "before_record_response": scrub_response,
        "decode_compressed_response": True,
        "match_on": ["method", "host", "path", "json_body"],
        "serializer": "yaml",
        "ignore_localhost": True,
    }
    config.update(overrides)
    return config


def register(vcr: Any) -> Any:
    """Teach a `vcr.VCR` instance the promptcast serializer (as "yaml") and JSON body matcher."""
    vcr.register_serializer("yaml", serializer)
    vcr.register_matcher("json_body", json_body_matcher)
    return vcr


@contextmanager
def replay(path: str | Path, **overrides: Any) -> Iterator[Any]:
    """Replay one cassette for the code inside the block; no request leaves the process."""
    import vcr

    recorder = register(vcr.VCR(**vcr_config(**{"record_mode": "none", **overrides})))
    with recorder.use_cassette(str(path), allow_playback_repeats=True) as cassette:
        yield cassette
