"""Bounds in an output model that no value can meet (`min_length=5, max_length=2`, `ge=10, le=1`).

Pydantic accepts them; the model's every reply then fails validation, and each call pays for
all its attempts before saying so. Found at load time instead, from the model's JSON Schema.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["impossible_bounds"]

# (lower, upper, whether equal bounds are impossible too)
_PAIRS = (
    ("minLength", "maxLength", False),
    ("minItems", "maxItems", False),
    ("minProperties", "maxProperties", False),
    ("minimum", "maximum", False),
    ("exclusiveMinimum", "exclusiveMaximum", True),
    ("minimum", "exclusiveMaximum", True),
    ("exclusiveMinimum", "maximum", True),
)
_NUMBER = (int, float)


def impossible_bounds(model: type[BaseModel]) -> list[str]:
    """`where: lower > upper` for each schema node whose bounds exclude every value."""
    try:
        schema = model.model_json_schema()
    except Exception:  # a model pydantic cannot describe: the provider schema reports it
        return []
    found: list[str] = []
    stack: list[tuple[str, Any]] = [(model.__name__, schema)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, list):
            stack.extend((where, item) for item in node)
            continue
        if not isinstance(node, dict):
            continue
        for low, high, strict in _PAIRS:
            lower, upper = node.get(low), node.get(high)
            if not (isinstance(lower, _NUMBER) and isinstance(upper, _NUMBER)):
                continue
            if lower > upper or (strict and lower == upper):
                found.append(f"{where}: {low} {lower} and {high} {upper}")
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                stack.extend((f"{where}.{name}", field) for name, field in value.items())
            elif key == "$defs" and isinstance(value, dict):
                stack.extend((name, definition) for name, definition in value.items())
            elif isinstance(value, (dict, list)):
                stack.append((where, value))
    return sorted(found)
