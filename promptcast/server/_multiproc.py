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

import glob
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
        yield given  # the supervisor warns if it holds an earlier run's metrics
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

    def run(self) -> None:
        if self.metrics_dir is not None and glob.glob(os.path.join(self.metrics_dir, "*.db")):
            # logged here, once uvicorn has set up the JSON log lines
            logger.warning(
                "%s=%s already holds metrics, of an earlier run or another server: they are "
                "added to this one's; give each server an empty folder of its own",
                MULTIPROC_DIR_ENV,
                self.metrics_dir,
            )
        try:
            super().run()
        finally:  # a folder of the user's outlives the run: its live gauges must not
            self._mark_dead(self._pids | self._current_pids())

    def handle_signals(self) -> None:
        super().handle_signals()
        self._mark_gone_workers_dead()

    def keep_subprocess_alive(self) -> None:
        super().keep_subprocess_alive()
        self._mark_gone_workers_dead()

    def _mark_gone_workers_dead(self) -> None:
        pids = self._current_pids()
        self._mark_dead(self._pids - pids)
        self._pids = pids

    def _current_pids(self) -> set[int]:
        return {process.pid for process in self.processes if process.pid is not None}

    def _mark_dead(self, pids: set[int]) -> None:
        if self.metrics_dir is not None:
            for pid in pids:
                multiprocess.mark_process_dead(pid, self.metrics_dir)  # type: ignore[no-untyped-call]
