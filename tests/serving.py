"""Helpers for the server tests: run a real app under uvicorn on 127.0.0.1 in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

TOKEN = "pc-test-token-7f3a9c1e5b"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Serve `app` on a random loopback port until the block ends; yields the base URL.

    uvicorn runs its lifespan, so the app's shutdown closes its provider clients on its own loop.
    """
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
