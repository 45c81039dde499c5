"""The built-in tasks: each has examples and their recordings; the typed functions return models.

The examples themselves run as collected items (`promptcast/prompts/*.jinja`, named
`task[example-N]`) through the promptcast pytest plugin. With ANTHROPIC_API_KEY set,
`pytest promptcast/prompts --record-mode=rewrite` replaces the example recordings with real ones.
"""

from __future__ import annotations

import pytest

import promptcast as pc
from promptcast.cli import demo_cassettes
from tests.conftest import ROOT

BUILTINS = sorted(pc.builtin_tasks())


def test_every_builtin_task_has_two_examples_and_their_recordings() -> None:
    assert set(BUILTINS) == {
        "extract_ticket",
        "answer_product_question",
        "translate",
        "summarize",
        "classify",
    }
    for name in BUILTINS:
        examples = pc.builtin_tasks()[name].spec.examples
        assert len(examples) >= 2, name
        for index in range(len(examples)):
            path = ROOT / "cassettes" / "examples" / name / f"example-{index}.yaml"
            assert path.is_file(), path


@pytest.mark.promptcast(path=str(demo_cassettes() / "extract_ticket" / "example-0.yaml"))
def test_typed_builtin_function_returns_its_model() -> None:
    from promptcast.tasks import Ticket, extract_ticket

    ticket = extract_ticket(
        message="Checkout page crashes since this morning, we lose sales!", customer_tier="business"
    )
    assert isinstance(ticket, Ticket) and ticket.urgency == "high"
