"""Images and documents as task inputs: `pc.Image` and `pc.Document`.

A value is made from bytes, a `pathlib.Path`, a data URL (`data:image/png;base64,…`), a mapping
`{"media_type": …, "data": <base64>}` or an `http(s)://` URL (for providers that fetch URLs). The
media type is sniffed from the bytes (magic numbers, with the `filetype` package), never taken from
the caller: a PNG-named GIF is sent as a GIF, a text file given as an image is refused. Only the
types the providers accept are taken, and each value is refused before anything is read past its
size limit.

`ImageInput` and `DocumentInput` name these forms for a type checker (`promptcast typegen` types
image and document inputs with them).

A plain string is never read as a file path: only a `Path` (from Python, the CLI's `@path` or a
batch file) reads a file, so an HTTP caller cannot make the server read its disk.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import io
import math
import operator
import os
import re
import stat
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Required, TypeAlias, TypedDict

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from promptcast._tokens import text_tokens
from promptcast.errors import TaskInputError

if TYPE_CHECKING:
    from promptcast.render import Prompt
    from promptcast.spec import TaskSpec

__all__ = [
    "DOCUMENT_TYPES",
    "IMAGE_TYPES",
    "MAX_DOCUMENT_BYTES",
    "MAX_IMAGE_BYTES",
    "MAX_REQUEST_MEDIA_BYTES",
    "Document",
    "DocumentData",
    "DocumentInput",
    "Image",
    "ImageData",
    "ImageInput",
    "Media",
    "MediaTooLargeError",
    "check_total",
    "described",
    "described_prompt",
    "estimate_tokens",
    "find_media",
    "is_media_type",
    "max_bytes_problem",
    "media_header",
    "media_inputs",
    "sniff",
    "with_max_bytes",
]

#: The image types every supported provider takes (Anthropic, OpenAI, Gemini).
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
#: The document types: PDF everywhere, plain text where the provider takes it (Anthropic).
DOCUMENT_TYPES = ("application/pdf", "text/plain")
#: Anthropic's per-image limit over the API (OpenAI's is larger): a bigger image is refused here
#: rather than by the provider after the upload.
MAX_IMAGE_BYTES = 5 * 1024 * 1024
#: Anthropic's request size limit, which a PDF has to fit in.
MAX_DOCUMENT_BYTES = 32 * 1024 * 1024
#: All media of one call together (the provider's whole-request limit).
MAX_REQUEST_MEDIA_BYTES = 32 * 1024 * 1024

# The forms, as regular expressions that are also the JSON schema's patterns (ASCII classes, so
# Python and ECMAScript read them alike): what the schema allows, the validator takes.
_TOKEN = r"[A-Za-z0-9_.+-]+"
_DATA_URL_HEAD = rf"^data:(?:{_TOKEN}/{_TOKEN})?(?:;{_TOKEN}={_TOKEN})*;base64,"
_DATA_URL = re.compile(_DATA_URL_HEAD + r"(?P<data>.*)$", re.DOTALL)
_B64_TAIL = r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
# base64 of each type's magic number, aligned to a 4-character group: PNG (\x89PNG\r\n\x1a\n), JPEG
# (\xff\xd8\xff), GIF ("GIF"), WebP ("RIFF" ... "WEBP"), PDF ("%PDF")
_MAGIC_B64 = {
    "image": r"(?:iVBORw0KGgo[A-Za-z0-9+/]|/9j/|R0lG"
    r"|UklGR[g-v][A-Za-z0-9+/]{4}[BFJNRVZdhlptx159]XRUJQVl[A-D][A-Za-z0-9+/])",
    "document": r"(?:JVBER[g-v][A-Za-z0-9+/]{2})",
}
_URL = re.compile(r"^https?://[!-~]+$")  # printable ASCII: the JSON schema's pattern too
_TEXT_CONTROLS = frozenset(range(32)) - {9, 10, 12, 13}


class MediaTooLargeError(TaskInputError):
    """An image or document, or all of a call's media together, is over its size limit; nothing
    was sent. The server answers it with 413."""

    def __init__(self, task: str | None, field: str | None, message: str) -> None:
        super().__init__(task or "", field, message)
        self.reason = message
        if not task:
            self.args = (message[:1].upper() + message[1:],)


class Media:
    """An image or document: its bytes and sniffed media type, or a URL the provider fetches.

    Immutable; equal when the content (or URL) is. `name` is the input it was given as, when it
    came through a task's inputs (cassette mismatches name it).
    """

    kind: ClassVar[str] = "media"
    accepted: ClassVar[tuple[str, ...]] = ()
    max_bytes: ClassVar[int] = MAX_DOCUMENT_BYTES

    def __init__(
        self,
        data: bytes | None = None,
        *,
        url: str | None = None,
        name: str | None = None,
        max_bytes: int | None = None,
    ) -> None:
        if (data is None) == (url is None):
            raise ValueError(
                f"{_article(self.kind)} is either bytes or a URL: pass one of data= or url="
            )
        self._name = name
        self._url: str | None = None
        self._data: bytes | None = None
        self._media_type: str | None = None
        if url is not None:
            if not isinstance(url, str) or not _URL.fullmatch(url):  # `$` passes a final "\n"
                raise ValueError(
                    f"{_article(self.kind)} URL must be http:// or https://, not {url!r}"
                )
            self._url = url
            return
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ValueError(f"{self.kind} data must be bytes, not {type(data).__name__}")
        data = bytes(data)
        self._check_size(len(data), max_bytes=max_bytes, name=name)
        self._media_type = self._sniffed(data)
        self._data = data

    # making one

    @classmethod
    def from_path(
        cls, path: str | Path, *, name: str | None = None, max_bytes: int | None = None
    ) -> Any:
        """Read a file; its size is checked before it is read, its extension is not trusted."""
        path = Path(path)
        limit = cls._limit(max_bytes)
        try:
            # opened without blocking and checked on the open file: a named pipe would wait for
            # a writer forever, a device has no size, and a swap after a check would go unseen
            with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
                status = os.fstat(f.fileno())
                regular = stat.S_ISREG(status.st_mode)
                size = status.st_size
                data = f.read(limit + 1) if regular and size <= limit else b""
        except OSError as exc:
            raise ValueError(
                f"cannot read {cls.kind} file {str(path)!r} ({exc.strerror})"
            ) from None
        if not regular:
            raise ValueError(
                f"cannot read {cls.kind} file {str(path)!r}: it is not a regular file (a folder, "
                "pipe or device); pass the path of a file"
            )
        cls._check_size(
            max(size, len(data)), where=f" ({path.name})", max_bytes=max_bytes, name=name
        )
        return cls(data, name=name, max_bytes=max_bytes)

    @classmethod
    def from_data_url(
        cls, text: str, *, name: str | None = None, max_bytes: int | None = None
    ) -> Any:
        """Decode `data:<type>;base64,<data>`; the type written in it is ignored (sniffed)."""
        match = _DATA_URL.match(text)
        if not match:
            raise ValueError(
                f"not a base64 data URL; send the {cls.kind} as 'data:<media type>;base64,<data>'"
            )
        data = _b64decode(match["data"], cls, max_bytes, name)
        return cls(data, name=name, max_bytes=max_bytes)

    @classmethod
    def coerce(cls, value: Any, *, name: str | None = None, max_bytes: int | None = None) -> Any:
        """A value of this class from any accepted form (see the module docstring); `max_bytes`
        lowers the class's size limit (an input's `max_bytes:` in its task file)."""
        if isinstance(value, cls):
            cls._check_size(value.size, max_bytes=max_bytes, name=name)
            return value if name is None or value._name == name else value._renamed(name)
        if isinstance(value, Media):
            raise ValueError(f"expected {_article(cls.kind)}, got {_article(value.kind)}")
        if isinstance(value, (bytes, bytearray, memoryview)):
            return cls(bytes(value), name=name, max_bytes=max_bytes)
        if isinstance(value, Path):
            return cls.from_path(value, name=name, max_bytes=max_bytes)
        if isinstance(value, str):
            if value.startswith("data:"):
                return cls.from_data_url(value, name=name, max_bytes=max_bytes)
            if _URL.fullmatch(value):
                return cls(url=value, name=name)
            raise ValueError(
                f"{_article(cls.kind)} as text is a data URL ('data:<media type>;base64,…') or an "
                "http(s) URL; to read a file, pass a pathlib.Path (or @path on the command line)"
            )
        if isinstance(value, Mapping):
            unknown = set(value) - {"media_type", "data"}
            if unknown or not isinstance(value.get("data"), str):
                raise ValueError(
                    f'{_article(cls.kind)} as an object is {{"media_type": …, "data": "<base64>"}}'
                )
            if "media_type" in value and value["media_type"] not in cls.accepted:
                raise ValueError(f"media_type must be one of {', '.join(cls.accepted)}")
            data = _b64decode(value["data"], cls, max_bytes, name)
            return cls(data, name=name, max_bytes=max_bytes)
        raise ValueError(
            f"{_article(cls.kind)} is bytes, a pathlib.Path, a data URL, an http(s) URL, "
            f"{{media_type, data}} or pc.{cls.__name__}, not {type(value).__name__}"
        )

    # reading it

    @property
    def data(self) -> bytes | None:
        """The bytes, or `None` for a URL."""
        return self._data

    @property
    def url(self) -> str | None:
        return self._url

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def media_type(self) -> str | None:
        """The sniffed type (`image/png`, `application/pdf`, …); `None` for a URL."""
        return self._media_type

    @property
    def size(self) -> int:
        return len(self._data) if self._data is not None else 0

    @functools.cached_property
    def sha256(self) -> str:
        """A hex digest of the content (of the URL, for a URL): how cassettes and caches tell
        two values apart without storing them."""
        return hashlib.sha256(
            self._data if self._data is not None else str(self._url).encode()
        ).hexdigest()

    @property
    def base64(self) -> str:
        if self._data is None:
            raise ValueError(f"this {self.kind} is a URL; it has no data to encode")
        return base64.b64encode(self._data).decode("ascii")

    @property
    def data_url(self) -> str:
        """`data:<type>;base64,…`, or the URL."""
        if self._url is not None:
            return self._url
        return f"data:{self._media_type};base64,{self.base64}"

    @property
    def text(self) -> str | None:
        """The text of a `text/plain` document, else `None`."""
        if self._media_type == "text/plain" and self._data is not None:
            return self._data.decode("utf-8")
        return None

    def describe(self) -> dict[str, Any]:
        """A short JSON-able stand-in (cache keys, logs): type, size and hash, never the data."""
        described: dict[str, Any] = {"type": self.kind, "sha256": self.sha256}
        if self._url is not None:
            described["url"] = self._url
        else:
            described.update(media_type=self._media_type, bytes=self.size)
        return described

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Media):
            return NotImplemented
        return (self.kind, self.sha256) == (other.kind, other.sha256)

    def __hash__(self) -> int:
        return hash((self.kind, self.sha256))

    def __repr__(self) -> str:
        label = f" {self._name}" if self._name else ""
        if self._url is not None:
            return f"<{type(self).__name__}{label} {self._url}>"
        return f"<{type(self).__name__}{label} {self._media_type}, {self.size} bytes>"

    def __str__(self) -> str:
        # what `str()` of it shows outside a template's `{{ }}` (which places the block itself)
        return f"[{self.kind}]"

    # internals

    def _renamed(self, name: str) -> Any:
        copy = object.__new__(type(self))
        copy._data, copy._url, copy._media_type, copy._name = (
            self._data,
            self._url,
            self._media_type,
            name,
        )
        return copy

    @classmethod
    def _limit(cls, max_bytes: int | None) -> int:
        return cls.max_bytes if max_bytes is None else min(max_bytes, cls.max_bytes)

    @classmethod
    def _check_size(
        cls, size: int, where: str = "", *, max_bytes: int | None = None, name: str | None = None
    ) -> None:
        limit = cls._limit(max_bytes)
        if size <= limit:
            return
        if limit < cls.max_bytes:  # the task's own, lower limit for this input
            whose = f"this task sets for {name!r}" if name else "this task sets"
            message = (
                f"the {cls.kind}{where} is {_mb(size)}, over the limit of {limit:,} bytes "
                f"{whose} (max_bytes in the task file); send a smaller {cls.kind}"
            )
        else:
            message = (
                f"the {cls.kind}{where} is {_mb(size)}, over the limit of {_mb(limit)}; "
                f"send a smaller {cls.kind}"
            )
        raise MediaTooLargeError(None, None, message)

    @classmethod
    def _sniffed(cls, data: bytes) -> str:
        found = sniff(data)
        if found not in cls.accepted:
            what = f"{found} data" if found else "data of no known type"
            raise ValueError(
                f"{what} is not {_article(cls.kind)} promptcast can send; "
                f"accepted: {', '.join(cls.accepted)}"
            )
        return found

    # pydantic: the input type of a task file

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                _serialize, when_used="json"
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return cls._json_schema(None)

    @classmethod
    def _json_schema(cls, max_bytes: int | None) -> JsonSchemaValue:
        types = ", ".join(cls.accepted)
        limit = cls._limit(max_bytes)
        at_most = _mb(limit) if limit == cls.max_bytes else f"{limit:,} bytes"
        return {
            "title": cls.__name__,
            "description": f"{_article(cls.kind).capitalize()} ({types}; at most "
            f"{at_most}): a data URL 'data:<media type>;base64,<data>', an object "
            '{"media_type", "data": <base64>}, or an http(s) URL the provider fetches. The media '
            "type is read from the bytes, not from the caller (the patterns check that the data "
            "starts with the magic number of an accepted type; only PDFs are described for a "
            "document, plain UTF-8 text is accepted too).",
            "anyOf": [
                {
                    "type": "string",
                    "format": "data-url",
                    "contentEncoding": "base64",
                    "pattern": _DATA_URL_HEAD + _MAGIC_B64[cls.kind] + _B64_TAIL,
                },
                {"type": "string", "pattern": _URL.pattern},
                {
                    "type": "object",
                    "properties": {
                        "media_type": {"type": "string", "enum": list(cls.accepted)},
                        "data": {
                            "type": "string",
                            "contentEncoding": "base64",
                            "pattern": "^" + _MAGIC_B64[cls.kind] + _B64_TAIL,
                        },
                    },
                    "required": ["data"],
                    "additionalProperties": False,
                },
            ],
        }

    @classmethod
    def _validate(
        cls, value: Any, info: core_schema.ValidationInfo, max_bytes: int | None = None
    ) -> Any:
        try:
            return cls.coerce(value, name=info.field_name, max_bytes=max_bytes)
        except MediaTooLargeError as exc:
            raise PydanticCustomError(
                "media_too_large", "{reason}", {"reason": exc.reason}
            ) from None
        except ValueError as exc:
            raise PydanticCustomError(
                f"invalid_{cls.kind}", "{reason}", {"reason": str(exc)}
            ) from None


class Image(Media):
    """An image input: PNG, JPEG, GIF or WebP, at most `MAX_IMAGE_BYTES`."""

    kind = "image"
    accepted = IMAGE_TYPES
    max_bytes = MAX_IMAGE_BYTES

    @functools.cached_property
    def dimensions(self) -> tuple[int, int] | None:
        """`(width, height)` in pixels read from the image's header, `None` when unknown."""
        if self._data is None:
            return None
        import imagesize  # type: ignore[import-untyped]

        try:
            width, height = imagesize.get(io.BytesIO(self._data))
        except Exception:  # a header imagesize cannot read: no size, not an error
            return None
        return (int(width), int(height)) if width > 0 and height > 0 else None


