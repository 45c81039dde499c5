"""The saved results of an evaluation (`evaluate(save=…)`, `promptcast eval --save FILE`).

Each finished (model, case) is appended as one JSONL line as soon as it ends, so a killed run
(Ctrl-C, a crash, kill -9) loses only the calls in flight; a rerun with the same file skips the
pairs already saved for the same task template and rebuilds the report from saved and new
results. The file is written as a batch output is: under the batch's OS lock, a torn last line
cut before resuming, a file that is not an eval results file refused untouched, errored cases
run again.

A case is known by a key hashed from its inputs, expectations and name (not its position), so
cases added to or removed from a cases file keep their saved results.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ValidationError

from promptcast import _batch_files, _json
from promptcast.errors import ConfigurationError, PromptcastError
from promptcast.spec import Example

__all__ = ["KIND", "EvalSaveBusyError", "EvalSaveError", "SavedResults", "case_keys", "opened"]

KIND = "promptcast.eval"
"""The `kind` of every saved line: what tells an eval results file from any other JSONL."""

logger = logging.getLogger("promptcast.evals")


class EvalSaveError(PromptcastError):
    """The results file cannot be opened or written; the lines saved before stay, so the run
    resumes once that is fixed."""


class EvalSaveBusyError(PromptcastError):
    """Another run holds the results file; two writers would run and bill every case twice."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(
            f"{path} is being written by another promptcast eval run (it holds the file's lock); "
            "wait for that run to end or stop it, or save to another --save file"
        )


def _plain(value: Any) -> Any:
    """A JSON-able, run-independent stand-in for an input value (a path, bytes, a model)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, bytes | bytearray):
        return {"sha256": hashlib.sha256(value).hexdigest()}
    if isinstance(value, Path):
        return value.as_posix()
    if isinstance(value, set | frozenset):
        return sorted(map(repr, value))
    return repr(value)


def _case_key(case: Example) -> str:
    content = {
        "inputs": case.inputs,
        "expect": case.expect,
        "expect_contains": case.expect_contains,
        "name": case.name,
    }
    text = json.dumps(content, sort_keys=True, default=_plain, ensure_ascii=True)
    digest = hashlib.sha256(text.encode("utf-8")).digest()[:12]
    return base64.urlsafe_b64encode(digest).decode("ascii")


def case_keys(cases: Sequence[Example]) -> list[str]:
    """Each case's stable key; a case repeated word for word gets `#2`, `#3` on its repeats, so
    each copy keeps its own saved result."""
    seen: Counter[str] = Counter()
    keys = []
    for case in cases:
        key = _case_key(case)
        seen[key] += 1
        keys.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
    return keys


class SavedResults:
    """The results file of one run: the results saved before, and the writer of new ones."""

    def __init__(self, path: Path, handle: IO[bytes], identity: dict[str, Any]) -> None:
        self.path = path
        self._handle = handle
        self._identity = identity  # kind, version, task, template_hash, scorer
        self.done: dict[tuple[str, str], dict[str, Any]] = {}
        self.written = 0
        self.failure: EvalSaveError | None = None  # set when a write failed: stop calling

    def load(self, models: Sequence[str], keys: Sequence[str]) -> None:
        """Read the saved lines (the last line of a pair wins: an errored case run again is
        appended after its error); say once on stderr how many were ignored, and why."""
        wanted_models, wanted_keys = set(models), set(keys)
        ignored: Counter[str] = Counter()
        found: dict[tuple[str, str], dict[str, Any]] = {}
        with self.path.open("rb") as lines:
            for raw in lines:
                try:
                    line = _json.loads(raw)
                except ValueError:
                    ignored["not a result line"] += 1
                    continue
                if not isinstance(line, dict) or line.get("kind") != KIND:
                    ignored["not a result line"] += 1
                elif line.get("task") != self._identity["task"]:
                    ignored["another task"] += 1
                elif line.get("template_hash") != self._identity["template_hash"]:
                    ignored["another template hash (the prompt changed)"] += 1
                elif line.get("scorer") != self._identity["scorer"]:
                    ignored["another scorer"] += 1
                elif line.get("model") not in wanted_models:
                    ignored["a model not asked for"] += 1
                elif line.get("key") not in wanted_keys:
                    ignored["a case no longer among the cases"] += 1
                else:
                    found[(line["model"], line["key"])] = line
        self.done = {pair: line for pair, line in found.items() if line.get("outcome") != "error"}
        if ignored:
            reasons = ", ".join(f"{count} for {why}" for why, count in ignored.items())
            logger.warning(
                "promptcast eval: %d saved line(s) in %s ignored (%s): not reused in this report",
                sum(ignored.values()),
                self.path,
                reasons,
            )

    def saved(self, model: str, key: str, index: int, result_type: type[BaseModel]) -> Any:
        """The saved result of (model, case) renumbered as case `index`, or None to run it."""
        line = self.done.get((model, key))
        if line is None:
            return None
        fields = {name: line[name] for name in result_type.model_fields if name in line}
        try:
            result = result_type.model_validate({**fields, "case": index})
        except ValidationError:  # a line edited by hand: run the case again
            return None
        attempts = line.get("attempts")
        result._attempts = attempts if isinstance(attempts, int) else 0  # type: ignore[attr-defined]
        return result

    def append(self, result: BaseModel, key: str, attempts: int) -> None:
        """Append one finished case, flushed at once (a torn line is cut on resume)."""
        line = {**self._identity, "key": key, "attempts": attempts, **result.model_dump()}
        data = json.dumps(line, ensure_ascii=True, allow_nan=False).encode("ascii") + b"\n"
        try:
            self._handle.write(data)
            self._handle.flush()
        except OSError as exc:
            self.failure = EvalSaveError(
                f"writing {self.path} failed ({exc.strerror or exc}); the {self.written} "
                "result(s) this run saved before are kept: fix that (free disk space, "
                "permissions) and run the same command again to resume"
            )
            raise self.failure from exc
        self.written += 1


@contextmanager
def opened(path: Path, identity: dict[str, Any]) -> Iterator[SavedResults]:
    """`path` locked for appending for the whole run, once it is known to be an eval results
    file (a missing or empty file is a new one); its torn last line cut."""
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():
        raise ConfigurationError(
            f"{path} is not a regular file: eval results are saved to a file so that a rerun "
            "can resume from it; save to one (--save results.jsonl)"
        )
    with ExitStack() as stack:
        try:
            handle = stack.enter_context(_batch_files.append_exclusively(path))
        except OSError as exc:
            raise EvalSaveError(
                f"cannot open {path} to save the results ({exc.strerror or exc}); nothing was "
                "run: give a file in a folder that exists and can be written"
            ) from exc
        if handle is None:
            raise EvalSaveBusyError(path)
        if not _batch_files.first_line_fits(path, lambda line: line.get("kind") == KIND):
            raise ConfigurationError(
                f"{path} is not the results file of a promptcast eval (its first line is not "
                f'a result line {{"kind": "{KIND}", …}}), so nothing was written to it: choose '
                "a new --save file, or the --save file of an earlier run to resume it"
            )
        _batch_files.cut_torn_line(path)
        yield SavedResults(path, handle, identity)
