"""Settings: one validated object from the environment, `configure()` and scoped `override()`s."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import pytest

import promptcast as pc
from promptcast._config import endpoint_settings
from promptcast.backends.base import ModelRequest
from promptcast.testing import ScriptedBackend


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("PROMPTCAST_MAX_COST_USD", "nan"),
        ("PROMPTCAST_MAX_COST_USD", "inf"),
        ("PROMPTCAST_MAX_COST_USD", "-1"),
        ("PROMPTCAST_TIMEOUT_S", "0"),
        ("PROMPTCAST_TIMEOUT_S", "-inf"),
        ("PROMPTCAST_RETRY_MAX_WAIT_S", "NaN"),
        ("PROMPTCAST_CACHE_TTL_S", "soon"),
        ("PROMPTCAST_CACHE_TIMEOUT_S", "0"),
        ("PROMPTCAST_MAX_ATTEMPTS", "0"),
        ("PROMPTCAST_MAX_RETRIES", "two"),
        ("PROMPTCAST_CACHE", "redis://localhost:99999/0"),
        ("PROMPTCAST_CACHE", "redis://localhost:port/0"),
        ("PROMPTCAST_CACHE", "memcached://x"),
        ("PROMPTCAST_MAX_CONCURRENCY", "0"),
        ("PROMPTCAST_MAX_BODY_BYTES", "1e3"),
        ("PROMPTCAST_LOG_LEVEL", "loud"),
        ("PROMPTCAST_MODEL", " "),
        ("PROMPTCAST_API_TOKENS", '["a", "b"'),
        ("PROMPTCAST_ALLOWED_HOSTS", '["a", 1]'),
        ("PROMPTCAST_FALLBACKS", '[{"model": "x"}]'),
    ],
)
def test_a_bad_variable_is_a_configuration_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    monkeypatch.setenv(var, value)
    pc.reset_defaults()
    with pytest.raises(pc.ConfigurationError) as info:
        pc.get_config()
    assert info.value.env_var == var
    assert var in str(info.value)


@pytest.mark.parametrize(
    ("setting", "value"),
    [("max_cost_usd", float("nan")), ("timeout_s", float("inf")), ("max_attempts", 0)],
)
def test_a_bad_configure_value_names_the_argument(setting: str, value: object) -> None:
    with pytest.raises(pc.ConfigurationError, match=f"configure\\({setting}="):
        pc.configure(**{setting: value})
    assert pc.get_config() == pc.Settings()  # nothing half-applied


def test_a_redis_password_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "redis://:hunter2-secret@localhost:70000/0"
    monkeypatch.setenv("PROMPTCAST_CACHE", url)
    pc.reset_defaults()
    with pytest.raises(pc.ConfigurationError) as info:
        pc.get_config()
    assert "hunter2" not in str(info.value)
    monkeypatch.setenv("PROMPTCAST_CACHE", "redis://:hunter2-secret@localhost:6399/0")
    pc.reset_defaults()
    config = pc.get_config()
    assert "hunter2" not in repr(config) and "hunter2" not in str(config)


def test_unknown_settings_get_a_did_you_mean() -> None:
    with pytest.raises(pc.ConfigurationError, match="did you mean 'fallbacks'"):
        pc.configure(fallback=["openai/gpt-4o-mini"])
    with pytest.raises(pc.ConfigurationError, match="did you mean 'model'"), pc.override(modle="x"):
        pass


def test_provider_and_model_settings_merge_nearest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://env:1/v1")
    assert endpoint_settings("openai", "gpt-4o") == ("from-env", "http://env:1/v1")
    pc.configure(providers={"openai": {"api_key": "configured"}})
    assert endpoint_settings("openai", "gpt-4o") == ("configured", "http://env:1/v1")
    pc.configure(models={"openai:gpt-4o": {"base_url": "http://model:2/v1"}})
    assert endpoint_settings("openai", "gpt-4o") == ("configured", "http://model:2/v1")
    assert endpoint_settings("openai", "gpt-4o-mini") == ("configured", "http://env:1/v1")
    with pc.override(providers={"openai": {"api_key": "scoped"}}):
        assert endpoint_settings("openai", "gpt-4o") == ("scoped", "http://model:2/v1")
    assert endpoint_settings("openai", "gpt-4o")[0] == "configured"
    # another provider never reads these
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert endpoint_settings("anthropic", "claude-sonnet-4-6")[0] is None


def test_an_api_key_is_secret_in_every_repr() -> None:
    pc.configure(providers={"anthropic": {"api_key": "sk-ant-do-not-print"}})
    config = pc.get_config()
    assert "do-not-print" not in repr(config)
    assert "do-not-print" not in repr(config.providers)


def _scripted(label: str) -> ScriptedBackend:
    async def answer(request: ModelRequest) -> str:
        await asyncio.sleep(0)
        return f"from {label}"

    return ScriptedBackend(answer)


async def test_concurrent_override_scopes_each_see_their_own_backend() -> None:
    """200 concurrent calls in two scopes: every answer comes from its own scope's backend."""
    task = pc.builtin_tasks()["summarize"]
    free_text = pc.Task(dataclasses.replace(task.spec, output_model=None, output_text="str"))
    backends = {"a": _scripted("a"), "b": _scripted("b")}

    async def call(scope: str, n: int) -> tuple[str, str]:
        with pc.override(model=f"test/{scope}", backends={f"test/{scope}": backends[scope]}):
            await asyncio.sleep(0)
            run = await free_text.arun(text=f"text {n}")
            return scope, run.output

    results = await asyncio.gather(*(call("ab"[n % 2], n) for n in range(200)))
    assert all(output == f"from {scope}" for scope, output in results)
    assert len(backends["a"].requests) == len(backends["b"].requests) == 100


