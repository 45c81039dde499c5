"""The built-in tasks: each has examples and their recordings; the typed functions return models.

The examples themselves run as collected items (`promptcast/prompts/*.jinja`, named
`task[example-N]`) through the promptcast pytest plugin. With ANTHROPIC_API_KEY set,
`pytest promptcast/prompts --record-mode=rewrite` replaces the example recordings with real ones.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

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


LABELS = {"inputs": {"text": "charged twice", "labels": ["billing", "bug", "feature_request"]}}


@pytest.mark.parametrize(
    ("label", "expected"),
    [("billing", "billing"), ("Billing", "billing"), ("  BUG ", "bug")],
)
def test_classification_accepts_a_given_label_in_its_given_spelling(
    label: str, expected: str
) -> None:
    from promptcast.tasks import Classification

    result = Classification.model_validate({"label": label, "reason": "r"}, context=LABELS)
    assert result.label == expected


@pytest.mark.parametrize("label", ["refund", "billing, bug", "", "billing!"])
def test_classification_refuses_a_label_that_was_not_given(label: str) -> None:
    from promptcast.tasks import Classification

    with pytest.raises(ValidationError, match="one of the given labels: billing, bug"):
        Classification.model_validate({"label": label, "reason": "r"}, context=LABELS)


@pytest.mark.parametrize("context", [None, {}, {"inputs": {}}, {"inputs": {"labels": []}}])
def test_classification_without_labels_in_context_accepts_any_label(context: Any) -> None:
    from promptcast.tasks import Classification

    result = Classification.model_validate({"label": "refund", "reason": "r"}, context=context)
    assert result.label == "refund"
