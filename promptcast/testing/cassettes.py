"""Cassettes: vcrpy settings shared by the test suite, the pytest plugin and `promptcast demo`.

Bodies are stored as parsed JSON so recordings read well in review. Requests match on method,
the endpoint path and the JSON-normalised body, not on scheme, host or port: a cassette recorded
against a proxy or a fake replays against the real API's URL and back, while a changed prompt
fails to match (drift) instead of replaying a stale answer. Secrets (headers, bodies, URLs) are
replaced by a visible placeholder before anything is written, with the patterns of
`promptcast._secrets`, the same ones `promptcast scan-cassettes` looks for. Replays need no API
key: placeholders stand in for unset provider keys while a replay runs.
"""

from __future__ import annotations

import base64
import bisect
import configparser
import difflib
import errno
import getpass
import glob
import hashlib
import json
import os
import re
import shlex
import shutil
import tempfile
import threading
import tomllib
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import yaml

from promptcast import _secrets
from promptcast._files import temporary_stem
from promptcast._modes import replaying
from promptcast._yaml import BoundedLoader
from promptcast.errors import PromptcastError

__all__ = [
    "REDACTED",
    "SECRET_REQUEST_HEADERS",
    "SECRET_RESPONSE_HEADERS",
    "CassetteInUseError",
    "CassetteReadError",
    "CassetteWriteError",
    "NoRecordingError",
    "PromptDriftError",
    "SecretFinding",
    "cassette_miss",
    "endpoint_matcher",
    "explain_miss",
    "explaining_misses",
    "find_secrets",
    "first_in_run",
    "hashed_media",
    "json_body_matcher",
    "placeholder_keys",
    "project_cassette_dir",
    "recording",
    "recording_lock",
    "replay",
    "scrub_request",
    "scrub_response",
    "serializer",
    "staged",
    "vcr_config",
]

REDACTED = "REDACTED"
"""What a secret header or query parameter holds in a cassette (no brackets: it sits in URLs)."""
SECRET_REQUEST_HEADERS = tuple(sorted(_secrets.SECRET_HEADERS))
SECRET_RESPONSE_HEADERS = SECRET_REQUEST_HEADERS

# The provider keys a replay fills in when unset: SDK clients refuse to start without one, and a
# replay never sends it anywhere.
PLACEHOLDER_KEYS: dict[str, str] = {
    var: "promptcast-replay-placeholder"
    for var in (
        "ANTHROPIC_API_KEY",
        "OPENAI_API_KEY",
        "AZURE_API_KEY",
        "GEMINI_API_KEY",
        "MISTRAL_API_KEY",
        "GROQ_API_KEY",
        "OPENROUTER_API_KEY",
        "DEEPSEEK_API_KEY",
        "TOGETHERAI_API_KEY",
        "FIREWORKS_AI_API_KEY",
        "PERPLEXITYAI_API_KEY",
        "XAI_API_KEY",
        "CEREBRAS_API_KEY",
        "COHERE_API_KEY",
        "HOSTED_VLLM_API_KEY",
    )
}


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
        data = json.loads(json.dumps(_scrub_cassette(cassette), default=_bytes_to_str))
        for interaction in data["interactions"]:
            request, response = interaction["request"], interaction["response"]
            parsed = _parse(request.get("body"))
            if parsed is not None:
                request["parsed_body"] = hashed_media(parsed)
                del request["body"]
            parsed = _parse(response.get("body", {}).get("string"))
            if parsed is not None:
                response["parsed_body"] = parsed
                del response["body"]
        return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)

    @staticmethod
    def deserialize(text: str) -> dict[str, Any]:
        # no aliases: a few lines of them expand to gigabytes (an alias bomb)
        data: dict[str, Any] = yaml.load(text, Loader=_NoAliasLoader) or {
            "interactions": [],
            "version": 1,
        }
        _restore_binary(data)
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


class _ScrubbedJsonSerializer:
    """vcrpy's JSON cassettes, scrubbed like the YAML ones."""

    @staticmethod
    def serialize(cassette: dict[str, Any]) -> str:
        from vcr.serializers import jsonserializer

        return str(jsonserializer.serialize(_scrub_cassette(cassette)))

    @staticmethod
    def deserialize(text: str) -> dict[str, Any]:
        from vcr.serializers import jsonserializer

        return _restore_binary(dict(jsonserializer.deserialize(text)))


def _restore_binary(data: dict[str, Any]) -> dict[str, Any]:
    """Bodies that were not UTF-8 (a file upload, a binary answer) are stored with their bytes
    as surrogate escapes; give them back as those bytes, or the replay does not match the
    request, or dies in vcrpy with a bare TypeError."""
    interactions = data.get("interactions") if isinstance(data, dict) else None
    for interaction in interactions if isinstance(interactions, list) else []:
        request = interaction.get("request") if isinstance(interaction, dict) else None
        sent = request.get("body") if isinstance(request, dict) else None
        if isinstance(request, dict) and isinstance(sent, str) and _SURROGATE.search(sent):
            request["body"] = sent.encode("utf-8", errors="surrogateescape")
        response = interaction.get("response") if isinstance(interaction, dict) else None
        body = response.get("body") if isinstance(response, dict) else None
        text = body.get("string") if isinstance(body, dict) else None
        if isinstance(body, dict) and isinstance(text, str) and _SURROGATE.search(text):
            body["string"] = text.encode("utf-8", errors="surrogateescape")
    return data


