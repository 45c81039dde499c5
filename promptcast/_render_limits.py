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
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from jinja2.filters import make_attrgetter

__all__ = [
    "bounded_filters",
    "call_problem",
    "format_problem",
    "join_problem",
    "printf_problem",
    "sized_parts",
    "text_call_problem",
    "text_size",
]

# str methods whose result is as long as their width argument (or tab size times the tabs)
_PADDING = frozenset({"ljust", "rjust", "center", "zfill", "expandtabs"})
# a printf conversion: flags, width and precision (either may be `*`: taken from the arguments)
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d*))?")
_NUMBER = re.compile(r"\d+")


def _ints(values: Iterable[Any]) -> list[int]:
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool)]


def _message(what: str, limit: int) -> str:
    return f"the sandbox blocks {what} of more than {limit} characters or items"


def _fill_problem(fields: int, values: Iterable[Any], base: int, limit: int) -> str | None:
    """A format string of `base` characters with `fields` places, each of which may take the
    largest of `values`: `('%(a)s' * 200000) % {'a': text}` made 20 GB of one 100 KB text."""
    largest = max((text_size(value, limit) for value in values), default=0)
    if base + fields * largest > limit:
        return _message("filling a format string into text", limit)
    return None


def printf_problem(
    template: str, values: Any, limit: int, text_limit: int | None = None
) -> str | None:
    """`template % values` (the `%` operator and the `format` filter); with `text_limit`, also
    the text the values fill in."""
    if text_limit is not None and "%" in template:
        if isinstance(values, Mapping):
            given: Iterable[Any] = values.values()
        else:
            given = values if isinstance(values, tuple) else (values,)
        problem = _fill_problem(template.count("%"), given, len(template), text_limit)
        if problem is not None:
            return problem
    for match in _PRINTF.finditer(template):
        for group in match.groups():
            if group == "*":
                given = values if isinstance(values, tuple) else (values,)
                if any(abs(n) > limit for n in _ints(given)):
                    return _message("a '*' width or precision", limit)
            elif group and int(group) > limit:
                return _message(f"a width or precision ({group})", limit)
    return None


def format_problem(
    template: str, args: Iterable[Any], limit: int, text_limit: int | None = None
) -> str | None:
    """`template.format(*args)` and `format_map`: widths and precisions in the format specs, and
    nested ones (`{:{w}}`) taken from the arguments; with `text_limit`, also the text the
    arguments fill in."""
    try:
        specs = [
            spec for _, field, spec, _ in string.Formatter().parse(template) if field is not None
        ]
    except ValueError:
        return None  # a malformed format string: str.format raises the error itself
    args = list(args)
    if text_limit is not None:
        problem = _fill_problem(len(specs), args, len(template), text_limit)
        if problem is not None:
            return problem
    for spec in specs:
        if any(int(n) > limit for n in _NUMBER.findall(spec or "")):
            return _message("a format width or precision", limit)
        if spec and "{" in spec and any(abs(n) > limit for n in _ints(args)):
            return _message("a nested format width", limit)
    return None


def text_size(value: Any, limit: int) -> int:
    """About how many characters `str(value)` has, counted without making it (stops past
    `limit`): a list of a thousand references to one large text is small in memory and huge as
    text. Each container is measured once however often it is referred to."""
    sizes: dict[int, int] = {}

    def size(item: Any) -> int:
        if isinstance(item, str):
            return len(item) + 2  # the quotes of its repr inside a container
        if not isinstance(item, (list, tuple, set, frozenset, dict)):
            return len(str(item))
        known = sizes.get(id(item))
        if known is not None:
            return known
        sizes[id(item)] = limit + 1  # a container inside itself: Python prints [...]
        total = 2
        members = (m for pair in item.items() for m in pair) if isinstance(item, dict) else item
        for member in members:
            total += size(member) + 2
            if total > limit:
                break
        sizes[id(item)] = total
        return total

    return len(value) if isinstance(value, str) else size(value)


def sized_parts(parts: tuple[Any, ...], limit: int, error: Callable[[str], Exception]) -> Any:
    """The parts of a `~` joined by Jinja afterwards, refused when together they are longer
    than `limit`: `{% set ns.s = ns.s ~ ns.s %}` in a loop doubled to gigabytes. A part that is
    not text, a container or HTML-aware (Markup) is made text here, once."""
    texts = list(parts)
    total = 0
    for index, part in enumerate(texts):
        if type(part) is str:
            total += len(part)
        elif isinstance(part, (list, tuple, set, frozenset, dict)) or hasattr(part, "__html__"):
            total += text_size(part, limit)
        else:
            texts[index] = text = str(part)
            total += len(text)
    if total > limit:
        raise error(_message("joining text with '~' into text", limit))
    return texts


def join_problem(items: Sequence[Any], separator: Any, limit: int) -> str | None:
    """`separator.join(items)` and the `join` filter, measured before they allocate."""
    size = len(str(separator)) * max(len(items) - 1, 0)
    for item in items:
        size += text_size(item, limit)
        if size > limit:
            return _message("join() into text", limit)
    return None


