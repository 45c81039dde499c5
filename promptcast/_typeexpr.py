"""Read a type written in a task file (`list[str]`, `str | None`, `Literal['a', 'b']`, `pkg.mod:Cls`)
and make sure it is a *data type*.

A task's input types decide what an HTTP caller's JSON is turned into before the template sees it,
so they must not be able to do anything but hold data. The rule:

- Text types are a restricted walk over Python's expression grammar: only the names in `_NAMES`,
  subscripts of known generics, `|`, `Optional`/`Union` and constants inside `Literal[...]`.
  Nothing is evaluated.
- `module:Class` names a class that is a pydantic model, an `Enum`, a `TypedDict` or a dataclass,
  or one of the few safe leaf types in `SAFE_TYPES` (dates, `Decimal`, `UUID`, pydantic URL, e-mail,
  secret and constrained-number types). Every field of a model, dataclass or TypedDict is checked by
  the same rule, all the way down. Pydantic settings classes are refused (validating one reads the
  environment), so are paths (a template could call `.read_text()`), `ImportString`, `Json` and
  every other class.
- Before anything is imported, the reference must be dotted identifiers with no segment starting
  with `__`, its module must not be a standard-library module other than `datetime`, `decimal` and
  `uuid`, and a `pydantic` reference must name a type in `SAFE_TYPES`. So `this:s`, `os:environ`,
  `subprocess:Popen`, `pydantic:ImportString` and `pkg:X.__class__` are refused without importing
  anything. Other modules are imported, exactly as Python's `import` would (a module of your own
  runs its top-level code), and the object found is then checked.
- A module that is not importable is looked for in the task's project: the folder holding
  `pyproject.toml` upward from the task file (and its `src/`), then the prompts folder's parent. That
  folder is on `sys.path` only while the import runs. Failing that, the error names the folder to
  put on `PYTHONPATH`.
"""

from __future__ import annotations

import ast
import collections.abc
import contextlib
import dataclasses
import datetime
import decimal
import enum
import functools
import importlib
import operator
import re
import sys
import types
import typing
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import typing_extensions
from pydantic import BaseModel

from promptcast.media import Document, Image

__all__ = ["SAFE_TYPES", "TypeExprError", "check_data_type", "import_object", "parse_type"]

_SAFE_PYDANTIC = (
    "AnyUrl",
    "AnyHttpUrl",
    "HttpUrl",
    "EmailStr",
    "SecretStr",
    "PositiveInt",
    "NonNegativeInt",
    "PositiveFloat",
    "NonNegativeFloat",
    "StrictStr",
    "StrictInt",
    "StrictFloat",
    "StrictBool",
    "UUID4",
    "PastDate",
    "FutureDate",
    "AwareDatetime",
    "NaiveDatetime",
)
#: `module:name` references to types that hold data and nothing else, besides data classes.
SAFE_TYPES: dict[str, Any] = {
    "datetime:date": datetime.date,
    "datetime:datetime": datetime.datetime,
    "datetime:time": datetime.time,
    "datetime:timedelta": datetime.timedelta,
    "decimal:Decimal": decimal.Decimal,
    "uuid:UUID": uuid.UUID,
    **{f"pydantic:{name}": getattr(pydantic, name) for name in _SAFE_PYDANTIC},
}

_NAMES: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "bytes": bytes,
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
    "date": datetime.date,
    "datetime": datetime.datetime,
    "time": datetime.time,
    "timedelta": datetime.timedelta,
    "Decimal": decimal.Decimal,
    "UUID": uuid.UUID,
    "image": Image,
    "document": Document,
}
_GENERICS: dict[str, Any] = {
    "list": list,
    "dict": dict,
    "tuple": tuple,
    "set": set,
    "frozenset": frozenset,
}
_LEAVES: tuple[Any, ...] = (
    *(str, int, float, bool, bytes, type(None), Any, Image, Document),
    *SAFE_TYPES.values(),
)
_CONTAINERS = (
    list,
    tuple,
    set,
    frozenset,
    dict,
    collections.abc.Sequence,
    collections.abc.MutableSequence,
    collections.abc.Mapping,
    collections.abc.MutableMapping,
    collections.abc.Set,
    collections.abc.MutableSet,
)
_WRAPPERS = (
    typing.Required,
    typing.NotRequired,
    typing_extensions.Required,
    typing_extensions.NotRequired,
    typing_extensions.ReadOnly,
)
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_REF = re.compile(rf"^\s*({_IDENT}(?:\.{_IDENT})*)\s*:\s*({_IDENT}(?:\.{_IDENT})*)\s*$")


class TypeExprError(ValueError):
    """The text is not a type expression promptcast accepts."""


