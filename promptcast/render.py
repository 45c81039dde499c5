"""The sandboxed Jinja environment: role blocks, the `fence` filter and load-time variable checks.

Role blocks are collected out of band: each `{% role %}` body is stored in a per-render list and the
rendered text holds only a marker carrying a random per-render nonce. Data rendered into the
template can contain any text, including `{% role "system" %}` or a guessed marker, and still never
starts a new message.
"""

from __future__ import annotations

import contextvars
import html
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.ext import Extension
from jinja2.parser import Parser
from jinja2.runtime import Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment

from promptcast.errors import TaskDefinitionError, TaskInputError

__all__ = ["Message", "Prompt", "compile_template", "environment", "fence"]

Role = Literal["system", "user", "assistant"]
_ROLES: tuple[Role, ...] = ("system", "user", "assistant")
_TAG = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


class Message(TypedDict):
    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True)
class Prompt:
    """A rendered task: an optional system prompt and alternating user/assistant messages."""

    system: str | None
    messages: list[Message] = field(default_factory=list)

    def as_text(self) -> str:
        parts = [f"[system]\n{self.system}"] if self.system else []
        parts += [f"[{m['role']}]\n{m['content']}" for m in self.messages]
        return "\n\n".join(parts)


def fence(value: Any, tag: str = "data", **attributes: Any) -> str:
    """Wrap untrusted text in `<tag>…</tag>` so that nothing inside can close the wrapper.

    Any closing tag of the same name inside the data, in any case, spacing or with attributes, has
    its `<` replaced by `&lt;`. Keyword arguments become attributes: `fence("doc", id=doc_id)`.
    """
    if not _TAG.match(tag) or not all(_TAG.match(name) for name in attributes):
        raise ValueError(f"fence tag {tag!r} and attribute names must be letters, digits, '_', '-'")
    text = str(value)
    closing = re.compile(r"<(\s*/\s*" + re.escape(tag) + r")(?=[\s/>]|$)", re.IGNORECASE)
    attrs = "".join(
        f' {name}="{html.escape(str(val), quote=True)}"' for name, val in attributes.items()
    )
    body = closing.sub(r"&lt;\1", text)
    return f"<{tag}{attrs}>\n{body}\n</{tag}>"


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


def environment() -> ImmutableSandboxedEnvironment:
    """The environment every task template is compiled in."""
    env = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=False,
        extensions=[_RoleExtension],
        keep_trailing_newline=False,
    )
    env.filters["fence"] = fence
    return env


_ENV = environment()


def compile_template(
    source: str, *, task: str, declared: set[str], path: str, first_line: int
) -> Callable[[dict[str, Any]], Prompt]:
    """Compile a template after checking its syntax and that it uses only declared inputs."""
    try:
        tree = _ENV.parse(source)
    except TemplateSyntaxError as exc:
        line = first_line + (exc.lineno or 1) - 1
        raise TaskDefinitionError(
            f"Jinja syntax error: {exc.message}", file=path, line=line
        ) from None
    undeclared = sorted(meta.find_undeclared_variables(tree) - declared - set(_ENV.globals))
    if undeclared:
        name = undeclared[0]
        offset = next(
            (i for i, text in enumerate(source.splitlines()) if re.search(rf"\b{name}\b", text)), 0
        )
        raise TaskDefinitionError(
            f"template uses {', '.join(map(repr, undeclared))} but inputs: does not declare "
            f"{'it' if len(undeclared) == 1 else 'them'}; add it under inputs:",
            file=path,
            line=first_line + offset,
        )
    template = _ENV.from_string(tree)

    def render(values: dict[str, Any]) -> Prompt:
        nonce = secrets.token_hex(16)
        collected: list[tuple[Role, str]] = []
        token = _blocks.set((nonce, collected))
        try:
            text = template.render(values)
        except (SecurityError, UndefinedError) as exc:
            raise TaskInputError(task, None, f"template could not render: {exc}") from None
        finally:
            _blocks.reset(token)
        return _assemble(text, nonce, collected)

    return render


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
            messages[-1]["content"] += "\n\n" + content
        else:
            messages.append({"role": role, "content": content})
    return Prompt(system="\n\n".join(system) or None, messages=messages)
