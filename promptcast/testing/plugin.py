"""The promptcast pytest plugin (entry point `pytest11: promptcast`): record once, replay forever.

- `@pytest.mark.promptcast` (or the `promptcast_cassette` fixture) puts the test's provider
  requests in `cassettes/<test module>/<test name>.yaml` under the project root. The record mode
  is pytest-recording's `--record-mode` (default `none`: replay only, non-loopback sockets blocked,
  placeholder API keys supplied for every provider). Marker keyword arguments go to vcrpy (`path=`
  picks the file). Recording writes a temporary copy that replaces the cassette only when the test
  passes; processes recording one cassette (pytest-xdist workers sharing `path=`) take turns.
  `--record-mode=rewrite` re-records a test's cassette from scratch (a cassette that tests share
  is started afresh once per run, then each test adds its requests).
- `pytest --promptcast-examples prompts/` (or `promptcast_examples = true` in the pytest ini
  options) collects every frontmatter example of every `*.jinja` file as an item
  `task[example-N]`, replayed from `cassettes/examples/<task>/example-N.yaml`.

ini options: `promptcast_cassette_dir` (default `cassettes`), `promptcast_ignore_fields` (dotted
JSON body fields left out of request matching, e.g. `metadata.user_id`), `promptcast_examples`.
"""

from __future__ import annotations

import re
import shlex
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from promptcast._modes import replaying
from promptcast.errors import PromptcastError
from promptcast.evals import expectation_problems
from promptcast.spec import Example
from promptcast.task import Task
from promptcast.testing.cassettes import (
    NoRecordingError,
    cassette_miss,
    explaining_misses,
    first_in_run,
    placeholder_keys,
    recording_lock,
    register,
    staged,
    vcr_config,
)

__all__ = [
    "ExampleItem",
    "ExampleMismatch",
    "NoRecordingError",
    "TaskFile",
    "check_example",
    "use_cassette",
]

