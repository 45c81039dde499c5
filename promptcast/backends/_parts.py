"""Content parts (`promptcast.render.Part`) as each provider's content blocks.

Text-only prompts stay plain strings and pass through untouched (the common case costs one type
check per message). A list of parts becomes Anthropic blocks (`text`, `image`, `document`, with
base64, text or URL sources) or OpenAI-format parts (`text`, `image_url`, `file`) for litellm. A
cache point marks the part before it with `cache_control` when the request asks for prompt caching,
and is dropped otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from promptcast.media import Document, Image, Media
from promptcast.render import Content, Message, Prompt, fence

__all__ = [
    "anthropic_content",
    "anthropic_messages",
    "has_media",
    "openai_content",
    "openai_messages",
]

_EPHEMERAL = {"type": "ephemeral"}


def has_media(prompt: Prompt) -> bool:
    """Whether any message or the system block holds an image or document."""
    contents = [prompt.system, *(m["content"] for m in prompt.messages)]
    return any(
        part["type"] == "media"
        for content in contents
        if isinstance(content, list)
        for part in content
    )


def anthropic_messages(messages: Sequence[Message], *, caching: bool = False) -> list[Any]:
    """Messages for the Messages API; `messages` itself (copied) when all are text."""
    return [
        m
        if isinstance(m["content"], str)
        else {"role": m["role"], "content": anthropic_content(m["content"], caching=caching)}
        for m in messages
    ]


def anthropic_content(content: Content, *, caching: bool = False) -> Any:
    """A message's (or the system's) content as Anthropic content blocks."""
    if isinstance(content, str):
        return content
    blocks: list[dict[str, Any]] = []
    for part in content:
        if part["type"] == "text":
            blocks.append({"type": "text", "text": part["text"]})
        elif part["type"] == "media":
            blocks.append(_anthropic_block(part["value"]))
        elif caching and blocks:
            blocks[-1] = {**blocks[-1], "cache_control": _EPHEMERAL}
    return blocks


def _anthropic_block(media: Media) -> dict[str, Any]:
    kind = "image" if isinstance(media, Image) else "document"
    if media.url is not None:
        return {"type": kind, "source": {"type": "url", "url": media.url}}
    if isinstance(media, Document) and media.text is not None:
        source = {"type": "text", "media_type": "text/plain", "data": media.text}
        return {"type": kind, "source": source}
    data = {"type": "base64", "media_type": media.media_type, "data": media.base64}
    return {"type": kind, "source": data}


def openai_messages(messages: Sequence[Message], *, caching: bool = False) -> list[Any]:
    """Messages in OpenAI's chat format (what litellm takes)."""
    return [
        m
        if isinstance(m["content"], str)
        else {"role": m["role"], "content": openai_content(m["content"], caching=caching)}
        for m in messages
    ]


def openai_content(content: Content, *, caching: bool = False) -> Any:
    """A message's content as OpenAI chat parts: `image_url` for images, `file` for PDFs, a
    fenced text part for a text document (OpenAI takes no text files inline)."""
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for part in content:
        if part["type"] == "text":
            parts.append({"type": "text", "text": part["text"]})
        elif part["type"] == "media":
            parts.append(_openai_part(part["value"]))
        elif caching and parts:
            parts[-1] = {**parts[-1], "cache_control": _EPHEMERAL}
    return parts


def _openai_part(media: Media) -> dict[str, Any]:
    if isinstance(media, Image):
        return {"type": "image_url", "image_url": {"url": media.data_url}}
    if isinstance(media, Document) and media.text is not None:
        return {"type": "text", "text": fence(media.text, "document", name=media.name or "")}
    if media.url is not None:
        return {"type": "file", "file": {"file_id": media.url}}
    name = f"{media.name or 'document'}.pdf"
    return {"type": "file", "file": {"file_data": media.data_url, "filename": name}}
