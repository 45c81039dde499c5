"""Prompty's `.prompty` files (the 1.x and the 2.x frontmatter) as promptcast task files.

The body is split into messages on role lines exactly where Prompty's own parser splits it: a
line that is only `system:`, `user:`, `assistant:` or `developer:` (any case, optionally after
`#`, optionally with `[name="…"]` attributes). Only role lines written in the template count, as
in Prompty 2's default strict mode, so text passed in as an input can never start a message.

The file's model settings map onto promptcast's (model string, temperature, max tokens); the
connection (endpoints, keys) is never read: promptcast takes those from its own settings. What
promptcast cannot do (tools, embeddings, images as inputs, other template engines) is an error
that names the feature.
"""

from __future__ import annotations

import os
import re
from typing import Any

from promptcast._convert import Converted, closest, task_text, unsupported
from promptcast.errors import TaskDefinitionError

__all__ = ["ROLE_LINE", "convert_prompty"]

# Prompty's frontmatter split: `---` (or `+++`), YAML, `---`, then the body from its first
# non-blank character.
_FRONTMATTER = re.compile(r"^\s*(?:---|\+\+\+)(.*?)(?:---|\+\+\+)\s*(.+)$", re.S | re.M)

_ROLES = ("assistant", "developer", "system", "user")
#: Prompty's role boundary: a whole (stripped) line naming a role, with optional attributes.
ROLE_LINE = re.compile(
    r"(?i)^\s*#?\s*(" + "|".join(_ROLES) + r")"
    r"(\[(?:\w++\s*+=\s*+(?:\"[^\"]*\"|[^\",\]]*+)\s*+,?+\s*+)+\])?\s*:\s*$"
)
# Roles of Prompty 1.x's parser for function and tool messages: tool calling, not supported.
_TOOL_ROLE_LINE = re.compile(r"(?i)^\s*#?\s*(function|tools?)(\[[^\]]*\])?\s*:\s*$")
# A role line whose role the template computes (`{{ item.role }}:`), Prompty 1.x's chat history.
_COMPUTED_ROLE_LINE = re.compile(r"^\s*\{\{.*\}\}\s*:\s*$")

_KINDS = {
    "string": "str",
    "str": "str",
    "integer": "int",
    "int": "int",
    "float": "float",
    "number": "float",
    "boolean": "bool",
    "bool": "bool",
    "array": "list",
    "list": "list",
    "object": "dict",
    "dict": "dict",
}
_RICH_KINDS = ("thread", "image", "file", "audio")
_PROVIDERS = {"azure_openai": "azure", "azure": "azure", "openai": "openai", "foundry": "azure_ai"}
_TEMPLATE_FORMATS = ("jinja2", "jinja", "*", "")
_KNOWN_KEYS = (
    "name",
    "displayName",
    "description",
    "metadata",
    "authors",
    "tags",
    "version",
    "base",
    "sample",
    "inputs",
    "outputs",
    "model",
    "tools",
    "template",
    "kind",
    "id",
)
_ENV_REF = re.compile(r"^\$\{(\w+):(.*)\}$", re.S)


def convert_prompty(text: str, path: str) -> Converted:
    """The promptcast task file equivalent to a `.prompty` file's text."""
    from promptcast.spec import _load_yaml

    match = _FRONTMATTER.search(text)
    if not re.match(r"^\s*(?:---)", text) or match is None:
        raise unsupported(
            "a .prompty file starts with '---', YAML frontmatter, '---', then the template",
            path,
            1,
        )
    _, data = _load_yaml(match.group(1), path)
    data = data or {}
    if not isinstance(data, dict):
        raise unsupported("the frontmatter must be a YAML mapping of keys", path, 2)
    body_line = text.count("\n", 0, match.start(2)) + 1
    body = _body(match.group(2), path, body_line)
    return task_text(_Frontmatter(data, path).convert(), body, body_line)