def _replace_problem(text: str, args: Sequence[Any], limit: int) -> str | None:
    """`text.replace(old, new[, count])`: each match grows the text by `len(new) - len(old)`."""
    if len(args) < 2 or not isinstance(args[0], str) or not isinstance(args[1], str):
        return None
    old, new = args[0], args[1]
    if len(new) <= len(old):
        return None
    matches = len(text) + 1 if old == "" else text.count(old)
    count = args[2] if len(args) > 2 and _ints([args[2]]) else -1
    if 0 <= count < matches:
        matches = count
    if len(text) + matches * (len(new) - len(old)) > limit:
        return _message("replace() into text", limit)
    return None


def text_call_problem(
    obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], limit: int
) -> str | None:
    """A call from a template to a str `replace`, `join` or `translate` method."""
    owner = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", "")
    if isinstance(owner, str) and name == "replace":
        given = (*args, *(kwargs[k] for k in ("old", "new", "count") if k in kwargs))
        return _replace_problem(owner, given, limit)
    if isinstance(owner, str) and name == "join" and args and isinstance(args[0], Sequence):
        return join_problem(args[0], owner, limit)
    if isinstance(owner, str) and name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        if len(owner) * longest > limit:
            return _message("translate() into text", limit)
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


def _filter_problem(
    name: str, limit: int, text_limit: int | None, value: Any, *args: Any, **kwargs: Any
) -> str | None:
    first = args[0] if args else None
    if name == "join" and isinstance(value, list):
        return join_problem(value, kwargs.get("d", first if first is not None else ""), limit)
    if name in ("string", "pprint", "tojson") and text_size(value, limit) > limit:
        return _message(f"{name} of a value into text", limit)
    if name == "wordwrap" and isinstance(value, str):
        width: Any = first if _ints([first]) else kwargs.get("width", 79)
        wrap = kwargs.get("wrapstring", args[2] if len(args) > 2 else "\n")
        if not isinstance(width, int):
            return None
        wrap = "\n" if wrap is None else wrap
        breaks = len(value.split()) + value.count("\n") + len(value) // max(width, 1)
        if len(value) + breaks * len(str(wrap)) > limit:
            return _message("wordwrap() into text", limit)
        return None
    if name == "sum" and isinstance(value, list):
        start = args[1] if len(args) > 1 else kwargs.get("start", 0)
        attribute = args[0] if args else kwargs.get("attribute")
        if not isinstance(start, (list, tuple)) or attribute is not None:
            return None
        total = copied = len(start)
        for item in value:
            total += len(item) if isinstance(item, (list, tuple)) else 1
            copied += total  # each step of sum() copies the list so far
            if copied > limit:
                return _message("sum() of lists copying", limit)
        return None
    if name == "replace":
        olds = [*args[:2], *(kwargs[k] for k in ("old", "new") if k in kwargs)]
        count = args[2] if len(args) > 2 else kwargs.get("count")
        texts = [str(v) for v in olds]
        return _replace_problem(str(value), [*texts, -1 if count is None else count], limit)
    if name == "format" and isinstance(value, str):
        return printf_problem(value, kwargs or args, limit, text_limit)
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
    filters: Mapping[str, Callable[..., Any]],
    limit: int,
    error: Callable[[str], Exception],
    text_limit: int | None = None,
) -> dict[str, Callable[..., Any]]:
    """`center`, `indent`, `format`, `batch` and `slice` (by `limit`), and `join`, `replace`,
    `string`, `pprint`, `tojson`, `wordwrap` and `sum` (by `text_limit`) checked before they run
    (those in `_PASSED` take the eval context or environment first, which the check skips;
    `join` and `sum` read their items into a list first)."""

    def bound(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        skip = 1 if name in _PASSED else 0

        def checked(*args: Any, **kwargs: Any) -> Any:
            if name == "join" and len(args) > 1:
                args, kwargs = _join_items(args, kwargs)
            if name == "sum" and len(args) > 1 and not isinstance(args[1], list):
                args = (args[0], list(args[1]), *args[2:])  # read once, by the check too
            most = text_limit if text_limit is not None and name in _TEXT_FILTERS else limit
            problem = _filter_problem(name, most, text_limit, *args[skip:], **kwargs)
            if problem is not None:
                raise error(problem)
            return original(*args, **kwargs)

        return functools.update_wrapper(checked, original)

    return {name: bound(name, filters[name]) for name in _FILTERS}


def _join_items(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The `join` filter's items as a list (an iterator is read once), each its `attribute`."""
    eval_ctx, value, *rest = args
    attribute = rest[1] if len(rest) > 1 else kwargs.pop("attribute", None)
    rest = rest[:1]
    items = list(value)
    if attribute is not None:
        getter = make_attrgetter(eval_ctx.environment, attribute)
        items = [getter(item) for item in items]
    return (eval_ctx, items, *rest), kwargs


_FILTERS = (
    "center",
    "indent",
    "format",
    "batch",
    "slice",
    "join",
    "replace",
    "string",
    "pprint",
    "tojson",
    "wordwrap",
    "sum",
)
# filters whose result is bounded by the size of a render's text, not by `limit`
_TEXT_FILTERS = frozenset({"join", "replace", "string", "pprint", "tojson", "wordwrap", "sum"})
# filters that take the eval context or environment first
_PASSED = frozenset({"slice", "join", "replace", "tojson", "wordwrap", "sum"})
