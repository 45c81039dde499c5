"""Size checks for the sandbox's text-growing operations, made before they allocate.

Jinja's sandbox bounds `range()`, and `render._Environment` bounds `*` and `**`; but a width, a
count or a precision given to a padding method, a filter or a format string makes text just as
large: `{{ name.ljust(n) }}`, `{{ text|indent(n) }}`, `{{ '%*s' % (n, x) }}`, `{{ lipsum(n) }}`
with `n` an input of 10**10 asked for 10 GB. Each function here returns why a call would make
more than `limit` characters or items (the render then fails with a `SecurityError`), or None.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["bounded_filters", "call_problem", "format_problem", "printf_problem"]

# str methods whose result is as long as their width argument (or tab size times the tabs)
_PADDING = frozenset({"ljust", "rjust", "center", "zfill", "expandtabs"})
# a printf conversion: flags, width and precision (either may be `*`: taken from the arguments)
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d*))?")
_NUMBER = re.compile(r"\d+")


def _ints(values: Iterable[Any]) -> list[int]:
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool)]


def _message(what: str, limit: int) -> str:
    return f"the sandbox blocks {what} of more than {limit} characters or items"


def printf_problem(template: str, values: Any, limit: int) -> str | None:
    """`template % values` (the `%` operator and the `format` filter)."""
    for match in _PRINTF.finditer(template):
        for group in match.groups():
            if group == "*":
                given = values if isinstance(values, tuple) else (values,)
                if any(abs(n) > limit for n in _ints(given)):
                    return _message("a '*' width or precision", limit)
            elif group and int(group) > limit:
                return _message(f"a width or precision ({group})", limit)
    return None


def format_problem(template: str, args: Iterable[Any], limit: int) -> str | None:
    """`template.format(*args)` and `format_map`: widths and precisions in the format specs, and
    nested ones (`{:{w}}`) taken from the arguments."""
    try:
        specs = [
            spec for _, field, spec, _ in string.Formatter().parse(template) if field is not None
        ]
    except ValueError:
        return None  # a malformed format string: str.format raises the error itself
    for spec in specs:
        if any(int(n) > limit for n in _NUMBER.findall(spec or "")):
            return _message("a format width or precision", limit)
        if spec and "{" in spec and any(abs(n) > limit for n in _ints(args)):
            return _message("a nested format width", limit)
    return None


def call_problem(
    obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], limit: int
) -> str | None:
    """A call from a template: a str padding method, or `lipsum()`."""
    owner = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", "")
    if isinstance(owner, str) and name in _PADDING:
        given = args[0] if args else next(iter(kwargs.values()), 0)
        if not isinstance(given, int):
            return None
        size = given * max(owner.count("\t"), 1) if name == "expandtabs" else given
        return _message(f"str.{name}() to a width", limit) if size > limit else None
    if getattr(obj, "__module__", None) == "jinja2.utils" and name == "generate_lorem_ipsum":
        count = args[0] if args else kwargs.get("n", 5)
        words = args[3] if len(args) > 3 else kwargs.get("max", 100)
        if _ints([count, words]) == [count, words] and count * words > limit:
            return _message("lipsum() text", limit)
    return None


def _filter_problem(name: str, limit: int, value: Any, *args: Any, **kwargs: Any) -> str | None:
    first = args[0] if args else None
    if name == "format" and isinstance(value, str):
        return printf_problem(value, kwargs or args, limit)
    given = kwargs.get("width", kwargs.get("linecount", kwargs.get("slices", first)))
    size = len(given) if isinstance(given, str) else given
    if not isinstance(size, int) or isinstance(size, bool):
        return None
    if name == "indent":
        size *= str(value).count("\n") + 1
    if size > limit:
        what = {"center": "center() to a width", "indent": "indent() by a width"}
        return _message(what.get(name, f"{name}() into a count"), limit)
    return None


def bounded_filters(
    filters: Mapping[str, Callable[..., Any]], limit: int, error: Callable[[str], Exception]
) -> dict[str, Callable[..., Any]]:
    """`center`, `indent`, `format`, `batch` and `slice` checked before they run (`slice` takes
    the eval context first, which the check skips)."""

    def bound(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        skip = 1 if name == "slice" else 0

        def checked(*args: Any, **kwargs: Any) -> Any:
            problem = _filter_problem(name, limit, *args[skip:], **kwargs)
            if problem is not None:
                raise error(problem)
            return original(*args, **kwargs)

        return functools.update_wrapper(checked, original)

    return {name: bound(name, filters[name]) for name in _FILTERS}


_FILTERS = ("center", "indent", "format", "batch", "slice")
