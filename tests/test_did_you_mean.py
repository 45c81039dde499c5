"""Did-you-mean wherever a name is looked up: task names, frontmatter keys, template variables,
model strings and command-line options."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import promptcast as pc
from promptcast.cli import app
from promptcast.spec import parse_task_text

runner = CliRunner()


def test_task_names() -> None:
    with pytest.raises(pc.TaskNotFoundError, match="Did you mean 'extract_ticket'"):
        pc.builtin_tasks()["extract_tiket"]
    result = runner.invoke(app, ["show", "translte"])
    assert result.exit_code == 1 and "Did you mean 'translate'" in result.output


@pytest.mark.parametrize(
    ("frontmatter", "hint"),
    [
        ("descripton: x\n", "did you mean 'description'"),
        ("max_token: 10\n", "did you mean 'max_tokens'"),
        ("budget: {max_cost: 1}\n", "did you mean 'max_cost_usd'"),
        ("examples:\n  - inputs: {text: a}\n    expected: {}\n", "did you mean 'expect'"),
        ("inputs:\n  text: {type: str, defualt: a}\n", "did you mean 'default'"),
    ],
)
def test_frontmatter_keys(frontmatter: str, hint: str) -> None:
    text = "---\n" + frontmatter + ("" if "inputs" in frontmatter else "inputs: {text: str}\n")
    with pytest.raises(pc.TaskDefinitionError, match=hint):
        parse_task_text(text + "---\n{{ text }}\n", name="t")


@pytest.mark.parametrize(
    ("template", "hint"),
    [
        ("{{ txt }}", "template uses 'txt' but inputs: does not declare it; did you mean 'text'?"),
        ("{{ customer_teir }}", "did you mean 'customer_tier'?"),
        ("{{ zebra }}", "template uses 'zebra' but inputs: does not declare it; add it under"),
    ],
)
def test_template_variables_against_declared_inputs(template: str, hint: str) -> None:
    text = f"---\ninputs: {{text: str, customer_tier: str}}\n---\n{{{{ text }}}}{{{{ customer_tier }}}}{template}\n"
    with pytest.raises(pc.TaskDefinitionError, match=hint.replace("?", r"\?")):
        pc.Task(parse_task_text(text, name="t"))


@pytest.mark.parametrize(
    ("model", "hint"),
    [
        ("antropic/claude-sonnet-4-6", "did you mean 'anthropic/…'?"),
        ("opnai/gpt-4o", "did you mean 'openai/…'?"),
        ("gemnii/gemini-2.0-flash", "did you mean 'gemini/…'?"),
    ],
)
def test_model_strings(tmp_path: Path, model: str, hint: str) -> None:
    (tmp_path / "t.jinja").write_text(f"---\nmodel: {model}\n---\nhi\n")
    result = runner.invoke(app, ["check", str(tmp_path)])
    assert result.exit_code == 1
    assert f"t.jinja:2: model {model!r}: unknown provider" in result.output
    assert hint in result.output
    task = pc.Task.from_file(tmp_path / "t.jinja")
    with pytest.raises(pc.ConfigurationError, match="Did you mean"):
        task.run()


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_a_model_line_counts_only_newlines(tmp_path: Path, separator: str) -> None:
    """Other line separators inside a value do not shift the line a problem names."""
    (tmp_path / "t.jinja").write_bytes(
        f"---\ndescription: 'a{separator}b'\nmodel: opnai/gpt-4o\n---\nhi\n".encode()
    )
    result = runner.invoke(app, ["check", str(tmp_path)])
    assert result.exit_code == 1
    assert "t.jinja:3: model 'opnai/gpt-4o': unknown provider" in result.output


def test_known_model_strings_pass_check(tmp_path: Path) -> None:
    (tmp_path / "t.jinja").write_text(
        "---\nmodel: anthropic/claude-sonnet-4-6\nfallbacks: [openai/gpt-4o, ollama/llama3]\n"
        "---\nhi\n"
    )
    result = runner.invoke(app, ["check", str(tmp_path)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["check", "--promts", "x"], "--prompts"),
        (["typegen", "prompts", "--outptu", "x.py"], "--output"),
        (["chek"], "Did you mean 'check'"),
        (["typgen"], "Did you mean 'typegen'"),
    ],
)
def test_cli_options_and_commands(args: list[str], hint: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert hint in result.output