_SURROGATE = re.compile("[\udc80-\udcff]")


def _bytes_to_str(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"cannot store {type(value).__name__} in a cassette")


serializer = _JsonBodySerializer()


# --- scrubbing: the last step before a cassette is written --------------------------------------


def _scrub_header_values(name: str, values: Any) -> Any:
    if name.lower() in _secrets.SECRET_HEADERS:
        return [REDACTED] if isinstance(values, list) else REDACTED
    if isinstance(values, list):
        return [_secrets.scrub(v) if isinstance(v, str) else v for v in values]
    return _secrets.scrub(values) if isinstance(values, str) else values


def _scrub_url(url: str) -> str:
    """`url` with credentials in its query string and userinfo replaced; else unchanged."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password:
        netloc = f"{parts.username or ''}:{REDACTED}@" + netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        scrubbed = [(k, REDACTED if _secret_param(k, v) else v) for k, v in pairs]
        if scrubbed != pairs:
            query = urlencode(scrubbed, safe="/:,")
    path = _secrets.scrub(parts.path)
    if (netloc, query, path) == (parts.netloc, parts.query, parts.path):
        return url
    return urlunsplit((parts.scheme, netloc, path, query, parts.fragment))


def _secret_param(name: str, value: str) -> bool:
    if not value or _secrets.is_placeholder(value):
        return False
    return name.lower() in _secrets.SECRET_QUERY_PARAMS or bool(_secrets.find(value))


def _scrub_body(body: Any) -> Any:
    """A request or response body with credentials replaced, as the same type (str or bytes).

    JSON is scrubbed as parsed data, so it stays valid JSON; other text as text.
    """
    if not body:
        return body
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return body
    elif isinstance(body, str):
        text = body
    else:
        return body
    try:
        parsed = json.loads(text)
    except ValueError:
        cleaned = _secrets.scrub(text)
    else:
        scrubbed = _secrets.scrub_data(parsed)
        cleaned = text if scrubbed == parsed else json.dumps(scrubbed, ensure_ascii=False)
    if cleaned == text:
        return body
    return cleaned.encode("utf-8") if isinstance(body, bytes) else cleaned


def scrub_request(request: Any) -> Any:
    """vcrpy `before_record_request`: secret headers, query parameters and body values replaced.

    vcrpy applies it to a copy of each live request before matching, too, so both sides of a
    match are scrubbed alike.
    """
    for name in list(request.headers):
        value = request.headers[name]
        cleaned = _scrub_header_values(name, value)
        if cleaned != value:
            request.headers[name] = cleaned
    uri = _scrub_url(request.uri)
    if uri != request.uri:
        request.uri = uri
    body = _scrub_body(request.body)
    if body is not request.body:
        request.body = body
    return request


def scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    """vcrpy `before_record_response`: secret headers (every `set-cookie`) and body values
    replaced."""
    headers = response.get("headers", {})
    for name in list(headers):
        headers[name] = _scrub_header_values(name, headers[name])
    _decompress(response)
    body = response.get("body")
    if isinstance(body, dict) and "string" in body:
        body["string"] = _scrub_body(body["string"])
    return response


class CassetteWriteError(PromptcastError):
    """A response cannot be scrubbed, so it is not written (the old cassette stays)."""


def _decompress(response: dict[str, Any]) -> None:
    """Decode a body vcrpy left compressed (it knows gzip, deflate and, with brotli, br; httpx
    also asks for zstd when zstandard is installed): a compressed body cannot be scrubbed, so a
    key inside it would reach the cassette. An encoding that cannot be decoded here is an error.
    """
    headers = response.get("headers") or {}
    body = response.get("body")
    raw = body.get("string") if isinstance(body, dict) else None
    names = [n for n in headers if n.lower() == "content-encoding"]
    values = [v for n in names for v in _as_list(headers[n])]
    encodings = [e.strip().lower() for v in values for e in str(v).split(",") if e.strip()]
    encodings = [e for e in encodings if e != "identity"]
    if not encodings or not isinstance(raw, bytes | str) or not raw:
        return
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8", errors="surrogateescape")
    for encoding in reversed(encodings):
        try:
            data = _decoder(encoding)(data)
        except Exception as exc:
            raise CassetteWriteError(
                f"a response body compressed with {encoding!r} cannot be scrubbed "
                f"({type(exc).__name__}: {exc}), so it is not recorded; the cassette is unchanged. "
                "Record without that encoding (e.g. send `accept-encoding: gzip`)"
            ) from None
    for name in names:
        del headers[name]
    for name in [n for n in headers if n.lower() == "content-length"]:
        headers[name] = [str(len(data))]
    assert isinstance(body, dict)
    body["string"] = data


def _as_list(values: Any) -> list[Any]:
    return values if isinstance(values, list) else [values]


def _decoder(encoding: str) -> Any:
    import gzip
    import zlib

    if encoding in ("gzip", "x-gzip"):
        return gzip.decompress
    if encoding == "deflate":
        return lambda data: (
            zlib.decompress(data) if data[:1] == b"\x78" else zlib.decompress(data, -zlib.MAX_WBITS)
        )
    if encoding == "br":
        import brotli  # type: ignore[import-not-found, unused-ignore]

        return brotli.decompress
    if encoding == "zstd":
        import zstandard  # type: ignore[import-not-found, unused-ignore]

        return lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data)
    raise ValueError("unknown content encoding")


def _scrub_cassette(cassette: dict[str, Any]) -> dict[str, Any]:
    """The cassette as vcrpy hands it to a serializer, scrubbed again: a `before_record_*`
    override must not be able to write a key."""
    interactions = []
    for interaction in cassette.get("interactions", []):
        request = dict(interaction["request"])
        request["headers"] = {
            k: _scrub_header_values(k, v) for k, v in dict(request.get("headers") or {}).items()
        }
        if isinstance(request.get("uri"), str):
            request["uri"] = _scrub_url(request["uri"])
        request["body"] = _storable(_scrub_body(request.get("body")))
        response = scrub_response(json.loads(json.dumps(interaction["response"], default=_raw)))
        interactions.append({**interaction, "request": request, "response": response})
    return {**cassette, "interactions": interactions}


def _storable(body: Any) -> Any:
    """A body that is not UTF-8 (a file upload) as text whose surrogate escapes keep its bytes:
    `_restore_binary` gives them back, so the replay matches it byte for byte."""
    if isinstance(body, bytes):
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return body.decode("utf-8", errors="surrogateescape")
    return body


def _raw(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="surrogateescape")
    raise TypeError(f"cannot store {type(value).__name__} in a cassette")


# --- matching -----------------------------------------------------------------------------------


def json_body_matcher(r1: Any, r2: Any, ignore_fields: Iterable[str] = ()) -> None:
    """Bodies are equal as JSON (key order and whitespace ignored), else byte for byte.

    `ignore_fields` names volatile fields by dotted path (`metadata.user_id`) left out of the
    comparison.
    """
    a, b = _parse(r1.body), _parse(r2.body)
    if a is None or b is None:
        assert r1.body == r2.body, "request bodies differ"
        return
    a, b = hashed_media(a), hashed_media(b)
    for dotted in ignore_fields:
        a, b = _without(a, dotted.split(".")), _without(b, dotted.split("."))
    assert a == b, "request JSON bodies differ"


#: A base64 payload at least this long in a request body (an image, a PDF) is stored and matched
#: as its hash, so a cassette stays readable and small.
MEDIA_HASH_MIN_CHARS = 512
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_DATA_URL_HEAD = re.compile(r"^data:[^,;]*(?:;[^,;]+)*;base64,")


def hashed_media(data: Any) -> Any:
    """A request body with every long base64 payload replaced by `[sha256:<hex>, <n> bytes]`
    (the hash of the decoded bytes, as in the `x-promptcast-media` header): equal payloads hash
    equal, so a recording with an image matches the same image and not another one.

    Payloads are data URLs (OpenAI-format `image_url` and `file` parts) and the `data` of a
    base64 source (Anthropic) or of inline data (`mime_type` + `data`, Gemini)."""
    if isinstance(data, dict):
        payload_key = "data" if data.get("type") == "base64" or "mime_type" in data else None
        return {
            key: _hashed(value) if key == payload_key else hashed_media(value)
            for key, value in data.items()
        }
    if isinstance(data, list):
        return [hashed_media(value) for value in data]
    if isinstance(data, str) and data[:5] == "data:":
        head = _DATA_URL_HEAD.match(data)
        if head:
            return head.group() + _hashed(data[head.end() :])
    return data


def _hashed(payload: Any) -> Any:
    if not isinstance(payload, str) or len(payload) < MEDIA_HASH_MIN_CHARS:
        return payload
    if not _BASE64.fullmatch(payload):
        return payload
    try:
        raw = base64.b64decode(payload, validate=True)
    except ValueError:
        return payload
    return f"[sha256:{hashlib.sha256(raw).hexdigest()}, {len(raw)} bytes]"


def endpoint_matcher(r1: Any, r2: Any) -> None:
    """Same endpoint whatever the base URL: the shorter path is the tail of the longer one.

    `/v1/messages` matches `/proxy/v1/messages` on another host, port or scheme, so a cassette
    recorded against a proxy or a fake replays against the provider's own URL, and back.
    """
    a = [s for s in urlsplit(r1.uri).path.split("/") if s]
    b = [s for s in urlsplit(r2.uri).path.split("/") if s]
    short, long = sorted((a, b), key=len)
    assert short and long[len(long) - len(short) :] == short, (
        f"endpoints differ: {'/'.join(a)} vs {'/'.join(b)}"
    )


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


def vcr_config(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments for `vcr.VCR(...)` / pytest-recording's `vcr_config` fixture.

    No `record_mode` here: pytest-recording takes it from `--record-mode` (default `none`).
    """
    config: dict[str, Any] = {
        "before_record_request": scrub_request,
        "before_record_response": scrub_response,
        "decode_compressed_response": True,
        "match_on": ["method", "endpoint", "json_body"],
        "serializer": "yaml",
    }
    config.update(overrides)
    return config


