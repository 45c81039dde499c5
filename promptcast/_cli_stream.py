"""`promptcast run … --stream`: the output filling in live on a terminal (rich `Live`), one JSON
line per partial output when stdout is piped (so `jq` and log tools read it line by line)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from promptcast._terminal import visible, visible_data
from promptcast.result import Run
from promptcast.stream import Partial, Restart, Stream

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["show_stream"]


def _data(output: Any) -> Any:
    """A partial output as JSON data: a model's known fields only; text as it is."""
    if isinstance(output, BaseModel):
        return output.model_dump(mode="json", exclude_unset=True, warnings=False)
    return output


def show_stream(stream: Stream[Any], out: Console, err: Console) -> Run[Any]:
    """Show `stream` as it arrives; returns its `Run`. On a terminal the live view is replaced
    by the final output, printed as `run` prints it."""
    if not out.is_terminal:
        return _lines(stream, err)
    from rich.json import JSON
    from rich.live import Live
    from rich.text import Text

    with Live(console=out, auto_refresh=False, transient=True) as live:
        for event in stream.events():
            if isinstance(event, Partial):
                data = visible_data(_data(event.output))  # a reply's escapes stay inert
                view = Text(data) if isinstance(data, str) else JSON.from_data(data)
                live.update(view, refresh=True)
            elif isinstance(event, Restart):
                live.console.print(Text(_restart(event), style="yellow"))
    run = stream.run
    output = run.output
    data = output.model_dump(mode="json") if isinstance(output, BaseModel) else output
    out.file.write(visible(json.dumps(data, ensure_ascii=False, indent=2)) + "\n")
    return run


def _lines(stream: Stream[Any], err: Console) -> Run[Any]:
    from rich.text import Text

    for event in stream.events():
        if isinstance(event, Partial):
            sys.stdout.write(visible(json.dumps(_data(event.output), ensure_ascii=False)) + "\n")
            sys.stdout.flush()
        elif isinstance(event, Restart):
            err.print(Text(_restart(event)), highlight=False)
    return stream.run


def _restart(event: Restart) -> str:
    why = "did not validate" if event.reason == "invalid" else "failed"
    return f"attempt {event.attempt} on {event.model}: the previous one {why}; starting over"
