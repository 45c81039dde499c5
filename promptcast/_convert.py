"""Neighbours' prompt files (Prompty's `.prompty`, Dotprompt's `.prompt`) read as promptcast tasks.

Each format is converted to the text of a promptcast task file (what `promptcast convert` writes),
and that text goes through the same checks as a file written by hand. The template keeps its line
numbers: a role line becomes a role tag on the same line, so a problem found in the converted
template points at the same line of the original file.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from promptcast.errors import TaskDefinitionError

__all__ = ["FOREIGN_SUFFIXES", "Converted", "convert", "is_foreign"]

#: Suffixes read through a converter, with the format's name for messages.
FOREIGN_SUFFIXES = {".prompty": "Prompty", ".prompt": "Dotprompt"}


@dataclass(frozen=True)
class Converted:
    """A foreign file as a promptcast task file: `text`, and where its template starts in the
    original (`body_line`) and in `text` (`template_line`)."""

    text: str
    body_line: int
    template_line: int

    def remap(self, error: TaskDefinitionError, path: str) -> TaskDefinitionError:
        """`error` (about the converted text) pointing at the original file: a template line
        keeps its number, a frontmatter problem names the file only."""
        line = error.line
        if line is not None and line >= self.template_line:
            line = self.body_line + line - self.template_line
        else:
            line = None
        return TaskDefinitionError(error.reason, file=path, line=line)


def is_foreign(path: str | Path) -> bool:
    return Path(path).suffix in FOREIGN_SUFFIXES


def convert(text: str, path: str) -> Converted:
    """The promptcast task file equivalent to a `.prompty` or `.prompt` file's text."""
    suffix = Path(path).suffix
    if suffix == ".prompty":
        from promptcast._prompty import convert_prompty

        return convert_prompty(text, path)
    if suffix == ".prompt":
        from promptcast._dotprompt import convert_dotprompt

        return convert_dotprompt(text, path)
    raise TaskDefinitionError(
        f"no converter for {suffix!r} files; known: {', '.join(FOREIGN_SUFFIXES)}", file=path
    )


def task_text(front: Mapping[str, Any], body: str, body_line: int) -> Converted:
    """Our task file: the frontmatter as block-style YAML in the given key order, then `body`."""
    dumped = yaml.safe_dump(
        dict(front), sort_keys=False, allow_unicode=True, default_flow_style=False, width=100
    )
    if dumped.strip() == "{}":
        dumped = ""
    text = f"---\n{dumped}---\n{body}"
    return Converted(text, body_line, 3 + dumped.count("\n"))


def unsupported(message: str, path: str, line: int | None = None) -> TaskDefinitionError:
    return TaskDefinitionError(message, file=path, line=line)


def closest(name: str, known: Sequence[str]) -> str:
    """`; did you mean 'x'?` for a misspelt name, or the list of known names."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