def register(vcr: Any, *, ignore_fields: Iterable[str] = ()) -> Any:
    """Teach a `vcr.VCR` instance the promptcast serializers ("yaml", and a scrubbing "json"),
    the endpoint matcher and the JSON body matcher."""
    fields = tuple(ignore_fields)

    def json_body(r1: Any, r2: Any) -> None:
        json_body_matcher(r1, r2, fields)

    vcr.register_serializer("yaml", serializer)
    vcr.register_serializer("json", _ScrubbedJsonSerializer())
    vcr.register_persister(_CheckedPersister)
    vcr.register_matcher("endpoint", endpoint_matcher)
    vcr.register_matcher("json_body", json_body)
    return vcr


class _CheckedPersister:
    """vcrpy's file persister, except that a cassette file which cannot be read (a merge conflict,
    a cut-off write, broken UTF-8) is a `CassetteReadError` naming the file: vcrpy raised the
    parser's bare error (ScannerError, KeyError, ...) without the path, or, for broken UTF-8,
    treated the file as absent, to be recorded over."""

    @classmethod
    def load_cassette(cls, cassette_path: Any, serializer: Any) -> Any:
        from vcr.persisters.filesystem import CassetteNotFoundError, FilesystemPersister

        try:
            return FilesystemPersister.load_cassette(cassette_path, serializer)
        except CassetteNotFoundError:
            raise
        # RecursionError: json's own bound on nesting (a YAML cassette has the loader's)
        except (
            yaml.YAMLError,
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
            RecursionError,
        ) as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, UnicodeDecodeError) else exc
            first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
            raise CassetteReadError(
                f"cassette {cassette_path} cannot be read ({type(cause).__name__}: {first}); "
                "a merge conflict or a cut-off file? Fix it, or delete it and record again",
                cassette=str(cassette_path),
            ) from exc

    @staticmethod
    def save_cassette(cassette_path: Any, cassette_dict: Any, serializer: Any) -> None:
        from vcr.persisters.filesystem import FilesystemPersister

        FilesystemPersister.save_cassette(cassette_path, cassette_dict, serializer)


