"""Evaluation across models: pass counts, costs, JSON that meets its published schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from typer.testing import CliRunner

import promptcast as pc
from promptcast.cli import app
from promptcast.evals import to_html_chart, to_markdown
from promptcast.pricing import cost_usd
from promptcast.testing import (
    FakeAnthropic,
    FakeOpenAI,
    chat_completion,
    error_reply,
    message,
    tool_call,
    tool_use_block,
)

GERMAN = {
    "translation": "The blender is loud, but it makes excellent smoothies.",
    "source_language": "German",
}
FRENCH = {"translation": "Entrega rápida, producto conforme.", "source_language": "French"}
CLAUDE, GPT = "anthropic/claude-sonnet-4-6", "openai/gpt-4o-mini"


@pytest.fixture
def scripted(fake_anthropic: FakeAnthropic, fake_openai: FakeOpenAI) -> None:
    """Claude gets the French case wrong; GPT gets both right. Token counts are fixed."""

    def claude(request: dict[str, Any]) -> dict[str, Any]:
        german = "Mixer" in json.dumps(request)
        answer = GERMAN if german else {**FRENCH, "source_language": "Italian"}
        return message([tool_use_block("Translation", answer)], input_tokens=500, output_tokens=40)

    def gpt(request: dict[str, Any]) -> dict[str, Any]:
        answer = GERMAN if "Mixer" in json.dumps(request) else FRENCH
        return chat_completion(
            tool_calls=[tool_call("Translation", answer)], prompt_tokens=400, completion_tokens=30
        )

    fake_anthropic.handler, fake_openai.handler = claude, gpt


def test_two_models_report_expected_passes_and_costs(scripted: None) -> None:
    report = pc.evaluate(pc.builtin_tasks()["translate"], [CLAUDE, GPT])
    claude, gpt = report.models
    assert (claude.model, claude.passed, claude.cases) == (CLAUDE, 1, 2)
    assert (gpt.model, gpt.passed, gpt.cases) == (GPT, 2, 2)
    assert claude.cost_usd == pytest.approx(2 * cost_usd(CLAUDE, 500, 40))  # type: ignore[operator]
    assert gpt.cost_usd == pytest.approx(2 * cost_usd(GPT, 400, 30))  # type: ignore[operator]
    assert gpt.cost_per_case_usd == pytest.approx(gpt.cost_usd / 2)  # type: ignore[operator]
    assert (claude.input_tokens, claude.output_tokens) == (1000, 80)
    failed = [r for r in report.results if not r.passed]
    assert len(failed) == 1 and "source_language" in (failed[0].detail or "")
    assert "claude-sonnet-4-6" in to_markdown(report) and "1/2" in to_markdown(report)
    assert "<svg" in to_html_chart(report) and "gpt-4o-mini" in to_html_chart(report)


def test_errors_and_invalid_outputs_are_counted(
    fake_anthropic: FakeAnthropic, fake_openai: FakeOpenAI
) -> None:
    pc.configure(max_attempts=1)
    fake_anthropic.handler = lambda request: error_reply(401, "authentication_error", "bad key")
    fake_openai.handler = lambda request: chat_completion(
        tool_calls=[tool_call("Translation", {"translation": 1})]
    )
    report = pc.evaluate(pc.builtin_tasks()["translate"], [CLAUDE, GPT])
    claude, gpt = report.models
    assert (claude.errors, claude.passed) == (2, 0)
    assert (gpt.validation_failures, gpt.passed) == (2, 0)


def test_cli_json_output_meets_the_published_schema(scripted: None, tmp_path: Path) -> None:
    runner = CliRunner()
    schema = json.loads(runner.invoke(app, ["eval", "translate", "--schema"]).stdout)
    result = runner.invoke(
        app,
        [
            "eval",
            "translate",
            "--models",
            f"{CLAUDE},{GPT}",
            "--json",
            "--chart",
            str(tmp_path / "chart.html"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    jsonschema.validate(report, schema)
    assert [m["passed"] for m in report["models"]] == [1, 2]
    assert (tmp_path / "chart.html").read_text().startswith("<!doctype html>")
    table = runner.invoke(app, ["eval", "translate", "--models", f"{CLAUDE},{GPT}"])
    assert table.exit_code == 0 and "1/2" in table.stdout and "2/2" in table.stdout


def test_cases_file_and_custom_scorer(
    scripted: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = tmp_path / "cases.jsonl"
    cases.write_text(
        json.dumps(
            {"inputs": {"text": "Der Mixer ist laut."}, "expect": {"source_language": "German"}}
        )
        + "\n"
    )
    (tmp_path / "my_scorers.py").write_text("def half(output, case):\n    return 0.5\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "translate",
            "--models",
            GPT,
            "--cases",
            str(cases),
            "--scorer",
            "my_scorers:half",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)["models"]
    assert (row["cases"], row["passed"], row["mean_score"]) == (1, 0, 0.5)


def test_an_error_detail_in_a_report_carries_no_credential(fake_anthropic: FakeAnthropic) -> None:
    """Reports are saved and shared: a provider error echoing a key is scrubbed."""
    leaked = "sk-ant-" + "api03-" + "k" * 40
    fake_anthropic.handler = lambda request: error_reply(
        401, "authentication_error", f"invalid x-api-key {leaked}"
    )
    report = pc.evaluate(pc.builtin_tasks()["translate"], [CLAUDE])
    details = [r.detail or "" for r in report.results]
    assert details and all("authentication_error" in d for d in details)
    assert not any(leaked in d for d in details)
    assert leaked not in report.model_dump_json()


@pytest.mark.parametrize(
    ("model", "cost", "shown"),
    [
        ("local/models/llama.gguf", None, "none (own hardware)"),
        ("openai/some-new-model", None, "unknown"),
        ("anthropic/claude-sonnet-4-6", 0.0123, "$0.012300"),
    ],
)
def test_the_cost_column_tells_own_hardware_from_an_unknown_price(
    model: str, cost: float | None, shown: str
) -> None:
    """A local model's cost is None by design (`run` says "no cost per token"); the eval table
    said "unknown", as for a model whose price is missing."""
    from promptcast.evals import EvalReport, ModelScore, summary_rows

    score = ModelScore(
        model=model, cases=1, passed=1, mean_score=1.0, validation_failures=0, errors=0,
        mean_latency_s=0.1, p95_latency_s=0.1, input_tokens=1, output_tokens=1,
        cost_usd=cost, cost_per_case_usd=cost,
    )  # fmt: skip
    report = EvalReport(task="t", task_version=1, template_hash="h", models=[score], results=[])
    assert summary_rows(report)[0][-2:] == [shown, shown]