LOOPBACK = ["127.0.0.1", "localhost", "::1"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("promptcast", "promptcast task recordings")
    group.addoption(
        "--promptcast-examples",
        action="store_true",
        default=False,
        help="collect the frontmatter examples of *.jinja task files as test items",
    )
    parser.addini(
        "promptcast_examples", "collect *.jinja examples as items", type="bool", default=False
    )
    parser.addini(
        "promptcast_cassette_dir",
        "folder of cassettes, relative to the rootdir",
        default="cassettes",
    )
    parser.addini(
        "promptcast_ignore_fields",
        "dotted JSON body fields ignored when matching",
        type="args",
        default=[],
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "promptcast(**vcr_options): record/replay this test's provider requests in "
        "cassettes/<module>/<test>.yaml",
    )


def cassette_root(config: pytest.Config) -> Path:
    return Path(config.rootpath) / str(config.getini("promptcast_cassette_dir"))


@contextmanager
def use_cassette(
    config: pytest.Config,
    path: Path,
    *,
    nodeid: str,
    example: bool = False,
    stage: Stage | None = None,
    shared: bool = False,
    **overrides: Any,
) -> Iterator[Any]:
    """Replay (or record, per `--record-mode`) every provider request inside the block.

    Recording goes to a temporary copy of the cassette that replaces it only when the block (and
    `stage`, for a test whose outcome is known later) succeeds: a run without a key or with a
    provider error never destroys a good recording. A miss is a `NoRecordingError` whose command
    records it: `--record-mode=rewrite` when the cassette exists, `once` when it does not.
    """
    import vcr
    from pytest_recording import network

    record_mode = config.getoption("--record-mode", default=None) or "none"
    command = record_command(config, nodeid, path, example=example, shared=shared)
    recorder = register(
        vcr.VCR(**vcr_config(**overrides)), ignore_fields=config.getini("promptcast_ignore_fields")
    )
    if record_mode == "none":
        with (
            placeholder_keys(),
            network.blocking_context(allowed_hosts=LOOPBACK),
            recorder.use_cassette(str(path), record_mode="none") as cassette,
            explaining_misses(),
            replaying(cassette),  # in the output mode the recording was made in
        ):
            cassette._promptcast_record_command = command
            yield cassette
        return
    fresh = record_mode in ("rewrite", "all")
    mode = "new_episodes" if record_mode == "rewrite" else record_mode  # vcrpy has no "rewrite"
    try:
        # one recording of a cassette at a time across processes (pytest-xdist workers sharing
        # `path=`), taken before the copy so the second starts from the first one's file
        with (
            recording_lock(path),
            staged(path, copy=not (fresh and first_in_run(path, _run_id(config)))) as temporary,
        ):
            # after the wait: another process may have written the cassette meanwhile
            command = record_command(config, nodeid, path, example=example, shared=shared)
            with (
                recorder.use_cassette(str(temporary), record_mode=mode) as cassette,
                explaining_misses(),
            ):
                cassette._promptcast_record_command = command
                cassette._promptcast_path = str(path)  # a miss names it, not the temporary copy
                yield cassette
            if stage is not None and stage.failed:
                raise _Discard
    except _Discard:
        pass


_RUN = pytest.StashKey[str]()


def _run_id(config: pytest.Config) -> str:
    """This test run's id: pytest-xdist's `testrunuid` (the same in every worker), else one of
    this session's own."""
    worker = getattr(config, "workerinput", None)
    if isinstance(worker, dict) and worker.get("testrunuid"):
        return str(worker["testrunuid"])
    return config.stash.setdefault(_RUN, uuid.uuid4().hex)


class _Discard(Exception):
    """The test failed after its requests were recorded: the old cassette stays."""


class Stage:
    """A test's recording, replaced only if the test passes (`failed` is set by the plugin)."""

    failed = False


_STAGE = pytest.StashKey[Stage]()


def record_command(
    config: pytest.Config, nodeid: str, path: Path, *, example: bool, shared: bool = False
) -> str:
    """The command that records this test's cassette, runnable from where pytest was run. A
    cassette other tests may share (`path=`) gets `new_episodes`: `rewrite`, run for this one
    test, started it afresh and dropped the other tests' recordings."""
    args = ["pytest", nodeid]
    if example:
        args.append("--promptcast-examples")
    again = "new_episodes" if shared else "rewrite"
    args.append("--record-mode=" + (again if path.exists() else "once"))
    command = shlex.join(args)
    root = Path(config.rootpath).resolve()
    if Path(config.invocation_params.dir).resolve() != root:
        command = f"cd {shlex.quote(str(root))} && {command}"
    return command


def _default_path(request: pytest.FixtureRequest) -> Path:
    module = Path(str(request.node.path)).stem
    name = re.sub(r"[^\w.\[\]-]+", "_", request.node.name)
    return cassette_root(request.config) / module / f"{name}.yaml"


@pytest.fixture
def promptcast_cassette(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The vcrpy cassette of this test: `cassettes/<test module>/<test name>.yaml`."""
    marker = request.node.get_closest_marker("promptcast")
    options = dict(marker.kwargs) if marker else {}
    path = Path(options.pop("path", None) or _default_path(request))
    shared = path != _default_path(request)  # a path= of its own: other tests may use it too
    stage = request.node.stash.setdefault(_STAGE, Stage())
    with use_cassette(
        request.config, path, nodeid=request.node.nodeid, stage=stage, shared=shared, **options
    ) as cassette:
        yield cassette


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """A test that fails keeps its old cassette, and a cassette miss inside its code reads as
    the `NoRecordingError` that names the command recording it."""
    try:
        return (yield)
    except BaseException as exc:
        stage = item.stash.get(_STAGE, None)
        if stage is None:
            raise
        stage.failed = True
        miss = cassette_miss(exc) if not isinstance(exc, NoRecordingError) else None
        if miss is not None:
            raise miss from None
        raise


@pytest.fixture(autouse=True)
def _promptcast_marker(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("promptcast") is not None:
        request.getfixturevalue("promptcast_cassette")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    config = parent.config
    wanted = config.getoption("--promptcast-examples") or config.getini("promptcast_examples")
    if wanted and file_path.suffix == ".jinja":
        return TaskFile.from_parent(parent, path=file_path)
    return None


class TaskFile(pytest.File):
    """A task file: one item per frontmatter example."""

    def collect(self) -> Iterator[pytest.Item]:
        task = Task.from_file(self.path)
        for index, example in enumerate(task.spec.examples):
            yield ExampleItem.from_parent(
                self,
                name=f"{task.name}[example-{index}]",
                task=task,
                index=index,
                example=example,
            )


class ExampleMismatch(AssertionError):
    """An example's output does not meet its `expect` / `expect_contains`."""


def check_example(output: Any, example: Example) -> None:
    """Subset match on `expect`, case-insensitive substring match on `expect_contains`."""
    problems = expectation_problems(output, example)
    if problems:
        raise ExampleMismatch("; ".join(problems))


class ExampleItem(pytest.Item):
    """One frontmatter example, run through its cassette and checked against `expect`."""

    def __init__(self, *, task: Task[Any], index: int, example: Example, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.task = task
        self.index = index
        self.example = example

    @property
    def cassette_path(self) -> Path:
        root = cassette_root(self.config)
        return root / "examples" / self.task.name / f"example-{self.index}.yaml"

    def runtest(self) -> None:
        with use_cassette(self.config, self.cassette_path, nodeid=self.nodeid, example=True):
            run = self.task.run(**self.example.inputs)
            check_example(run.output, self.example)  # a mismatch keeps the old recording

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, ExampleMismatch | PromptcastError):
            return f"{self.name}: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        line = (self.example.line or 1) - 1
        return self.path, line, f"{self.task.name} example {self.index}"