# --- recording and replaying --------------------------------------------------------------------


@contextmanager
def recording(path: str | Path, **overrides: Any) -> Iterator[Any]:
    """Record every provider request inside the block into `path`, replacing what it held.

    The recording goes to a temporary file first; `path` is replaced only when the block ends
    without an exception and recorded something, so a failed run (no key, a provider error)
    leaves a good recording as it was.
    """
    path = Path(path)
    with _one_thread(path), recording_lock(path), staged(path) as temporary:
        recorder = register(_vcr().VCR(**vcr_config(**{"record_mode": "all", **overrides})))
        with recorder.use_cassette(str(temporary)) as cassette:
            yield cassette


class CassetteInUseError(PromptcastError):
    """A cassette block was entered while another thread is inside one."""


_owner_lock = threading.Lock()
_owner: list[Any] = [None, 0, None]  # thread id, depth, cassette path


@contextmanager
def _one_thread(path: Path) -> Iterator[None]:
    """Cassette blocks may nest in one thread, never overlap across threads: vcrpy patches the
    HTTP clients of the whole process, so a second thread's block took the first one's requests
    (a "no recording" naming the other file), and whichever ended first unpatched the other's,
    whose requests then went to the network."""
    me = threading.get_ident()
    with _owner_lock:
        if _owner[0] not in (None, me):
            raise CassetteInUseError(
                f"cannot use cassette {path} in this thread: another thread is inside cassette "
                f"{_owner[2]}, and vcrpy patches HTTP clients for the whole process. Use one "
                "cassette block at a time, or separate processes (pytest-xdist)"
            )
        if _owner[0] is None:
            _owner[:] = [me, 0, path]
        _owner[1] += 1
    try:
        yield
    finally:
        with _owner_lock:
            _owner[1] -= 1
            if _owner[1] == 0:
                _owner[:] = [None, 0, None]


