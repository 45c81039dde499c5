"""Files people write and files we write: text read the same way everywhere (a Windows editor's
byte-order mark is not part of it), and writes that a kill at any moment leaves as the old file
or the new one, never half."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["decode_text", "read_text", "write_atomic"]


def decode_text(raw: bytes) -> str:
    """The UTF-8 text of a file's bytes without a leading byte-order mark (Notepad and other
    Windows editors write one); bytes that are not UTF-8 raise `UnicodeDecodeError`, whose
    offsets count from the start of `raw`."""
    return raw.decode("utf-8").removeprefix("\ufeff")


def read_text(path: Path) -> str:
    """`decode_text` of a whole file (an `OSError` when it cannot be read)."""
    return decode_text(path.read_bytes())


def write_atomic(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to a temporary file beside `path`, fsync it, then `os.replace` it
    over `path`; on any failure (or interrupt) the temporary file is removed and `path` is as
    it was."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
