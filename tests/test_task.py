"""Calling tasks: input checks, re-asks, usage sums, the registry and the `@task` binding."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import promptcast as pc
from promptcast.backends.scripted import ScriptedBackend
from promptcast.tasks import Ticket

TICKET_TASK = """
---
inputs:
  message: str
  customer_tier: {type: str, default: standard}
output: promptcast.tasks.ticket:Ticket
model: test/ticket
max_attempts: 3
---
{{ customer_tier }}: {{ message | fence("message") }}
"""
GOOD = {"issue": "Checkout is down", "urgency": "high", "product": "checkout"}


@pytest.fixture
def ticket_task(write_task: Callable[..., Path]) -> pc.Task[Ticket]:
    return pc.Task.from_file(write_task("extract_ticket", TICKET_TASK))


@pytest.fixture
def script() -> Iterator[Callable[..., ScriptedBackend]]:
    """`script(*replies)` queues replies on the ScriptedBackend that `test/ticket` reaches in
    this test only (the override is entered here, so async tests inherit it)."""
    queue: list[Any] = []
    backend = ScriptedBackend(lambda request: queue.pop(0))

    def wire(*replies: Any) -> ScriptedBackend:
        queue.extend(replies)
        return backend

    with pc.override(backends={"test/ticket": backend}):
        yield wire


def test_a_valid_reply_gives_a_typed_output_and_a_run(
    script: Callable[..., ScriptedBackend], ticket_task: pc.Task[Ticket]
) -> None:
    backend = script(GOOD)
    run = ticket_task.run(message="Checkout is down")
    assert run.output == Ticket(**GOOD)
    assert (run.attempts, run.model, run.task) == (1, "test/ticket", "extract_ticket")
    assert run.usage == pc.Usage(10, 5, 0.0)
    assert run.template_hash == ticket_task.spec.template_hash
    assert backend.requests[0].model == "ticket"
    assert (
        "<message>\nCheckout is down\n</message>"
        in backend.requests[0].prompt.messages[0]["content"]
    )


def test_wrong_type_then_valid_reply_is_re_asked_once(
    script: Callable[..., ScriptedBackend], ticket_task: pc.Task[Ticket]
) -> None:
    backend = script({**GOOD, "urgency": "whenever"}, GOOD)
    run = ticket_task.run(message="Checkout is down")
    assert run.output.urgency == "high"
    assert run.attempts == 2
    assert run.usage == pc.Usage(20, 10, 0.0)
    assert [a.status for a in run.attempt_log] == ["invalid", "ok"]
    feedback = backend.requests[1].history[-1]["content"]
    assert "urgency" in feedback


def test_invalid_every_time_raises_after_max_attempts(
    script: Callable[..., ScriptedBackend], ticket_task: pc.Task[Ticket]
) -> None:
    backend = script("not json", {"issue": 1}, '{"urgency": "high"}', GOOD)
    with pytest.raises(pc.OutputValidationError) as info:
        ticket_task.run(message="x")
    err = info.value
    assert len(backend.requests) == 3
    assert err.attempts == 3 and err.task == "extract_ticket"
    assert err.raw_output == '{"urgency": "high"}'
    assert err.usage == pc.Usage(30, 15, 0.0)
    assert any(e["loc"] == ("issue",) for e in err.errors)


@pytest.mark.parametrize(
    ("inputs", "field", "words"),
    [
        ({}, "message", "is required"),
        ({"message": 3}, "message", "str"),
        ({"message": "x", "tier": "gold"}, "tier", "not declared"),
    ],
)
def test_wrong_inputs_raise_before_any_request(
    script: Callable[..., ScriptedBackend],
    ticket_task: pc.Task[Ticket],
    inputs: dict[str, Any],
    field: str,
    words: str,
) -> None:
    backend = script(GOOD)
    with pytest.raises(pc.TaskInputError) as info:
        ticket_task.run(**inputs)
    assert info.value.field == field and words in str(info.value)
    assert "extract_ticket" in str(info.value)
    assert backend.requests == []


async def test_async_call_uses_the_same_loop(
    script: Callable[..., ScriptedBackend], ticket_task: pc.Task[Ticket]
) -> None:
    script({**GOOD, "urgency": 5}, GOOD)
    run = await ticket_task.arun(message="x")
    assert run.attempts == 2 and run.output == Ticket(**GOOD)
    script(GOOD)
    assert await ticket_task.acall(message="x") == Ticket(**GOOD)


def test_free_text_output(
    script: Callable[..., ScriptedBackend], write_task: Callable[..., Path]
) -> None:
    task = pc.Task.from_file(write_task("hello", "---\nmodel: test/ticket\n---\nSay hi\n"))
    script("Hi there")
    assert task(**{}) == "Hi there"


def test_model_comes_from_env_when_the_file_names_none(
    write_task: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    task = pc.Task.from_file(write_task("t", "---\n---\nSay hi\n"))
    assert task.model == "anthropic/claude-sonnet-4-6"
    monkeypatch.setenv("PROMPTCAST_MODEL", "test/other")
    pc.reset_defaults()
    assert task.model == "test/other"
    with pc.override(backends={"test/other": ScriptedBackend(["from env"])}):
        assert task() == "from env"


def test_unregistered_test_model_says_how_to_register(write_task: Callable[..., Path]) -> None:
    task = pc.Task.from_file(write_task("t", "---\nmodel: test/nobody\n---\nhi\n"))
    with pytest.raises(pc.ConfigurationError, match="override\\(backends="):
        task()


def test_bad_env_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTCAST_MAX_ATTEMPTS", "lots")
    pc.reset_defaults()
    with pytest.raises(pc.ConfigurationError) as info:
        pc.get_config()
    assert info.value.env_var == "PROMPTCAST_MAX_ATTEMPTS"


def test_registry_access_and_close_matches(ticket_task: pc.Task[Ticket], tmp_path: Path) -> None:
    tasks = pc.load_tasks(tmp_path)
    assert list(tasks) == ["extract_ticket"]
    assert tasks.extract_ticket.spec == ticket_task.spec
    with pytest.raises(pc.TaskNotFoundError) as info:
        tasks.extract_tikcet  # noqa: B018
    assert info.value.matches == ["extract_ticket"]


def test_load_tasks_of_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(pc.TaskDefinitionError, match="no such folder"):
        pc.load_tasks(tmp_path / "nope")


def test_task_binding_checks_and_calls(
    script: Callable[..., ScriptedBackend], ticket_task: pc.Task[Ticket]
) -> None:
    @pc.task(ticket_task.spec.path)
    def extract(message: str, customer_tier: str = "standard") -> Ticket: ...

    script(GOOD)
    assert extract("Checkout is down") == Ticket(**GOOD)


class Other(BaseModel):
    x: int


@pytest.mark.parametrize(
    "source",
    [
        "def f(message: str) -> Ticket: ...",
        "def f(message: str, customer_tier: int = 1) -> Ticket: ...",
        "def f(message: str, customer_tier: str = 'gold') -> Ticket: ...",
        "def f(message: str, customer_tier: str) -> Ticket: ...",
        "def f(message: str, customer_tier: str = 'standard') -> Other: ...",
        "def f(message, customer_tier: str = 'standard') -> Ticket: ...",
    ],
)
def test_task_binding_rejects_a_signature_that_disagrees(
    ticket_task: pc.Task[Ticket], source: str
) -> None:
    namespace: dict[str, Any] = {"Ticket": Ticket, "Other": Other}
    exec(source, namespace)
    with pytest.raises(pc.TaskDefinitionError, match="@task binding"):
        pc.task(ticket_task.spec.path)(namespace["f"])
