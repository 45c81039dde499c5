"""Wall time of `import promptcast` vs `import anthropic`, each in a fresh interpreter.

`import promptcast` must import no provider SDK (a test checks that in a subprocess, which is
deterministic); how long the import takes is a measurement, so it lives here and not in the test
suite, where a busy machine made a timed assertion fail now and then. Rounds alternate the two
imports so that drift in machine speed hits both; prints the median of each and the median of
each round's ratio. Target: promptcast at most 0.25x of anthropic. A benchmark, not a test: it
prints, it does not assert.

Run: python benchmarks/import_time.py [--rounds 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

MODULES = ("promptcast", "anthropic")


def import_time(module: str) -> float:
    """Seconds to import `module` in a fresh interpreter (its start-up not included)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    # bytecode as an installed package has it (pip compiles on install): the warm-up import writes
    # it even where PYTHONDONTWRITEBYTECODE is set, which would compile promptcast every time
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    return float(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    for module in MODULES:  # warm the file system cache and the bytecode
        import_time(module)
    samples: dict[str, list[float]] = {module: [] for module in MODULES}
    for _ in range(args.rounds):
        for module in MODULES:
            samples[module].append(import_time(module))
    ratio = statistics.median(ours / theirs for ours, theirs in zip(*samples.values(), strict=True))
    print(f"import time in a fresh interpreter, {args.rounds} alternating rounds; medians")
    for module, values in samples.items():
        print(f"  import {module:<12} {statistics.median(values) * 1000:7.0f} ms")
    print(f"promptcast/anthropic = {ratio:.2f}x (target <= 0.25x)")


if __name__ == "__main__":
    main()
