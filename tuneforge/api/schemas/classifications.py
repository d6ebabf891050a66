"""The answer of `/v1/classifications` (tuneforge's own endpoint; OpenAI has none)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tuneforge.api.schemas.base import Public


class ClassScore(Public):
    label: str
    score: float


class Classification(Public):
    object: Literal["classification"] = "classification"
    index: int
    label: str = Field(..., description="The highest-scoring class.")
    labels: list[str] = Field(
        ...,
        description="The predicted classes: that one, or for a multi-label model every "
        "class scoring at least 0.5.",
    )
    scores: list[ClassScore] = Field(..., description="Highest first.")


class ClassificationUsage(Public):
    prompt_tokens: int
    total_tokens: int


class ClassificationsPublic(Public):
    object: Literal["list"] = "list"
    model: str
    multi_label: bool
    data: list[Classification]
    usage: ClassificationUsage
