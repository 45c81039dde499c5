"""Response cache: an identical call (same model, template, rendered request, schema and sampling
parameters) is answered from a cache instead of the provider.

`configure(cache=…)` / `PROMPTCAST_CACHE` picks the store: `off` (the default), `sqlite:///path`
(one file shared by the threads and processes of a machine) or `redis://…` (shared by many
replicas; `pip install "promptcast[redis]"`). Only validated outputs are stored, so a cache never
replays an answer that failed. A store that fails or stalls at run time is logged once and
skipped: every operation has a short timeout (`cache_timeout_s`, default 0.25 s), and the async
path awaits the store (redis.asyncio; SQLite in a worker thread), so a cache that never answers
neither blocks the event loop nor slows a call by more than that timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import threading
import time
import typing
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from pydantic import BaseModel

from promptcast._config import check_cache_url, redact_url
from promptcast.errors import ConfigurationError
from promptcast.result import Run, Usage

if TYPE_CHECKING:
    import sqlite3

    from promptcast._config import Settings
    from promptcast.render import Prompt
    from promptcast.spec import TaskSpec

__all__ = [
    "Cache",
    "RedisCache",
    "SQLiteCache",
    "aread",
    "awrite",
    "cache_key",
    "close_caches",
    "decode",
    "encode",
    "open_cache",
    "read",
    "write",
]

ENV_VAR = "PROMPTCAST_CACHE"
logger = logging.getLogger("promptcast.cache")


@runtime_checkable
class Cache(Protocol):
    """A key-value store of JSON text; `ttl_s` (seconds) makes an entry expire."""

    def get(self, key: str) -> str | None:
        """The value stored under `key`, or `None` when absent or expired."""

    def set(self, key: str, value: str, ttl_s: float | None = None) -> None:
        """Store `value` under `key`, replacing any earlier value."""

    def close(self) -> None:
        """Release connections; the cache may not be used afterwards."""


# A store may also have `async def aget(key)`, `async def aset(key, value, ttl_s)` and
# `async def aclose()`; the async path uses them when present, else runs the sync methods here,
# in threads of their own so that a stalled store cannot take the event loop's default executor.
_EXECUTOR = ThreadPoolExecutor(max_workers=4, thread_name_prefix="promptcast-cache")


class SQLiteCache:
    """A cache in one SQLite file, safe for the threads of a process and for processes sharing it.

    WAL journaling lets readers run while one process writes; each statement is its own
    transaction, and a busy file is waited on (`timeout_s`) rather than failed. One connection per
    process is shared by its threads under a lock (SQLite serialises writers anyway); a process
    made by `fork` opens its own, since a connection must never cross a fork.
    """

    def __init__(self, path: str | Path, *, timeout_s: float = 0.25) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._sets = 0

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        import sqlite3

        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=self.timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            # Switching to WAL needs a moment alone with the file: wait for it, but no longer
            # than an operation may take (a file another program holds locked stalled every
            # call for 5 s); without it the file still works in its journal mode, and WAL, a
            # property of the file, is set by whichever connection gets that moment.
            deadline = time.monotonic() + self.timeout_s
            while True:
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.01)
            # the rest within what is left of the same timeout: a file held locked cost each
            # operation twice the timeout (the WAL wait, then a busy wait for the schema)
            left = max(0, round((deadline - time.monotonic()) * 1000))
            conn.execute(f"PRAGMA busy_timeout = {left}")
            conn.execute("PRAGMA synchronous=NORMAL")  # safe with WAL: no corruption on a crash
            conn.execute(
                "CREATE TABLE IF NOT EXISTS promptcast_cache "
                "(key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL)"
            )
            conn.execute(f"PRAGMA busy_timeout = {round(self.timeout_s * 1000)}")
        except BaseException:
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        """This process's connection for one statement, waited for at most `timeout_s`: the
        threads queued behind one waiting on a busy file each waited their whole turn (16
        threads against a locked file: 4 s for the last, with a 0.25 s timeout)."""
        if not self._lock.acquire(timeout=self.timeout_s):
            raise TimeoutError(f"other threads held the cache for over {self.timeout_s:g} s")
        try:
            yield
        finally:
            self._lock.release()

    def get(self, key: str) -> str | None:
        with self._turn():
            row = (
                self._connection()
                .execute("SELECT value, expires FROM promptcast_cache WHERE key = ?", (key,))
                .fetchone()
            )
        if row is None or (row[1] is not None and row[1] <= time.time()):
            return None
        return str(row[0])

    def set(self, key: str, value: str, ttl_s: float | None = None) -> None:
        now = time.time()
        expires = now + ttl_s if ttl_s else None
        with self._turn():
            conn = self._connection()
            conn.execute(
                "INSERT OR REPLACE INTO promptcast_cache (key, value, expires) VALUES (?, ?, ?)",
                (key, value, expires),
            )
            self._sets += 1
            if self._sets % 256 == 0:  # expired rows are only skipped on read: sweep now and then
                conn.execute("DELETE FROM promptcast_cache WHERE expires <= ?", (now,))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __repr__(self) -> str:
        return f"<SQLiteCache {self.path}>"


class RedisCache:
    """A cache in Redis, shared by every replica; entries expire in Redis itself.

    Each thread keeps its own connection and sends commands on it directly: redis-py's client
    adds about 0.1 ms of bookkeeping per command (pool checkout, retry and event hooks), as much
    as the loopback round trip itself. A broken connection is reopened once per command.
    """

    def __init__(self, url: str, *, prefix: str = "promptcast:cache:", timeout_s: float = 0.25):
        try:
            import redis
        except ImportError as exc:
            raise ConfigurationError(
                f"{ENV_VAR}={redact_url(url)!r} needs the redis client: "
                "pip install 'promptcast[redis]'",
                env_var=ENV_VAR,
                extra="redis",
            ) from exc
        self.url = url
        self.prefix = prefix
        self.timeout_s = timeout_s
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        # The URL's own options (e.g. ?socket_timeout=1) win over these defaults.
        self._pool = redis.ConnectionPool.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._local = threading.local()
        self._conns: list[Any] = []
        self._lock = threading.Lock()
        self._connection_error: type[Exception] = redis.ConnectionError

    def _command(self, *args: str | int) -> Any:
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None or local.pid != os.getpid():  # never reuse a connection across a fork
            conn = self._pool.make_connection()
            with self._lock:
                self._conns.append(conn)
            local.conn, local.pid = conn, os.getpid()
        try:
            conn.send_command(*args)
            return conn.read_response()
        except self._connection_error:  # e.g. the server restarted: reconnect once
            conn.disconnect()
            conn.send_command(*args)
            return conn.read_response()

    def get(self, key: str) -> str | None:
        value = self._command("GET", self.prefix + key)
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    def set(self, key: str, value: str, ttl_s: float | None = None) -> None:
        if ttl_s:
            self._command("SET", self.prefix + key, value, "PX", max(1, round(ttl_s * 1000)))
        else:
            self._command("SET", self.prefix + key, value)

    def close(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.disconnect()
        self._local = threading.local()

    def _client(self) -> Any:
        """The running event loop's redis.asyncio client."""
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            import redis.asyncio

            client = self._async[loop] = redis.asyncio.Redis.from_url(
                self.url, socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s
            )
        return client

    async def aget(self, key: str) -> str | None:
        value = await self._client().get(self.prefix + key)
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def aset(self, key: str, value: str, ttl_s: float | None = None) -> None:
        px = max(1, round(ttl_s * 1000)) if ttl_s else None
        await self._client().set(self.prefix + key, value, px=px)

    async def aclose(self) -> None:
        client = self._async.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def __repr__(self) -> str:
        return f"<RedisCache {redact_url(self.url)}>"