class _Frontmatter:
    def __init__(self, data: dict[str, Any], path: str) -> None:
        self.data = data
        self.path = path

    def fail(self, message: str) -> TaskDefinitionError:
        return unsupported(message, self.path)

    def convert(self) -> dict[str, Any]:
        data = self.data
        for key in data:
            if key not in _KNOWN_KEYS:
                raise self.fail(f"unknown .prompty key {key!r}{closest(str(key), _KNOWN_KEYS)}")
        if data.get("base"):
            raise self.fail("'base:' (inheriting another .prompty file) is not supported")
        if data.get("tools"):
            raise self.fail(
                "'tools:' (tool calling) is not supported: a promptcast task returns one "
                "validated output; remove the tools or call them in your code"
            )
        self._template(data.get("template"))
        front: dict[str, Any] = {}
        if data.get("description"):
            front["description"] = str(data["description"]).strip()
        if isinstance(data.get("version"), (int, str)):
            front["version"] = data["version"]
        front["inputs"] = self._inputs(data.get("inputs"), data.get("sample"))
        front["output"] = self._outputs(data.get("outputs"))
        model, settings, extra = self._model(data.get("model"))
        if model:
            front["model"] = model
        front.update(settings)
        metadata: dict[str, Any] = {}
        for key in ("name", "displayName", "authors", "tags", "sample", "id"):
            if key in data:
                metadata[key] = data[key]
        if isinstance(data.get("metadata"), dict):
            metadata.update(data["metadata"])
        if extra:
            metadata["model_settings_not_applied"] = extra
        if metadata:
            front["metadata"] = {"prompty": metadata}
        return {key: value for key, value in front.items() if value not in ({}, None)}

    def _template(self, template: Any) -> None:
        if template is None:
            return
        kind: Any
        parser: Any
        if isinstance(template, str):  # 1.x: `template: jinja2`
            kind, parser = template, "prompty"
        elif isinstance(template, dict):
            fmt = template.get("format", template.get("type", "jinja2"))
            kind = fmt.get("kind", "jinja2") if isinstance(fmt, dict) else fmt
            parser_value = template.get("parser", "prompty")
            parser = (
                parser_value.get("kind", "prompty")
                if isinstance(parser_value, dict)
                else parser_value
            )
        else:
            raise self.fail("'template:' must be a template engine name or {format, parser}")
        if str(kind).lower() not in _TEMPLATE_FORMATS:
            raise self.fail(
                f"template format {kind!r} is not supported: promptcast renders Jinja templates "
                "(format: jinja2); rewrite the template in Jinja"
            )
        if str(parser).lower() not in ("prompty", "*", ""):
            raise self.fail(f"template parser {parser!r} is not supported (only 'prompty')")

    def _inputs(self, inputs: Any, sample: Any) -> dict[str, Any]:
        declared: list[tuple[str, Any]] = []
        if isinstance(inputs, dict):  # 1.x, and 2.x's named form
            declared = [(str(k), v) for k, v in inputs.items()]
        elif isinstance(inputs, list):  # 2.x: a list of properties with `name:`
            for item in inputs:
                if not isinstance(item, dict) or "name" not in item:
                    raise self.fail("each entry of 'inputs:' needs a 'name:'")
                declared.append((str(item["name"]), {k: v for k, v in item.items() if k != "name"}))
        elif inputs is not None:
            raise self.fail("'inputs:' must be a mapping or a list of properties")
        result: dict[str, Any] = {}
        for name, prop in declared:
            result[name] = self._input(name, prop)
        if isinstance(sample, dict):  # 1.x: inputs known only from the sample values
            for name, value in sample.items():
                if str(name) not in result:
                    result[str(name)] = _type_of(value)
        elif isinstance(sample, str) and sample.startswith("${file:"):
            pass  # a sample file is an example for Prompty's tooling; kept in metadata
        return result

    def _input(self, name: str, prop: Any) -> Any:
        if not isinstance(prop, dict):  # `name: example value`
            return _type_of(prop)
        kind = prop.get("kind", prop.get("type"))
        if kind is None:
            kind = _type_of(prop.get("default", prop.get("example", prop.get("sample", ""))))
        type_text = self._kind(str(kind), prop, f"input {name!r}")
        form: dict[str, Any] = {"type": type_text}
        if "default" in prop and prop["default"] is not None:
            form["default"] = prop["default"]
        elif prop.get("required") is False:
            if type_text == "str":
                form["default"] = ""  # Prompty renders a missing optional input as empty text
            else:
                form["type"], form["default"] = f"{type_text} | None", None
        if prop.get("description"):
            form["description"] = str(prop["description"]).strip()
        return form if len(form) > 1 else type_text

    def _kind(self, kind: str, prop: dict[str, Any], what: str) -> str:
        key = kind.strip().lower()
        if key in _RICH_KINDS:
            raise self.fail(
                f"{what} has kind {kind!r}, which promptcast does not take from a .prompty file; "
                "pass text inputs (or use a promptcast task file with media inputs)"
            )
        if key not in _KINDS:
            raise self.fail(f"{what} has unknown kind {kind!r}{closest(key, list(_KINDS))}")
        if prop.get("enumValues"):
            values = ", ".join(repr(v) for v in prop["enumValues"])
            return f"Literal[{values}]"
        base = _KINDS[key]
        items = prop.get("items")
        if base == "list" and isinstance(items, dict):
            item_kind = items.get("kind", items.get("type"))
            if item_kind is not None:
                return f"list[{self._kind(str(item_kind), items, what)}]"
        return base

    def _outputs(self, outputs: Any) -> Any:
        if not outputs:
            return "str"
        fields = self._properties(outputs, "outputs")
        return fields or "str"

    def _properties(self, value: Any, what: str) -> dict[str, Any]:
        if isinstance(value, list):
            items = []
            for item in value:
                if not isinstance(item, dict) or "name" not in item:
                    raise self.fail(f"each entry of {what} needs a 'name:'")
                items.append((str(item["name"]), {k: v for k, v in item.items() if k != "name"}))
        elif isinstance(value, dict):
            items = [(str(k), v) for k, v in value.items()]
        else:
            raise self.fail(f"{what} must be a mapping or a list of properties")
        return {name: self._output_field(name, prop, what) for name, prop in items}

    def _output_field(self, name: str, prop: Any, what: str) -> Any:
        if not isinstance(prop, dict):
            return _type_of(prop)
        kind = str(prop.get("kind", prop.get("type", "string"))).lower()
        description = prop.get("description")
        if kind == "object" and prop.get("properties"):
            spec: dict[str, Any] = {
                "type": "object",
                "fields": self._properties(prop["properties"], f"{what}.{name}.properties"),
            }
        elif kind == "array" and isinstance(prop.get("items"), dict):
            spec = {"type": "list", "items": self._output_field(name, prop["items"], what)}
        else:
            spec = {"type": self._kind(kind, prop, f"{what}.{name}")}
        if description:
            spec["description"] = str(description).strip()
        return spec["type"] if list(spec) == ["type"] else spec

    def _model(self, model: Any) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
        """`(model string, promptcast settings, settings that have no promptcast equivalent)`."""
        if model is None:
            return None, {}, {}
        if isinstance(model, str):  # 2.x shorthand: `model: gpt-4o`
            model = {"id": model}
        if not isinstance(model, dict):
            raise self.fail("'model:' must be a mapping (or a model id)")
        settings: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        api = model.get("apiType", model.get("api", "chat"))
        if str(api).lower() not in ("chat", "responses"):
            raise self.fail(
                f"model api {api!r} is not supported: a promptcast task is a chat call that "
                "returns text or JSON (no embeddings, images or completions)"
            )
        name: str | None = None
        provider: str | None = None
        if "configuration" in model:  # 1.x
            config = model.get("configuration") or {}
            if isinstance(config, dict):
                provider = self._value(config.get("type"), "model.configuration.type")
                name = self._value(
                    config.get("azure_deployment") or config.get("name") or config.get("model"),
                    "model.configuration",
                )
            params = model.get("parameters") or {}
        else:  # 2.x
            provider = self._value(model.get("provider"), "model.provider")
            name = self._value(model.get("id"), "model.id")
            params = model.get("options") or {}
        if not isinstance(params, dict):
            raise self.fail("model parameters/options must be a mapping")
        for key, value in params.items():
            if key in ("tools", "tool_choice", "functions", "function_call"):
                raise self.fail(f"model parameter {key!r} (tool calling) is not supported")
            if key == "temperature":
                settings["temperature"] = value
            elif key in ("max_tokens", "maxOutputTokens", "max_completion_tokens"):
                settings["max_tokens"] = value
            elif key != "response_format":  # JSON output follows from `outputs:`
                extra[key] = value
        model_string = None
        if name and provider:
            model_string = f"{_PROVIDERS.get(provider.lower(), provider.lower())}/{name}"
        elif name:
            extra["model"] = name
        return model_string, settings, extra

    def _value(self, value: Any, key: str) -> str | None:
        """A setting with Prompty's `${env:VAR}` / `${env:VAR:default}` references resolved."""
        if value is None:
            return None
        text = str(value)
        match = _ENV_REF.match(text)
        if not match:
            return text
        protocol, ref = match.groups()
        if protocol.lower() != "env":
            raise self.fail(f"{key}: '${{{protocol}:…}}' references are not supported here")
        var, _, default = ref.partition(":")
        found = os.environ.get(var)
        if found is None and not default:
            raise TaskDefinitionError(
                f"{key} reads the environment variable {var}, which is not set (and the file "
                f"gives no default: ${{env:{var}:default}})",
                file=self.path,
            )
        return found if found is not None else default


