"""Output schema of the built-in `classify` task."""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["Classification"]


class Classification(BaseModel):
    """One label chosen from the labels given with the text."""

    label: str = Field(description="Exactly one of the given labels.")
    reason: str = Field(description="Why, in one short sentence.")
