"""The README's eval across the four model families runs as written: Claude from recordings,
GPT-4o and Gemini from loopback fakes, SmolLM2 for real; each family priced at its own rate."""

from __future__ import annotations

import runpy

import pytest

from tests.conftest import ROOT


def test_one_eval_table_over_claude_gpt4o_gemini_and_a_local_model() -> None:
    example = runpy.run_path(str(ROOT / "examples" / "eval_families.py"))
    report = example["run"]()
    rows = {m.model.partition("/")[0]: m for m in report.models}
    assert list(rows) == ["anthropic", "openai", "gemini", "local"]
    for provider in ("anthropic", "openai", "gemini"):
        assert rows[provider].passed == 2 and rows[provider].cost_usd is not None
        assert rows[provider].cost_usd > 0
    # gemini-1.5-pro at $1.25/$5 per million tokens, gpt-4o at $2.50/$10: half of GPT-4o's cost
    assert rows["gemini"].cost_usd == pytest.approx(rows["openai"].cost_usd / 2)
    local = rows["local"]
    assert local.validation_failures == 0 and local.errors == 0  # the grammar: always valid
    assert local.input_tokens > 0 and local.output_tokens > 0
    assert local.cost_usd is None  # own hardware
    assert "| local/" in example["to_markdown"](report)
