"""The sandboxed Jinja environment: role blocks, the `fence` filter and load-time variable checks.

Role blocks are collected out of band: each `{% role %}` body is stored in a per-render list and the
rendered text holds only a marker carrying a random per-render nonce. Data rendered into the
template can contain any text, including `{% role "system" %}` or a guessed marker, and still never
starts a new message.
"""

from __future__ import annotations

import contextvars
import difflib
import functools
import html
import re
import secrets
import unicodedata
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypedDict

from jinja2 import Environment, StrictUndefined, Template, TemplateSyntaxError, meta, nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.ext import Extension
from jinja2.parser import Parser
from jinja2.runtime import Context, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range

from promptcast import _render_limits as _limits
from promptcast.errors import PromptcastError, TaskDefinitionError, TaskInputError
from promptcast.media import MAX_REQUEST_MEDIA_BYTES, Media, MediaTooLargeError

__all__ = [
    "MAX_SIZE",
    "MAX_TEXT",
    "Message",
    "Prompt",
    "compile_template",
    "environment",
    "fence",
    "template_problems",
]

Role = Literal["system", "user", "assistant"]
_ROLES: tuple[Role, ...] = ("system", "user", "assistant")
_TAG = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*\Z")


class TextPart(TypedDict):
    type: Literal["text"]
    text: str


class MediaPart(TypedDict):
    """An image or document placed at this point of a message (`promptcast.media`)."""

    type: Literal["media"]
    value: Any


class CachePoint(TypedDict):
    """The end of a static prefix: backends that cache prompts put a breakpoint after the part
    before it."""

    type: Literal["cachepoint"]


Part = TextPart | MediaPart | CachePoint
Content = str | list[Part]
"""A message's content: a plain string for text-only prompts (the common case, kept cheap), a list
of provider-neutral parts when it holds media or cache breakpoints. Backends convert parts."""


class Message(TypedDict):
    role: Literal["user", "assistant"]
    content: Content


def content_text(content: Content) -> str:
    """The text of `content`, media shown as a placeholder (logs, token estimates, `as_text`)."""
    if isinstance(content, str):
        return content
    return "".join(
        part["text"] if part["type"] == "text" else f"[{type(part['value']).__name__.lower()}]"
        for part in content
        if part["type"] != "cachepoint"
    )


@dataclass(frozen=True)
class Prompt:
    """A rendered task: an optional system prompt and alternating user/assistant messages."""

    system: Content | None
    messages: list[Message] = field(default_factory=list)
    # the system block uses no input variables (and so can end a cached prefix)
    system_static: bool = False

    def as_text(self) -> str:
        parts = [f"[system]\n{content_text(self.system)}"] if self.system else []
        parts += [f"[{m['role']}]\n{content_text(m['content'])}" for m in self.messages]
        return "\n\n".join(parts)


def fence(value: Any, tag: str = "data", **attributes: Any) -> str:
    """Wrap untrusted text in `<tag>…</tag>` so that nothing inside can close the wrapper.

    A closing tag of the same name inside the data has its `<` replaced by U+2039 (a single
    angle quotation mark), however it is written: any case, spacing or attributes; interrupted
    by invisible, format or control characters (`</te\u200bxt>`, `</text\x00>`); in
    compatibility forms (fullwidth U+FF1C, small U+FE64: matched after NFKC); with `<` or the name
    as HTML entities (`&lt;`, `&#60;`, `&#x3c;`, `&#116;`). Everything else in the data is kept
    as it is. Keyword arguments become attributes: `fence("doc", id=doc_id)`.
    """
    if not _TAG.match(tag) or not all(_TAG.match(name) for name in attributes):
        raise ValueError(f"fence tag {tag!r} and attribute names must be letters, digits, '_', '-'")
    if isinstance(value, Media):
        raise TaskInputError(
            "template",
            None,
            f"fence() takes text, not {value!r}; place {{{{ {value.kind} }}}} outside the fence",
        )
    text = str(value)
    attrs = "".join(
        f' {name}="{html.escape(str(val), quote=True)}"' for name, val in attributes.items()
    )
    return f"<{tag}{attrs}>\n{_neutralise(text, tag)}\n</{tag}>"


# What a closing tag may be disguised with, besides spacing: characters a reader does not see.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cn", "Co", "Cs", "Mn", "Me"})
_FILLERS = frozenset("\u115f\u1160\u3164\uffa0")  # default-ignorable letters (Hangul fillers)
_SPACES = frozenset("\t\n\r\x0b\x0c\x85")  # the control characters that are spacing
_PLAIN = re.compile(r"[\t\n\r\x20-\x25\x27-\x7e]*")  # printable ASCII but '&'
_SPECIAL = re.compile(r"[^\t\n\r\x20-\x7e]")
_ENTITY = re.compile(r"&(?:#[0-9]{1,8};?|#[xX][0-9a-fA-F]{1,7};?|[A-Za-z][A-Za-z0-9]{1,31};?)")
_STAND_IN = "\u2039"


