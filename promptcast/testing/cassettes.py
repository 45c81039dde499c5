"""Cassettes: vcrpy settings shared by the test suite, the pytest plugin and `promptcast demo`.

Bodies are stored as parsed JSON so recordings read well in review; requests match on method,
host, path and the JSON-normalised body, so a changed prompt fails to match (drift) instead of
replaying a stale answer; secrets are replaced by a visible placeholder before anything is written.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from promptcast.errors import PromptcastError

__all__ = [
    "REDACTED",
    "SECRET_REQUEST_HEADERS",
    "SECRET_RESPONSE_HEADERS",
    "NoRecordingError",
    "PromptDriftError",
    "SecretFinding",
    "cassette_miss",
    "explain_miss",
    "find_secrets",
    "json_body_matcher",
    "recording",
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


def json_body_matcher(r1: Any, r2: Any, ignore_fields: Iterable[str] = ()) -> None:
    """Bodies are equal as JSON (key order and whitespace ignored), else byte for byte.

    `ignore_fields` names volatile fields by dotted path (`metadata.user_id`) left out of the
    comparison.
    """
    a, b = _parse(r1.body), _parse(r2.body)
    if a is None or b is None:
        assert r1.body == r2.body, "request bodies differ"
        return
    for dotted in ignore_fields:
        a, b = _without(a, dotted.split(".")), _without(b, dotted.split("."))
    assert a == b, "request JSON bodies differ"


def _without(data: Any, path: list[str]) -> Any:
    if not isinstance(data, dict) or not path:
        return data
    head, rest = path[0], path[1:]
    if head not in data:
        return data
    copy = dict(data)
    if rest:
        copy[head] = _without(copy[head], rest)
    else:
        del copy[head]
    return copy


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
    }
    config.update(overrides)
    return config


def register(vcr: Any, *, ignore_fields: Iterable[str] = ()) -> Any:
    """Teach a `vcr.VCR` instance the promptcast serializer (as "yaml") and JSON body matcher."""
    fields = tuple(ignore_fields)

    def json_body(r1: Any, r2: Any) -> None:
        json_body_matcher(r1, r2, fields)

    vcr.register_serializer("yaml", serializer)
    vcr.register_matcher("json_body", json_body)
    return vcr


@contextmanager
def recording(path: str | Path, **overrides: Any) -> Iterator[Any]:
    """Record every provider request inside the block into `path`, replacing what it held."""
    import vcr

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    recorder = register(vcr.VCR(**vcr_config(**{"record_mode": "all", **overrides})))
    with recorder.use_cassette(str(path)) as cassette:
        yield cassette


@contextmanager
def replay(
    path: str | Path, *, record_command: str | None = None, **overrides: Any
) -> Iterator[Any]:
    """Replay one cassette for the code inside the block; no request leaves the process.

    `record_command` is what a "no recording" error tells the user to run.
    """
    import vcr

    recorder = register(vcr.VCR(**vcr_config(**{"record_mode": "none", **overrides})))
    with recorder.use_cassette(str(path), allow_playback_repeats=True) as cassette:
        cassette._promptcast_record_command = record_command
        yield cassette


class NoRecordingError(PromptcastError):
    """A replayed request has no recording; the message names the task, cassette and command."""

    def __init__(self, message: str, *, task: str | None, cassette: str | None) -> None:
        self.task = task
        self.cassette = cassette
        super().__init__(message)


class PromptDriftError(NoRecordingError):
    """Today's rendered request differs from the recorded one because the task file changed."""

    def __init__(
        self, message: str, *, task: str | None, cassette: str | None, old_hash: str, new_hash: str
    ) -> None:
        self.old_hash = old_hash
        self.new_hash = new_hash
        super().__init__(message, task=task, cassette=cassette)


TASK_HEADER = "x-promptcast-task"
HASH_HEADER = "x-promptcast-template-hash"


def _header(request: Any, name: str) -> str | None:
    for key, value in dict(request.headers).items():
        if key.lower() == name:
            return str(value[0] if isinstance(value, list) else value)
    return None


def prompt_text(body: Any) -> str:
    """The prompt inside a provider request body, as plain text, for diffs."""
    if not isinstance(body, dict):
        return str(body)
    lines: list[str] = []
    system = body.get("system")
    if system:
        lines.append("[system]")
        lines.extend(_content_text(system).splitlines())
    for message in body.get("messages", []):
        lines.append(f"[{message.get('role', '?')}]")
        lines.extend(_content_text(message.get("content")).splitlines())
    return "\n".join(lines)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                parts.append(block["text"])
            elif isinstance(block, dict) and "content" in block:
                parts.append(_content_text(block["content"]))
            else:
                parts.append(json.dumps(block, sort_keys=True))
        return "\n".join(parts)
    return json.dumps(content, sort_keys=True)


