"""Shared fixtures: settings reset per test, a loopback fake Anthropic API, cassette settings.

Network access is blocked for every test (`--block-network` in pyproject.toml) except loopback.
"""

from __future__ import annotations

import socket
import textwrap
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

import promptcast as pc
from promptcast.backends import resolve
from promptcast.backends.anthropic import AnthropicBackend
from promptcast.testing import FakeAnthropic, FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent
TEST_KEY = "sk-ant-test-key-0123456789abcdef"


@pytest.fixture(autouse=True)
def _clean_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in (
        "PROMPTCAST_MODEL",
        "PROMPTCAST_FALLBACKS",
        "PROMPTCAST_MAX_ATTEMPTS",
        "PROMPTCAST_MAX_RETRIES",
        "PROMPTCAST_RETRY_MAX_WAIT_S",
        "PROMPTCAST_TIMEOUT_S",
        "PROMPTCAST_MAX_COST_USD",
        "OPENAI_BASE_URL",
        "PROMPTCAST_PROMPTS",
        "PROMPTCAST_BASE_URL",
        "ANTHROPIC_BASE_URL",
        "PROMPTCAST_CACHE",
        "PROMPTCAST_CACHE_TTL_S",
        "PROMPTCAST_OUTPUT_MODE",
        "PROMPTCAST_PROMPT_CACHING",
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
        anthropic_backend().close()


@pytest.fixture
def fake_openai(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    """A fake OpenAI-compatible API on 127.0.0.1, wired to the litellm-backed test models."""
    with FakeOpenAI() as fake:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-0123456789")
        pc.configure(models={model: {"base_url": fake.base_url} for model in LITELLM_MODELS})
        yield fake


LITELLM_MODELS = ("openai/gpt-4o-mini", "ollama/llama3.1", "hosted_vllm/meta-llama/Llama-3.1-8B")


@pytest.fixture
async def close_async_clients() -> AsyncIterator[None]:
    """For async tests: close the loop's shared async client before pytest-asyncio closes the loop."""
    yield
    await anthropic_backend().aclose()


def anthropic_backend() -> AnthropicBackend:
    backend, _ = resolve("anthropic/any")
    assert isinstance(backend, AnthropicBackend)
    return backend


@pytest.fixture
def write_task(tmp_path: Path) -> Callable[..., Path]:
    """Write a task file into a temp folder: write_task("name", "---\\n...")."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / f"{name}.jinja"
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return path

    return write


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server on loopback that accepts every connection and never answers a byte: a cache
    (or provider) that hangs instead of failing. Yields its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(256)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()