@dataclass
class _Skeleton:
    """The text as a reader sees it, each character with the span of source text it came from."""

    chars: list[str]
    starts: list[int]
    ends: list[int]


@functools.lru_cache(maxsize=256)
def _closing(tag: str) -> re.Pattern[str]:
    """The `<` of a closing `tag` (any case, spacing or attributes), compiled once per tag."""
    return re.compile(r"<(?=\s*/\s*" + re.escape(tag) + r"(?:[\s/>]|$))", re.IGNORECASE)


# Printable ASCII that no closing tag (`<`, spacing, `/`, a tag name of letters, digits and
# `_.-`, then spacing, `/` or `>`) nor HTML entity (`&`, `#`, letters, digits, `;`) can hold: a
# disguised closing tag cannot span one, so the text is checked piece by piece between them.
_BARRIERS = "!\"$%'()*+,:=?@[\\]^`{|}~"
_BARRIER = re.compile("[" + re.escape(_BARRIERS) + "]")
# What makes a piece need the slow, character-mapping check: a non-plain character or `&`.
_DIRTY = re.compile(r"[^\t\n\r\x20-\x25\x27-\x7e]")


def _neutralise(text: str, tag: str) -> str:
    """`_neutralise_piece` on the pieces around each non-plain character, each cut at the
    barriers before and after it; the plain text between goes through the closing-tag regex
    alone. (The whole text through the per-character map took ~120 bytes and ~1 s per MB: a
    10 MB document with one accented letter took 1.2 GB.)"""
    closing = _closing(tag)
    out: list[str] = []
    position = 0
    while True:
        dirty = _DIRTY.search(text, position)
        if dirty is None:
            out.append(closing.sub(_STAND_IN, text[position:]))
            return "".join(out)
        start = max(text.rfind(c, position, dirty.start()) for c in _BARRIERS) + 1
        start = max(start, position)
        after = _BARRIER.search(text, dirty.end())
        end = after.end() if after is not None else len(text)
        out.append(closing.sub(_STAND_IN, text[position:start]))
        out.append(_neutralise_piece(text[start:end], closing))
        position = end


def _neutralise_piece(text: str, closing: re.Pattern[str]) -> str:
    """Closing tags in `text` however disguised, through a map of each visible character to
    its source span; a piece that can hold no `<` (no `<` or `&`, nor a character NFKC makes
    one of, such as U+FF1C or U+FF06, the fullwidth ones) is returned as it is."""
    if "<" not in text and "&" not in text:
        specials = (_normal(c) for c in set(text) if _SPECIAL.match(c))
        if not any("<" in normal or "&" in normal for normal in specials):
            return text
    skeleton = _visible(
        _Skeleton(list(text), list(range(len(text))), list(range(1, len(text) + 1)))
    )
    for _ in range(4):  # entities of entities (`&amp;lt;`), a few levels deep
        decoded = _decode_entities(skeleton)
        if decoded is None:
            break
        skeleton = _visible(decoded)
    found = closing.finditer("".join(skeleton.chars))
    spans = sorted({(skeleton.starts[m.start()], skeleton.ends[m.start()]) for m in found})
    out, position = [], 0
    for start, end in spans:
        if start >= position:
            out += [text[position:start], _STAND_IN]
            position = end
    out.append(text[position:])
    return "".join(out)


def _visible(source: _Skeleton) -> _Skeleton:
    """NFKC of each character, dropping those that do not show; each keeps its source span."""
    joined = "".join(source.chars)
    out = _Skeleton([], [], [])
    position = 0
    for match in _SPECIAL.finditer(joined):
        index = match.start()
        out.chars += source.chars[position:index]
        out.starts += source.starts[position:index]
        out.ends += source.ends[position:index]
        position = index + 1
        for part in _normal(source.chars[index]):
            out.chars.append(part)
            out.starts.append(source.starts[index])
            out.ends.append(source.ends[index])
    out.chars += source.chars[position:]
    out.starts += source.starts[position:]
    out.ends += source.ends[position:]
    return out


@functools.lru_cache(maxsize=4096)
def _normal(char: str) -> str:
    return "".join(
        part
        for part in unicodedata.normalize("NFKC", char)
        if part in _SPACES
        or not (unicodedata.category(part) in _INVISIBLE_CATEGORIES or part in _FILLERS)
    )


def _decode_entities(source: _Skeleton) -> _Skeleton | None:
    """HTML character references decoded, or None when there are none to decode."""
    joined = "".join(source.chars)
    if "&" not in joined:
        return None
    out = _Skeleton([], [], [])
    position = 0
    for match in _ENTITY.finditer(joined):
        decoded = html.unescape(match.group())
        if decoded == match.group():
            continue
        out.chars += source.chars[position : match.start()]
        out.starts += source.starts[position : match.start()]
        out.ends += source.ends[position : match.start()]
        out.chars += list(decoded)
        out.starts += [source.starts[match.start()]] * len(decoded)
        out.ends += [source.ends[match.end() - 1]] * len(decoded)
        position = match.end()
    if position == 0:
        return None
    out.chars += source.chars[position:]
    out.starts += source.starts[position:]
    out.ends += source.ends[position:]
    return out


