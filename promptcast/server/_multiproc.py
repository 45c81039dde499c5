"""Metrics shared by the workers of `promptcast serve --workers N`, through prometheus-client's
multiprocess mode.

Each uvicorn worker has its own process, so its own counters: a scrape of `/metrics` answered by
whichever worker accepted the connection would jump between their values (Prometheus reads each
drop as a counter reset). With `PROMETHEUS_MULTIPROC_DIR` set before the workers spawn, every
worker writes its values to files in that folder and `/metrics` renders the sum over all of them
(see `promptcast.server.metrics`). The supervisor marks a worker that exits as dead, so the
in-flight and waiting gauges count live workers only.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from socket import socket

from prometheus_client import multiprocess
from uvicorn import Config
from uvicorn.supervisors import Multiprocess

from promptcast.errors import ConfigurationError

__all__ = ["MULTIPROC_DIR_ENV", "Supervisor", "metrics_folder"]

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
logger = logging.getLogger("promptcast.server")


@contextmanager
def metrics_folder(workers: int) -> Iterator[str | None]:
    """The folder the workers write their metrics to while serving (`None` for one worker, whose
    own registry is the whole truth).

    A private temporary folder, set as `PROMETHEUS_MULTIPROC_DIR` for the workers to inherit and
    removed afterwards; or the folder the user already set there, kept as it is.
    """
    if workers <= 1:
        yield None
        return
    given = os.environ.get(MULTIPROC_DIR_ENV)
    if given:
        if not os.path.isdir(given):
            raise ConfigurationError(
                f"{MULTIPROC_DIR_ENV}={given!r} is not a folder: create it (empty), or unset it "
                "to let `promptcast serve` use a temporary one",
                env_var=MULTIPROC_DIR_ENV,
            )
        logger.info(
            "the %d workers' metrics are merged in %s=%s (yours: empty it between runs, or its "
            "old counts are added)",
            workers,
            MULTIPROC_DIR_ENV,
            given,
        )
        yield given
        return
    folder = tempfile.mkdtemp(prefix="promptcast-metrics-")
    os.environ[MULTIPROC_DIR_ENV] = folder
    try:
        yield folder
    finally:
        if os.environ.get(MULTIPROC_DIR_ENV) == folder:
            del os.environ[MULTIPROC_DIR_ENV]
        shutil.rmtree(folder, ignore_errors=True)


class Supervisor(Multiprocess):
    """uvicorn's supervisor of spawned workers that also marks each worker that went away (died,
    was restarted by SIGHUP or removed by SIGTTOU) as dead in the metrics folder, so the live
    gauges stop counting its calls in flight."""

    def __init__(self, config: Config, sockets: list[socket], *, metrics_dir: str | None) -> None:
        super().__init__(config, sockets)
        self.metrics_dir = metrics_dir
        self._pids: set[int] = set()

    def handle_signals(self) -> None:
        super().handle_signals()
        self._mark_gone_workers_dead()

    def keep_subprocess_alive(self) -> None:
        super().keep_subprocess_alive()
        self._mark_gone_workers_dead()

    def _mark_gone_workers_dead(self) -> None:
        pids = {process.pid for process in self.processes if process.pid is not None}
        if self.metrics_dir is not None:
            for pid in self._pids - pids:
                multiprocess.mark_process_dead(pid, self.metrics_dir)  # type: ignore[no-untyped-call]
        self._pids = pids
