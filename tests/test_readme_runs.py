"""Item 21: every block of the README runs, as written and in order, with loopback fakes standing
in for the providers (how each block runs: `tests/readme_harness.py`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.readme_harness import NOT_RUN_AS_WRITTEN, ROOT, Runner, fakes, kind, parse


def test_the_readme_runs_top_to_bottom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    with fakes() as (anthropic, openai):
        runner = Runner(project, anthropic, openai)
        runner.run(readme)
    assert not runner.failures, "\n\n".join(runner.failures)
    # every block was run (or checked as labelled output), and every allow-list entry was needed
    assert len(runner.ran) == len(parse(readme))
    assert {entry.pattern for entry in NOT_RUN_AS_WRITTEN} == runner.used
    # the providers were really exercised: the tour talks to both fakes
    assert anthropic.requests and openai.requests
    kinds = Counter(kind(block) for block in parse(readme))
    assert kinds["python"] >= 8 and kinds["bash"] >= 10 and kinds["file"] >= 5