class Document(Media):
    """A document input: a PDF, or plain UTF-8 text, at most `MAX_DOCUMENT_BYTES`."""

    kind = "document"
    accepted = DOCUMENT_TYPES
    max_bytes = MAX_DOCUMENT_BYTES

    @functools.cached_property
    def pages(self) -> int | None:
        """The page count of a PDF (counted from its page objects), else `None`."""
        if self._media_type != "application/pdf" or self._data is None:
            return None
        return len(re.findall(rb"/Type\s*/Page(?![A-Za-z])", self._data)) or 1


class ImageData(TypedDict, total=False):
    """An image as a mapping: base64 `data`, and optionally the `media_type` it claims (checked
    against the accepted types; the type sent is still sniffed from the bytes)."""

    media_type: Literal["image/png", "image/jpeg", "image/gif", "image/webp"]
    data: Required[str]


class DocumentData(TypedDict, total=False):
    """A document as a mapping: base64 `data`, and optionally the `media_type` it claims."""

    media_type: Literal["application/pdf", "text/plain"]
    data: Required[str]


# What a task's image or document input takes, for a type checker: `typegen` annotates such an
# input with these, so `task(screenshot=Path("crash.png"))` type-checks as it runs. At run time
# each is its class, which validates from exactly these forms as a pydantic annotation (and keeps
# a generated signature equal to the task file's types).
if TYPE_CHECKING:
    ImageInput: TypeAlias = Image | bytes | bytearray | memoryview | Path | str | ImageData
    DocumentInput: TypeAlias = Document | bytes | bytearray | memoryview | Path | str | DocumentData
