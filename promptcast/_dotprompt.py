"""Dotprompt's `.prompt` files (Firebase Genkit) as promptcast task files.

The frontmatter's Picoschema (`name?: string, description`, `tags(array): string`,
`kind(enum): [a, b]`, `address(object): {...}`) becomes promptcast inputs and inline output
fields. The Handlebars template is translated to Jinja for what has a Jinja equivalent:
variables and paths, `{{! comments }}`, `{{role "..."}}`, `{{json x}}`, `#if`, `#unless`,
`#each` (with `this`, `@index`, `@first`, `@last`, `../`), `#ifEquals`, `#unlessEquals`, `else`
and `~` whitespace control. Any other helper (`media`, `history`, `section`, partials, your own)
is an error that names it.
"""

from __future__ import annotations

import re
from typing import Any

from promptcast._convert import Converted, closest, task_text, unsupported
from promptcast.errors import TaskDefinitionError

__all__ = ["convert_dotprompt"]

_KNOWN_KEYS = (
    "name",
    "variant",
    "version",
    "description",
    "model",
    "tools",
    "config",
    "input",
    "output",
    "metadata",
    "ext",
    "raw",
)
_PROVIDERS = {"googleai": "gemini", "vertexai": "vertex_ai"}
_TYPES = {
    "string": "str",
    "number": "float",
    "integer": "int",
    "boolean": "bool",
    "null": "None",
    "any": "Any",
    "object": "dict",
    "array": "list",
}
_KEY = re.compile(r"^(\w+)(\?)?(?:\(\s*(\w+)\s*(?:,\s*(.*))?\))?$", re.S)
_COMMENT = re.compile(r"\{\{!--.*?--\}\}|\{\{!.*?\}\}", re.S)
_MUSTACHE = re.compile(r"\{\{(\{?)(~?)\s*(.*?)\s*(~?)\}?\}\}", re.S)
_TOKEN = re.compile(_COMMENT.pattern + "|" + _MUSTACHE.pattern, re.S)
_PATH = re.compile(r"^(?:\.\./)*(?:@?[A-Za-z_]\w*)(?:\.[A-Za-z_]\w*)*$")
_STRING = re.compile(r"""^(?:"([^"]*)"|'([^']*)')$""")
_BLOCKS = {"if", "unless", "each", "ifEquals", "unlessEquals"}
_UNSUPPORTED = ("media", "history", "section")


def convert_dotprompt(text: str, path: str) -> Converted:
    """The promptcast task file equivalent to a `.prompt` file's text."""
    from promptcast.spec import _load_yaml, _split_lines

    lines = _split_lines(text)
    data: Any = {}
    body_line = 1
    if lines and lines[0].strip() == "---":
        for index in range(1, len(lines)):
            if lines[index].strip() == "---":
                _, data = _load_yaml("".join(lines[1:index]), path)
                body_line = index + 2
                break
        else:
            raise unsupported("the frontmatter is not closed by a '---' line", path, 1)
    data = data or {}
    if not isinstance(data, dict):
        raise unsupported("the frontmatter must be a YAML mapping of keys", path, 2)
    front = _Frontmatter(data, path).convert()
    body = _Template(path, body_line).translate("".join(lines[body_line - 1 :]))
    return task_text(front, body, body_line)


