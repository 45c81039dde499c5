"""The files of a batch run: the output's writer lock, its torn-line repair, and the saved state of
a submitted provider batch.

All three exist so that a run can be killed at any instant and started again without losing a
line, writing one twice from two processes, or paying for a provider batch twice.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from promptcast import _json
from promptcast._files import write_atomic

__all__ = [
    "ProviderBatchState",
    "append_exclusively",
    "cut_torn_line",
    "first_line_fits",
    "is_batch_output",
    "media_paths",
    "read_state",
    "remove_state",
    "state_path",
    "write_state",
]


@contextmanager
def append_exclusively(path: Path) -> Iterator[BinaryIO | None]:
    """Open `path` for appending under an exclusive, non-blocking OS lock; yields None when
    another open handle (this process or another) holds it.

    The lock is the OS's (`flock`, or `msvcrt.locking` on Windows) on the output file itself, so
    it goes away with the process however that ends (kill -9 included) and leaves no lock file.
    """
    handle = path.open("ab")
    try:
        if not _try_lock(handle):
            yield None
            return
        yield handle
    finally:
        handle.close()  # closing the handle releases the lock


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only

    def _try_lock(handle: BinaryIO) -> bool:
        import msvcrt

        position = handle.tell()
        handle.seek(0)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        finally:
            handle.seek(position)
        return True

else:

    def _try_lock(handle: BinaryIO) -> bool:
        import fcntl

        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def cut_torn_line(path: Path, *, chunk: int = 1 << 16) -> None:
    """Drop a last line without its `\\n` (a run killed mid-write), reading backwards from the end
    so a large output is never read whole."""
    with path.open("rb+") as handle:
        end = handle.seek(0, os.SEEK_END)
        if end == 0:
            return
        handle.seek(end - 1)
        if handle.read(1) == b"\n":
            return
        position = end
        while position > 0:
            step = min(chunk, position)
            position -= step
            handle.seek(position)
            newline = handle.read(step).rfind(b"\n")
            if newline >= 0:
                handle.truncate(position + newline + 1)
                return
        handle.truncate(0)


def is_batch_output(path: Path) -> bool:
    """Whether `path` can be a batch output: empty, a first line that is a result (an object
    with "id" and "output" or "error", however a tool such as `jq -c` re-spaced or a text
    editor re-saved it), or a single line without its newline that opens an object (a run
    killed while writing its first line: resuming cuts it)."""
    return first_line_fits(
        path, lambda line: "id" in line and ("output" in line or "error" in line)
    )


def first_line_fits(path: Path, accepts: Callable[[dict[str, Any]], bool]) -> bool:
    """Whether `path` can be a results file whose lines `accepts`: empty, a first line that is a
    JSON object `accepts` takes, or a single line without its newline that opens an object (a
    run killed while writing its first line: resuming cuts it). Read before writing to a file
    given as an output, so that someone's other file is refused untouched."""
    with path.open("rb") as handle:
        first = handle.readline()
    text = first.removeprefix(codecs.BOM_UTF8)
    if not first.endswith(b"\n"):
        return not text.strip() or text.lstrip().startswith(b"{")
    try:
        line = _json.loads(text)
    except ValueError:
        return False
    return isinstance(line, dict) and accepts(line)


def media_paths(inputs: dict[str, Any], names: frozenset[str], folder: Path) -> dict[str, Any]:
    """`inputs` with each image or document input (`names`) that is given as a file name made a
    `Path` under `folder` (the input file's): a JSONL line says `"screenshot": "shots/1.png"`.
    Data URLs, http(s) URLs and `{media_type, data}` objects are left as they are."""

    def located(value: Any) -> Any:
        if isinstance(value, list):
            return [located(item) for item in value]
        if isinstance(value, str) and not _URL_LIKE.match(value):
            return folder / value
        return value

    return {key: located(value) if key in names else value for key, value in inputs.items()}


_URL_LIKE = re.compile(r"^\s*(?:data:|https?://)", re.IGNORECASE)


@dataclass(frozen=True)
class ProviderBatchState:
    """A submitted provider batch whose results are not all written yet, or one being submitted.

    `custom_ids` maps each request's custom id to its item's id (as text); `digest` fingerprints
    the submitted requests, so a resumed run can tell that the input file or the task changed.
    An empty `batch_id` is the record written before submitting (`submitting_at`, epoch seconds,
    and `endpoint`): a run killed before the id came back left it, and the provider may or may
    not have accepted that batch. `nonce` is the run's mark in every custom id (empty in files
    written before it existed), so results of another run's batch are told apart. `earlier`
    lists the batches the same run submitted before this one: none of them is this one.
    """

    batch_id: str
    task: str
    model: str
    digest: str
    custom_ids: dict[str, str]
    nonce: str = ""
    submitting_at: float | None = None
    endpoint: str = ""
    earlier: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        """Whether the provider's id for the batch is known."""
        return bool(self.batch_id)


def state_path(output: Path) -> Path:
    """Where the state of `output`'s in-flight provider batch is kept: `<output>.batch.json`."""
    return output.with_name(output.name + ".batch.json")


def write_state(path: Path, state: ProviderBatchState) -> None:
    """Write atomically and durably: a kill or a power loss leaves the old file or the new one,
    never half of one, and once this returns the new one survives (the file is fsynced before
    its rename, the folder after it)."""
    # ASCII JSON: ids may hold lone surrogates
    write_atomic(path, json.dumps({"version": 2, **asdict(state)}))
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so a rename in it is on disk (POSIX; Windows has no folder handles)."""
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_state(path: Path) -> ProviderBatchState | None:
    """The saved state, or None when there is none; raises ValueError when it is unreadable.
    Version 1 files (before the submitting record and the nonce) read as accepted batches."""
    try:
        data = _json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    if not isinstance(data, dict) or data.get("version") not in (1, 2):
        raise ValueError("not a promptcast provider batch state (version 1 or 2)")
    try:
        custom_ids = {str(k): str(v) for k, v in dict(data["custom_ids"]).items()}
        at = data.get("submitting_at")
        state = ProviderBatchState(
            batch_id=str(data["batch_id"] or ""),
            task=str(data["task"]),
            model=str(data["model"]),
            digest=str(data["digest"]),
            custom_ids=custom_ids,
            nonce=str(data.get("nonce") or ""),
            submitting_at=None if at is None else float(at),
            endpoint=str(data.get("endpoint") or ""),
            earlier=tuple(map(str, data.get("earlier") or ())),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"missing or malformed field: {exc}") from None
    if not state.accepted and state.submitting_at is None:
        raise ValueError("a submitting record without its time (submitting_at)")
    return state


def remove_state(path: Path) -> None:
    path.unlink(missing_ok=True)