def parse_type(text: Any, *, search: Sequence[Path] = ()) -> Any:
    """Turn a type written as text into a Python data type.

    `search` lists folders to import a `module:Class` from when it is not importable as is.
    """
    if not isinstance(text, str):
        raise TypeExprError(
            f'a type must be a string, got {type(text).__name__} {text!r}; quote it, e.g. "list[str]"'
        )
    text = text.strip()
    if _REF.match(text) or (":" in text and not _looks_like_expression(text)):
        return resolve_ref(text, search=search)
    too_big = TypeExprError(
        f"{text[:40]!r}... nests more than {MAX_TYPE_DEPTH} levels deep or joins more than "
        f"{MAX_TYPE_UNION} types with |; write a module:Class for a type this large"
    )
    # checked before parsing: whether Python's parser (or _walk) runs out of recursion on a
    # larger one depends on the interpreter and its stack, so a bound of our own says it alike
    if text.count("|") >= MAX_TYPE_UNION or _depth(text) > MAX_TYPE_DEPTH:
        raise too_big
    try:
        tree = ast.parse(text, mode="eval")
        return _walk(tree.body, text)
    except SyntaxError as exc:
        raise TypeExprError(f"{text!r} is not a type expression") from exc
    except RecursionError:  # within the bounds, still: never a bare RecursionError
        raise too_big from None


MAX_TYPE_DEPTH = 32
MAX_TYPE_UNION = 256


def _depth(text: str) -> int:
    """The deepest nesting of brackets in `text`."""
    depth = deepest = 0
    for char in text:
        if char in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}":
            depth -= 1
    return deepest


def resolve_ref(ref: str, *, search: Sequence[Path] = ()) -> Any:
    """Resolve `module:Name` to a data type, refusing what is not one (before importing if it can)."""
    match = _REF.match(ref)
    if not match:
        raise TypeExprError(
            f"{ref!r} is not of the form 'package.module:Class' (dotted names, no spaces)"
        )
    module_name, attr = match.groups()
    canonical = f"{module_name}:{attr}"
    parts = [*module_name.split("."), *attr.split(".")]
    if any(part.startswith("__") for part in parts):
        raise TypeExprError(f"{ref!r}: names starting with '__' are not allowed in a type")
    if canonical in SAFE_TYPES:
        return SAFE_TYPES[canonical]
    top = module_name.partition(".")[0]
    if top == "pydantic":
        raise TypeExprError(
            f"{ref!r} is not one of the pydantic types allowed in a task file "
            f"({', '.join(_SAFE_PYDANTIC)}); declare your own model instead"
        )
    if top in sys.stdlib_module_names:
        allowed = ", ".join(ref for ref in SAFE_TYPES if not ref.startswith("pydantic:"))
        raise TypeExprError(
            f"{ref!r} is not a data type promptcast accepts from the standard library; "
            f"the ones it accepts are {allowed}"
        )
    module = _import_module(module_name, search)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TypeExprError(f"module {module_name!r} has no attribute {attr!r}") from None
        except Exception as exc:  # a module __getattr__ of someone else's; report, don't crash
            raise TypeExprError(f"{ref!r}: looking up {part!r} failed: {_describe(exc)}") from None
    if not isinstance(obj, type):
        raise TypeExprError(
            f"{ref!r} is not a class; a 'module:Class' type must be a pydantic model, an Enum, "
            "a TypedDict or a dataclass"
        )
    check_data_type(obj, where=ref)
    return obj


