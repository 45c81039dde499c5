"""The sandboxed Jinja environment: role blocks, the `fence` filter and load-time variable checks.

Role blocks are collected out of band: each `{% role %}` body is stored in a per-render list and the
rendered text holds only a marker carrying a random per-render nonce. Data rendered into the
template can contain any text, including `{% role "system" %}` or a guessed marker, and still never
starts a new message.
"""

from __future__ import annotations

import contextvars
import functools
import html
import re
import secrets
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.ext import Extension
from jinja2.parser import Parser
from jinja2.runtime import Context, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment

from promptcast.errors import PromptcastError, TaskDefinitionError, TaskInputError

__all__ = [
    "MAX_SIZE",
    "Message",
    "Prompt",
    "compile_template",
    "environment",
    "fence",
    "template_problems",
]

Role = Literal["system", "user", "assistant"]
_ROLES: tuple[Role, ...] = ("system", "user", "assistant")
_TAG = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


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


def _neutralise(text: str, tag: str) -> str:
    closing = _closing(tag)
    if _PLAIN.fullmatch(text):  # the common case: nothing can be disguised
        return closing.sub(_STAND_IN, text)
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
        if f"\x00{nonce}:" in body:
            raise TaskInputError("template", None, "role blocks cannot be nested")
        collected.append((role, body))
        return f"\x00{nonce}:{len(collected) - 1}\x00"


#: The sandbox refuses `x ** y` and `seq * n` whose result would be larger than this (digits or
#: items), as it refuses `range()` over `jinja2.sandbox.MAX_RANGE` items.
MAX_SIZE = 1_000_000

_UNSUPPORTED: dict[type[nodes.Node], str] = {
    nodes.Extends: "{% extends %}",
    nodes.Include: "{% include %}",
    nodes.Import: "{% import %}",
    nodes.FromImport: "{% from ... import %}",
}


class _Environment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with `*` and `**` bounded so data cannot make a render eat memory."""

    intercepted_binops = frozenset({"*", "**"})

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
        return super().call_binop(context, operator, left, right)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def environment() -> ImmutableSandboxedEnvironment:
    """The environment every task template is compiled in."""
    env = _Environment(
        undefined=StrictUndefined,
        autoescape=False,
        extensions=[_RoleExtension],
        keep_trailing_newline=False,
    )
    env.filters["fence"] = fence
    return env


_ENV = environment()


def template_problems(
    source: str, *, declared: set[str], path: str, first_line: int
) -> list[TaskDefinitionError]:
    """Every load-time problem of a template: syntax, constructs the sandbox cannot run, and
    variables that are not declared inputs. Empty when it compiles."""
    return _compile(source, declared, path, first_line)[1]


def compile_template(
    source: str, *, task: str, declared: set[str], path: str, first_line: int
) -> Callable[[dict[str, Any]], Prompt]:
    """Compile a template after checking it (see `template_problems`); raises the first problem.

    A render that fails at run time (a `range` too large, recursion, a bad operation on a value)
    raises `TaskInputError` naming the template line, never a bare Python error.

    A template without inputs renders the same prompt every time, so it is rendered once here and
    each call gets a copy; unless it draws random text (the `random` filter, `lipsum()`), or its
    render fails (then every call raises the failure, as before).
    """
    template, problems = _compile(source, declared, path, first_line)
    if problems or template is None:
        raise problems[0]

    def render(values: dict[str, Any]) -> Prompt:
        nonce = secrets.token_hex(16)
        collected: list[tuple[Role, str]] = []
        token = _blocks.set((nonce, collected))
        try:
            text = template.render(values)
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
        return _assemble(text, nonce, collected)

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
        return Prompt(system=fixed.system, messages=messages)

    return rendered


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
    source: str, declared: set[str], path: str, first_line: int
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
    try:
        undeclared = meta.find_undeclared_variables(tree) - declared - set(_ENV.globals)
    except TemplateSyntaxError as exc:  # e.g. an unknown filter or test
        return None, [*problems, problem(f"Jinja error: {exc.message}", exc.lineno)]
    except RecursionError:
        return None, [*problems, problem("the template nests too deeply to compile", 1)]
    for name in sorted(undeclared):
        lineno = next(
            (n.lineno for n in tree.find_all(nodes.Name) if n.name == name and n.ctx == "load"),
            1,
        )
        problems.append(
            problem(
                f"template uses {name!r} but inputs: does not declare it; add it under inputs:",
                lineno,
            )
        )
    if problems:
        return None, sorted(problems, key=lambda p: p.line or 0)
    try:
        return _ENV.from_string(tree), []
    except TemplateSyntaxError as exc:  # e.g. an unknown filter or test
        return None, [problem(f"Jinja error: {exc.message}", exc.lineno)]
    except RecursionError:
        return None, [problem("the template nests too deeply to compile", 1)]


def _where(exc: BaseException, path: str, first_line: int) -> str:
    """` at file:line` for the template line a render failed on, from Jinja's rewritten traceback."""
    lineno = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            lineno = tb.tb_lineno
        tb = tb.tb_next
    return f" at {path}:{first_line + lineno - 1}" if lineno else ""


def _assemble(text: str, nonce: str, blocks: list[tuple[Role, str]]) -> Prompt:
    parts = text.split(f"\x00{nonce}:")
    pieces: list[tuple[Role, str]] = [("user", parts[0])]
    for part in parts[1:]:
        index, _, rest = part.partition("\x00")
        pieces.append(blocks[int(index)])
        pieces.append(("user", rest))

    system: list[str] = []
    messages: list[Message] = []
    for role, content in pieces:
        content = content.strip()
        if not content:
            continue
        if role == "system":
            system.append(content)
        elif messages and messages[-1]["role"] == role:
            previous = messages[-1]["content"]
            assert isinstance(previous, str)  # assembled from text only
            messages[-1]["content"] = previous + "\n\n" + content
        else:
            messages.append({"role": role, "content": content})
    return Prompt(system="\n\n".join(system) or None, messages=messages)
