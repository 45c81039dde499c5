"""Dotprompt `.prompt` files load as tasks: Picoschema inputs and outputs, the Handlebars that has a
Jinja equivalent, and a named error for every other helper."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import promptcast as pc
from promptcast.cli import app
from promptcast.testing import FakeAnthropic

runner = CliRunner()

MENU = """\
---
model: googleai/gemini-2.0-flash
config:
  temperature: 0.9
  maxOutputTokens: 600
  topK: 40
input:
  schema:
    theme?: string, the restaurant's theme
    count: integer
    dishes(array): string
    vegan?: boolean
  default:
    theme: pirate
output:
  format: json
  schema:
    name: string
    items(array, the dishes):
      dish: string
      price: number
    style(enum): [casual, fancy]
    note?: string
---
{{! a comment
    over two lines }}
{{role "system"}}
You write menus. Keep {literal braces} and {% percent signs %} as they are.
{{role "user"}}
Make {{count}} menu items for a {{theme}} restaurant.
{{#if dishes}}Include:
{{#each dishes}}- {{this}} (#{{@index}})
{{/each}}{{/if}}
{{#unless vegan}}Meat is fine.{{else}}Vegan only.{{/unless}}
{{#ifEquals theme "pirate"}}Arr.{{/ifEquals}}
"""

JSON_SCHEMA = """\
---
model: openai/gpt-4o-mini
input:
  schema:
    type: object
    properties:
      question: {type: string, description: The question}
      context: {type: array, items: {type: string}}
    required: [question]
output:
  schema:
    type: object
    properties:
      answer: {type: string}
      sources: {type: array, items: {type: object, properties: {url: {type: string}}}}
    required: [answer, sources]
---
Answer {{question}} using:
{{#each context}}* {{.}}
{{/each}}
{{json context}}
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "menu.prompt").write_text(MENU)
    (tmp_path / "ask.prompt").write_text(JSON_SCHEMA)
    return tmp_path


def test_picoschema_becomes_inputs_output_and_settings(folder: Path) -> None:
    spec = pc.load_tasks(folder)["menu"].spec
    assert spec.model == "gemini/gemini-2.0-flash"
    assert (spec.temperature, spec.max_tokens) == (0.9, 600)
    assert spec.metadata["dotprompt"]["config_not_applied"] == {"topK": 40}
    assert spec.inputs["theme"].default == "pirate"
    assert spec.inputs["theme"].description == "the restaurant's theme"
    assert spec.inputs["count"].required and spec.inputs["count"].type is int
    assert spec.inputs["vegan"].default is None  # optional (`?`)
    assert spec.inputs["dishes"].type_text == "list[str]"
    assert spec.output_model is not None
    schema = spec.output_model.model_json_schema()
    assert sorted(schema["required"]) == ["items", "name", "style"]
    assert schema["properties"]["style"]["enum"] == ["casual", "fancy"]
    assert schema["properties"]["items"]["description"] == "the dishes"


def test_handlebars_renders_as_dotprompt_would(folder: Path) -> None:
    prompt = pc.load_tasks(folder)["menu"].render(count=2, dishes=["soup", "fish"], vegan=True)
    assert prompt.system == (
        "You write menus. Keep {literal braces} and {% percent signs %} as they are."
    )
    assert prompt.messages == [
        {
            "role": "user",
            "content": "Make 2 menu items for a pirate restaurant.\nInclude:\n- soup (#0)\n"
            "- fish (#1)\n\nVegan only.\nArr.",
        }
    ]
    plain = pc.load_tasks(folder)["menu"].render(count=1, dishes=[], theme="diner")
    assert (
        plain.messages[0]["content"] == "Make 1 menu items for a diner restaurant.\n\nMeat is fine."
    )


def test_json_schema_form_and_json_helper(folder: Path) -> None:
    task = pc.load_tasks(folder)["ask"]
    assert task.spec.inputs["question"].required
    assert task.spec.inputs["context"].default is None
    prompt = task.render(question="Why?", context=["a", "b"])
    assert prompt.messages[0]["content"] == 'Answer Why? using:\n* a\n* b\n\n["a", "b"]'
    assert task.output_model is not None
    assert task.output_model.model_json_schema()["required"] == ["answer", "sources"]


def test_dotprompt_tasks_run_against_the_fake(folder: Path, fake_anthropic: FakeAnthropic) -> None:
    task = pc.load_tasks(folder)["menu"].with_model("anthropic/claude-sonnet-4-6")
    result = task.run(count=1, dishes=["tea"])
    assert isinstance(result.output, task.output_model)  # type: ignore[arg-type]
    sent = fake_anthropic.requests[-1]
    assert "You write menus." in str(sent["system"])
    assert "- tea (#0)" in str(sent["messages"])


UNSUPPORTED = {
    "media": ("{{media url=photo}}", "the Handlebars helper 'media'"),
    "history": ("{{history}}", "the Handlebars helper 'history'"),
    "section": ('{{section "intro"}}', "the Handlebars helper 'section'"),
    "custom helper": ("{{upper theme}}", "the Handlebars helper 'upper'"),
    "block helper": ("{{#with theme}}x{{/with}}", "block helper '#with'"),
    "partial": ("{{> header}}", "partials"),
    "@key": ("{{#each dishes}}{{@key}}{{/each}}", "'@key' is not supported"),
    "this outside each": ("{{this}}", "'this' outside '#each'"),
    "unclosed": ("{{#if theme}}x", "is not closed"),
    "tools": ("", "'tools:' (tool calling)"),
}


@pytest.mark.parametrize("case", list(UNSUPPORTED))
def test_unsupported_handlebars_is_named_with_its_line(tmp_path: Path, case: str) -> None:
    snippet, message = UNSUPPORTED[case]
    text = MENU + snippet + "\n"
    if case == "tools":
        text = text.replace("config:", "tools: [getWeather]\nconfig:")
    (tmp_path / "menu.prompt").write_text(text)
    with pytest.raises(pc.TaskDefinitionError, match=re.escape(message)) as caught:
        pc.load_tasks(tmp_path)
    if case not in ("tools", "unclosed"):
        assert caught.value.line == MENU.count("\n") + 1
    result = runner.invoke(app, ["check", str(tmp_path)])
    assert result.exit_code == 1 and message in result.output


def test_check_and_convert_read_prompt_files(folder: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["check", str(folder)])
    assert result.exit_code == 0, result.output
    assert "ok: 2 task file(s) checked" in result.output
    out = tmp_path / "out"
    converted = runner.invoke(app, ["convert", str(folder / "menu.prompt"), "-o", str(out)])
    assert converted.exit_code == 0, converted.output
    inputs = {"count": 2, "dishes": ["soup"]}
    assert pc.load_tasks(out)["menu"].render(**inputs) == pc.load_tasks(folder)["menu"].render(
        **inputs
    )
