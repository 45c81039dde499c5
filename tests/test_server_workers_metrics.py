"""`/metrics` under `promptcast serve --workers 2`: every scrape shows the sum over the workers,
whichever worker answers it, through prometheus-client's multiprocess mode; one worker is as
before (its own registry, no folder, no variable)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

from promptcast.errors import ConfigurationError
from promptcast.server import create_app, runner
from promptcast.server._multiproc import MULTIPROC_DIR_ENV, metrics_folder
from promptcast.server.metrics import Metrics
from promptcast.server.runner import serve
from promptcast.testing import FakeAnthropic
from tests.serving import metric
from tests.test_server_cli import start_serve

BODY = {"message": "order #7 is late"}
CALLS = "promptcast_task_calls_total"


def _calls_by_worker(folder: Path) -> dict[int, float]:
    """Task calls answered by each worker, read from its own file in the metrics folder."""
    counts: dict[int, float] = {}
    for file in folder.glob("counter_*.db"):
        pid = int(file.stem.removeprefix("counter_"))
        for family in MultiProcessCollector.merge([str(file)]):  # type: ignore[no-untyped-call]
            counts[pid] = sum(s.value for s in family.samples if s.name == CALLS) + counts.get(
                pid, 0
            )
    return counts


def _scrape(base_url: str) -> str:
    with httpx.Client(base_url=base_url, timeout=30) as fresh:  # a new connection: any worker
        answer = fresh.get("/metrics")
    assert answer.status_code == 200
    return answer.text


def _wait_ready(base_url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the workers did not get ready")


def test_every_scrape_sums_the_workers_and_a_dead_worker_leaves_the_live_gauges(
    fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    """Calls spread over both workers (each one's file shows some); every scrape on a fresh
    connection shows all of them. A worker killed mid-call keeps its counts but no longer counts
    as in flight once the supervisor replaced it. The private folder is gone after SIGTERM."""
    release = threading.Event()
    slow = {"on": False}

    def handler(body: dict[str, Any]) -> dict[str, Any]:
        if slow["on"]:
            release.wait(20)
        return fake_anthropic.auto(body)

    fake_anthropic.handler = handler
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the run's private folder lands here
    for name in (MULTIPROC_DIR_ENV, "PROMPTCAST_API_TOKENS"):
        env.pop(name, None)
    child, base_url, _ = start_serve(["--workers", "2"], env)
    try:
        _wait_ready(base_url)
        (folder,) = tmp_path.glob("promptcast-metrics-*")
        calls = 0
        while calls < 6 or len([n for n in _calls_by_worker(folder).values() if n]) < 2:
            assert calls < 60, f"one worker answered every call: {_calls_by_worker(folder)}"
            with httpx.Client(base_url=base_url, timeout=30) as fresh:
                assert fresh.post("/v1/tasks/extract_ticket", json=BODY).status_code == 200
            calls += 1
        for _ in range(8):
            text = _scrape(base_url)
            assert metric(text, CALLS, task="extract_ticket", status="200") == calls
            assert metric(text, "promptcast_calls_in_flight") == 0

        # a worker killed while a call of its own is in flight
        slow["on"] = True
        caller = threading.Thread(
            target=lambda: _ignore_transport_error(base_url), name="call-then-killed"
        )
        caller.start()
        deadline = time.monotonic() + 10
        while fake_anthropic.in_flight < 1:
            assert time.monotonic() < deadline, "the call did not reach the provider"
            time.sleep(0.02)
        assert metric(_scrape(base_url), "promptcast_calls_in_flight") == 1
        busy = _worker_with_a_call_in_flight(folder)
        os.kill(busy, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while metric(text := _scrape(base_url), "promptcast_calls_in_flight") != 0:
            assert time.monotonic() < deadline, "the dead worker's call still counts in flight"
            time.sleep(0.1)
        assert metric(text, CALLS, task="extract_ticket", status="200") == calls  # kept
        release.set()
        caller.join(30)
    finally:
        release.set()
        child.send_signal(signal.SIGTERM)
        _, rest = child.communicate(timeout=60)
    assert child.returncode == 0, rest
    assert list(tmp_path.glob("promptcast-metrics-*")) == []


def _ignore_transport_error(base_url: str) -> None:
    with contextlib.suppress(httpx.TransportError):  # its worker is killed
        httpx.post(f"{base_url}/v1/tasks/extract_ticket", json=BODY, timeout=30)


def _worker_with_a_call_in_flight(folder: Path) -> int:
    for file in folder.glob("gauge_livesum_*.db"):
        for family in MultiProcessCollector.merge([str(file)]):  # type: ignore[no-untyped-call]
            if family.name == "promptcast_calls_in_flight" and any(s.value for s in family.samples):
                return int(file.stem.removeprefix("gauge_livesum_"))
    raise AssertionError(f"no worker has a call in flight: {list(folder.iterdir())}")


def test_a_folder_the_user_set_is_used_kept_and_its_earlier_metrics_are_warned_about(
    fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    """`PROMETHEUS_MULTIPROC_DIR` given: the workers write there, the folder stays after the run
    without live gauges of the stopped workers, and counts already in it (added to this run's,
    as prometheus-client does) are named in a warning."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    earlier = MmapedDict(str(folder / "counter_1.db"))  # type: ignore[no-untyped-call]
    labels = ["task", "model", "status"]
    values = ["extract_ticket", "anthropic/claude-sonnet-4-6", "200"]
    key = mmap_key("promptcast_task_calls", CALLS, labels, values, "earlier")
    earlier.write_value(key, 5, 0)  # type: ignore[no-untyped-call]
    earlier.close()  # type: ignore[no-untyped-call]
    env = {**os.environ, MULTIPROC_DIR_ENV: str(folder)}
    env.pop("PROMPTCAST_API_TOKENS", None)
    child, base_url, lines = start_serve(["--workers", "2"], env)
    try:
        _wait_ready(base_url)
        with httpx.Client(base_url=base_url, timeout=30) as fresh:
            assert fresh.post("/v1/tasks/extract_ticket", json=BODY).status_code == 200
        text = _scrape(base_url)
        assert metric(text, CALLS, task="extract_ticket", status="200") == 5 + 1
        live = list(folder.glob("gauge_livesum_*.db"))
        assert len(live) == 2  # one per worker
    finally:
        child.send_signal(signal.SIGTERM)
        _, rest = child.communicate(timeout=60)
    assert child.returncode == 0, rest
    lines += [json.loads(line) for line in rest.splitlines() if line.strip()]
    (warning,) = [line for line in lines if MULTIPROC_DIR_ENV in line.get("message", "")]
    assert warning["level"] == "warning" and str(folder) in warning["message"]
    assert folder.is_dir() and list(folder.glob("counter_*.db"))
    assert list(folder.glob("gauge_livesum_*.db")) == []


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_sets_a_folder_for_several_workers_only(
    workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `serve` hands uvicorn: one worker runs as before (no folder, no variable)."""
    monkeypatch.delenv(MULTIPROC_DIR_ENV, raising=False)
    seen: dict[str, Any] = {}

    def fake_run(app: object, *, metrics_dir: str | None = None, **options: Any) -> None:
        seen.update(metrics_dir=metrics_dir, env=os.environ.get(MULTIPROC_DIR_ENV))
        seen["existed"] = metrics_dir is not None and Path(metrics_dir).is_dir()

    monkeypatch.setattr(runner, "run", fake_run)
    serve(workers=workers)
    if workers == 1:
        assert seen == {"metrics_dir": None, "env": None, "existed": False}
    else:
        assert seen["env"] == seen["metrics_dir"] and seen["existed"]
        assert not Path(seen["metrics_dir"]).exists()
    assert MULTIPROC_DIR_ENV not in os.environ


def test_one_worker_uses_no_folder_and_sets_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_DIR_ENV, raising=False)
    with metrics_folder(1) as folder:
        assert folder is None and MULTIPROC_DIR_ENV not in os.environ
    assert Metrics().multiprocess_dir is None


def test_several_workers_get_a_private_folder_removed_afterwards(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(MULTIPROC_DIR_ENV, raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    with metrics_folder(3) as folder:
        assert folder is not None and Path(folder).parent == tmp_path
        assert os.environ[MULTIPROC_DIR_ENV] == folder and Path(folder).is_dir()
    assert MULTIPROC_DIR_ENV not in os.environ and not Path(folder).exists()


def test_a_folder_the_user_set_is_used_and_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(tmp_path))
    with metrics_folder(2) as folder:
        assert folder == str(tmp_path)
    assert os.environ[MULTIPROC_DIR_ENV] == str(tmp_path) and tmp_path.is_dir()


def test_a_user_folder_that_does_not_exist_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(tmp_path / "missing"))
    with (
        pytest.raises(ConfigurationError, match=MULTIPROC_DIR_ENV) as raised,
        metrics_folder(2),
    ):
        pass
    assert raised.value.env_var == MULTIPROC_DIR_ENV


def test_the_variable_set_after_prometheus_client_was_imported_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """This process keeps its values in memory (prometheus-client decided at import): rendering
    the folder would show nothing of them, so the app's own registry is rendered."""
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(tmp_path))
    metrics = create_app().state.promptcast.metrics
    assert metrics.multiprocess_dir is None
    metrics.calls.labels("t", "m", "200").inc()
    assert metric(metrics.render().decode(), CALLS, task="t", status="200") == 1