def check_url(value: str, *, source: str = ENV_VAR) -> str:
    """`value` if it is `off`, `sqlite:///path` or `redis://…`; else a `ConfigurationError`."""
    try:
        return check_cache_url(value)
    except ValueError as exc:
        raise ConfigurationError(f"{source} {exc}.", env_var=ENV_VAR) from None


def open_cache(url: str, *, timeout_s: float = 0.25) -> Cache | None:
    """A new cache for `url` (`off`, `sqlite:///path`, `redis://…`); `None` for `off`.
    `timeout_s` bounds each operation (SQLite's busy wait, Redis's socket timeouts)."""
    url = check_url(url)
    if url == "off":
        return None
    if url.startswith("sqlite:"):
        # SQLAlchemy's spelling: sqlite:///relative/path, sqlite:////absolute/path
        return SQLiteCache(urlsplit(url).path.removeprefix("/"), timeout_s=timeout_s)
    return RedisCache(url, timeout_s=timeout_s)


_shared: dict[tuple[str, float], Cache] = {}
_shared_lock = threading.Lock()
_failing: set[tuple[int, str]] = set()  # (store, "read" or "write"): each logged once


def shared_cache(config: Settings) -> Cache | None:
    """The process-wide cache the settings name, opened once per URL and timeout (the sync path
    relies on the store's own timeouts, so a scope with another `cache_timeout_s` gets its own)."""
    setting = config.cache
    if not isinstance(setting, str):
        return typing.cast(Cache, setting)
    if setting == "off":
        return None
    key = (setting, config.cache_timeout_s)
    opened = _shared.get(key)
    if opened is None:
        with _shared_lock:
            opened = _shared.get(key)
            if opened is None:
                opened = open_cache(setting, timeout_s=config.cache_timeout_s)
                assert opened is not None
                _shared[key] = opened
    return opened


def close_caches() -> None:
    """Close every cache opened from a URL setting (tests, shutdown)."""
    with _shared_lock:
        caches = list(_shared.values())
        _shared.clear()
    for cache in caches:
        cache.close()


@functools.lru_cache(maxsize=256)
def _schema_json(output_model: type[BaseModel] | None) -> str:
    """The output schema as canonical JSON, built once per class (it is part of every key)."""
    if output_model is None:
        return "null"
    return json.dumps(output_model.model_json_schema(), sort_keys=True, separators=(",", ":"))


