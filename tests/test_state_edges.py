"""What promptcast writes to disk under two writers at once and a kill at any moment: cassettes,
the response cache, batch outputs and the CLI's output files."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from promptcast.testing import FakeAnthropic, FakeReply
from promptcast.testing._fake_anthropic import _auto
from promptcast.testing.cassettes import CassetteInUseError, recording_lock
from tests.testing.test_plugin import GREET, clean_env

# --- cassettes: two pytest processes (pytest-xdist workers) recording one shared cassette ------

SHARED_TEST = """\
from pathlib import Path

import pytest

import promptcast as pc

tasks = pc.load_tasks(Path(__file__).parent.parent / "prompts")


@pytest.mark.promptcast(path=str(Path(__file__).parent.parent / "cassettes" / "shared.yaml"))
def test_{who}():
    assert tasks.greet(name="{who}").greeting
"""


def recorded_names(cassette: Path) -> list[str]:
    """The `name` input of each request recorded in a cassette of the greet task."""
    data = yaml.safe_load(cassette.read_text())
    prompts = [i["request"]["parsed_body"]["messages"][0]["content"] for i in data["interactions"]]
    return [prompt.split("\n")[1] for prompt in prompts]


def shared_project(root: Path, who: list[str]) -> Path:
    (root / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]\naddopts = '-p no:cacheprovider'\n"
    )
    (root / "prompts").mkdir()
    (root / "prompts" / "greet.jinja").write_text(GREET)
    (root / "tests").mkdir()
    for name in who:
        (root / "tests" / f"test_{name}.py").write_text(SHARED_TEST.format(who=name))
    return root / "cassettes" / "shared.yaml"


def start_pytest(root: Path, fake: FakeAnthropic, *args: str) -> subprocess.Popen[str]:
    env = clean_env(ANTHROPIC_BASE_URL=fake.base_url, ANTHROPIC_API_KEY="sk-ant-test-0123456789")
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", *args],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


class Overlapping:
    """A provider whose first request waits (up to `window` s) for a second one to arrive: two
    recordings in flight at once, as two xdist workers calling at the same moment."""

    def __init__(self, window: float = 4.0) -> None:
        self.window = window
        self.count = 0
        self.second = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, request: dict[str, Any]) -> FakeReply:
        with self.lock:
            self.count += 1
            first = self.count == 1
        if first:
            self.second.wait(self.window)
        else:
            self.second.set()
        return FakeReply(_auto(request))


@pytest.mark.parametrize("mode", ["new_episodes", "once"])
def test_two_processes_recording_one_cassette_keep_both_recordings(
    tmp_path: Path, mode: str
) -> None:
    """Each worker copied the old cassette, added its request and replaced the file: one of the two
    recordings was lost. Now the second waits for the first and starts from its file, as a run one
    test at a time does (in `once` mode a cassette that exists takes no new request: the second
    test's miss names the shared cassette, not a temporary copy)."""
    cassette = shared_project(tmp_path, ["a", "b"])
    with FakeAnthropic(handler=Overlapping()) as fake:
        runs = [
            start_pytest(tmp_path, fake, f"tests/test_{w}.py", f"--record-mode={mode}")
            for w in "ab"
        ]
        outputs = [run.communicate(timeout=180)[0] for run in runs]
    text = cassette.read_text()
    if mode == "new_episodes":
        assert [run.returncode for run in runs] == [0, 0], outputs
        assert sorted(recorded_names(cassette)) == ["a", "b"], text
    else:
        assert sorted(run.returncode for run in runs) == [0, 1], outputs
        failed = outputs[[run.returncode for run in runs].index(1)]
        assert f"in {cassette}" in failed, failed
        assert ".tmp" not in failed.split("No recording", 1)[1].split("\n", 1)[0], failed
        assert len(recorded_names(cassette)) == 1, text
    assert sorted(p.name for p in cassette.parent.iterdir()) == ["shared.yaml"]


def test_a_recording_lock_held_too_long_is_a_typed_error_naming_the_cassette(
    tmp_path: Path,
) -> None:
    cassette = tmp_path / "c.yaml"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom pathlib import Path\n"
            "from promptcast.testing.cassettes import recording_lock\n"
            f"with recording_lock(Path({str(cassette)!r})):\n"
            "    print('held', flush=True)\n    time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(CassetteInUseError, match=r"c\.yaml.*another process"),
            recording_lock(cassette, timeout=0.3),
        ):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate()
    # a killed holder leaves no stale lock
    with recording_lock(cassette, timeout=5):
        pass


def test_a_kill_mid_record_keeps_the_old_cassette_whole(tmp_path: Path) -> None:
    cassette = shared_project(tmp_path, ["a", "b"])
    with FakeAnthropic() as fake:
        first = start_pytest(tmp_path, fake, "tests/test_a.py", "--record-mode=once")
        output = first.communicate(timeout=120)[0]
        assert first.returncode == 0, output
    before = cassette.read_bytes()
    arrived = threading.Event()

    def hang(request: dict[str, Any]) -> FakeReply:
        arrived.set()
        time.sleep(30)
        return FakeReply(_auto(request))

    with FakeAnthropic(handler=hang) as fake:
        run = start_pytest(tmp_path, fake, "tests/test_b.py", "--record-mode=new_episodes")
        try:
            assert arrived.wait(60)
        finally:
            run.send_signal(signal.SIGKILL)
            run.communicate()
    assert cassette.read_bytes() == before
    # the killed run's temporary copy goes with the next recording of that cassette
    with FakeAnthropic() as fake:
        again = start_pytest(tmp_path, fake, "tests/test_b.py", "--record-mode=new_episodes")
        output = again.communicate(timeout=120)[0]
    assert again.returncode == 0, output
    assert sorted(recorded_names(cassette)) == ["a", "b"]
    assert [p.name for p in cassette.parent.iterdir()] == ["shared.yaml"]
