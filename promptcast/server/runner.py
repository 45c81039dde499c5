"""`promptcast serve`: check the tasks, the settings and the bind address, then run the app on
uvicorn with bounded connections and timeouts until SIGINT or SIGTERM.

With `--workers N` uvicorn spawns N processes and pickles its `Config` to each: the app is given
as an `AppFactory` holding the folders `serve` was given, so every worker builds the same app
without any environment variable being changed.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from promptcast._config import get_config
from promptcast.errors import ConfigurationError
from promptcast.server._multiproc import Supervisor, metrics_folder
from promptcast.server._protocol import PROTOCOL
from promptcast.server.app import create_app, default_registry
from promptcast.server.gate import logger
from promptcast.server.hosts import HostPolicy, is_loopback
from promptcast.server.logs import log_config

__all__ = [
    "GRACEFUL_TIMEOUT_S",
    "MAX_HEADER_BYTES",
    "AppFactory",
    "app_from_env",
    "serve",
]

MAX_HEADER_BYTES = 16 * 1024
"""The largest request head the h11 parser buffers (uvicorn[standard] uses httptools instead)."""
GRACEFUL_TIMEOUT_S = 25.0
"""How long a stopped server lets calls in flight finish before it cancels them: under the 30 s a
container runtime waits before SIGKILL, and bounded whatever a provider or a stalled reader does."""


@dataclass(frozen=True)
class AppFactory:
    """Builds the app in a uvicorn worker: the built-ins plus the task files of `prompts`
    (`None`: `PROMPTCAST_PROMPTS`). Picklable, so spawned workers receive it whole."""

    prompts: tuple[str, ...] | None = None

    def __call__(self) -> FastAPI:
        return create_app(default_registry(self.prompts))


def app_from_env() -> FastAPI:
    """The app with every setting from the environment, for `uvicorn --factory
    promptcast.server:app_from_env`."""
    return create_app()


def serve(
    *,
    prompts: Sequence[str | Path] | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    insecure: bool = False,
    graceful_timeout_s: float = GRACEFUL_TIMEOUT_S,
) -> None:
    """Check the tasks, the settings and the bind address, then run the app on uvicorn until
    stopped.

    `keep_alive_s` (`PROMPTCAST_KEEP_ALIVE_S`, 5) closes an idle keep-alive connection;
    `max_connections` (`PROMPTCAST_MAX_CONNECTIONS`, 512) bounds open connections per worker
    (beyond it uvicorn answers 503 before the app, so a flood cannot exhaust file descriptors).

    On SIGINT or SIGTERM it stops accepting connections and lets the calls in flight finish for
    up to `graceful_timeout_s`, then cancels the rest (a slow provider or a client that stopped
    reading a stream would otherwise keep it running until killed).

    Without tokens, only a loopback address is allowed unless `insecure` is set: an open server on
    a public interface would spend the provider key for anyone who finds it.
    """
    config = get_config()  # every PROMPTCAST_* setting checked here, named when wrong
    folders = tuple(str(p) for p in prompts) if prompts else None
    registry = default_registry(folders)  # fail here, with file:line, not in each worker
    HostPolicy.of(config.allowed_hosts)
    if not config.api_tokens and not is_loopback(host) and not insecure:
        raise ConfigurationError(
            f"refusing to serve on {host} without bearer tokens: set PROMPTCAST_API_TOKENS "
            "(comma-separated), bind to 127.0.0.1, or pass --insecure to allow anyone to call",
            env_var="PROMPTCAST_API_TOKENS",
        )
    try:  # uvicorn would log only "[Errno -2] Name or service not known", without the name
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigurationError(
            f"cannot serve on --host {host!r}: it does not resolve ({exc.strerror}); give an IP "
            "address (127.0.0.1, 0.0.0.0, ::) or a name this machine resolves"
        ) from None
    logger.debug("serving %d task(s)", len(registry))
    app: FastAPI | AppFactory = create_app(registry) if workers == 1 else AppFactory(folders)
    options: dict[str, Any] = {
        "factory": isinstance(app, AppFactory),
        "host": host,
        "port": port,
        "workers": workers,
        "log_config": log_config(config.log_level),
        "access_log": False,
        "server_header": False,
        "proxy_headers": False,
        "timeout_keep_alive": config.keep_alive_s,
        "limit_concurrency": config.max_connections,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "http": PROTOCOL,  # a client must send each request within a deadline
        "timeout_graceful_shutdown": graceful_timeout_s,
    }
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal: make that a
    # clean exit 0 rather than a KeyboardInterrupt traceback or a death by signal
    stop = signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        # several workers sum their metrics in one folder, set for them before they spawn
        with metrics_folder(workers) as metrics_dir:
            run(app, **options, metrics_dir=metrics_dir)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, stop)


def run(app: FastAPI | AppFactory, *, metrics_dir: str | None = None, **options: Any) -> None:
    """`uvicorn.run(app, **options)`, except that several workers take a picklable factory object
    rather than an import string: one server in this process, or a supervisor of
    `options["workers"]` spawned ones sharing one listening socket (and the `metrics_dir` where
    they sum their metrics)."""
    config = uvicorn.Config(app, **options)
    if config.workers > 1:
        socket = config.bind_socket()
        Supervisor(config, sockets=[socket], metrics_dir=metrics_dir).run()
        return
    server = uvicorn.Server(config)
    server.run()
    if not server.started:  # uvicorn logged why (the port is taken, …)
        raise SystemExit(1)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)