def check_data_type(tp: Any, *, where: str = "", _seen: set[int] | None = None) -> None:
    """Raise `TypeExprError` unless `tp` is a data type by the module's rule, all the way down."""
    seen = set() if _seen is None else _seen
    label = where or _name(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if _among(tp, _LEAVES) or origin is Literal or tp is Ellipsis:
        return
    if origin is Annotated:  # metadata (Field, constraints, validators) is the model author's
        check_data_type(args[0], where=where, _seen=seen)
        return
    if _among(origin, (typing.Union, types.UnionType, *_CONTAINERS, *_WRAPPERS)):
        for arg in args:
            check_data_type(arg, where=where, _seen=seen)
        return
    if _among(tp, _CONTAINERS):
        return
    if isinstance(tp, typing.TypeVar):
        for bound in (tp.__bound__, *tp.__constraints__):
            if bound is not None:
                check_data_type(bound, where=where, _seen=seen)
        return
    if isinstance(tp, typing.NewType):
        check_data_type(tp.__supertype__, where=where, _seen=seen)
        return
    if not isinstance(tp, type) or origin is not None:
        raise TypeExprError(f"{label}: {_name(tp)} is not a data type promptcast accepts")
    if id(tp) in seen:
        return
    seen.add(id(tp))
    if issubclass(tp, enum.Enum):
        return
    for field, hint in _fields(tp, label):
        check_data_type(hint, where=f"{label}.{field}" if where else label, _seen=seen)


def _fields(cls: type, label: str) -> list[tuple[str, Any]]:
    """The field types of a data class; refuses every other class."""
    if issubclass(cls, BaseModel):
        if any(base.__module__.startswith("pydantic_settings") for base in cls.__mro__):
            raise TypeExprError(
                f"{label}: {_name(cls)} is a pydantic settings class, and validating one reads "
                "the environment; use a plain BaseModel"
            )
        if not cls.__pydantic_complete__:
            try:
                cls.model_rebuild(raise_errors=True)
            except Exception as exc:
                raise TypeExprError(f"{label}: {_name(cls)} is not complete: {exc}") from None
        return [(name, info.annotation) for name, info in cls.model_fields.items()]
    if dataclasses.is_dataclass(cls) or typing_extensions.is_typeddict(cls):
        try:
            hints = typing.get_type_hints(cls, include_extras=True)
        except Exception as exc:
            raise TypeExprError(
                f"{label}: cannot read the field types of {_name(cls)}: {_describe(exc)}"
            ) from None
        if dataclasses.is_dataclass(cls):
            return [(f.name, hints.get(f.name, Any)) for f in dataclasses.fields(cls)]
        return list(hints.items())
    raise TypeExprError(
        f"{label}: {_name(cls)} is not a data type promptcast accepts; use a pydantic model, "
        "an Enum, a TypedDict, a dataclass, a builtin type or one of promptcast's safe types"
    )


def _import_module(name: str, search: Sequence[Path]) -> types.ModuleType:
    top = name.partition(".")[0]
    try:
        return _import(name)
    except ModuleNotFoundError as exc:
        if exc.name != top:
            raise TypeExprError(f"cannot import module {name!r} ({exc})") from None
    for folder in search:
        if (folder / f"{top}.py").is_file() or (folder / top).is_dir():
            with _on_sys_path(folder):
                return _import(name)
    where = f" nor in {', '.join(str(f) for f in search)}" if search else ""
    hint = f"PYTHONPATH={search[0]}" if search else "PYTHONPATH=/path/to/that/folder"
    raise TypeExprError(
        f"cannot import module {name!r}: it is not installed{where}; put the folder that holds "
        f"{top}.py (or the {top}/ package) on PYTHONPATH, e.g. {hint}"
    )


def _import(name: str) -> types.ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        raise
    except (Exception, SystemExit) as exc:  # the module's own code failed: say so, don't crash
        raise TypeExprError(f"importing module {name!r} failed: {_describe(exc)}") from None


@contextlib.contextmanager
def _on_sys_path(folder: Path) -> Iterator[None]:
    """Put `folder` first on `sys.path` only while the import runs, as `python` run there would."""
    entry = str(folder)
    sys.path.insert(0, entry)
    importlib.invalidate_caches()
    try:
        yield
    except ModuleNotFoundError as exc:
        raise TypeExprError(f"cannot import from {folder}: {exc}") from None
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def import_object(ref: str) -> Any:
    """Import `package.module:Name` (or `package.module.Name`): any object, for trusted command-line
    arguments such as `eval --scorer`. Task files go through `parse_type` instead."""
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


def _among(obj: Any, group: Iterable[Any]) -> bool:
    return any(obj is member for member in group)


def _looks_like_expression(text: str) -> bool:
    return any(ch in text for ch in "[]|'\"")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _name(tp: Any) -> str:
    if isinstance(tp, type):
        return f"{tp.__module__}.{tp.__qualname__}"
    return repr(tp)


_NOT_CONSTANT = object()


def _constant(node: ast.expr) -> Any:
    """A `Literal[...]` value: a constant but bytes and complex, or a negative number (Python
    parses the sign of `Literal[-1]` as an operator); `_NOT_CONSTANT` otherwise."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _constant(node.operand)
        return -inner if type(inner) in (int, float) else _NOT_CONSTANT
    if isinstance(node, ast.Constant) and not isinstance(node.value, (bytes, complex)):
        return node.value
    return _NOT_CONSTANT


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
                value = _constant(arg)
                if value is _NOT_CONSTANT:
                    raise TypeExprError(f"Literal[...] takes constants only, in {text!r}")
                values.append(value)
            return Literal[tuple(values)]
        if head == "Optional" and len(args) == 1:
            return _walk(args[0], text) | None
        if head == "Union":
            return functools.reduce(operator.or_, (_walk(arg, text) for arg in args))
        if head in _GENERICS:
            params = tuple(_walk(arg, text) for arg in args)
            return _GENERICS[head][params if len(params) > 1 else params[0]]
    raise TypeExprError(f"{text!r} is not a supported type expression")