_blocks: contextvars.ContextVar[tuple[str, list[tuple[Role, str]]]] = contextvars.ContextVar(
    "promptcast_role_blocks"
)
# The images and documents a render placed, in order; the text holds `\x01{nonce}:{index}\x01`.
_media: contextvars.ContextVar[list[Media]] = contextvars.ContextVar("promptcast_media")
# How many items the range() calls of a render have made so far (see MAX_RANGE_ITEMS).
_ranged: contextvars.ContextVar[list[int]] = contextvars.ContextVar("promptcast_ranged")
# How many characters the role blocks of a render hold so far (see MAX_TEXT).
_role_chars: contextvars.ContextVar[list[int]] = contextvars.ContextVar("promptcast_role_chars")


def _finalize(value: Any) -> Any:
    """`{{ value }}`: an image or document (or a list of them) becomes a marker for the content
    block at this point."""
    if isinstance(value, Media):
        placed = _media.get()
        placed.append(value)
        return f"\x01{_blocks.get()[0]}:{len(placed) - 1}\x01"
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, Media) for v in value):
        return "".join(_finalize(v) for v in value)
    if (
        isinstance(value, (list, tuple, dict, set))
        and _limits.text_size(value, MAX_TEXT) > MAX_TEXT
    ):
        raise SecurityError(
            f"the sandbox blocks printing a value of more than {MAX_TEXT} characters"
        )
    return value