@contextmanager
def staged(path: Path, *, copy: bool = False) -> Iterator[Path]:
    """A temporary path beside `path` (a copy of it with `copy=True`) that replaces `path` when
    the block succeeds and was written; on an exception it is removed and `path` is untouched.
    A path that cannot be a cassette (a folder, under a file, not writable) is refused before
    the block runs, so no live call is paid for a recording that cannot be kept. Hold
    `recording_lock(path)` around it: the lock removes temporary copies it finds as leftovers."""
    try:
        if path.exists() and not path.is_file():
            raise IsADirectoryError(errno.EISDIR, "not a file", str(path))
        folder = next((p for p in path.parents if p.exists()), None)
        if folder is not None and not folder.is_dir():  # makedirs' "File exists" hides this
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(folder))
        path.parent.mkdir(parents=True, exist_ok=True)
        stem = temporary_stem(path)
        handle, name = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=path.parent)
        os.close(handle)
        temporary = Path(name)
        if copy and path.is_file():
            shutil.copyfile(path, temporary)
            shutil.copymode(path, temporary)  # mkstemp's 0600 is not the cassette's mode
        else:
            temporary.unlink()  # vcrpy must start from no file, not an empty one
    except OSError as exc:
        raise _unwritable(path, exc) from exc
    try:
        yield temporary
        if temporary.exists() and not (
            path.is_file() and path.read_bytes() == temporary.read_bytes()
        ):
            try:
                os.replace(temporary, path)
            except OSError as exc:
                raise _unwritable(path, exc) from exc
    finally:
        temporary.unlink(missing_ok=True)


def _unwritable(path: Path, exc: OSError) -> CassetteWriteError:
    reason = exc.strerror or str(exc)
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
    return CassetteWriteError(
        f"cassette {path} cannot be written: {reason}{where}. Choose a cassette file in a "
        "folder you can write to"
    )


RECORD_LOCK_TIMEOUT = 600.0
"""Seconds a recording waits for another process recording the same cassette to finish."""


def _lock_file(path: Path) -> Path:
    """The lock file of cassette `path`, in the temporary folder, one per user and cassette."""
    resolved = str(path.resolve())
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name (a container without a passwd entry)
        user = str(os.getuid()) if hasattr(os, "getuid") else ""
    digest = hashlib.sha256(f"{user}\0{resolved}".encode()).hexdigest()[:24]
    return Path(tempfile.gettempdir()) / f"promptcast-cassette-{digest}.lock"


def first_in_run(path: Path, run: str) -> bool:
    """Whether test run `run` (pytest-xdist's `testrunuid`, shared by its workers) records
    cassette `path` for the first time; call it holding `recording_lock(path)`. A re-record
    (`--record-mode=rewrite`) starts a cassette afresh only the first time: each test sharing one
    cassette started from nothing, so only the last test's requests were left in it."""
    marker = _lock_file(path).with_suffix(".run")
    try:
        if marker.read_text(encoding="utf-8") == run:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    marker.write_text(run, encoding="utf-8")
    return True


@contextmanager
def recording_lock(path: Path, *, timeout: float | None = None) -> Iterator[None]:
    """Hold the cross-process lock of cassette `path` for the block: two processes recording one
    cassette at once (pytest-xdist workers sharing `path=`, `promptcast record` beside a test run)
    each copied the old file, added their requests and replaced it, so one's recording was lost.
    Now the second waits, then starts from the first one's file, as in a run one test at a time.
    The lock file lives in the temporary folder, not beside the cassette, so nothing is left to
    commit; the OS drops the lock when its process dies, so a kill leaves no stale lock, and the
    temporary copy a killed recording left beside the cassette goes with the next recording."""
    from filelock import FileLock, Timeout

    lock_file = _lock_file(path)
    with _held_lock:
        if lock_file in _held:  # this process would wait for itself
            raise CassetteInUseError(
                f"cassette {path} is already being recorded in this process: record it in one "
                "block (a test marked @pytest.mark.promptcast records its own cassette already)"
            )
        _held.add(lock_file)
    try:
        wait = RECORD_LOCK_TIMEOUT if timeout is None else timeout
        lock = FileLock(str(lock_file), timeout=wait, thread_local=False)
        try:
            lock.acquire()
        except Timeout:
            raise CassetteInUseError(
                f"cassette {path} has been recorded by another process for over {wait:g} s "
                f"(lock file {lock_file}); recordings of one cassette take turns. Let the other "
                "run end, or give each test its own cassette"
            ) from None
        try:
            # with the lock held, a temporary copy beside the cassette is one a killed
            # recording left
            for leftover in path.parent.glob(f".{glob.escape(temporary_stem(path))}.*.tmp"):
                leftover.unlink(missing_ok=True)
            yield
        finally:
            lock.release()
    finally:
        with _held_lock:
            _held.discard(lock_file)


_held_lock = threading.Lock()
_held: set[Path] = set()  # the lock files this process holds or waits for