class _Frontmatter:
    def __init__(self, data: dict[str, Any], path: str) -> None:
        self.data = data
        self.path = path

    def fail(self, message: str) -> TaskDefinitionError:
        return unsupported(message, self.path)

    def convert(self) -> dict[str, Any]:
        data = self.data
        for key in data:
            if key not in _KNOWN_KEYS and "." not in str(key):  # `ext.namespace.key` is free
                raise self.fail(f"unknown .prompt key {key!r}{closest(str(key), _KNOWN_KEYS)}")
        if data.get("tools"):
            raise self.fail(
                "'tools:' (tool calling) is not supported: a promptcast task returns one "
                "validated output; remove the tools or call them in your code"
            )
        front: dict[str, Any] = {}
        if data.get("description"):
            front["description"] = str(data["description"]).strip()
        if isinstance(data.get("version"), (int, str)):
            front["version"] = data["version"]
        inputs = data.get("input") or {}
        if not isinstance(inputs, dict):
            raise self.fail("'input:' must be a mapping with 'schema:' and 'default:'")
        defaults = inputs.get("default") or {}
        front["inputs"] = self._schema(inputs.get("schema"), "input", defaults, for_input=True)
        front["output"] = self._output(data.get("output"))
        model = data.get("model")
        if isinstance(model, str) and model:
            provider, sep, name = model.partition("/")
            front["model"] = f"{_PROVIDERS.get(provider, provider)}/{name}" if sep else model
        extra: dict[str, Any] = {}
        config = data.get("config") or {}
        if not isinstance(config, dict):
            raise self.fail("'config:' must be a mapping")
        for key, value in config.items():
            if key == "temperature":
                front["temperature"] = value
            elif key in ("maxOutputTokens", "max_tokens"):
                front["max_tokens"] = value
            else:
                extra[key] = value
        metadata: dict[str, Any] = {
            key: data[key] for key in ("name", "variant", "metadata") if key in data
        }
        if extra:
            metadata["config_not_applied"] = extra
        if metadata:
            front["metadata"] = {"dotprompt": metadata}
        return {key: value for key, value in front.items() if value not in ({}, None)}

    def _output(self, output: Any) -> Any:
        if not output:
            return "str"
        if not isinstance(output, dict):
            raise self.fail("'output:' must be a mapping with 'format:' and 'schema:'")
        fmt = output.get("format", "json" if output.get("schema") else "text")
        if fmt == "text" or not output.get("schema"):
            return "str"
        if fmt != "json":
            raise self.fail(f"output format {fmt!r} is not supported (json or text)")
        return self._schema(output["schema"], "output", {}, for_input=False) or "str"

    def _schema(
        self, schema: Any, what: str, defaults: dict[str, Any], *, for_input: bool
    ) -> dict[str, Any]:
        if schema is None:
            return {}
        if isinstance(schema, str):
            raise self.fail(
                f"{what}.schema names a registered schema ({schema!r}); write its fields out"
            )
        if not isinstance(schema, dict):
            raise self.fail(f"{what}.schema must be a mapping of fields")
        if schema.get("type") == "object" and isinstance(schema.get("properties"), dict):
            return self._json_schema(schema, what, defaults, for_input=for_input)
        fields: dict[str, Any] = {}
        for key, value in schema.items():
            match = _KEY.match(str(key))
            if not match:
                raise self.fail(f"{what}.schema: {key!r} is not a Picoschema field name")
            name, optional, kind, description = match.groups()
            type_text, nested = self._type(kind, value, f"{what}.schema.{name}")
            if kind is None and isinstance(value, str) and "," in value:
                description = value.partition(",")[2].strip()
            fields[name] = self._field(
                type_text, nested, description, optional, defaults.get(name, ...), for_input
            )
        return fields

    def _type(self, kind: str | None, value: Any, what: str) -> tuple[str, Any]:
        """`(type text, nested fields or None)` of one Picoschema field."""
        if kind == "enum":
            if not isinstance(value, list) or not value:
                raise self.fail(f"{what}: an (enum) field takes a list of values")
            return f"Literal[{', '.join(repr(v) for v in value)}]", None
        if kind == "object":
            if not isinstance(value, dict):
                raise self.fail(f"{what}: an (object) field takes a mapping of fields")
            return "object", self._schema(value, what, {}, for_input=False)
        if kind == "array":
            item_type, nested = self._type(None, value, what)
            if nested is not None:
                return "list", nested
            return f"list[{item_type}]", None
        if kind is not None:
            raise self.fail(f"{what}: unknown Picoschema kind ({kind}); use array, object, enum")
        if isinstance(value, dict):
            return "object", self._schema(value, what, {}, for_input=False)
        base = str(value).partition(",")[0].strip()
        if base not in _TYPES:
            raise self.fail(f"{what}: unknown type {base!r}{closest(base, list(_TYPES))}")
        return _TYPES[base], None

    def _field(
        self,
        type_text: str,
        nested: Any,
        description: str | None,
        optional: str | None,
        default: Any,
        for_input: bool,
    ) -> Any:
        if nested is not None:
            if for_input:  # an input holding an object is a dict to the template
                type_text, nested = ("list" if type_text == "list" else "dict"), None
            else:
                spec: dict[str, Any] = (
                    {"type": "list", "items": nested}
                    if type_text == "list"
                    else {"type": "object", "fields": nested}
                )
                if description:
                    spec["description"] = description
                return spec
        form: dict[str, Any] = {"type": type_text}
        if default is not ...:
            form["default"] = default
        elif optional:
            form["type"] = f"{type_text} | None" if type_text not in ("Any", "None") else type_text
            form["default"] = None
        if description:
            form["description"] = description
        return form if len(form) > 1 else type_text

    def _json_schema(
        self, schema: dict[str, Any], what: str, defaults: dict[str, Any], *, for_input: bool
    ) -> dict[str, Any]:
        required = set(schema.get("required") or ())
        fields: dict[str, Any] = {}
        for name, prop in schema["properties"].items():
            prop = prop if isinstance(prop, dict) else {}
            kind = prop.get("type", "any")
            nested = None
            if kind == "object" and isinstance(prop.get("properties"), dict):
                nested = self._json_schema(prop, f"{what}.{name}", {}, for_input=False)
                type_text = "object"
            elif kind == "array" and isinstance(prop.get("items"), dict):
                item = prop["items"]
                if item.get("type") == "object" and isinstance(item.get("properties"), dict):
                    type_text = "list"
                    nested = self._json_schema(item, f"{what}.{name}", {}, for_input=False)
                else:
                    type_text = f"list[{_TYPES.get(str(item.get('type', 'any')), 'Any')}]"
            elif prop.get("enum"):
                type_text = f"Literal[{', '.join(repr(v) for v in prop['enum'])}]"
            else:
                type_text = _TYPES.get(str(kind), "Any")
            default = defaults.get(name, prop.get("default", ...))
            optional = None if name in required else "?"
            fields[str(name)] = self._field(
                type_text, nested, prop.get("description"), optional, default, for_input
            )
        return fields