def cassette_miss(exc: BaseException) -> NoRecordingError | None:
    """If `exc` (or what caused it) is vcrpy's "no recording", the explained error; else None.

    Provider SDKs wrap transport exceptions, so the whole cause chain is searched.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ == "CannotOverwriteExistingCassetteException":
            return explain_miss(current)
        current = current.__cause__ or current.__context__
    return None


def explain_miss(exc: Any, *, max_diff_lines: int = 30) -> NoRecordingError:
    """Turn vcrpy's `CannotOverwriteExistingCassetteException` into a message that names the
    task, the cassette and the command that records it, with a prompt diff when the task drifted.
    """
    cassette = getattr(exc, "cassette", None)
    failed = getattr(exc, "failed_request", None)
    path = str(getattr(cassette, "_path", "") or "") or None
    command = getattr(cassette, "_promptcast_record_command", None)
    task = _header(failed, TASK_HEADER) if failed is not None else None
    new_hash = _header(failed, HASH_HEADER) if failed is not None else None
    if command is None:
        command = f"promptcast record {task or 'TASK'}"
    how = f"Record it with a key set: {command}"
    label = f"task {task!r}" if task else "this request"

    recorded = [
        r for r in getattr(cassette, "requests", []) if task and _header(r, TASK_HEADER) == task
    ]
    if failed is None or not recorded:
        where = f"in {path}" if path else "(no cassette)"
        return NoRecordingError(
            f"No recording for {label} {where}. {how}", task=task, cassette=path
        )
    today = prompt_text(_parse(failed.body))
    closest = max(
        recorded,
        key=lambda r: difflib.SequenceMatcher(None, prompt_text(_parse(r.body)), today).ratio(),
    )
    before = prompt_text(_parse(closest.body))
    diff = list(
        difflib.unified_diff(
            before.splitlines(), today.splitlines(), "recorded", "today", lineterm="", n=1
        )
    )
    if not diff:
        diff = ["(the prompt text is the same; the request differs in model, schema or settings)"]
    if len(diff) > max_diff_lines:
        diff = [*diff[:max_diff_lines], f"... {len(diff) - max_diff_lines} more lines"]
    shown = "\n".join(diff)
    old_hash = _header(closest, HASH_HEADER) or "?"
    if new_hash and old_hash != new_hash:
        return PromptDriftError(
            f"Prompt drift in {label}: template hash {old_hash} -> {new_hash}; the request recorded "
            f"in {path} no longer matches today's rendered request:\n{shown}\n"
            f"Re-record: {command.replace('--record-mode=once', '--record-mode=rewrite')}",
            task=task,
            cassette=path,
            old_hash=old_hash,
            new_hash=new_hash,
        )
    return NoRecordingError(
        f"No recording for {label} with these inputs in {path} (template unchanged, hash "
        f"{old_hash}); closest recorded request:\n{shown}\n{how}",
        task=task,
        cassette=path,
    )


@dataclass(frozen=True)
class SecretFinding:
    """Something in a recording that looks like a secret."""

    path: Path
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


_SECRET_VALUES = re.compile(
    r"sk-ant-[A-Za-z0-9_-]{8,}|sk-(?:proj-)?[A-Za-z0-9_-]{20,}|AIza[0-9A-Za-z_-]{30,}"
    r"|[Bb]earer\s+[A-Za-z0-9._~+/=-]{12,}|(?:[?&]key=)(?!REDACTED)[A-Za-z0-9_-]{8,}"
)
_SECRET_HEADER_LINE = re.compile(
    r"^\s*[\"']?(" + "|".join(SECRET_REQUEST_HEADERS + SECRET_RESPONSE_HEADERS) + r")[\"']?\s*:",
    re.IGNORECASE,
)


def find_secrets(paths: Iterable[str | Path]) -> list[SecretFinding]:
    """Scan recordings (files or folders of `.yaml`/`.yml`/`.json`) for secret-looking values:
    known key formats anywhere, and secret headers whose value is not the placeholder."""
    findings: list[SecretFinding] = []
    files: list[Path] = []
    for root in map(Path, paths):
        if root.is_dir():
            files += sorted(p for p in root.rglob("*") if p.suffix in {".yaml", ".yml", ".json"})
        elif root.is_file():
            files.append(root)
    for path in files:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        for number, text in enumerate(lines, 1):
            match = _SECRET_VALUES.search(text)
            if match:
                findings.append(
                    SecretFinding(path, number, f"looks like a key: {_mask(match.group())}")
                )
            header = _SECRET_HEADER_LINE.match(text)
            if header:
                value = _header_value(lines, number - 1, text[header.end() :])
                if value and value != REDACTED:
                    findings.append(
                        SecretFinding(path, number, f"header {header.group(1)} is not {REDACTED}")
                    )
    return findings


def _header_value(lines: list[str], index: int, rest: str) -> str:
    """The value after `name:` on this line, or on the next YAML list line."""
    value = rest.strip().strip("[]").strip().strip("'\",")
    if value:
        return value
    if index + 1 < len(lines):
        return lines[index + 1].strip().lstrip("-").strip().strip("'\"")
    return ""


def _mask(value: str) -> str:
    return value[:8] + "…" if len(value) > 8 else value
