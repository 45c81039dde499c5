"""Test helpers for promptcast users: a loopback fake Anthropic API, the scripted backend and the
cassette settings promptcast's own tests use.
"""

from __future__ import annotations

from promptcast.backends.scripted import ScriptedBackend
from promptcast.testing._fake_anthropic import (
    FakeAnthropic,
    FakeReply,
    error_reply,
    message,
    placeholder,
    text_block,
    tool_use_block,
)
from promptcast.testing.cassettes import replay, vcr_config

__all__ = [
    "FakeAnthropic",
    "FakeReply",
    "ScriptedBackend",
    "error_reply",
    "message",
    "placeholder",
    "replay",
    "text_block",
    "tool_use_block",
    "vcr_config",
]
