"""Test helpers for promptcast users: loopback fake provider APIs, the scripted backend, and
cassettes: `recording(path)` records a block's provider calls (scrubbed, replacing the file only
on success), `replay(path)` replays them with no API key and whatever base URL is configured.
"""

from __future__ import annotations

from promptcast.backends.scripted import ScriptedBackend
from promptcast.testing._fake_anthropic import (
    FakeAnthropic,
    error_reply,
    message,
    placeholder,
    sse_event,
    stream_events,
    text_block,
    tool_use_block,
)
from promptcast.testing._fake_gemini import (
    FakeGemini,
    function_call_part,
    gemini_error,
    generate_content,
    text_part,
)
from promptcast.testing._fake_openai import (
    FakeOpenAI,
    chat_completion,
    openai_error,
    stream_chunks,
    tool_call,
)
from promptcast.testing._fake_server import FakeReply, FakeServer, StreamLog
from promptcast.testing.cassettes import recording, replay, vcr_config

__all__ = [
    "FakeAnthropic",
    "FakeGemini",
    "FakeOpenAI",
    "FakeReply",
    "FakeServer",
    "ScriptedBackend",
    "StreamLog",
    "chat_completion",
    "error_reply",
    "function_call_part",
    "gemini_error",
    "generate_content",
    "message",
    "openai_error",
    "placeholder",
    "recording",
    "replay",
    "sse_event",
    "stream_chunks",
    "stream_events",
    "text_block",
    "text_part",
    "tool_call",
    "tool_use_block",
    "vcr_config",
]