class _Template:
    """Handlebars → Jinja, one mustache at a time, keeping every line where it was."""

    def __init__(self, path: str, first_line: int) -> None:
        self.path = path
        self.first_line = first_line
        self.blocks: list[str] = []  # open block helpers, innermost last
        self.loops: list[str] = []  # loop variables of the open #each blocks
        self.open_role = False

    def fail(self, message: str, source: str, offset: int) -> TaskDefinitionError:
        line = self.first_line + source.count("\n", 0, offset)
        return unsupported(message, self.path, line)

    def translate(self, source: str) -> str:
        out: list[str] = []
        position = 0
        for match in _TOKEN.finditer(source):
            out.append(_escape(source[position : match.start()]))
            if match.group(0).startswith("{{!"):  # a comment: keep its line breaks
                out.append("{#" + "\n" * match.group(0).count("\n") + "#}")
            else:
                mustache = _MUSTACHE.fullmatch(match.group(0))
                assert mustache is not None
                out.append(self._tag(mustache, source, match.start()))
            position = match.end()
        out.append(_escape(source[position:]))
        if self.blocks:
            raise self.fail(f"'{{{{#{self.blocks[-1]}}}}}' is not closed", source, len(source))
        if self.open_role:
            out.append("{% endrole %}")
        return "".join(out)

    def _tag(self, match: re.Match[str], source: str, where: int) -> str:
        _, left, inner, right = match.groups()
        lt, rt = ("-" if left else ""), ("-" if right else "")
        if inner.startswith(">"):
            raise self.fail(f"partials ({{{{{inner}}}}}) are not supported", source, where)
        if inner.startswith("#"):
            name, _, args = inner[1:].partition(" ")
            return self._open(name, args.strip(), lt, rt, source, where)
        if inner.startswith("/"):
            name = inner[1:].strip()
            if not self.blocks or self.blocks[-1] != name:
                raise self.fail(f"'{{{{/{name}}}}}' closes no open block", source, where)
            self.blocks.pop()
            if name == "each":
                self.loops.pop()
                return f"{{%{lt} endfor {rt}%}}"
            return f"{{%{lt} endif {rt}%}}"
        if inner == "else":
            return f"{{%{lt} else {rt}%}}"
        words = _words(inner)
        head = words[0] if words else ""
        if head == "role" and len(words) == 2:
            role = _literal(words[1])
            role = {"model": "assistant"}.get(role or "", role)
            if role not in ("system", "user", "assistant"):
                raise self.fail(
                    f"{{{{{inner}}}}}: the role is system, user or model", source, where
                )
            close = "{% endrole %}" if self.open_role else ""
            self.open_role = True
            return f'{close}{{% role "{role}" %}}'
        if head == "json" and len(words) == 2:
            return f"{{{{{lt} {self._path(words[1], source, where)} | tojson {rt}}}}}"
        if len(words) > 1 or head in _UNSUPPORTED or head == "role":
            raise self.fail(
                f"the Handlebars helper {head!r} ({{{{{inner}}}}}) is not supported; promptcast "
                "reads variables, #if, #unless, #each, #ifEquals, role and json",
                source,
                where,
            )
        return f"{{{{{lt} {self._path(head, source, where)} {rt}}}}}"

    def _open(self, name: str, args: str, lt: str, rt: str, source: str, where: int) -> str:
        words = _words(args)
        if name not in _BLOCKS:
            raise self.fail(
                f"the Handlebars block helper '#{name}' is not supported; promptcast reads "
                "#if, #unless, #each, #ifEquals and #unlessEquals",
                source,
                where,
            )
        self.blocks.append(name)
        if name in ("ifEquals", "unlessEquals"):
            if len(words) != 2:
                raise self.fail(f"'#{name}' takes two values", source, where)
            left, right = (self._value(w, source, where) for w in words)
            op = "==" if name == "ifEquals" else "!="
            return f"{{%{lt} if {left} {op} {right} {rt}%}}"
        if len(words) != 1:
            raise self.fail(f"'#{name}' takes one value", source, where)
        value = self._path(words[0], source, where)
        if name == "if":
            return f"{{%{lt} if {value} {rt}%}}"
        if name == "unless":
            return f"{{%{lt} if not {value} {rt}%}}"
        loop = f"item{len(self.loops) + 1}"
        self.loops.append(loop)
        return f"{{%{lt} for {loop} in {value} {rt}%}}"

    def _value(self, word: str, source: str, where: int) -> str:
        literal = _literal(word)
        if literal is not None:
            return repr(literal)
        if re.fullmatch(r"-?\d+(\.\d+)?|true|false|null", word):
            return {"true": "true", "false": "false", "null": "none"}.get(word, word)
        return self._path(word, source, where)

    def _path(self, word: str, source: str, where: int) -> str:
        """A Handlebars path as a Jinja expression, inside `#each` blocks relative to the item."""
        if not _PATH.match(word) and word not in ("this", "."):
            raise self.fail(f"{word!r} is not a variable path promptcast can read", source, where)
        depth = len(self.loops)
        while word.startswith("../"):
            word, depth = word[3:], depth - 1
        if depth < 0:
            raise self.fail(f"'../' goes above the template's inputs in {word!r}", source, where)
        if word.startswith("@"):
            specials = {"@index": "loop.index0", "@first": "loop.first", "@last": "loop.last"}
            if word not in specials or depth == 0:
                raise self.fail(f"{word!r} is not supported here", source, where)
            return specials[word]
        head, _, rest = word.partition(".")
        if head in ("this", "") or word == ".":
            base = self.loops[depth - 1] if depth else None
            if base is None:
                raise self.fail("'this' outside '#each' is not supported", source, where)
            return f"{base}.{rest}" if rest else base
        return f"{self.loops[depth - 1]}.{word}" if depth else word


def _escape(text: str) -> str:
    """Literal text that Jinja would read as a tag or a comment, printed as text."""
    return re.sub(r"\{[%#]", lambda m: "{{ '" + m.group(0) + "' }}", text)


def _words(text: str) -> list[str]:
    return re.findall(r""""[^"]*"|'[^']*'|\S+""", text)


def _literal(word: str) -> str | None:
    match = _STRING.match(word)
    if not match:
        return None
    return match.group(1) if match.group(1) is not None else match.group(2)
