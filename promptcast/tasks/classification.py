"""Output schema of the built-in `classify` task."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator

__all__ = ["Classification"]


# The docstring below is the tool description the model reads; how validation works stays here.
# Validated with the call's inputs as context (`{"inputs": {"labels": [...]}}`), a label that is
# not one of them is invalid, so the model is asked again. A label that differs only in case or
# surrounding spaces is accepted as the given spelling. Without that context (a cached reply,
# `model_validate` by hand) any label is accepted.
class Classification(BaseModel):
    """One label chosen from the labels given with the text."""

    label: str = Field(description="Exactly one of the given labels.")
    reason: str = Field(description="Why, in one short sentence.")

    @field_validator("label")
    @classmethod
    def _one_of_the_labels(cls, value: str, info: ValidationInfo) -> str:
        labels = _given_labels(info.context)
        if labels is None or value in labels:
            return value
        folded = {label.strip().casefold(): label for label in labels}
        match = folded.get(value.strip().casefold())
        if match is not None:
            return match
        raise ValueError(f"must be exactly one of the given labels: {', '.join(labels)}")


def _given_labels(context: Any) -> list[str] | None:
    inputs = context.get("inputs") if isinstance(context, dict) else None
    labels = inputs.get("labels") if isinstance(inputs, dict) else None
    if not labels or not isinstance(labels, (list, tuple)):
        return None
    return [str(label) for label in labels]
