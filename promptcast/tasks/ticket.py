"""Output schema of the built-in `extract_ticket` task."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["Ticket", "Urgency"]

Urgency = Literal["low", "medium", "high", "critical"]


class Ticket(BaseModel):
    """A support ticket pulled out of a customer message."""

    issue: str = Field(description="The problem in one sentence, in the customer's language.")
    urgency: Urgency = Field(
        description="critical: outage or data loss; high: blocks work or sales; "
        "medium: degraded; low: question or cosmetic."
    )
    product: str | None = Field(
        default=None, description="The product or feature concerned, if the message names one."
    )
