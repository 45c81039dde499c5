"""Shared fixtures: settings reset per test, a loopback fake Anthropic API, cassette settings.

Network access is blocked for every test (`--block-network` in pyproject.toml) except loopback.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import promptcast as pc
from promptcast.testing import FakeAnthropic
from promptcast.testing.cassettes import register
from promptcast.testing.cassettes import vcr_config as promptcast_vcr_config

ROOT = Path(__file__).resolve().parent.parent
TEST_KEY = "sk-ant-test-key-0123456789abcdef"


@pytest.fixture(autouse=True)
def _clean_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in (
        "PROMPTCAST_MODEL",
        "PROMPTCAST_FALLBACKS",
        "PROMPTCAST_MAX_ATTEMPTS",
        "PROMPTCAST_PROMPTS",
        "PROMPTCAST_BASE_URL",
        "ANTHROPIC_BASE_URL",
    ):
        monkeypatch.delenv(var, raising=False)
    pc.reset_defaults()
    yield
    pc.reset_defaults()


@pytest.fixture
def fake_anthropic(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAnthropic]:
    """A fake Messages API on 127.0.0.1 that the anthropic SDK talks to via ANTHROPIC_BASE_URL."""
    with FakeAnthropic() as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", TEST_KEY)
        yield fake


@pytest.fixture
def write_task(tmp_path: Path) -> Callable[..., Path]:
    """Write a task file into a temp folder: write_task("name", "---\\n...")."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / f"{name}.jinja"
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="module")
def vcr_config() -> dict[str, Any]:
    return promptcast_vcr_config()


def pytest_recording_configure(config: pytest.Config, vcr: Any) -> None:
    register(vcr)
