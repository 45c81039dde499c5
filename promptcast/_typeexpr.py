"""Read a type written in a task file (`list[str]`, `str | None`, `Literal['a', 'b']`, `pkg.mod:Cls`).

A restricted walk over Python's own expression grammar: only known names, subscripts of known
generics, `|` and literal constants inside `Literal[...]`. Nothing is evaluated.
"""

from __future__ import annotations

import ast
import functools
import importlib
import operator
from typing import Any, Literal

__all__ = ["TypeExprError", "import_object", "parse_type"]

_NAMES: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "dict": dict,
    "list": list,
    "Any": Any,
    "None": type(None),
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "object": dict,
    "array": list,
}
_GENERICS: dict[str, Any] = {"list": list, "dict": dict, "tuple": tuple, "set": set}


class TypeExprError(ValueError):
    """The text is not a type expression promptcast understands."""


def import_object(ref: str) -> Any:
    """Import `package.module:Name` (or `package.module.Name`)."""
    module_name, sep, attr = ref.partition(":")
    if not sep:
        module_name, _, attr = ref.rpartition(".")
    if not module_name or not attr:
        raise TypeExprError(f"{ref!r} is not of the form 'package.module:Name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TypeExprError(f"cannot import module {module_name!r} ({exc})") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise TypeExprError(f"module {module_name!r} has no attribute {attr!r}") from exc
    return obj


def parse_type(text: str) -> Any:
    """Turn a type written as text into a Python type."""
    if not isinstance(text, str):
        raise TypeExprError(
            f'a type must be a string, got {type(text).__name__} {text!r}; quote it, e.g. "list[str]"'
        )
    text = text.strip()
    if ":" in text:
        obj = import_object(text)
        if not isinstance(obj, type):
            raise TypeExprError(f"{text!r} is not a class")
        return obj
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise TypeExprError(f"{text!r} is not a type expression") from exc
    return _walk(tree.body, text)


def _walk(node: ast.expr, text: str) -> Any:
    if isinstance(node, ast.Name):
        if node.id in _NAMES:
            return _NAMES[node.id]
        raise TypeExprError(
            f"unknown type {node.id!r} in {text!r}; use 'module:Class' for your own"
        )
    if isinstance(node, ast.Constant) and node.value is None:
        return type(None)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _walk(node.left, text) | _walk(node.right, text)
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        head = node.value.id
        args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if head == "Literal":
            values = []
            for arg in args:
                if not isinstance(arg, ast.Constant):
                    raise TypeExprError(f"Literal[...] takes constants only, in {text!r}")
                values.append(arg.value)
            return Literal[tuple(values)]
        if head == "Optional" and len(args) == 1:
            return _walk(args[0], text) | None
        if head == "Union":
            return functools.reduce(operator.or_, (_walk(arg, text) for arg in args))
        if head in _GENERICS:
            params = tuple(_walk(arg, text) for arg in args)
            return _GENERICS[head][params if len(params) > 1 else params[0]]
    raise TypeExprError(f"{text!r} is not a supported type expression")