@contextmanager
def explaining_misses() -> Iterator[None]:
    """Inside, an error caused by vcrpy's "no recording" leaves as the `NoRecordingError` that
    names the task, the cassette and the command that records it."""
    try:
        yield
    except NoRecordingError:
        raise
    except Exception as exc:
        miss = cassette_miss(exc)
        if miss is None:
            raise
        raise miss from None


def _vcr() -> Any:
    import vcr

    return vcr


_placeholders_lock = threading.Lock()
_placeholders_users = 0
_placeholders_added: list[str] = []


@contextmanager
def placeholder_keys() -> Iterator[None]:
    """Fill unset provider API key variables with a placeholder for the block, then remove them.

    A replay sends nothing, but SDK clients refuse to start without a key. A key that is set is
    never touched; overlapping replays (threads, nested blocks) share the placeholders, removed
    when the last one ends.
    """
    global _placeholders_users
    with _placeholders_lock:
        if _placeholders_users == 0:
            _placeholders_added[:] = [var for var in PLACEHOLDER_KEYS if not os.environ.get(var)]
            for var in _placeholders_added:
                os.environ[var] = PLACEHOLDER_KEYS[var]
        _placeholders_users += 1
    try:
        yield
    finally:
        with _placeholders_lock:
            _placeholders_users -= 1
            if _placeholders_users == 0:
                for var in _placeholders_added:
                    if os.environ.get(var) == PLACEHOLDER_KEYS[var]:
                        del os.environ[var]
                _placeholders_added.clear()


@contextmanager
def replay(
    path: str | Path, *, record_command: str | None = None, **overrides: Any
) -> Iterator[Any]:
    """Replay one cassette for the code inside the block; no request leaves the process.

    Works without an API key and whatever base URL the providers are configured with.
    `record_command` is what a "no recording" error tells the user to run.
    """
    recorder = register(_vcr().VCR(**vcr_config(**{"record_mode": "none", **overrides})))
    with (
        _one_thread(Path(path)),
        placeholder_keys(),
        recorder.use_cassette(str(path), allow_playback_repeats=True) as cassette,
        explaining_misses(),
    ):
        cassette._promptcast_record_command = record_command
        with replaying(cassette):  # in the output mode the recording was made in
            yield cassette


# --- the project's cassette folder (as the pytest plugin sees it) ------------------------------


def project_cassette_dir(start: Path | None = None) -> Path:
    """`promptcast_cassette_dir` (default `cassettes`) under the pytest rootdir of `start`.

    Found as pytest finds its configuration: the first `pytest.ini`, `.pytest.ini`,
    `pyproject.toml` with `[tool.pytest.ini_options]`, `tox.ini` with `[pytest]` or `setup.cfg`
    with `[tool:pytest]` in `start` or a parent; then the first `pyproject.toml`; else `start`.
    """
    start = (start or Path.cwd()).resolve()
    fallback: Path | None = None
    for folder in (start, *start.parents):
        for name in ("pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg"):
            found = _ini_value(folder / name)
            if found is not None:
                return folder / (found or "cassettes")
        if fallback is None and (folder / "pyproject.toml").is_file():
            fallback = folder
    return (fallback or start) / "cassettes"


def _ini_value(file: Path) -> str | None:
    """The file's `promptcast_cassette_dir` ("" when it configures pytest without one), or None
    when the file is not a pytest configuration."""
    if not file.is_file():
        return None
    try:
        if file.name == "pyproject.toml":
            tool = tomllib.loads(file.read_text(encoding="utf-8")).get("tool", {})
            table = tool.get("pytest")
            if not isinstance(table, dict):
                return None
            options = table.get("ini_options", table)
            return str(
                options.get("promptcast_cassette_dir", "") if isinstance(options, dict) else ""
            )
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(file, encoding="utf-8")
    except (OSError, ValueError, configparser.Error):
        return None
    section = {"setup.cfg": "tool:pytest"}.get(file.name, "pytest")
    if not parser.has_section(section):
        return "" if file.name in ("pytest.ini", ".pytest.ini") else None
    return parser.get(section, "promptcast_cassette_dir", fallback="").strip()


class CassetteReadError(PromptcastError):
    """A cassette file exists but is not a cassette (not YAML/JSON, or not vcrpy's shape)."""

    def __init__(self, message: str, *, cassette: str) -> None:
        self.cassette = cassette
        super().__init__(message)


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
        lines.extend(_content_text(system).split("\n"))
    for message in body.get("messages", []):
        lines.append(f"[{message.get('role', '?')}]")
        lines.extend(_content_text(message.get("content")).split("\n"))
    return "\n".join(lines)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            media = _media_label(block)
            if media is not None:
                parts.append(media)
            elif isinstance(block, dict) and isinstance(block.get("text"), str):
                parts.append(block["text"])
            elif isinstance(block, dict) and "content" in block:
                parts.append(_content_text(block["content"]))
            else:
                parts.append(json.dumps(block, sort_keys=True))
        return "\n".join(parts)
    return json.dumps(content, sort_keys=True)


