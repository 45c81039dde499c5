"""The frontmatter JSON Schema: generated from the parsing model, published current, accepts every
task file of the repository and rejects what the loader rejects."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from promptcast._schema import frontmatter_schema, schema_text
from promptcast.cli import app
from promptcast.spec import _Frontmatter, _split, parse_task_text

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = ROOT / "schema" / "promptcast-task.schema.json"
VALIDATOR = jsonschema.Draft202012Validator(frontmatter_schema())


def _repo_task_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "*.jinja"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [ROOT / name for name in listed]


def _frontmatter(path: Path) -> Any:
    front, _, _ = _split(path.read_text(encoding="utf-8"), str(path))
    return yaml.safe_load(front) or {}


def test_schema_command_prints_the_published_file() -> None:
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0
    assert result.output == schema_text()
    assert PUBLISHED.read_text(encoding="utf-8") == schema_text(), (
        "schema/promptcast-task.schema.json is stale: run "
        "`promptcast schema > schema/promptcast-task.schema.json`"
    )


def test_schema_is_valid_draft_2020_12_with_every_frontmatter_key() -> None:
    schema = json.loads(schema_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert set(schema["properties"]) == set(_Frontmatter.model_fields)
    assert schema["additionalProperties"] is False


def test_the_repository_has_task_files_to_check() -> None:
    assert len(_repo_task_files()) >= 5


@pytest.mark.parametrize("path", _repo_task_files(), ids=lambda p: p.name)
def test_every_task_file_in_the_repository_validates(path: Path) -> None:
    errors = [e.message for e in VALIDATOR.iter_errors(_frontmatter(path))]
    assert not errors, f"{path}: {errors}"


VALID = {
    "description": "x",
    "inputs": {"text": "str", "n": {"type": "int", "default": 2, "description": "count"}},
    "output": {
        "summary": "str",
        "bullets": ["str"],
        "items": [{"name": "str"}],
        "author": {"name": "str"},
        "tags": {"type": "list", "items": "str", "description": "tags"},
        "meta": {"type": "object", "fields": {"type": "str"}},
    },
    "model": "anthropic/claude-sonnet-4-6",
    "budget": {"max_cost_usd": 0.01, "timeout_s": 30},
    "examples": [{"inputs": {"text": "a"}, "expect": {"summary": "a"}}],
}


def test_a_full_frontmatter_validates_and_loads() -> None:
    assert not list(VALIDATOR.iter_errors(VALID))
    parse_task_text("---\n" + yaml.safe_dump(VALID) + "---\n{{ text }} {{ n }}\n", name="x")


@pytest.mark.parametrize(
    "bad",
    [
        {"descripton": "typo of description"},
        {"budget": {"max_cost": 1}},
        {"examples": [{"inputs": {}, "expected": {}}]},
        {"inputs": {"text": {"type": "str", "defualt": "a"}}},
        {"inputs": {"not an identifier": "str"}},
        {"output": {"tags": {"type": "list", "item": "str"}}},
        {"model": "claude-without-provider"},
        {"temperature": 3},
        {"max_tokens": 0},
        {"output": {}},
    ],
    ids=lambda bad: json.dumps(bad),
)
def test_what_the_loader_rejects_the_schema_rejects(bad: dict[str, Any]) -> None:
    frontmatter = {"inputs": {"text": "str"}, **bad}
    assert list(VALIDATOR.iter_errors(frontmatter))
    with pytest.raises(Exception, match=r"\w"):
        parse_task_text("---\n" + yaml.safe_dump(frontmatter) + "---\n{{ text }}\n", name="x")