def cache_key(
    model: str,
    template_hash: str,
    prompt: Prompt,
    output_model: type[BaseModel] | None,
    max_tokens: int,
    temperature: float | None,
    *,
    endpoint: str = "",
    output_mode: str = "",
) -> str:
    """sha256 of everything that shapes the answer: model, the endpoint that serves it (a base
    URL, never a credential), the output mode, template, the rendered request (system and
    messages), the output schema and the sampling parameters."""
    request = json.dumps(
        [
            model,
            endpoint,
            output_mode,
            template_hash,
            prompt.system,
            prompt.messages,
            max_tokens,
            temperature,
        ],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    digest = hashlib.sha256(request.encode())
    digest.update(b"\0")
    digest.update(_schema_json(output_model).encode())
    return digest.hexdigest()


def decode(raw: str | None, spec: TaskSpec, model: str, started: float) -> Run[Any] | None:
    """The cached `Run` stored as `raw` (`cached=True`, no usage, no attempts), or `None`."""
    if raw is None:
        return None
    try:
        entry = json.loads(raw)
        data = entry["output"]
        if spec.output_model is None:
            if not isinstance(data, str):
                return None
            output: Any = data
        else:
            output = spec.output_model.model_validate(data)
    except (ValueError, KeyError, TypeError, RecursionError):
        # an entry that no longer validates is a miss, and so is one too deeply nested to parse
        # (a store that lies or was written by something else): the call goes to the model
        return None
    return Run(
        output=output,
        usage=Usage(),
        model=str(entry.get("model", model)),
        task=spec.name,
        task_version=spec.version,
        template_hash=spec.template_hash,
        latency_s=time.perf_counter() - started,
        cached=True,
        output_mode=str(entry.get("output_mode", "text" if spec.output_model is None else "tool")),
    )


def encode(output: Any, model: str, output_mode: str) -> str:
    """A validated output as the JSON text a store keeps (with how it was asked for, so a hit
    reports the mode of the call that answered)."""
    data = output.model_dump(mode="json") if isinstance(output, BaseModel) else output
    entry = {"model": model, "output": data, "output_mode": output_mode}
    return json.dumps(entry, ensure_ascii=False)


def read(cache: Cache, key: str) -> str | None:
    """`cache.get(key)`, or `None` (logged once) when the store fails."""
    try:
        value = cache.get(key)
    except Exception as exc:
        _failed(cache, "read", exc)
        return None
    _recovered(cache, "read")
    return value


def write(cache: Cache, key: str, value: str, ttl_s: float | None) -> None:
    """`cache.set(...)`; a failing store is logged once and otherwise ignored."""
    try:
        cache.set(key, value, ttl_s)
    except Exception as exc:
        _failed(cache, "write", exc)
        return
    _recovered(cache, "write")


async def _bounded(cache: Cache, what: str, timeout_s: float, method: str, *args: Any) -> Any:
    """Run `cache.a<method>` (or `cache.<method>` in a cache thread) for at most `timeout_s`;
    a failure or a timeout is logged once and read as a miss."""
    native = getattr(cache, "a" + method, None)
    try:
        if native is not None:
            value = await asyncio.wait_for(native(*args), timeout_s)
        else:
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(_EXECUTOR, getattr(cache, method), *args)
            value = await asyncio.wait_for(future, timeout_s)
    except Exception as exc:  # TimeoutError included: go on without the cache
        _failed(cache, what, exc)
        return None
    _recovered(cache, what)
    return value


async def aread(cache: Cache, key: str, timeout_s: float) -> str | None:
    """`read` without blocking the event loop, given up after `timeout_s`."""
    value = await _bounded(cache, "read", timeout_s, "get", key)
    return value if isinstance(value, str) else None


async def awrite(cache: Cache, key: str, value: str, ttl_s: float | None, timeout_s: float) -> None:
    """`write` without blocking the event loop, given up after `timeout_s`."""
    await _bounded(cache, "write", timeout_s, "set", key, value, ttl_s)


def _failed(cache: Cache, what: str, exc: BaseException) -> None:
    """Log a failing store once until it works again, so an outage does not flood the logs.
    Reads and writes are judged apart: a full disk or a read-only file fails every write while
    reads work, and one flag for both logged 'failed' and 'works again' on every call."""
    if (id(cache), what) not in _failing:
        logged = any(store == id(cache) for store, _ in _failing.copy())  # threads add too
        _failing.add((id(cache), what))
        if logged:
            return
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        logger.warning(
            "response cache %r failed to %s (%s); calling the model without it",
            cache,
            what,
            redact_url(reason),
        )


def _recovered(cache: Cache, what: str) -> None:
    if _failing and (id(cache), what) in _failing:
        _failing.discard((id(cache), what))
        if not any(store == id(cache) for store, _ in _failing.copy()):
            logger.warning("response cache %r works again", cache)
