"""YAML read in bounded time and memory: PyYAML's safe loader without aliases (a few lines of
them expand to gigabytes) and with a nesting limit (deeper nesting ran out of Python's recursion
as a bare `RecursionError`). Task files and cassettes are both read through it."""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["BoundedLoader"]


class BoundedLoader(yaml.SafeLoader):
    """A safe loader that refuses aliases and nesting deeper than `max_depth`, each with a
    `ComposerError` whose mark says where. Subclasses name what they read in the messages."""

    document = "a YAML document"  # "YAML aliases (*name) are not allowed in <document>"
    part = "the document"  # "<part> is nested more than <max_depth> levels deep"
    max_depth = 64

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None,
                None,
                f"YAML aliases (*name) are not allowed in {self.document}; write the value out",
                self.peek_event().start_mark,  # type: ignore[no-untyped-call]
            )
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"{self.part} is nested more than {self.max_depth} levels deep",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