else:
    ImageInput = Image
    DocumentInput = Document


def sniff(data: bytes) -> str | None:
    """The media type of `data` from its magic numbers; `text/plain` for UTF-8 text without
    control characters; `None` when neither."""
    import filetype  # type: ignore[import-untyped]

    kind = filetype.guess(data[:8192])
    if kind is not None:
        return str(kind.mime)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text and not any(ord(ch) in _TEXT_CONTROLS for ch in text):
        return "text/plain"
    return None


def is_media_type(tp: Any) -> bool:
    """Whether an input type holds media anywhere (`image`, `image | None`, `list[document]`)."""
    if isinstance(tp, type) and issubclass(tp, Media):
        return True
    return any(is_media_type(arg) for arg in typing.get_args(tp))


def max_bytes_problem(tp: Any, max_bytes: int) -> str | None:
    """Why `max_bytes` cannot be an input's limit (`None` when it can): it is for image and
    document inputs only, and may only lower their built-in limit."""
    kinds = _media_classes(tp)
    if not kinds:
        return "max_bytes is only for image and document inputs (and lists of them)"
    for kind in kinds:
        if max_bytes > kind.max_bytes:
            return (
                f"max_bytes {max_bytes:,} is over the built-in limit for {_article(kind.kind)} "
                f"({kind.max_bytes:,} bytes, {_mb(kind.max_bytes)}); max_bytes can only lower it"
            )
    return None


