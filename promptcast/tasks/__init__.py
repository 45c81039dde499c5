"""The built-in tasks as typed functions, and their output schemas.

```python
from promptcast.tasks import extract_ticket
ticket = extract_ticket(message="Checkout crashes!")   # -> Ticket
```
"""

from __future__ import annotations

from promptcast.media import Image
from promptcast.task import builtin_tasks, task
from promptcast.tasks.classification import Classification
from promptcast.tasks.qa import ProductAnswer
from promptcast.tasks.summary import Summary
from promptcast.tasks.ticket import Ticket, Urgency
from promptcast.tasks.translation import Translation

__all__ = [
    "Classification",
    "ProductAnswer",
    "Summary",
    "Ticket",
    "Translation",
    "Urgency",
    "answer_product_question",
    "classify",
    "extract_ticket",
    "summarize",
    "translate",
]

_builtin = builtin_tasks()


@task(_builtin["extract_ticket"])
def extract_ticket(
    message: str, customer_tier: str = "standard", screenshot: Image | None = None
) -> Ticket:
    """A support ticket (issue, urgency, product) from a customer message and the screenshot
    attached to it, if any."""
    raise NotImplementedError  # never runs: @task calls the model instead


@task(_builtin["answer_product_question"])
def answer_product_question(question: str, documents: dict[str, str]) -> ProductAnswer:
    """An answer from the given documents only, with the ids it cites; says when it does not know."""
    raise NotImplementedError  # never runs: @task calls the model instead


@task(_builtin["translate"])
def translate(text: str, target_language: str = "English") -> Translation:
    """The text in `target_language`, and the language it was written in."""
    raise NotImplementedError  # never runs: @task calls the model instead


@task(_builtin["summarize"])
def summarize(text: str, max_points: int = 3) -> Summary:
    """A one-sentence summary and up to `max_points` key points."""
    raise NotImplementedError  # never runs: @task calls the model instead


@task(_builtin["classify"])
def classify(text: str, labels: list[str]) -> Classification:
    """Exactly one of `labels` for the text, with a short reason."""
    raise NotImplementedError  # never runs: @task calls the model instead
