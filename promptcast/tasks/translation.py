"""Output schema of the built-in `translate` task."""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["Translation"]


class Translation(BaseModel):
    """A translation and the language it was translated from."""

    translation: str = Field(description="The text in the target language.")
    source_language: str = Field(description="The detected language of the input, in English.")
