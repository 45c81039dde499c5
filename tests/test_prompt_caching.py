"""Prompt caching: breakpoints at the end of the static prefix, `{% cachepoint %}`, usage."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import promptcast as pc
from promptcast.backends.anthropic import batch_params
from promptcast.errors import TaskDefinitionError
from promptcast.testing import FakeAnthropic, FakeOpenAI

LONG = "Our product manual. " * 600  # about 3,000 tokens: above every model's minimum
SHORT = "You answer questions."


def task_text(system: str, body: str = "{{ question | fence('q') }}", **front: Any) -> str:
    extra = "".join(f"{key}: {json.dumps(value)}\n" for key, value in front.items())
    return (
        "---\ninputs:\n  question: str\noutput: {answer: str}\n"
        f'{extra}---\n{{% role "system" %}}{system}{{% endrole %}}\n{body}\n'
    )


@pytest.fixture
def make(write_task: Callable[..., Path]) -> Callable[..., pc.Task[Any]]:
    def build(text: str) -> pc.Task[Any]:
        return pc.Task.from_file(write_task("qa", text))

    return build


def marked(request: dict[str, Any]) -> list[Any]:
    """Every block of a sent request that carries `cache_control`, in prefix order."""
    blocks: list[Any] = list(request.get("tools") or [])
    system = request.get("system")
    blocks += system if isinstance(system, list) else []
    for m in request["messages"]:
        blocks += m["content"] if isinstance(m["content"], list) else []
    return [b for b in blocks if isinstance(b, dict) and "cache_control" in b]


@pytest.mark.parametrize("mode", ["native", "tool", "prompted"])
def test_a_long_static_system_block_ends_the_cached_prefix(
    mode: str, make: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic
) -> None:
    make(task_text(LONG, output_mode=mode)).run(question="What is it?")
    [sent] = fake_anthropic.requests
    [block] = marked(sent)
    assert block is sent["system"][-1] and block["cache_control"] == {"type": "ephemeral"}
    assert "What is it?" not in json.dumps(sent["system"])  # data never before a breakpoint
    assert isinstance(sent["messages"][0]["content"], str)


def test_a_short_system_block_gets_no_breakpoint(
    make: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic
) -> None:
    make(task_text(SHORT)).run(question="q")
    [sent] = fake_anthropic.requests
    assert sent["system"] == SHORT and not marked(sent)


def test_a_long_system_block_in_another_script_is_marked(
    make: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic
) -> None:
    # 1,500 Chinese characters: over 1,024 tokens on any tokenizer, but 375 at four characters
    # a token, which had left such prompts uncached
    manual = "本产品手册说明了安装与使用方法" * 100
    make(task_text(manual, output_mode="native")).run(question="q")
    [sent] = fake_anthropic.requests
    [block] = marked(sent)
    assert block is sent["system"][-1]


@pytest.mark.parametrize(
    "system",
    [
        LONG + "{{ question }}",  # reads an input
        "{% if question %}" + LONG + "{% endif %}",  # depends on one
        "{% for _ in range(1) %}" + LONG + "{% endfor %}{{ question }}",
    ],
)
def test_a_system_block_holding_input_data_is_never_marked(
    system: str, make: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic
) -> None:
    make(task_text(system, body="Answer.", output_mode="native")).run(question="secret")
    [sent] = fake_anthropic.requests
    assert not marked(sent)


@pytest.mark.parametrize("setting", ["off", False])
def test_prompt_caching_off_sends_no_breakpoint(
    setting: Any, make: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic
) -> None:
    make(task_text(LONG, prompt_caching=setting)).run(question="q")
    assert not marked(fake_anthropic.requests[0])


def test_configure_can_switch_caching_off_for_the_process(
    make: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic
) -> None:
    pc.configure(prompt_caching=False)
    make(task_text(LONG)).run(question="q")
    assert not marked(fake_anthropic.requests[0])


def test_a_cachepoint_adds_a_breakpoint_after_static_docs(
    make: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic
) -> None:
    body = "Docs:\n" + LONG + "{% cachepoint %}\nQuestion: {{ question | fence('q') }}"
    make(task_text(SHORT, body=body)).run(question="Where?")
    [sent] = fake_anthropic.requests
    [block] = marked(sent)
    content = sent["messages"][0]["content"]
    assert block is content[0] and block["text"].startswith("Docs:")
    assert "Where?" in content[1]["text"] and "cache_control" not in content[1]


def test_both_the_system_block_and_a_cachepoint_can_be_marked(
    make: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic
) -> None:
    body = LONG + "{% cachepoint %}{{ question }}"
    make(task_text(LONG, body=body)).run(question="q")
    assert len(marked(fake_anthropic.requests[0])) == 2


def test_at_most_four_breakpoints_the_last_ones_kept(
    make: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic
) -> None:
    body = "".join(f"Part {i}. {LONG}{{% cachepoint %}}" for i in range(6)) + "{{ question }}"
    make(task_text(LONG, body=body)).run(question="q")
    blocks = marked(fake_anthropic.requests[0])
    assert len(blocks) == 4 and blocks[-1]["text"].startswith("Part 5.")


def test_a_cachepoint_below_the_minimum_length_is_dropped(
    make: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic
) -> None:
    body = "Short docs.{% cachepoint %}{{ question }}"
    make(task_text(SHORT, body=body)).run(question="q")
    assert not marked(fake_anthropic.requests[0])


@pytest.mark.parametrize(
    "body",
    [
        "{{ question }}{% cachepoint %}",
        "{% for x in question %}{{ x }}{% endfor %}{% cachepoint %}",
        "{% if question %}a{% endif %}{% cachepoint %}",
    ],
)
def test_a_cachepoint_after_template_data_is_a_load_error(
    body: str, make: Callable[..., pc.Task[Any]]
) -> None:
    with pytest.raises(TaskDefinitionError, match="cachepoint"):
        make(task_text(SHORT, body=body))


def test_a_cachepoint_after_a_system_block_with_data_is_a_load_error(
    make: Callable[..., pc.Task[Any]],
) -> None:
    with pytest.raises(TaskDefinitionError, match="cachepoint"):
        make(task_text("{{ question }}", body="docs{% cachepoint %}"))


def test_cache_usage_is_reported_and_priced(
    make: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic
) -> None:
    task = make(task_text(LONG, output_mode="native"))
    first = task.run(question="one")
    second = task.run(question="two")
    assert first.usage.cache_write_tokens > 1024 and first.usage.cache_read_tokens == 0
    assert second.usage.cache_read_tokens == first.usage.cache_write_tokens
    assert second.usage.cache_write_tokens == 0
    assert second.usage.input_tokens < 200  # only the question and the framing
    assert second.usage.cost_usd is not None and first.usage.cost_usd is not None
    assert second.usage.cost_usd < first.usage.cost_usd / 3


def test_provider_batch_requests_get_the_same_breakpoints(
    make: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic
) -> None:
    request = make(task_text(LONG)).request(question="q")
    params = batch_params(request)
    assert params["system"][-1]["cache_control"] == {"type": "ephemeral"}


def test_litellm_passes_cache_control_only_to_providers_that_take_it(
    make: Callable[..., pc.Task[Any]], fake_openai: FakeOpenAI
) -> None:
    task = make(task_text(LONG)).with_model("openai/gpt-4o-mini")
    task.run(question="one")
    assert "cache_control" not in json.dumps(fake_openai.requests[0])


def test_litellm_reports_openai_cached_tokens_as_cache_reads(
    make: Callable[..., pc.Task[Any]], fake_openai: FakeOpenAI
) -> None:
    body = "{% role 'user' %}" + LONG + "{% endrole %}{% role 'assistant' %}ok{% endrole %}"
    task = make(task_text(SHORT, body=body + "{{ question }}")).with_model("openai/gpt-4o-mini")
    first = task.run(question="one")
    second = task.run(question="two")
    assert first.usage.cache_read_tokens == 0
    assert second.usage.cache_read_tokens > 1024
    total = second.usage.input_tokens + second.usage.cache_read_tokens
    assert total == len(json.dumps(fake_openai.requests[1])) // 4


def test_server_responses_metrics_evals_and_cli_show_cached_tokens(
    make: Callable[..., pc.Task[Any]],
    fake_anthropic: FakeAnthropic,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from fastapi.testclient import TestClient
    from rich.console import Console

    from promptcast.cli import _print_usage
    from promptcast.evals import evaluate
    from promptcast.server import create_app
    from promptcast.spec import Example
    from promptcast.task import TaskRegistry

    task = make(task_text(LONG, output_mode="native"))
    token = "test-token-0123456789abcdef"
    app = create_app(TaskRegistry({"qa": task}), tokens=[token])
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(app) as client:
        client.post("/v1/tasks/qa", json={"question": "one"}, headers=auth)
        usage = client.post("/v1/tasks/qa", json={"question": "two"}, headers=auth).json()["usage"]
        metrics = client.get("/metrics", headers=auth).text
    assert usage["cache_read_tokens"] > 1024 and usage["cache_write_tokens"] == 0
    assert 'kind="cache_read"' in metrics and 'kind="cache_write"' in metrics

    report = evaluate(task, ["anthropic/claude-sonnet-4-6"], [Example({"question": "three"})])
    [row] = report.models
    assert row.cache_read_tokens > 1024

    run = task.run(question="four")
    _print_usage(run, Console(file=None, force_terminal=False))
    printed = capsys.readouterr()
    assert f"cache: {run.usage.cache_read_tokens} read / 0 written" in printed.out + printed.err
    assert "native output" in printed.out + printed.err