class _CachePointExtension(Extension):
    """`{% cachepoint %}`: the static prefix ends here (after long static content such as product
    docs); backends that cache prompts put a breakpoint after the text before it."""

    tags = {"cachepoint"}

    def parse(self, parser: Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        return nodes.Output([self.call_method("_cachepoint", lineno=lineno)], lineno=lineno)

    def _cachepoint(self) -> str:
        return f"\x01{_blocks.get()[0]}:c\x01"


class _RoleExtension(Extension):
    tags = {"role"}

    def parse(self, parser: Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        role = parser.parse_expression()
        body = parser.parse_statements(("name:endrole",), drop_needle=True)
        call = self.call_method("_role", [role])
        return nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _role(self, role: Any, caller: Macro) -> str:
        if role not in _ROLES:
            raise TaskInputError("template", None, f"role must be one of {_ROLES}, not {role!r}")
        nonce, collected = _blocks.get()
        body = str(caller())
        sized = _role_chars.get(None)
        if sized is not None:
            sized[0] += len(body)
            if sized[0] > MAX_TEXT:  # each body is bounded; role blocks in a loop are not
                raise SecurityError(
                    f"the sandbox blocks role blocks of more than {MAX_TEXT} characters in all"
                )
        if f"\x00{nonce}:" in body:
            raise TaskInputError("template", None, "role blocks cannot be nested")
        collected.append((role, body))
        return f"\x00{nonce}:{len(collected) - 1}\x00"


#: The sandbox refuses `x ** y` and `seq * n` whose result would be larger than this (digits or
#: items), as it refuses `range()` over `jinja2.sandbox.MAX_RANGE` items.
MAX_SIZE = 1_000_000
#: A render's text, and each text or list a template builds on the way (`~`, `+`, `join`,
#: `replace`, a `{% set %}` block, a macro's output), holds at most this many characters or
#: items: more than any model's context takes, far less than memory.
MAX_TEXT = 16 * MAX_SIZE

_UNSUPPORTED: dict[type[nodes.Node], str] = {
    nodes.Extends: "{% extends %}",
    nodes.Include: "{% include %}",
    nodes.Import: "{% import %}",
    nodes.FromImport: "{% from ... import %}",
}


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator, but `~` measures its parts (`environment.sized_parts`) before
    joining them: Jinja compiles it to a plain join no sandbox hook sees."""

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        else:
            join = "markup_join" if frame.eval_ctx.autoescape else "str_join"
        self.write(f"{join}(environment.sized_parts((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(")))")


class _Environment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with `*` and `**` bounded so data cannot make a render eat memory,
    and text built by `+`, `~` and the render itself bounded by `MAX_TEXT`."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _CodeGenerator

    def concat(self, pieces: Iterable[Any]) -> str:
        """The output of a render, a `{% set %}` block, a macro or a `{% filter %}` block,
        refused as soon as it grows past `MAX_TEXT`."""
        parts: list[str] = []
        size = 0
        for piece in pieces:
            size += len(piece)
            if size > MAX_TEXT:
                error = SecurityError(
                    f"the sandbox blocks a rendered text of more than {MAX_TEXT} characters"
                )
                if isinstance(pieces, Generator):  # raised at the template line that made it
                    pieces.throw(error)
                raise error
            parts.append(piece)
        return "".join(parts)

    def sized_parts(self, parts: tuple[Any, ...]) -> Any:
        return _limits.sized_parts(parts, MAX_TEXT, SecurityError)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        big = (
            operator == "**"
            and _is_int(left)
            and _is_int(right)
            and right * abs(left).bit_length() > MAX_SIZE * 10 // 3  # bits of MAX_SIZE digits
        )
        if big:
            raise SecurityError(f"the sandbox blocks powers of more than {MAX_SIZE} digits")
        if operator == "*" and any(
            isinstance(seq, (str, list, tuple)) and _is_int(times) and len(seq) * times > MAX_SIZE
            for seq, times in ((left, right), (right, left))
        ):
            raise SecurityError(f"the sandbox blocks repeating to more than {MAX_SIZE} items")
        if (
            operator == "+"
            and isinstance(left, (str, list, tuple))
            and isinstance(right, (str, list, tuple))
            and len(left) + len(right) > MAX_TEXT
        ):
            raise SecurityError(f"the sandbox blocks adding to more than {MAX_TEXT} items")
        if operator == "%" and isinstance(left, str):
            problem = _limits.printf_problem(left, right, MAX_SIZE, MAX_TEXT)
            if problem is not None:
                raise SecurityError(problem)
        return super().call_binop(context, operator, left, right)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """A call from the template; widths of padding methods and `lipsum()` are bounded."""
        owner = getattr(obj, "__self__", None)
        joins = isinstance(owner, str) and getattr(obj, "__name__", "") == "join"
        if joins and args and not isinstance(args[0], Sequence):
            args = (list(args[0]), *args[1:])  # an iterator is read once, by the check too
        problem = _limits.call_problem(obj, args, kwargs, MAX_SIZE)
        problem = problem or _limits.text_call_problem(obj, args, kwargs, MAX_TEXT)
        if problem is not None:
            raise SecurityError(problem)
        return super().call(context, obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`str.format` / `format_map`, sandboxed by Jinja, with their widths bounded."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        template: str = value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            given = [*args, *kwargs.values()]
            if value.__name__ == "format_map" and args and isinstance(args[0], dict):
                given = list(args[0].values())
            problem = _limits.format_problem(template, given, MAX_SIZE, MAX_TEXT)
            if problem is not None:
                raise SecurityError(problem)
            return wrapped(*args, **kwargs)

        return checked


#: All `range()` calls of one render together make at most this many items: Jinja's sandbox
#: bounds each range to 100,000, but loops nested in each other multiply (10**10 iterations hang).
MAX_RANGE_ITEMS = 10 * MAX_SIZE


def _range(*args: int) -> range:
    """Jinja's `safe_range`, counted against the render's `MAX_RANGE_ITEMS`."""
    made = safe_range(*args)
    counter = _ranged.get(None)
    if counter is not None:
        counter[0] += len(made)
        if counter[0] > MAX_RANGE_ITEMS:
            raise SecurityError(
                f"the sandbox blocks loops over range() of more than {MAX_RANGE_ITEMS} items "
                "in all (nested loops multiply)"
            )
    return made


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def environment() -> ImmutableSandboxedEnvironment:
    """The environment every task template is compiled in."""
    env = _Environment(
        undefined=StrictUndefined,
        autoescape=False,
        extensions=[_RoleExtension, _CachePointExtension],
        keep_trailing_newline=False,
        finalize=_finalize,
        # Jinja's constant folding re-walks every sub-expression of a chain: 250 chained
        # filters took 18 s to load; a prompt template has next to nothing to fold
        optimized=False,
    )
    env.filters["fence"] = fence
    env.globals["range"] = _range
    env.filters.update(_limits.bounded_filters(env.filters, MAX_SIZE, SecurityError, MAX_TEXT))
    return env


_ENV = environment()


def template_problems(
    source: str,
    *,
    declared: set[str],
    path: str,
    first_line: int,
    media: frozenset[str] = frozenset(),
) -> list[TaskDefinitionError]:
    """Every load-time problem of a template: syntax, constructs the sandbox cannot run,
    variables that are not declared inputs, and `media` inputs (images, documents) placed inside
    `fence` or the system role. Empty when it compiles."""
    return _compile(source, declared, path, first_line, media)[1]


def compile_template(
    source: str,
    *,
    task: str,
    declared: set[str],
    path: str,
    first_line: int,
    media: frozenset[str] = frozenset(),
) -> Callable[[dict[str, Any]], Prompt]:
    """Compile a template after checking it (see `template_problems`); raises the first problem.

    A render that fails at run time (a `range` too large, recursion, a bad operation on a value)
    raises `TaskInputError` naming the template line, never a bare Python error.

    A template without inputs renders the same prompt every time, so it is rendered once here and
    each call gets a copy; unless it draws random text (the `random` filter, `lipsum()`), or its
    render fails (then every call raises the failure, as before).
    """
    template, problems = _compile(source, declared, path, first_line, media)
    if problems or template is None:
        raise problems[0]
    static = _system_static(_ENV.parse(source), declared)

    def render(values: dict[str, Any]) -> Prompt:
        nonce = secrets.token_hex(16)
        collected: list[tuple[Role, str]] = []
        placed: list[Media] = []
        token = _blocks.set((nonce, collected))
        media_token = _media.set(placed)
        ranged_token = _ranged.set([0])
        role_token = _role_chars.set([0])
        try:
            text = template.render(values)
        except TaskInputError as exc:
            if exc.task != _UNNAMED:
                raise
            raise _named(exc, task, _where(exc, path, first_line)) from None
        except PromptcastError:
            raise
        except (SecurityError, UndefinedError) as exc:
            where = _where(exc, path, first_line)
            raise TaskInputError(task, None, f"template could not render{where}: {exc}") from None
        except Exception as exc:  # the template's own failure, whatever Python raised for it
            where = _where(exc, path, first_line)
            raise TaskInputError(
                task, None, f"template could not render{where}: {type(exc).__name__}: {exc}"
            ) from None
        finally:
            _blocks.reset(token)
            _media.reset(media_token)
            _ranged.reset(ranged_token)
            _role_chars.reset(role_token)
        if _mangled(text, nonce, values):
            raise TaskInputError(task, None, f"template could not render: {_MANGLED}")
        if placed:  # one input placed many times is sent as many times
            total = sum(media.size for media in placed)
            if total > MAX_REQUEST_MEDIA_BYTES:
                raise MediaTooLargeError(
                    task,
                    None,
                    f"the template places {len(placed)} images and documents, {total} bytes "
                    f"together, over the limit of {MAX_REQUEST_MEDIA_BYTES} bytes per request; "
                    "place each one once",
                )
        surrogate = _surrogate([text, *(body for _, body in collected)])
        if surrogate is not None:
            raise TaskInputError(task, *_surrogate_problem(surrogate, values))
        try:
            prompt = _assemble(text, nonce, collected, placed)
        except TaskInputError as exc:
            if exc.task != _UNNAMED:
                raise
            raise _named(exc, task, "") from None
        empty = _empty(prompt, values)
        if empty is not None:
            raise TaskInputError(task, None, empty)
        return replace(prompt, system_static=True) if static and prompt.system else prompt

    if declared or not _deterministic(source):
        return render
    try:
        fixed = render({})
    except TaskInputError:
        return render

    def rendered(values: dict[str, Any]) -> Prompt:
        messages: list[Message] = [
            {"role": m["role"], "content": m["content"]} for m in fixed.messages
        ]
        return Prompt(system=fixed.system, messages=messages, system_static=fixed.system_static)

    return rendered


_SURROGATES = re.compile("[\ud800-\udfff]")


def _surrogate(texts: list[str]) -> str | None:
    for text in texts:
        found = _SURROGATES.search(text)
        if found is not None:
            return found.group()
    return None


def _surrogate_problem(char: str, values: dict[str, Any]) -> tuple[str | None, str]:
    """The input holding a lone surrogate, and what to do: such a string cannot be encoded as
    UTF-8, so the request failed as 'Anthropic sent a malformed reply (UnicodeEncodeError)'.
    (It comes from bytes decoded with errors='surrogateescape', or a JSON '\\ud800'.)"""
    field = next((name for name, value in values.items() if _holds(value, char)), None)
    where = "holds" if field else "rendered"
    return field, (
        f"{where} U+{ord(char):04X}, half of a UTF-16 surrogate pair without its other half: not "
        "text any provider can read; decode the source with errors='replace', or remove it"
    )


def _holds(value: Any, char: str) -> bool:
    if isinstance(value, str):
        return char in value
    if isinstance(value, dict):
        return any(_holds(k, char) or _holds(v, char) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_holds(v, char) for v in value)
    if hasattr(value, "model_dump"):
        return _holds(value.model_dump(), char)
    return False


def _empty(prompt: Prompt, values: dict[str, Any]) -> str | None:
    """Why `prompt` has nothing to ask, or None: no user message with text or media in it (the
    template rendered only whitespace, or only system or assistant blocks). Providers answer
    such a request 400, after retries, so it is refused before it is sent."""
    for message in prompt.messages:
        content = message["content"]
        if message["role"] == "user" and (
            content.strip()
            if isinstance(content, str)
            else any(
                p["type"] == "media" or (p["type"] == "text" and p["text"].strip()) for p in content
            )
        ):
            return None
    blank = sorted(name for name, value in values.items() if _blank(value))
    given = f" (empty inputs: {', '.join(blank)})" if blank else ""
    if not prompt.messages and not prompt.system:
        what = "the template rendered only whitespace"
    else:
        kinds = (["system"] if prompt.system else []) + [m["role"] for m in prompt.messages]
        what = f"the template rendered no user message, only {' and '.join(dict.fromkeys(kinds))}"
    return (
        f"{what}{given}, so there is nothing to send; give the inputs text, or make the "
        "template write a user message for them"
    )


def _blank(value: Any) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, (list, tuple, dict, set)) and not value


# What may make two renders of the same values differ: the random built-ins, and objects made per
# render whose text shows their memory address.
_UNSTABLE_GLOBALS = frozenset({"lipsum", "cycler", "joiner", "namespace"})


def _deterministic(source: str) -> bool:
    """Whether a (compiled, checked) template renders the same text every time it gets the same
    values: no `random` filter (also by name, as in `map('random')`), no `lipsum()` and none of
    the globals that make a new object per render."""
    tree = _ENV.parse(source)
    if any(node.name == "random" for node in tree.find_all(nodes.Filter)):
        return False
    if any(node.value == "random" for node in tree.find_all(nodes.Const)):
        return False
    return not any(
        node.name in _UNSTABLE_GLOBALS for node in tree.find_all(nodes.Name) if node.ctx == "load"
    )


def _compile(
    source: str,
    declared: set[str],
    path: str,
    first_line: int,
    media: frozenset[str] = frozenset(),
) -> tuple[Template | None, list[TaskDefinitionError]]:
    try:
        return _compile_tree(source, declared, path, first_line, media)
    except (RecursionError, SyntaxError):
        # Jinja parses a chain of 50,000 `+ 1` or `|upper` without recursing, into a tree as
        # deep as the chain, which every later walk (checks, code generation) recurses through;
        # from about 200 links the Python it generates has "too many nested parentheses"
        message = (
            "the template nests too deeply to compile (an expression chains thousands of "
            "operators or filters); build it in steps with {% set %}"
        )
        return None, [TaskDefinitionError(message, file=path, line=first_line)]


def _compile_tree(
    source: str,
    declared: set[str],
    path: str,
    first_line: int,
    media: frozenset[str],
) -> tuple[Template | None, list[TaskDefinitionError]]:
    def problem(message: str, lineno: int | None) -> TaskDefinitionError:
        return TaskDefinitionError(message, file=path, line=first_line + (lineno or 1) - 1)

    try:
        tree = _ENV.parse(source)
    except TemplateSyntaxError as exc:
        return None, [problem(f"Jinja syntax error: {exc.message}", exc.lineno)]
    except RecursionError:
        return None, [problem("the template nests too deeply to parse", 1)]
    problems = [
        problem(
            f"{_UNSUPPORTED[type(node)]} cannot work in a task template: a task is one file, "
            "loaded without a template loader; paste the text in, or use a {% macro %}",
            node.lineno,
        )
        for node in tree.find_all(tuple(_UNSUPPORTED))
    ]
    problems += [problem(message, lineno) for message, lineno in _misplaced_media(tree, media)]
    problems += [
        problem(message, lineno) for message, lineno in _data_before_cachepoint(tree, declared)
    ]
    try:
        undeclared = _undeclared(tree) - declared - set(_ENV.globals)
    except TemplateSyntaxError as exc:  # e.g. an unknown filter or test
        return None, [*problems, problem(f"Jinja error: {exc.message}", exc.lineno)]
    first_use: dict[str, int] = {}  # one walk: a walk per name was quadratic (60,000 names hung)
    for n in tree.find_all(nodes.Name):
        if n.ctx == "load" and n.name in undeclared:
            first_use.setdefault(n.name, n.lineno)
    known = sorted(declared)
    for index, name in enumerate(sorted(undeclared)):
        lineno = first_use.get(name, 1)
        # a suggestion costs a pass over the inputs: for the first names only
        suggest = index < _SUGGESTED and len(known) <= 1000
        close = difflib.get_close_matches(name, known, n=1) if suggest else []
        fix = f"did you mean {close[0]!r}? Or add it" if close else "add it"
        problems.append(
            problem(
                f"template uses {name!r} but inputs: does not declare it; {fix} under inputs:",
                lineno,
            )
        )
    if problems:
        return None, sorted(problems, key=lambda p: p.line or 0)
    try:
        return _ENV.from_string(tree), []
    except TemplateSyntaxError as exc:  # e.g. an unknown filter or test
        return None, [problem(f"Jinja error: {exc.message}", exc.lineno)]


class _Tracking(meta.TrackingCodeGenerator):
    """`meta.find_undeclared_variables`'s walker without constant folding, which it turns on
    whatever the environment says (see `optimized=False` in `environment`)."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.optimizer = None


def _undeclared(tree: nodes.Template) -> set[str]:
    tracking = _Tracking(_ENV)
    tracking.visit(tree)
    return tracking.undeclared_identifiers


#: How many undeclared names of one template get a "did you mean" suggestion.
_SUGGESTED = 50


def _is_role(node: nodes.Node, role: str | None = None) -> bool:
    """Whether `node` is a `{% role %}` block (of `role`, when given, as a constant)."""
    call = getattr(node, "call", None)
    if not (
        isinstance(node, nodes.CallBlock)
        and isinstance(call, nodes.Call)
        and isinstance(call.node, nodes.ExtensionAttribute)
        and call.node.name == "_role"
    ):
        return False
    if role is None:
        return True
    first = call.args[0] if call.args else None
    return isinstance(first, nodes.Const) and first.value == role


def _is_cachepoint(node: nodes.Node) -> bool:
    return isinstance(node, nodes.ExtensionAttribute) and node.name == "_cachepoint"


def _loads(node: nodes.Node) -> set[str]:
    return {n.name for n in node.find_all(nodes.Name) if n.ctx == "load"}


def _system_static(tree: nodes.Template, declared: set[str]) -> bool:
    """Whether the system block is the same whatever the inputs: every `{% role "system" %}` sits
    at the top level (not in a loop, condition or macro) and reads no input and calls no macro."""
    macros = {m.name for m in tree.find_all(nodes.Macro)}
    top = [n for n in tree.body if _is_role(n, "system")]
    if len(top) != sum(1 for n in tree.find_all(nodes.CallBlock) if _is_role(n, "system")):
        return False
    if any(
        _is_role(n)
        and not _is_role(n, "user")
        and not _is_role(n, "assistant")
        and not _is_role(n, "system")
        for n in tree.find_all(nodes.CallBlock)
    ):
        return False  # a role computed at render time may be "system"
    return not any(_loads(block) & (declared | macros) for block in top)


def _data_before_cachepoint(tree: nodes.Template, declared: set[str]) -> list[tuple[str, int]]:
    """Cache points after template data: a breakpoint must end a prefix that holds no input, so
    no variable may be read before it (in template order), nor in a system block (which providers
    put first) unless the cache point is itself in that system block before the data."""
    found: list[tuple[str, int]] = []
    seen: set[str] = set()
    system_data: set[str] = set()
    for block in tree.find_all(nodes.CallBlock):
        if _is_role(block, "system"):
            system_data |= _loads(block) & declared
    in_system = {
        id(node)
        for block in tree.find_all(nodes.CallBlock)
        if _is_role(block, "system")
        for node in block.find_all(nodes.ExtensionAttribute)
    }
    for node in tree.find_all((nodes.Name, nodes.ExtensionAttribute)):
        if isinstance(node, nodes.Name):
            if node.ctx == "load" and node.name in declared:
                seen.add(node.name)
            continue
        if not _is_cachepoint(node):
            continue
        before = seen if id(node) in in_system else seen | system_data
        if before:
            found.append(
                (
                    f"{{% cachepoint %}} comes after template data ({', '.join(sorted(before))}): "
                    "a cached prefix must hold static text only; move the cache point before "
                    "the first variable",
                    node.lineno,
                )
            )
    return found


def _misplaced_media(tree: nodes.Template, media: frozenset[str]) -> list[tuple[str, int]]:
    """Media inputs where no content block can go: inside `fence(...)` (its text is data) and in
    a system role block (providers take images and documents in user messages only)."""
    if not media:
        return []

    def used(node: nodes.Node) -> list[nodes.Name]:
        found = [node] if isinstance(node, nodes.Name) else list(node.find_all(nodes.Name))
        return [n for n in found if n.name in media and n.ctx == "load"]

    found: list[tuple[str, int]] = []
    for node in tree.find_all(nodes.Filter):
        if node.name == "fence" and node.node is not None:
            found += [
                (
                    f"input {name.name!r} is an image or document and cannot go inside fence(); "
                    f"place {{{{ {name.name} }}}} outside the fence",
                    node.lineno,
                )
                for name in used(node.node)
            ]
    for block in tree.find_all(nodes.CallBlock):
        call = block.call
        role = call.args[0] if isinstance(call, nodes.Call) and call.args else None
        if not (
            isinstance(call, nodes.Call)
            and isinstance(call.node, nodes.ExtensionAttribute)
            and call.node.name == "_role"
            and isinstance(role, nodes.Const)
            and role.value == "system"
        ):
            continue
        for output in block.find_all(nodes.Output):
            found += [
                (
                    f"input {name.name!r} is an image or document and cannot go in the system "
                    "role; place it in a user message",
                    name.lineno,
                )
                for child in output.nodes
                for name in used(child)
            ]
    return found


_MANGLED = (
    "a {% role %} block, {% cachepoint %} or image went through a filter that changed it "
    "({% filter upper %}, |truncate, |replace on a {% set %} block, ...); filter the text "
    "inside the block instead"
)


def _mangled(text: str, nonce: str, values: dict[str, Any]) -> bool:
    """Whether a filter changed a marker of a role block, cache point or image: it would reach
    the model as text (control characters and the nonce) and its block would be lost. A marker
    is two control characters around the nonce; other control characters can only come from
    the data (checked when the data holds none)."""
    if "\x00" not in text and "\x01" not in text:
        return False
    if text.lower().count(nonce) != text.count(nonce):  # |upper, |title, |capitalize
        return True
    markers = text.count(f"\x00{nonce}:") + text.count(f"\x01{nonce}:")
    controls = text.count("\x00") + text.count("\x01")
    return controls != 2 * markers and not _has_controls(values)


def _has_controls(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value or "\x01" in value
    if isinstance(value, dict):
        return any(_has_controls(k) or _has_controls(v) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_has_controls(v) for v in value)
    if hasattr(value, "model_dump"):
        return _has_controls(value.model_dump())
    return False


# The task name of the errors raised inside a render, where the task is not known; `render`
# raises them again with the task's name and the template line.
_UNNAMED = "template"


def _named(exc: TaskInputError, task: str, where: str) -> TaskInputError:
    reason = str(exc).removeprefix(f"Task {_UNNAMED!r}: ")
    return TaskInputError(task, exc.field, f"template could not render{where}: {reason}")


def _where(exc: BaseException, path: str, first_line: int) -> str:
    """` at file:line` for the template line a render failed on, from Jinja's rewritten traceback."""
    lineno = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            lineno = tb.tb_lineno
        tb = tb.tb_next
    return f" at {path}:{first_line + lineno - 1}" if lineno else ""


def _assemble(
    text: str, nonce: str, blocks: list[tuple[Role, str]], media: Sequence[Media] = ()
) -> Prompt:
    parts = text.split(f"\x00{nonce}:")
    pieces: list[tuple[Role, str]] = [("user", parts[0])]
    for part in parts[1:]:
        index, _, rest = part.partition("\x00")
        if not (index.isdigit() and int(index) < len(blocks)):  # a filter changed the marker
            raise TaskInputError(_UNNAMED, None, _MANGLED)
        pieces.append(blocks[int(index)])
        pieces.append(("user", rest))

    system: list[str] = []
    # each message's texts, joined once at the end (adding each block to the text so far was
    # quadratic: 200 role blocks in a loop took 23 s)
    runs: list[tuple[Literal["user", "assistant"], list[str]]] = []
    size = 0
    for role, content in pieces:
        content = content.strip()
        if not content:
            continue
        size += len(content)
        if size > MAX_TEXT:  # role blocks in a loop: each body is bounded, not all of them
            raise TaskInputError(
                _UNNAMED, None, f"the prompt's messages hold more than {MAX_TEXT} characters"
            )
        if role == "system":
            system.append(content)
        elif runs and runs[-1][0] == role:
            runs[-1][1].append(content)
        else:
            runs.append((role, [content]))
    messages: list[Message] = [
        {"role": role, "content": "\n\n".join(texts)} for role, texts in runs
    ]
    prompt = Prompt(system="\n\n".join(system) or None, messages=messages)
    prompt = _place_media(prompt, nonce, media) if media else prompt
    cachepoint = f"\x01{nonce}:c\x01"
    if cachepoint in text or any(cachepoint in body for _, body in blocks):
        prompt = _place_cachepoints(prompt, cachepoint)
    return prompt


def _place_cachepoints(prompt: Prompt, marker: str) -> Prompt:
    """Turn `{% cachepoint %}` markers into cache-point parts after the text before them; a cache
    point with nothing before it in its message is dropped."""

    def split(content: Content) -> Content:
        parts: list[Part] = (
            [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
        )
        if not any(p["type"] == "text" and marker in p["text"] for p in parts):
            return content
        out: list[Part] = []
        for part in parts:
            if part["type"] != "text" or marker not in part["text"]:
                out.append(part)
                continue
            for i, piece in enumerate(part["text"].split(marker)):
                if i and out and out[-1]["type"] != "cachepoint":
                    out.append({"type": "cachepoint"})
                if piece.strip():
                    out.append({"type": "text", "text": piece})
        if len(out) == 1 and out[0]["type"] == "text":
            return out[0]["text"]
        return out

    system = split(prompt.system) if prompt.system else prompt.system
    messages: list[Message] = [
        {"role": m["role"], "content": split(m["content"])} for m in prompt.messages
    ]
    return Prompt(system=system, messages=messages)


def _place_media(prompt: Prompt, nonce: str, media: Sequence[Media]) -> Prompt:
    """Turn the media markers of a render into media parts at their places in the messages."""
    marker = re.compile(f"\x01{nonce}:(\\d+)\x01")
    if isinstance(prompt.system, str) and marker.search(prompt.system):
        raise TaskInputError(
            "template",
            None,
            "an image or document cannot go in the system role; place it in a user message",
        )
    messages: list[Message] = []
    for message in prompt.messages:
        content = message["content"]
        if isinstance(content, str) and marker.search(content):
            pieces = marker.split(content)
            parts: list[Part] = []
            for i, piece in enumerate(pieces):
                if i % 2:
                    if int(piece) >= len(media):  # a filter changed the marker
                        raise TaskInputError(_UNNAMED, None, _MANGLED)
                    parts.append({"type": "media", "value": media[int(piece)]})
                elif piece:
                    parts.append({"type": "text", "text": piece})
            content = parts
        messages.append({"role": message["role"], "content": content})
    return Prompt(system=prompt.system, messages=messages)
