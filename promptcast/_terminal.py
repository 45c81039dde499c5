"""Text bound for a terminal, made inert: a model's reply (steered by a prompt injection in the
document it summarized) or a provider's error message may carry escape sequences that clear the
screen, retitle the window, write the clipboard (OSC 52) or hide a line behind a carriage return.
Rich passes ESC through, and `json.dumps(ensure_ascii=False)` passes C1 controls (U+009B is a CSI
on some terminals), so every such text is shown with its control characters spelled out. So are
the bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): a reply
holding U+202E shows `low` as `wol` and reorders what follows it ("Trojan Source"); the marks
right-to-left text needs (U+200E, U+200F, U+061C) stay."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["json_line", "visible", "visible_data"]

# C0 controls but tab and newline, DEL, the C1 controls, bidirectional embeddings and overrides
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def visible(text: str) -> str:
    """`text` with each control character written as a `\\uXXXX` escape. JSON text stays valid
    JSON of the same value: `json.dumps` already escapes C0, and `\\u0085` means U+0085."""
    return _CONTROL.sub(_escape, text)


def visible_data(data: Any) -> Any:
    """JSON data with `visible` applied to every string in it, keys too (for a view that
    renders the data itself, as rich's JSON does)."""
    if isinstance(data, str):
        return visible(data)
    if isinstance(data, dict):
        return {visible(str(key)): visible_data(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [visible_data(item) for item in data]
    return data


# What `json.dumps` leaves raw that still does harm: DEL, the C1 controls and the bidirectional
# overrides (a log or a stream is often read on a terminal) and U+2028/U+2029, at which
# `str.splitlines` (httpx's `iter_lines`, log tools) ends a line, as at U+0085
_JSON_RAW = str.maketrans(
    {
        chr(code): f"\\u{code:04x}"
        for code in [
            *range(0x7F, 0xA0),
            0x2028,
            0x2029,
            *range(0x202A, 0x202F),
            *range(0x2066, 0x206A),
        ]
    }
)


def json_line(text: str) -> str:
    """JSON text that stays one inert line: those characters as `\\uXXXX` escapes, which read
    back as the same JSON value."""
    return text.translate(_JSON_RAW)
