"""The `promptcast` command: demo offline, check for CI, and the inspect/run commands."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from promptcast.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)


def test_demo_replays_three_validated_results_without_a_key() -> None:
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert "Replayed" in result.output and "example recordings" in result.output
    for name, typ in [
        ("extract_ticket", "Ticket"),
        ("answer_product_question", "ProductAnswer"),
        ("translate", "Translation"),
    ]:
        assert name in result.output and f"output ({typ})" in result.output
    assert '"urgency": "high"' in result.output
    assert "3 tasks ran" in result.output


def test_demo_live_without_a_key_says_which_variable_to_set() -> None:
    result = runner.invoke(app, ["demo", "--live"])
    assert result.exit_code == 1
    assert "ANTHROPIC_API_KEY" in result.output
    assert "Traceback" not in result.output


def test_check_passes_on_the_builtins() -> None:
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 0, result.output
    assert "5 task file(s) checked" in result.output


def test_check_fails_with_file_and_line(write_task: Callable[..., Path], tmp_path: Path) -> None:
    write_task("good", "---\ninputs: {text: str}\n---\n{{ text }}\n")
    bad = write_task("bad", "---\ninputs: {text: str}\n---\nfine\n{{ missing }}\n")
    result = runner.invoke(app, ["check", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{bad}:5:" in result.output and "'missing'" in result.output
    assert "1 problem(s) in 2 task file(s)" in result.output


def test_list_and_show() -> None:
    listed = runner.invoke(app, ["list"])
    assert listed.exit_code == 0 and "extract_ticket" in listed.output
    shown = runner.invoke(app, ["show", "extract_ticket"])
    assert shown.exit_code == 0
    info = json.loads(shown.output)
    assert info["inputs"]["customer_tier"] == {
        "type": "str",
        "required": False,
        "default": "standard",
        "description": "The customer's support plan (standard, business, enterprise).",
    }
    assert info["output_schema"]["properties"]["urgency"]["enum"][0] == "low"


def test_show_unknown_task_suggests_close_names() -> None:
    result = runner.invoke(app, ["show", "extract_tickets"])
    assert result.exit_code == 1 and "extract_ticket" in result.output


def test_render_with_key_value_and_json_inputs(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["render", "classify", "-i", "text=Charged twice", "-i", 'labels=["billing", "bug"]']
    )
    assert result.exit_code == 0, result.output
    assert "- billing\n- bug" in result.output and "Charged twice" in result.output
    inputs = tmp_path / "in.json"
    inputs.write_text(json.dumps({"text": "Hallo", "target_language": "French"}))
    result = runner.invoke(app, ["render", "translate", "--input-json", str(inputs)])
    assert result.exit_code == 0 and "into French" in result.output


def test_render_with_a_missing_input_names_it() -> None:
    result = runner.invoke(app, ["render", "translate"])
    assert result.exit_code == 1
    assert "'text'" in result.output and "is required" in result.output


def test_run_prints_json_output_and_usage(
    write_task: Callable[..., Path], tmp_path: Path, fake_anthropic: object
) -> None:
    write_task("shout", "---\ninputs: {text: str}\noutput: {loud: str}\n---\n{{ text }}\n")
    result = runner.invoke(app, ["run", "shout", "-p", str(tmp_path), "-i", "text=hi"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"loud": "example"}
    assert "1 attempt(s)" in result.stderr