def with_max_bytes(tp: Any, max_bytes: int) -> Any:
    """`tp` with each image or document in it (`image`, `image | None`, `list[document]`, ...)
    validated against `max_bytes` instead of its class's limit: what an input's `max_bytes:`
    makes of its type in the task's input model."""
    if isinstance(tp, type) and issubclass(tp, Media):
        return typing.Annotated[tp, _MaxBytes(tp, max_bytes)]
    args = typing.get_args(tp)
    if not args or not is_media_type(tp):
        return tp
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return typing.Annotated[(with_max_bytes(args[0], max_bytes), *tp.__metadata__)]
    new = tuple(with_max_bytes(arg, max_bytes) for arg in args)
    if origin is typing.Union or isinstance(tp, types.UnionType):
        return functools.reduce(operator.or_, new)
    return origin[new]


@dataclasses.dataclass(frozen=True)
class _MaxBytes:
    """The pydantic annotation of `with_max_bytes`: validates `kind` against a lower limit."""

    kind: type[Media]
    max_bytes: int

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(
            functools.partial(self.kind._validate, max_bytes=self.max_bytes),
            serialization=core_schema.plain_serializer_function_ser_schema(
                _serialize, when_used="json"
            ),
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return self.kind._json_schema(self.max_bytes)


def _media_classes(tp: Any) -> list[type[Media]]:
    if isinstance(tp, type) and issubclass(tp, Media):
        return [tp]
    return [kind for arg in typing.get_args(tp) for kind in _media_classes(arg)]


def media_inputs(spec: TaskSpec) -> frozenset[str]:
    """The names of a task's inputs that hold images or documents."""
    return frozenset(name for name, item in spec.inputs.items() if is_media_type(item.type))


def described(value: Any) -> Any:
    """`value` (content parts, inputs) with every `Media` replaced by its short `describe()`:
    JSON-able, and without the data (cache keys, logs)."""
    if isinstance(value, Media):
        return value.describe()
    if isinstance(value, (list, tuple)):
        return [described(item) for item in value]
    if isinstance(value, dict):
        return {key: described(item) for key, item in value.items()}
    return value


def described_prompt(prompt: Prompt) -> Prompt:
    """`prompt` with its media described (see `described`), for a cache key."""
    return dataclasses.replace(
        prompt, system=described(prompt.system), messages=described(prompt.messages)
    )


def media_header(prompt: Prompt) -> str | None:
    """`name=sha256:<12 hex>` of each image and document of a prompt, `;`-separated, or `None`:
    sent as a request header, so a cassette miss can name the input whose content changed."""
    contents = [prompt.system, *(m["content"] for m in prompt.messages)]
    found = [
        part["value"]
        for content in contents
        if isinstance(content, list)
        for part in content
        if part["type"] == "media"
    ]
    if not found:
        return None
    return ";".join(
        f"{m.name or f'{m.kind}{i}'}=sha256:{m.sha256[:12]}" for i, m in enumerate(found, 1)
    )


def find_media(value: Any) -> Iterator[Media]:
    """Every `Media` inside an input value (lists, tuples, dicts)."""
    if isinstance(value, Media):
        yield value
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from find_media(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from find_media(item)


def check_total(task: str, values: Iterable[Any]) -> None:
    """Raise `MediaTooLargeError` when a call's media together exceed `MAX_REQUEST_MEDIA_BYTES`."""
    total = sum(m.size for value in values for m in find_media(value))
    if total > MAX_REQUEST_MEDIA_BYTES:
        raise MediaTooLargeError(
            task,
            None,
            f"the images and documents of this call are {_mb(total)} together, over the limit "
            f"of {_mb(MAX_REQUEST_MEDIA_BYTES)} per request; send fewer or smaller files",
        )


def estimate_tokens(media: Media, provider: str = "anthropic") -> int:
    """Input tokens `media` costs, by the provider's documented formula (an upper-side guess where
    the size is unknown).

    Images: Anthropic scales an image to fit 1568 px on the long side (and about 1.15 megapixels)
    and counts width * height / 750; OpenAI fits it in 2048 x 2048, scales the short side to
    768 px and counts 85 + 170 per 512 px tile. PDFs: up to about 3,000 tokens a page (the text
    and an image of each page). Text documents: by `promptcast._tokens.text_tokens`.
    """
    if isinstance(media, Image):
        size = media.dimensions
        if provider in ("openai", "azure", "litellm"):
            return _openai_image_tokens(*(size or (2048, 2048)))
        return _anthropic_image_tokens(*(size or (1568, 1568)))
    if isinstance(media, Document):
        if media.text is not None:
            return text_tokens(media.text) + 8
        return 3000 * (media.pages or 1) if media.data is not None else 3000
    return 0


def _anthropic_image_tokens(width: int, height: int) -> int:
    scale = min(1.0, 1568 / max(width, height), math.sqrt(1_150_000 / (width * height)))
    return max(1, math.ceil(width * scale * height * scale / 750))


def _openai_image_tokens(width: int, height: int) -> int:
    scale = min(1.0, 2048 / max(width, height))
    scale *= min(1.0, 768 / (min(width, height) * scale))
    return 85 + 170 * math.ceil(width * scale / 512) * math.ceil(height * scale / 512)


def _b64decode(
    text: str, cls: type[Media], max_bytes: int | None = None, name: str | None = None
) -> bytes:
    padding = 2 if text.endswith("==") else 1 if text.endswith("=") else 0
    # the decoded size, before decoding: a value exactly at its limit passes
    cls._check_size(len(text) * 3 // 4 - padding, max_bytes=max_bytes, name=name)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the {cls.kind} data is not valid base64") from None


def _serialize(value: Media) -> Any:
    return value.data_url


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB" if size >= 100 * 1024 else f"{size} bytes"