def _type_of(value: Any) -> str:
    """The promptcast type of a sample value."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return "str"


def _body(body: str, path: str, first_line: int) -> str:
    """The template with each role line replaced, on the same line, by promptcast role tags.
    Lines end at LF, CRLF or CR only, as for Prompty (a text holding U+2028 or a form feed
    before `user:` is one line)."""
    from promptcast.spec import _split_lines

    lines = _split_lines(body)
    out: list[str] = []
    open_role = False
    for index, line in enumerate(lines):
        stripped = line.strip()
        match = ROLE_LINE.match(stripped)
        ending = line[len(line.rstrip("\r\n")) :]
        if match:
            role = match.group(1).lower()
            role = "system" if role == "developer" else role
            close = "{% endrole %}" if open_role else ""
            out.append(f'{close}{{% role "{role}" %}}{ending}')
            open_role = True
            continue
        where = first_line + index
        if _TOOL_ROLE_LINE.match(stripped):
            raise unsupported(
                f"role line {stripped!r}: function and tool messages (tool calling) are not "
                "supported",
                path,
                where,
            )
        if _COMPUTED_ROLE_LINE.match(stripped):
            raise unsupported(
                f"role line {stripped!r} is computed by the template; only role lines written "
                "out (system:, user:, assistant:) start messages (as in Prompty 2's strict "
                "mode); write the roles out",
                path,
                where,
            )
        if not open_role and stripped:  # text before any role line is the system message
            out.append('{% role "system" %}')
            open_role = True
        out.append(line)
    if open_role:
        out.append("{% endrole %}")
    return "".join(out)
