"""Typed use of the built-in tasks; `mypy --strict examples/` proves the types flow through.

Run it offline against the example recordings: python examples/typed_usage.py
"""

from __future__ import annotations

import asyncio
from typing import assert_type

import promptcast as pc
from promptcast.tasks import (
    ProductAnswer,
    Ticket,
    Translation,
    answer_product_question,
    extract_ticket,
    translate,
)


def triage(message: str) -> Ticket:
    ticket = extract_ticket(message=message, customer_tier="business")
    assert_type(ticket, Ticket)
    return ticket


def answer(question: str, documents: dict[str, str]) -> ProductAnswer:
    run = answer_product_question.run(question=question, documents=documents)
    assert_type(run, pc.Run[ProductAnswer])
    assert_type(run.usage.cost_usd, float | None)
    return run.output


async def to_english(text: str) -> Translation:
    translation = await translate.acall(text=text)
    assert_type(translation, Translation)
    return translation


def main() -> None:
    from promptcast.cli import demo_cassettes
    from promptcast.testing import replay

    with replay(demo_cassettes() / "extract_ticket.yaml"):
        print(triage("Checkout page crashes since this morning, we lose sales!"))
    with replay(demo_cassettes() / "translate.yaml"):
        print(asyncio.run(to_english("Der Mixer ist laut, aber er macht hervorragende Smoothies.")))


if __name__ == "__main__":
    main()