def _media_label(block: Any) -> str | None:
    """`[image image/png sha256:<12 hex>]` for an image or document block (Anthropic or OpenAI
    shape): the hash of the content, as the `x-promptcast-media` header has it."""
    if not isinstance(block, dict):
        return None
    kind, what, encoded = block.get("type"), "", False
    if kind in ("image", "document") and isinstance(block.get("source"), dict):
        source = block["source"]
        data = source.get("data") or source.get("url") or ""
        what = source.get("media_type") or source.get("type") or ""
        encoded = source.get("type") == "base64"
    elif kind == "image_url" and isinstance(block.get("image_url"), dict):
        data, kind = block["image_url"].get("url") or "", "image"
    elif kind == "file" and isinstance(block.get("file"), dict):
        data = block["file"].get("file_data") or block["file"].get("file_id") or ""
        kind = "document"
    else:
        return None
    data = str(data)
    head = _DATA_URL_HEAD.match(data)
    if head:
        data, encoded = data[head.end() :], True
        what = head.group()[5:].partition(";")[0]
    found = re.search(r"\[sha256:([0-9a-f]{12})", data)
    if found:
        digest = found.group(1)
    else:
        try:
            raw = base64.b64decode(data, validate=True) if encoded else data.encode()
        except ValueError:
            raw = data.encode()
        digest = hashlib.sha256(raw).hexdigest()[:12]
    return " ".join(part for part in (f"[{kind}", what, f"sha256:{digest}]") if part)


MEDIA_HEADER = "x-promptcast-media"


def _media_changes(recorded: Any, failed: Any) -> list[str]:
    """The inputs whose image or document differs between two requests (from their
    `x-promptcast-media` headers: `name=sha256:<hex>;…`)."""

    def hashes(request: Any) -> dict[str, str]:
        value = _header(request, MEDIA_HEADER) or ""
        pairs = (item.partition("=") for item in value.split(";") if item)
        return {name: digest for name, _, digest in pairs}

    before, now = hashes(recorded), hashes(failed)
    return [
        f"input {name!r} (sha256 {before.get(name, 'none').removeprefix('sha256:')} recorded, "
        f"{now.get(name, 'none').removeprefix('sha256:')} now)"
        for name in sorted(set(before) | set(now))
        if before.get(name) != now.get(name)
    ]


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
    shown_path = getattr(cassette, "_promptcast_path", None) or getattr(cassette, "_path", None)
    path = str(shown_path) if shown_path else None
    command = getattr(cassette, "_promptcast_record_command", None)
    task = _header(failed, TASK_HEADER) if failed is not None else None
    new_hash = _header(failed, HASH_HEADER) if failed is not None else None
    if command is None:
        command = _default_record_command(task, path)
    how = f"Record it with the provider's key set: {command}"
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
            before.split("\n"), today.split("\n"), "recorded", "today", lineterm="", n=1
        )
    )
    diff = [_visible(line) if line[:1] in "+-" else line for line in diff]
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
    changed = _media_changes(closest, failed)
    if changed:
        return NoRecordingError(
            f"No recording for {label} with these inputs in {path}: an image or document "
            f"differs from the recording: {'; '.join(changed)}; closest recorded request:\n"
            f"{shown}\n{how}",
            task=task,
            cassette=path,
        )
    return NoRecordingError(
        f"No recording for {label} with these inputs in {path} (template unchanged, hash "
        f"{old_hash}); closest recorded request:\n{shown}\n{how}",
        task=task,
        cassette=path,
    )


def _visible(line: str) -> str:
    """A diff line whose invisible characters (NBSP, U+2028, zero-width, tabs, control codes,
    trailing spaces) are spelled out: else `-Greet Ada` and `+Greet Ada` read the same."""
    body = line.rstrip(" ")
    shown = "".join(
        f"\\u{ord(c):04x}" if c != " " and unicodedata.category(c) in _INVISIBLE else c
        for c in body
    )
    return shown + "\\x20" * (len(line) - len(body))


_INVISIBLE = frozenset({"Zs", "Zl", "Zp", "Cf", "Cc", "Co", "Cn"})


def _default_record_command(task: str | None, path: str | None) -> str:
    """The hint for a `replay()` given no `record_command`: re-run the code under `recording()`."""
    where = repr(path) if path else "'cassette.yaml'"
    hint = (
        f"run the same code inside `with promptcast.testing.recording({where}):` "
        "(it rewrites the whole cassette)"
    )
    if task:
        out = f" --out {shlex.quote(path)}" if path else ""
        hint += f", or record one call: promptcast record {task} -i NAME=VALUE{out}"
    return hint