def test_override_is_per_thread_and_wins_over_the_files_model() -> None:
    task = pc.builtin_tasks()["summarize"]
    assert task.spec.model is None or task.model == task.spec.model
    seen: dict[str, str] = {}
    barrier = threading.Barrier(2)

    def worker(name: str) -> None:
        with pc.override(model=f"test/{name}"):
            barrier.wait()
            seen[name] = task.model

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {"one": "test/one", "two": "test/two"}
    assert task.model == pc.get_config().model  # nothing leaked out of the blocks


def test_override_beats_a_task_files_model(write_task: object) -> None:
    from pathlib import Path

    assert callable(write_task)
    path: Path = write_task(
        "pinned",
        """
        ---
        model: anthropic/claude-haiku-4-5
        inputs: {text: str}
        output: str
        ---
        {{ text }}
        """,
    )
    pinned = pc.Task.from_file(path)
    pc.configure(model="test/configured")
    assert pinned.model == "anthropic/claude-haiku-4-5"  # configure() does not beat the file
    backend = ScriptedBackend(["scoped answer"])
    with pc.override(model="test/scoped", backends={"test/scoped": backend}):
        assert pinned(text="hi") == "scoped answer"
    assert pinned.with_model("test/x").model == "test/x"  # with_model() is nearest of all


def test_configure_inside_an_override_is_seen_by_the_scope() -> None:
    with pc.override(max_attempts=5):
        pc.configure(max_retries=7)
        config = pc.get_config()
        assert (config.max_attempts, config.max_retries) == (5, 7)
    assert (pc.get_config().max_attempts, pc.get_config().max_retries) == (3, 7)


@pytest.mark.parametrize("value", [None, 5, object()], ids=["None", "int", "object"])
def test_a_cache_that_is_neither_url_nor_cache_names_the_value_once(value: object) -> None:
    with pytest.raises(pc.ConfigurationError) as caught, pc.override(cache=value):
        pass
    message = str(caught.value)
    assert "'off'" in message and "get, set and close (got " in message
    assert message.count("got") == 1


@pytest.mark.parametrize(
    ("var", "field"),
    [
        ("PROMPTCAST_API_TOKENS", "api_tokens"),
        ("PROMPTCAST_ALLOWED_HOSTS", "allowed_hosts"),
        ("PROMPTCAST_FALLBACKS", "fallbacks"),
    ],
)
@pytest.mark.parametrize(
    "value", ['["tok-a", "tok,b"]', ' [ "tok-a" , "tok,b" ] ', "tok-a, tok,b"], ids=repr
)
def test_list_variables_take_a_json_list_or_commas(
    monkeypatch: pytest.MonkeyPatch, var: str, field: str, value: str
) -> None:
    """pydantic-settings spells a list as JSON; split at commas it became '["tok-a"' and so on."""
    monkeypatch.setenv(var, value)
    pc.reset_defaults()
    expected = ("tok-a", "tok,b") if "[" in value else ("tok-a", "tok", "b")
    assert getattr(pc.get_config(), field) == expected
