"""Output schemas as each provider's constrained decoding takes them: one function per family.

Constrained decoding takes a subset of JSON Schema, and strict modes want every object closed.
Rather than have the provider refuse a schema (or, worse, ignore it), each transform:

- closes every object (`additionalProperties: false`);
- for OpenAI's strict mode, makes every property required and the optional ones nullable;
- moves keywords the provider does not enforce (`minimum`, `maxLength`, `pattern`, …) into the
  field's description, so the model still reads them. pydantic still enforces them after the reply
  (the output model is unchanged), and a violation is re-asked like any invalid answer;
- turns `oneOf` (pydantic's discriminated unions) into `anyOf`, which all of them take.

The transforms work on a copy of pydantic's JSON schema and are cached per output model.
"""

from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

__all__ = [
    "anthropic_schema",
    "drop_strict_nulls",
    "gemini_schema",
    "json_object_schema",
    "openai_strict_schema",
    "schema_rejection",
]

# Keywords constrained decoding does not take (Anthropic: numbers and string lengths; OpenAI
# strict: formats vary by model), described instead and checked by pydantic after the reply.
_DESCRIBED = (
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
)
# Anthropic takes these string formats; others are described.
_ANTHROPIC_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6", "uuid"}
)


@lru_cache(maxsize=512)
def anthropic_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The schema for Anthropic's `output_config.format` (`type: json_schema`)."""
    return _transform(model.model_json_schema(), strict=False, formats=_ANTHROPIC_FORMATS)


@lru_cache(maxsize=512)
def openai_strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The schema for OpenAI-compatible `response_format` json_schema with `strict: true`: every
    object closed, every property required, the optional ones nullable."""
    return _transform(model.model_json_schema(), strict=True, formats=frozenset())


@lru_cache(maxsize=512)
def gemini_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The schema for Gemini's JSON-schema response config (through litellm)."""
    return _transform(model.model_json_schema(), strict=False, formats=frozenset())


@lru_cache(maxsize=512)
def json_object_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The schema for servers that take `json_object` + `schema` (llama-cpp-python: a grammar
    built from it, which enforces most keywords itself); objects are closed."""
    schema: dict[str, Any] = copy.deepcopy(model.model_json_schema())
    _close(schema)
    return schema


def _close(schema: Any) -> Any:
    if isinstance(schema, dict):
        if schema.get("type") == "object" or "properties" in schema:
            schema["additionalProperties"] = False
        for value in schema.values():
            _close(value)
    elif isinstance(schema, list):
        for value in schema:
            _close(value)
    return schema


def _transform(schema: dict[str, Any], *, strict: bool, formats: frozenset[str]) -> dict[str, Any]:
    schema = copy.deepcopy(schema)
    out = _node(schema, strict=strict, formats=formats)
    defs = out.pop("$defs", None)
    if defs:
        out["$defs"] = {
            name: _node(sub, strict=strict, formats=formats) for name, sub in defs.items()
        }
    return out


def _node(schema: dict[str, Any], *, strict: bool, formats: frozenset[str]) -> dict[str, Any]:
    if not isinstance(schema, dict):
        return schema
    notes = []
    for key in _DESCRIBED:
        if key in schema:
            notes.append(f"{key}: {json.dumps(schema.pop(key))}")
    if schema.get("minItems", 0) > 1:
        notes.append(f"minItems: {schema.pop('minItems')}")
    if "format" in schema and schema["format"] not in formats:
        notes.append(f"format: {schema.pop('format')}")
    if strict and "default" in schema:
        notes.append(f"default: {json.dumps(schema.pop('default'), default=str)}")
    schema.pop("discriminator", None)
    if "oneOf" in schema:
        schema["anyOf"] = schema.pop("oneOf")
    if notes:
        described = schema.get("description", "")
        schema["description"] = f"{described} ({'; '.join(notes)})".strip()
    for key in ("anyOf", "allOf", "prefixItems"):
        if key in schema:
            schema[key] = [_node(s, strict=strict, formats=formats) for s in schema[key]]
    if isinstance(schema.get("items"), dict):
        schema["items"] = _node(schema["items"], strict=strict, formats=formats)
    if schema.get("type") == "object" or "properties" in schema:
        props = schema.get("properties", {})
        required = set(schema.get("required", ()))
        for name, sub in list(props.items()):
            sub = _node(sub, strict=strict, formats=formats)
            if strict and name not in required:
                sub = _nullable(sub)
            props[name] = sub
        schema["additionalProperties"] = False
        if strict:
            schema["required"] = list(props)
    return schema


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` or null: a strict schema has no optional properties, so an optional field is
    required and may be null."""
    options = schema.get("anyOf")
    if options is not None:
        if not any(o.get("type") == "null" for o in options):
            options.append({"type": "null"})
        return schema
    kind = schema.get("type")
    if isinstance(kind, str) and "$ref" not in schema and "enum" not in schema:
        return {**schema, "type": [kind, "null"]}
    if isinstance(kind, list):
        return schema if "null" in kind else {**schema, "type": [*kind, "null"]}
    outer: dict[str, Any] = {k: schema.pop(k) for k in ("description", "title") if k in schema}
    return {"anyOf": [schema, {"type": "null"}], **outer}


