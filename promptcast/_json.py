"""`json.loads` for text from outside the process: files, model replies, stores.

Python's JSON reader recurses once per `[` or `{`, so a few hundred KB of them (an inputs file, a
JSONL line, a model that loops) end in `RecursionError`. Every reader here treats unreadable JSON
as a `ValueError` (a clear error, a skipped line, a re-ask), and a `RecursionError` slipped past
all of them as a traceback; this turns it into the `ValueError` they expect.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["NestedTooDeepError", "loads"]


class NestedTooDeepError(ValueError):
    """JSON nested more deeply than Python's reader can follow."""


def loads(text: str | bytes | bytearray) -> Any:
    """`json.loads(text)`; nesting too deep to read is a `NestedTooDeepError` (a ValueError)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise NestedTooDeepError(
            "JSON nested more deeply than Python's reader follows (thousands of levels)"
        ) from None
