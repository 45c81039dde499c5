"""The built-in tasks replay their frontmatter examples from cassettes/builtin, offline.

With ANTHROPIC_API_KEY set, `pytest tests/test_builtin.py --record-mode=rewrite` replaces the
example recordings with real ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import promptcast as pc
from promptcast.spec import Example
from tests.conftest import ROOT

BUILTINS = sorted(pc.builtin_tasks())


@pytest.fixture(scope="module")
def vcr_cassette_dir() -> str:
    return str(ROOT / "cassettes" / "builtin")


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    if not os.environ.get("ANTHROPIC_API_KEY"):
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-replay-placeholder")


def check_example(output: Any, example: Example) -> None:
    data = output.model_dump(mode="json")
    for key, value in (example.expect or {}).items():
        assert data[key] == value, f"{key}: expected {value!r}, got {data[key]!r}"
    contains = example.expect_contains or {}
    for key, part in contains.items() if isinstance(contains, dict) else []:
        assert part.lower() in str(data[key]).lower(), f"{key} should contain {part!r}"


def test_every_builtin_task_has_two_examples_and_a_recording() -> None:
    assert set(BUILTINS) == {
        "extract_ticket",
        "answer_product_question",
        "translate",
        "summarize",
        "classify",
    }
    for name in BUILTINS:
        assert len(pc.builtin_tasks()[name].spec.examples) >= 2, name
        assert (ROOT / "cassettes" / "builtin" / f"{name}.yaml").is_file(), name


@pytest.mark.vcr
@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_examples_replay_and_meet_expectations(name: str) -> None:
    task = pc.builtin_tasks()[name]
    for example in task.spec.examples:
        run = task.run(**example.inputs)
        check_example(run.output, example)
        assert run.usage.input_tokens > 0 and run.usage.cost_usd is not None


@pytest.fixture
def default_cassette_name(request: pytest.FixtureRequest) -> str:
    """One cassette per task, holding one interaction per example."""
    return str(request.node.callspec.params["name"])


def test_typed_builtin_functions_return_their_models(vcr_cassette_dir: str) -> None:
    from promptcast.tasks import Ticket, extract_ticket
    from promptcast.testing import replay

    with replay(Path(vcr_cassette_dir) / "extract_ticket.yaml"):
        ticket = extract_ticket(
            message="Checkout page crashes since this morning, we lose sales!",
            customer_tier="business",
        )
    assert isinstance(ticket, Ticket) and ticket.urgency == "high"