def drop_strict_nulls(data: Any, model: type[BaseModel]) -> Any:
    """A strict-mode answer with the `null`s removed that stand for "not given": strict mode
    makes optional fields required and nullable, so the model sends `null` where pydantic should
    use the field's default."""
    schema = model.model_json_schema()
    return _drop(data, schema, schema.get("$defs", {}))


def _drop(data: Any, schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    while "$ref" in schema:
        schema = defs.get(schema["$ref"].rsplit("/", 1)[-1], {})
    if isinstance(data, dict) and "properties" in schema:
        required = set(schema.get("required", ()))
        for name, sub in schema["properties"].items():
            if name not in data:
                continue
            if data[name] is None and name not in required and not _allows_null(sub, defs):
                del data[name]
            else:
                data[name] = _drop(data[name], sub, defs)
    elif isinstance(data, list) and isinstance(schema.get("items"), dict):
        return [_drop(item, schema["items"], defs) for item in data]
    elif "anyOf" in schema and isinstance(data, dict):
        objects = [s for s in schema["anyOf"] if s.get("type") != "null"]
        if len(objects) == 1:
            return _drop(data, objects[0], defs)
    return data


def _allows_null(schema: dict[str, Any], defs: dict[str, Any]) -> bool:
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    return any(_allows_null(s, defs) for s in schema.get("anyOf", ()))


_KEYWORD = re.compile(
    r"\b("
    + "|".join(
        [
            *_DESCRIBED,
            "minItems",
            "format",
            "default",
            "oneOf",
            "allOf",
            "not",
            "if",
            "then",
            "else",
            "patternProperties",
            "dependentRequired",
            "\\$ref",
            "const",
            "enum",
        ]
    )
    + r")\b"
)
_FIELD = re.compile(r"(?:properties[./]|field |property )['\"`]?([A-Za-z_][\w.]*)")


def schema_rejection(mode: str, status: int | None, message: str, model: str) -> str:
    """What to add to a provider's 400 that refused a native-mode schema: the keyword and the
    field it names, and the modes that work instead; empty for other errors."""
    if mode != "native" or status != 400 or "schema" not in message.lower():
        return ""
    keyword = _KEYWORD.search(message)
    field = _FIELD.search(message)
    found = ", ".join(
        part
        for part in (
            f"keyword {keyword.group(1)!r}" if keyword else "",
            f"field {field.group(1)!r}" if field else "",
        )
        if part
    )
    return (
        f" (the output schema was refused in native mode{': ' + found if found else ''}; "
        "set `output_mode: tool` (or `prompted`) in the task file, or "
        f"configure(models={{{model!r}: {{'output_mode': 'tool'}}}}))"
    )
