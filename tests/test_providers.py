"""Providers own their credentials and clients: no key crosses to another provider's endpoint,
per-model endpoints are honoured, users hand in their own SDK clients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import promptcast as pc
from promptcast.backends import resolve
from promptcast.backends.anthropic import AnthropicBackend
from promptcast.testing import FakeAnthropic, FakeOpenAI, error_reply

ANTHROPIC_KEY = "sk-ant-only-for-anthropic-0123456789"
OPENAI_KEY = "sk-only-for-openai-0123456789abcdef"
VLLM_KEY = "vllm-box-token-0123456789"


def _secrets_seen(server: FakeAnthropic | FakeOpenAI) -> str:
    """Every header value the server received, joined, to search for a key."""
    return "\n".join(v for headers in server.request_headers for v in headers.values())


@pytest.fixture
def two_providers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeAnthropic, FakeOpenAI]]:
    with FakeAnthropic() as anthropic_fake, FakeOpenAI() as openai_fake:
        for var in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "HOSTED_VLLM_API_KEY"):
            monkeypatch.delenv(var, raising=False)
        yield anthropic_fake, openai_fake
        resolve("anthropic/any")[0].close()


@pytest.mark.parametrize("how", ["env", "configure"])
@pytest.mark.parametrize(
    "fallback", ["openai/gpt-4o-mini", "ollama/llama3.1", "hosted_vllm/meta-llama/Llama-3.1-8B"]
)
def test_no_key_reaches_another_providers_endpoint(
    two_providers: tuple[FakeAnthropic, FakeOpenAI],
    monkeypatch: pytest.MonkeyPatch,
    how: str,
    fallback: str,
) -> None:
    """Anthropic fails with 500s, the fallback answers: each fake only ever sees its own key."""
    anthropic_fake, openai_fake = two_providers
    anthropic_fake.reply(*[error_reply(500, "api_error", "down")] * 3)
    fallback_provider = fallback.partition("/")[0]
    fallback_key = {"openai": OPENAI_KEY, "hosted_vllm": VLLM_KEY}.get(fallback_provider)
    if how == "env":
        monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic_fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
        monkeypatch.setenv("HOSTED_VLLM_API_KEY", VLLM_KEY)
        pc.configure(models={fallback: {"base_url": openai_fake.base_url}})
    else:
        providers: dict[str, dict[str, str]] = {
            "anthropic": {"api_key": ANTHROPIC_KEY, "base_url": anthropic_fake.base_url},
            fallback_provider: {"base_url": openai_fake.base_url},
        }
        if fallback_key:
            providers[fallback_provider]["api_key"] = fallback_key
        # the other providers' keys are configured too, and must still stay home
        providers.setdefault("openai", {"api_key": OPENAI_KEY})
        pc.configure(providers=providers)
    task = pc.builtin_tasks()["extract_ticket"].with_model("anthropic/claude-sonnet-4-6")
    with pc.override(fallbacks=[fallback], retry_max_wait_s=0.01):
        run = task.run(message="Checkout is down!")
    assert run.model == fallback
    assert len(anthropic_fake.requests) == 3 and len(openai_fake.requests) == 1
    assert ANTHROPIC_KEY not in _secrets_seen(openai_fake)
    assert OPENAI_KEY not in _secrets_seen(anthropic_fake)
    assert ANTHROPIC_KEY in _secrets_seen(anthropic_fake)
    if fallback_provider != "openai":
        assert OPENAI_KEY not in _secrets_seen(openai_fake)
    if fallback_key:
        assert fallback_key in _secrets_seen(openai_fake)


def test_self_hosted_primary_never_sends_its_token_to_the_anthropic_fallback(
    two_providers: tuple[FakeAnthropic, FakeOpenAI],
) -> None:
    """The reverse direction: a vLLM box first, Anthropic as the fallback."""
    anthropic_fake, openai_fake = two_providers
    openai_fake.reply(*[openai_fake.error(500, "server_error", "down")] * 3)
    pc.configure(
        providers={
            "anthropic": {"api_key": ANTHROPIC_KEY, "base_url": anthropic_fake.base_url},
            "hosted_vllm": {"api_key": VLLM_KEY, "base_url": openai_fake.base_url},
        },
        fallbacks=["anthropic/claude-sonnet-4-6"],
        retry_max_wait_s=0.01,
    )
    task = pc.builtin_tasks()["extract_ticket"].with_model("hosted_vllm/llama")
    assert task.run(message="Checkout is down!").model == "anthropic/claude-sonnet-4-6"
    assert VLLM_KEY not in _secrets_seen(anthropic_fake)
    assert ANTHROPIC_KEY not in _secrets_seen(openai_fake)


def test_a_models_own_base_url_is_honoured_by_the_anthropic_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with FakeAnthropic() as default, FakeAnthropic() as proxy:
        monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", default.base_url)
        pc.configure(models={"anthropic/claude-sonnet-4-6": {"base_url": proxy.base_url}})
        try:
            task = pc.builtin_tasks()["summarize"]
            task.with_model("anthropic/claude-sonnet-4-6").run(text="A long text.")
            task.with_model("anthropic/claude-haiku-4-5").run(text="A long text.")
        finally:
            resolve("anthropic/any")[0].close()
        assert [r["model"] for r in proxy.requests] == ["claude-sonnet-4-6"]
        assert [r["model"] for r in default.requests] == ["claude-haiku-4-5"]


def test_a_users_own_client_is_used_and_left_open() -> None:
    import anthropic

    with FakeAnthropic() as fake:
        client = anthropic.Anthropic(
            api_key="sk-ant-users-own", base_url=fake.base_url, default_headers={"x-mine": "1"}
        )
        backend = AnthropicBackend(client=client)
        with pc.override(backends={"anthropic": backend}):
            pc.builtin_tasks()["summarize"].run(text="A long text.")
        backend.close()
        assert fake.request_headers[-1]["x-mine"] == "1"
        assert not client.is_closed()
        client.messages.create(
            model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )  # still usable: promptcast closes only what it created
        client.close()


async def test_a_users_async_client_is_used_and_left_open() -> None:
    import anthropic

    with FakeAnthropic() as fake:
        client = anthropic.AsyncAnthropic(
            api_key="sk-ant-users-own", base_url=fake.base_url, default_headers={"x-mine": "2"}
        )
        backend = AnthropicBackend(async_client=client)
        with pc.override(backends={"anthropic": backend}):
            await pc.builtin_tasks()["summarize"].arun(text="A long text.")
            with pytest.raises(pc.ConfigurationError, match="only an async client"):
                pc.builtin_tasks()["summarize"].run(text="A long text.")
        await backend.aclose()
        assert fake.request_headers[-1]["x-mine"] == "2"
        assert not client.is_closed()
        await client.close()


def test_a_sync_only_client_serves_async_calls_in_a_thread() -> None:
    import asyncio

    import anthropic

    with FakeAnthropic() as fake:
        client = anthropic.Anthropic(api_key="k", base_url=fake.base_url)
        with pc.override(backends={"anthropic": AnthropicBackend(client=client)}):
            run = asyncio.run(pc.builtin_tasks()["summarize"].arun(text="A long text."))
        assert run.output.summary and len(fake.requests) == 1
        client.close()


def test_the_global_api_key_and_base_url_settings_are_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(pc.ConfigurationError, match="unknown setting"):
        pc.configure(api_key="sk-ant-x")
    with pytest.raises(pc.ConfigurationError, match="unknown setting"):
        pc.configure(base_url="http://x")
    monkeypatch.setenv("PROMPTCAST_BASE_URL", "http://gpu:8000/v1")
    pc.reset_defaults()
    with pytest.raises(pc.ConfigurationError, match="OPENAI_BASE_URL") as info:
        pc.get_config()
    assert info.value.env_var == "PROMPTCAST_BASE_URL"


@pytest.mark.parametrize(
    ("model", "suggestion"),
    [("antropic/claude-sonnet-4-6", "anthropic"), ("opnai/gpt-4o", "openai")],
)
def test_an_unknown_provider_is_refused_before_any_request(model: str, suggestion: str) -> None:
    task = pc.builtin_tasks()["summarize"].with_model(model)
    with pytest.raises(pc.ConfigurationError, match=f"Did you mean {suggestion!r}"):
        task.run(text="x")


@pytest.mark.parametrize(
    ("model", "variable"),
    [
        ("openai/gpt-4o-mini", "OPENAI_API_KEY"),
        ("gemini/gemini-1.5-pro", "GEMINI_API_KEY"),
        ("anthropic/claude-sonnet-4-6", "ANTHROPIC_API_KEY"),
    ],
)
def test_a_missing_provider_key_names_its_variable_before_any_request(
    monkeypatch: pytest.MonkeyPatch, model: str, variable: str
) -> None:
    for var in ("OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    with FakeOpenAI() as fake:  # a fallback that would answer: the check comes first
        pc.configure(models={"hosted_vllm/x": {"base_url": fake.base_url}})
        task = pc.builtin_tasks()["summarize"].with_model("hosted_vllm/x")
        with pc.override(fallbacks=[model]), pytest.raises(pc.ConfigurationError) as info:
            task.run(text="x")
        assert fake.requests == []
    assert info.value.env_var == variable
    assert variable in str(info.value)


@pytest.mark.parametrize("model", ["openai/gpt-4o-mini", "hosted_vllm/smollm2", "ollama/llama3.1"])
@pytest.mark.parametrize("where", ["models", "providers", None])
def test_a_configured_seed_is_sent_with_each_request(
    fake_openai: FakeOpenAI, model: str, where: str | None
) -> None:
    provider = model.partition("/")[0]
    settings: dict[str, object] = {"base_url": fake_openai.base_url, "api_key": "sk-test"}
    seeded = {**settings, "seed": 7}
    if where == "models":
        pc.configure(models={model: seeded})
    elif where == "providers":
        pc.configure(providers={provider: seeded})
    else:
        pc.configure(models={model: settings})
    task = pc.builtin_tasks()["translate"].with_model(model)
    task.run(**task.spec.examples[0].inputs)
    (request,) = fake_openai.requests
    assert request.get("seed") == (None if where is None else 7)


def test_an_unwired_test_model_says_override_does_not_reach_a_new_thread() -> None:
    import threading

    errors: list[BaseException] = []
    backend = pc.testing.ScriptedBackend(["hi"])

    def call() -> None:
        try:
            pc.builtin_tasks().translate.with_model("test/t").run(text="x")
        except pc.ConfigurationError as exc:
            errors.append(exc)

    with pc.override(backends={"test/t": backend}):
        thread = threading.Thread(target=call)
        thread.start()
        thread.join()
    [error] = errors
    assert "no scripted backend is registered for 'test/t'" in str(error)
    assert "contextvars.copy_context().run" in str(error)
