"""The JSON Schema of a task file's frontmatter, for editors (`promptcast schema`).

It is generated from `spec._Frontmatter`, the model that parses frontmatter, so a key added there
appears here with nothing else to change; only what pydantic cannot say about the loosely typed
keys (`inputs`, `output`: strings or mappings, read by their own parsers) and the hover texts are
added. The published copy lives at `schema/promptcast-task.schema.json`; a test keeps it current.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from promptcast.media import MAX_DOCUMENT_BYTES, MAX_IMAGE_BYTES
from promptcast.spec import _FIELD_KEYS, _JINJA_NAMES, _Frontmatter, _InputForm, reserved_names

__all__ = ["SCHEMA_ID", "frontmatter_schema", "schema_text"]

SCHEMA_ID = (
    "https://raw.githubusercontent.com/promptcast/promptcast/main/schema/"
    "promptcast-task.schema.json"
)

_IDENTIFIER = "^[A-Za-z_][A-Za-z0-9_]*$"
_TYPE_TEXT = {
    "type": "string",
    "description": "A type: str, int, float, bool, list[str], dict, Literal['a', 'b'], "
    "'module:Class', ...",
}

# Hover texts for the keys; the keys themselves come from the model.
_DESCRIPTIONS = {
    "name": "The task name (default: the file name). A Python identifier.",
    "description": "What the task does; shown by `promptcast list` and in generated code.",
    "version": "Your version of the prompt; recorded on every run.",
    "inputs": "The template's variables: name: type, or name: {type, default, description}.",
    "output": "'str' for free text, 'module:Class' for a pydantic model, or inline fields "
    "(name: type, nested mappings, [type] for lists).",
    "model": "'provider/model', e.g. anthropic/claude-sonnet-4-6; default: the configured model.",
    "fallbacks": "Models tried in order when the model fails.",
    "temperature": "Sampling temperature, 0 to 2.",
    "max_tokens": "The most output tokens one reply may use.",
    "max_attempts": "Requests per model, re-asking after an invalid output.",
    "budget": "Limits for one call: max_cost_usd, timeout_s.",
    "examples": "Worked examples, run as offline tests and eval cases: inputs, expect.",
    "metadata": "Free-form data kept with the task.",
}


def frontmatter_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) a task file's frontmatter must satisfy."""
    schema = copy.deepcopy(_Frontmatter.model_json_schema())
    properties: dict[str, Any] = schema["properties"]
    for key, text in _DESCRIPTIONS.items():
        if key in properties:
            properties[key]["description"] = text
    if "inputs" in properties:
        form = _InputForm.model_json_schema(by_alias=True)
        form["properties"]["type"] = _TYPE_TEXT
        form["properties"].pop("kind", None)  # accepted for Prompty-style files, not advertised
        form["properties"]["description"] = {"type": "string"}
        form["properties"]["max_bytes"] = {
            "type": "integer",
            "exclusiveMinimum": 0,
            "description": "For an image or document input (each item of a list): the most "
            f"bytes one may have, at most the built-in {MAX_IMAGE_BYTES >> 20} MB per image and "
            f"{MAX_DOCUMENT_BYTES >> 20} MB per document.",
        }
        form.pop("title", None)
        properties["inputs"].update(
            propertyNames={
                "pattern": _IDENTIFIER,
                "not": {"enum": sorted({*reserved_names(), *_JINJA_NAMES})},
            },
            additionalProperties={"anyOf": [_TYPE_TEXT, form]},
        )
    if "output" in properties:
        properties["output"].update(
            anyOf=[_TYPE_TEXT, {"$ref": "#/$defs/OutputFields"}],
        )
        schema.setdefault("$defs", {}).update(_output_defs())
    if "model" in properties:
        properties["model"]["anyOf"][0]["pattern"] = r"^[\w.-]+[/:].+"
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "promptcast task file frontmatter",
        "description": "The YAML between the '---' lines of a promptcast task file "
        "(prompts/<name>.jinja).",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def _output_defs() -> dict[str, Any]:
    """Inline output fields: each a type string, a one-item list (a list of that), a field spec
    (`{type, description, default, items, fields}`) or a mapping of nested fields."""
    field = {"$ref": "#/$defs/OutputField"}
    fields = {"$ref": "#/$defs/OutputFields"}
    spec_keys: dict[str, Any] = {
        "type": _TYPE_TEXT,
        "description": {"type": "string"},
        "default": {},
        "items": field,
        "fields": fields,
    }
    assert set(spec_keys) == set(_FIELD_KEYS)  # the keys the output parser accepts
    return {
        "OutputFields": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {
                "pattern": "^[A-Za-z][A-Za-z0-9_]*$",
                "not": {"enum": list(reserved_names())},
            },
            "additionalProperties": field,
        },
        "OutputField": {
            "anyOf": [
                _TYPE_TEXT,
                {"type": "array", "minItems": 1, "maxItems": 1, "items": field},
                {
                    "type": "object",
                    "required": ["type"],
                    "additionalProperties": False,
                    "properties": spec_keys,
                },
                # nested fields; a mapping with a `type` key is a field spec instead
                {"allOf": [fields, {"not": {"required": ["type"]}}]},
            ]
        },
    }


def schema_text() -> str:
    """The schema as published: indented JSON, keys in a stable order, a final newline."""
    return json.dumps(frontmatter_schema(), indent=2, ensure_ascii=False) + "\n"
