"""Output schema of the built-in `summarize` task."""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["Summary"]


class Summary(BaseModel):
    """A one-sentence summary and its key points."""

    summary: str = Field(description="One sentence.")
    key_points: list[str] = Field(description="The most important points, shortest first.")
