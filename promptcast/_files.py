"""Files people write and files we write: text read the same way everywhere (a Windows editor's
byte-order mark is not part of it), and writes that a kill at any moment leaves as the old file
or the new one, never half."""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

__all__ = ["decode_text", "read_text", "temporary_stem", "write_atomic"]


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
    it was. The file gets the permissions `path` had (a new one: what `open()` would give, not
    mkstemp's owner-only 0600), and an `OSError` names `path`, not the temporary file (a full
    disk's ENOSPC named no file at all). A symlink stays a link: the file it points to is
    replaced. A pipe, terminal or device (`--chart /dev/stdout`) is written to as it is, never
    replaced by a file (as root, `-o /dev/full` replaced the device node)."""
    if path.exists() and not path.is_file() and not path.is_dir():
        try:
            with path.open("w", encoding="utf-8") as stream:
                stream.write(text)
        except OSError as exc:
            raise _naming(exc, path) from exc
        return
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    try:
        descriptor, temporary = _create_beside(path)
    except OSError as exc:
        raise _naming(exc, path) from exc
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            os.chmod(temporary, stat.S_IMODE(path.stat().st_mode))
        os.replace(temporary, path)
    except BaseException as exc:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _naming(exc, path) from exc
        raise


def temporary_stem(path: Path) -> str:
    """The start of the name of a temporary file beside `path`: its name, cut to leave room for a
    random part and `.tmp` (a 250-character file name is fine, its temporary copy's name was
    "File name too long", past the 255 bytes a name may have)."""
    name = path.name
    while len(name.encode("utf-8", "surrogateescape")) > 200:
        name = name[:-1]
    return name


def _create_beside(path: Path) -> tuple[int, str]:
    """A new temporary file beside `path`, created as `open()` creates files (0o666 less the
    umask; mkstemp's is 0o600, owner only, which the written file kept)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        name = str(path.parent / f"{temporary_stem(path)}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(name, flags, 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path))


def _naming(exc: OSError, path: Path) -> OSError:
    """`exc` as the same kind of error, naming `path` (its message without any file name)."""
    if exc.errno is None:
        return OSError(f"{path}: {exc}")
    return type(exc)(exc.errno, exc.strerror or str(exc), str(path))