@dataclass(frozen=True)
class SecretFinding:
    """Something in a recording that looks like a secret."""

    path: Path
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def find_secrets(paths: Iterable[str | Path]) -> list[SecretFinding]:
    """Scan recordings (files or folders of `.yaml`/`.yml`/`.json`) for secret-looking values.

    Two passes with the scrubber's own rules: every credential pattern of `promptcast._secrets`
    anywhere in the text, and every header in `SECRET_HEADERS` (in YAML or JSON cassettes) whose
    value is not the placeholder.
    """
    findings: list[SecretFinding] = []
    files: list[Path] = []
    for root in map(Path, paths):
        if root.is_dir():
            files += sorted(
                p for p in root.rglob("*") if p.suffix in {".yaml", ".yml", ".json"} and p.is_file()
            )
        elif root.is_file():
            files.append(root)
    for path in files:
        findings += _scan(path, path.read_text(encoding="utf-8", errors="replace"))
    return findings


def _scan(path: Path, text: str) -> list[SecretFinding]:
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
    found: dict[int, SecretFinding] = {}
    for match in _secrets.find(text):
        line = bisect.bisect_right(starts, match.start)
        found.setdefault(
            line, SecretFinding(path, line, f"looks like a key ({match.kind}): {match.masked}")
        )
    lines = text.splitlines()
    data = _load(path, text)
    if data is None:  # not a cassette we can parse: judge header lines one by one
        headers = _header_lines(lines)
    else:
        cursor: dict[str, int] = {}
        headers = (
            (_line_of(lines, name, value, cursor), name) for name, value in _secret_headers(data)
        )
    for line, name in headers:
        if line not in found:
            found[line] = SecretFinding(path, line, f"header {name} is not {REDACTED}")
    if data is not None and "\\" in text:  # escaped (`\u0073k-…`, `\` + newline): decode
        for line, value in _scalars(text):
            for match in _secrets.find(value)[:1]:
                what = f"looks like a key ({match.kind}, once decoded): {match.masked}"
                found.setdefault(line, SecretFinding(path, line, what))
    return [found[line] for line in sorted(found)]


def _scalars(text: str) -> Iterator[tuple[int, str]]:
    """`(line, value)` of every decoded string scalar in a YAML (or JSON) document."""
    try:
        root = yaml.compose(text, Loader=_NoAliasLoader)
    except yaml.YAMLError:
        return
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.ScalarNode):
            if isinstance(node.value, str) and node.value:
                yield node.start_mark.line + 1, node.value
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend(item for pair in node.value for item in pair)


_HEADER_LINE = re.compile(
    r"""^\s*-?\s*["']?("""
    + "|".join(map(re.escape, SECRET_REQUEST_HEADERS))
    + r""")["']?\s*:(.*)$""",
    re.IGNORECASE,
)


def _header_lines(lines: list[str]) -> Iterator[tuple[int, str]]:
    """`(line, name)` of secret header lines whose value (here or on the next line) is not the
    placeholder."""
    for index, text in enumerate(lines):
        match = _HEADER_LINE.match(text)
        if not match:
            continue
        value = match.group(2).strip().strip("[]{},").strip()
        if not value and index + 1 < len(lines):
            value = lines[index + 1].strip().lstrip("-[").strip().rstrip("],")
        if value and not _secrets.is_placeholder(value):
            yield index + 1, match.group(1)


def _load(path: Path, text: str) -> Any:
    try:
        if path.suffix == ".json":
            return json.loads(text)
        return yaml.load(text, Loader=_NoAliasLoader)
    except (ValueError, yaml.YAMLError, RecursionError):  # RecursionError: json's nesting bound
        return None


class _NoAliasLoader(BoundedLoader):
    """A cassette is data: no aliases (an alias bomb), no nesting deeper than a recorded JSON
    body can reasonably have (a deeper one raised a bare RecursionError on replay and scan)."""

    document = "a cassette"
    part = "the cassette"
    max_depth = 128


def _secret_headers(data: Any) -> Iterator[tuple[str, str]]:
    """`(name, value)` of each secret header, in any mapping under a `headers` key, not yet
    scrubbed."""
    if isinstance(data, list):
        for item in data:
            yield from _secret_headers(item)
    elif isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, str) and key.lower() == "headers" and isinstance(value, dict):
                for name, values in value.items():
                    if str(name).lower() not in _secrets.SECRET_HEADERS:
                        continue
                    for one in values if isinstance(values, list) else [values]:
                        if not _secrets.is_placeholder(str(one)):
                            yield str(name), str(one)
            else:
                yield from _secret_headers(value)


def _line_of(lines: list[str], name: str, value: str, cursor: dict[str, int]) -> int:
    """The 1-based line holding this header's value (searched after the previous one found)."""
    key = re.compile(r"""^\s*["']?""" + re.escape(name) + r"""["']?\s*:""")
    start = cursor.get(name, 0)
    for index in range(start, len(lines)):
        if key.match(lines[index]):
            for at in range(index, min(index + 4, len(lines))):
                if value in lines[at]:
                    cursor[name] = at + 1
                    return at + 1
            cursor[name] = index + 1
            return index + 1
    return 1
