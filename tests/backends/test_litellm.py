"""Switching models: the same built-in task on Anthropic and, through litellm, on OpenAI-compatible
servers (OpenAI, Ollama, vLLM), changed by one environment variable."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from typing import Any

import pytest

import promptcast as pc
from promptcast.backends import _shared, resolve
from promptcast.backends import litellm as litellm_backend
from promptcast.tasks import Ticket
from promptcast.testing import FakeAnthropic, FakeOpenAI, chat_completion, openai_error, tool_call

MESSAGE = "Checkout page crashes since this morning, we lose sales!"


@pytest.mark.parametrize(
    ("model", "sent_model", "mode"),
    [
        ("openai/gpt-4o-mini", "gpt-4o-mini", "json_schema"),
        ("ollama/llama3.1", "llama3.1", "json_schema"),
        ("hosted_vllm/meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B", "json_schema"),
        ("anthropic/claude-sonnet-4-6", "claude-sonnet-4-6", "anthropic"),
        # litellm's Anthropic route sends the beta's `output_format`, which the fake's automatic
        # answer did not read: it answered plain text and the call failed validation
        ("litellm/anthropic/claude-sonnet-4-6", "claude-sonnet-4-6", "litellm-anthropic"),
    ],
)
def test_the_same_builtin_task_runs_on_every_model_by_one_env_var(
    model: str,
    sent_model: str,
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai: FakeOpenAI,
    fake_anthropic: FakeAnthropic,
) -> None:
    monkeypatch.setenv("PROMPTCAST_MODEL", model)
    pc.configure()  # re-read the environment; the models= settings of the fixture stay
    from promptcast.tasks import extract_ticket

    run = extract_ticket.run(message=MESSAGE)
    assert isinstance(run.output, Ticket) and run.model == model
    fake = fake_anthropic if "anthropic" in mode else fake_openai
    [sent] = fake.requests
    assert sent["model"] == sent_model
    assert MESSAGE in json.dumps(sent)
    schema = Ticket.model_json_schema()
    if mode == "tools":
        parameters = sent["tools"][0]["function"]["parameters"]
        assert parameters["properties"] == schema["properties"]
        assert parameters["required"] == schema["required"]
        assert sent["tool_choice"] == {"type": "function", "function": {"name": "Ticket"}}
    elif mode == "json_schema":  # native: strict, every property required, objects closed
        sent_schema = sent["response_format"]["json_schema"]["schema"]
        assert sent["response_format"]["json_schema"]["strict"] is True
        assert set(sent_schema["properties"]) == set(schema["properties"])
        assert sent_schema["required"] == list(schema["properties"])
        assert sent_schema["additionalProperties"] is False
        assert "tools" not in sent
    elif mode == "litellm-anthropic":  # native, in the beta's or the GA's shape
        fmt = sent.get("output_format") or sent["output_config"]["format"]
        assert fmt["type"] == "json_schema"
        assert set(fmt["schema"]["properties"]) == set(schema["properties"])


def test_invalid_tool_arguments_are_re_asked_with_a_tool_message(fake_openai: FakeOpenAI) -> None:
    bad = tool_call("Ticket", '{"issue": "x", "urgency": "whenever"')
    fake_openai.reply(
        chat_completion(tool_calls=[bad]),
        chat_completion(tool_calls=[tool_call("Ticket", {"issue": "x", "urgency": "low"})]),
    )
    task = pc.builtin_tasks()["extract_ticket"].with_model("openai/gpt-4o-mini")
    run = task.run(message="hi")
    assert run.attempts == 2 and run.output.urgency == "low"
    follow_up = fake_openai.requests[1]["messages"]
    assert (
        follow_up[-2]["role"] == "assistant" and follow_up[-2]["tool_calls"][0]["id"] == bad["id"]
    )
    assert follow_up[-1]["role"] == "tool" and follow_up[-1]["tool_call_id"] == bad["id"]


def test_finish_reason_length_is_a_truncation(fake_openai: FakeOpenAI) -> None:
    fake_openai.reply(chat_completion('{"issue": "cut', finish_reason="length"))
    task = pc.builtin_tasks()["extract_ticket"].with_model("ollama/llama3.1")
    with pytest.raises(pc.OutputTruncatedError):
        task.run(message="hi")


def test_quota_429_is_final(fake_openai: FakeOpenAI) -> None:
    fake_openai.reply(
        openai_error(
            429,
            "You exceeded your current quota.",
            code="insufficient_quota",
            kind="insufficient_quota",
        )
    )
    task = pc.builtin_tasks()["extract_ticket"].with_model("openai/gpt-4o-mini")
    with pytest.raises(pc.BackendError) as info:
        task.run(message="hi")
    assert (info.value.status, info.value.retryable) == (429, False)
    assert len(fake_openai.requests) == 1


def test_hosted_vllm_without_a_base_url_names_the_setting() -> None:
    task = pc.builtin_tasks()["extract_ticket"].with_model("hosted_vllm/some-model")
    with pytest.raises(pc.ConfigurationError) as info:
        task.run(message="hi")
    assert info.value.env_var == "HOSTED_VLLM_API_BASE"


def test_without_litellm_installed_the_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "litellm", None)
    monkeypatch.delitem(_shared, "mistral", raising=False)
    litellm_backend._litellm.cache_clear()
    try:
        with pytest.raises(pc.ConfigurationError) as info:
            resolve("mistral/mistral-small")
    finally:
        litellm_backend._litellm.cache_clear()
    assert info.value.extra == "litellm" and "promptcast[litellm]" in str(info.value)


def test_self_hosted_cost_is_unknown_with_one_log_line(
    fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    """An unknown price is one log line, never a RuntimeWarning printing a source line."""
    task = pc.builtin_tasks()["extract_ticket"].with_model("hosted_vllm/meta-llama/Llama-3.1-8B")
    run = task.run(message="hi")
    with caplog.at_level(logging.WARNING, "promptcast.pricing"):
        assert run.usage.cost_usd is None
        assert task.run(message="again").usage.cost_usd is None
    lines = [r.getMessage() for r in caplog.records if r.name == "promptcast.pricing"]
    assert lines == [
        "no price known for 'hosted_vllm/meta-llama/Llama-3.1-8B'; its cost is reported as None"
    ]


@pytest.mark.parametrize(
    ("colon", "slash"),
    [
        ("anthropic:claude-sonnet-4-6", "anthropic/claude-sonnet-4-6"),
        ("openai:gpt-4o-mini", "openai/gpt-4o-mini"),
    ],
)
def test_provider_colon_model_is_priced_like_provider_slash_model(colon: str, slash: str) -> None:
    from promptcast.pricing import cost_usd

    assert cost_usd(colon, 1000, 100) == cost_usd(slash, 1000, 100) is not None


@pytest.mark.parametrize("field", ["prompt_tokens", "completion_tokens"])
def test_a_negative_token_count_is_a_malformed_reply(fake_openai: FakeOpenAI, field: str) -> None:
    body = chat_completion(tool_calls=[tool_call("Ticket", {"issue": "x", "urgency": "low"})])
    body["usage"][field] = -5
    fake_openai.reply(body)
    task = pc.builtin_tasks()["extract_ticket"].with_model("openai/gpt-4o-mini")
    with pc.override(max_retries=0), pytest.raises(pc.BackendError) as caught:
        task.run(message="hi")
    assert f"usage.{field} is -5, not a count of tokens" in str(caught.value)


def test_litellms_traceback_is_not_part_of_an_error_message(fake_openai: FakeOpenAI) -> None:
    """litellm appends a traceback to the message of a reply it cannot convert."""
    body = chat_completion(tool_calls=[tool_call("Ticket", {"issue": "x", "urgency": "low"})])
    body["usage"]["prompt_tokens"] = 1.5
    fake_openai.reply(body)
    task = pc.builtin_tasks()["extract_ticket"].with_model("openai/gpt-4o-mini")
    with (
        pc.override(max_retries=0),
        pytest.warns(UserWarning, match="serialized value may not be as expected"),
        pytest.raises(pc.BackendError) as caught,
    ):
        task.run(message="hi")
    message = str(caught.value)
    assert "Invalid response object" in message
    assert "Traceback" not in message and 'File "' not in message


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/meta-data.pdf", "http://127.0.0.1:9/secret.pdf"]
)
def test_a_media_url_litellm_refuses_to_fetch_is_named_as_such(
    fake_openai: FakeOpenAI, write_task: Any, url: str
) -> None:
    """litellm downloads a document URL itself on this route and refuses internal addresses;
    its refusal read 'openai returned HTTP 400 ... user_url_allowed_hosts in litellm_settings'."""
    task = pc.Task.from_file(
        write_task("read", "---\ninputs: {doc: document}\noutput: str\n---\nRead {{ doc }}\n")
    )
    with pc.override(max_retries=0), pytest.raises(pc.BackendError) as caught:
        task.with_model("openai/gpt-4o-mini").run(doc=url)
    message = str(caught.value)
    assert "litellm could not fetch a media URL itself before calling openai" in message
    assert "a Path or a data URL" in message and "litellm_settings" not in message
    assert not caught.value.retryable and not fake_openai.requests


_NO_THIRD_PARTY = """
import os, sys
names = []
sys.addaudithook(
    lambda event, args: names.append(str(args[0]))
    if event == "socket.getaddrinfo" and str(args[0]) not in ("127.0.0.1", "localhost")
    else None
)
import promptcast as pc
from promptcast.testing import FakeAnthropic, FakeOpenAI

task = pc.builtin_tasks()["extract_ticket"]
with FakeAnthropic() as anthropic, FakeOpenAI() as openai:
    os.environ["ANTHROPIC_BASE_URL"] = anthropic.base_url
    os.environ["ANTHROPIC_API_KEY"] = "sk-ant-api03-" + "x" * 40
    os.environ["OPENAI_API_KEY"] = "sk-test-openai-0123456789"
    pc.configure(models={"openai/gpt-4o-mini": {"base_url": openai.base_url}})
    task.with_model("litellm/anthropic/claude-sonnet-4-6")(message="checkout is down")
    task.with_model("openai/gpt-4o-mini")(message="checkout is down")
print(names)
"""


def test_a_litellm_call_asks_no_third_party_host_for_anything() -> None:
    """litellm fetched Anthropic's beta headers from raw.githubusercontent.com on the first
    call of its Anthropic route: a request nobody configured, and up to 5 s where egress is
    dropped. Every name looked up is the fakes' own (an audit hook sees each lookup)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LITELLM_")}
    done = subprocess.run(
        [sys.executable, "-c", _NO_THIRD_PARTY], capture_output=True, text=True, env=env,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr
