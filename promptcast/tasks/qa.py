"""Output schema of the built-in `answer_product_question` task."""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["ProductAnswer"]


class ProductAnswer(BaseModel):
    """An answer grounded only in the documents given with the question."""

    answer: str = Field(
        description="The answer, or a plain statement that the documents do not say."
    )
    answered: bool = Field(description="False when the documents do not contain the answer.")
    cited_document_ids: list[str] = Field(
        default_factory=list, description="Ids of the documents the answer relies on."
    )
