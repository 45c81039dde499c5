"""A Python session for the README's blocks, run as a process by `readme_harness`.

Reads one JSON request per line on stdin (`source`, `filename`, `env`: variables to set, or unset
when null), runs the source in one namespace shared by every request, as a REPL or notebook does
(top-level `await` allowed), and answers one JSON line (`ok`, `error`) on stdout.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import io
import json
import os
import sys
import traceback
from typing import Any


async def _run_async(code: Any, namespace: dict[str, Any]) -> None:
    try:
        await eval(code, namespace)
    finally:  # the loop ends here: close its provider clients, as an app's shutdown would
        from promptcast.backends import aclose_shared

        await aclose_shared()


def main() -> None:
    channel = sys.stdout
    sys.path.insert(0, os.getcwd())  # as in a REPL: the project folder's modules import
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for line in sys.stdin:
        request = json.loads(line)
        for name, value in request["env"].items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        printed = io.StringIO()
        try:
            code = compile(
                request["source"],
                request["filename"],
                "exec",
                flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
            )
            with contextlib.redirect_stdout(printed):
                if code.co_flags & inspect.CO_COROUTINE:
                    asyncio.run(_run_async(code, namespace))
                else:
                    exec(code, namespace)
            answer: dict[str, Any] = {"ok": True}
        except BaseException:
            answer = {"ok": False, "error": traceback.format_exc()}
        channel.write(json.dumps(answer) + "\n")
        channel.flush()


if __name__ == "__main__":
    main()
