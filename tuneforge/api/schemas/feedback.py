"""The answers of `/v1/feedback`: ratings of a model's answers, the datasets exported from
them, and the retraining job they start."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tuneforge.api.schemas.base import Public
from tuneforge.api.schemas.datasets import DatasetPublic, public_dataset
from tuneforge.api.schemas.fine_tuning import FineTuningJobPublic
from tuneforge.db.store import Row


class FeedbackPublic(Public):
    id: str
    object: Literal["feedback"] = "feedback"
    model: str
    registered_model: str | None
    messages: list[dict[str, Any]] = Field(..., description="The conversation up to the answer.")
    output: str = Field(..., description="The model's answer.")
    rating: Literal["up", "down", "edited"]
    corrected_output: str | None = Field(..., description="edited: the user's version.")
    metadata: dict[str, str] | None
    created_at: int


class FeedbackListPublic(Public):
    object: Literal["list"] = "list"
    data: list[FeedbackPublic]
    has_more: bool


class FeedbackExportPublic(Public):
    object: Literal["feedback.export"] = "feedback.export"
    dataset: DatasetPublic
    rows: int = Field(..., description="Examples written.")
    feedback: int = Field(..., description="Ratings read.")
    by_source: dict[str, int] = Field(..., description="Examples by the rating they came from.")


class FeedbackRetrainPublic(Public):
    object: Literal["feedback.retrain"] = "feedback.retrain"
    job: FineTuningJobPublic
    export: FeedbackExportPublic


def public_feedback(row: Row) -> FeedbackPublic:
    return FeedbackPublic(
        id=row["id"],
        model=row["model"],
        registered_model=row["registered_model"],
        messages=row["messages"],
        output=row["output"],
        rating=row["rating"],
        corrected_output=row["corrected"],
        metadata=row["metadata"],
        created_at=int(row["created_at"]),
    )


def public_feedback_export(exported: dict[str, Any]) -> FeedbackExportPublic:
    """What `tuneforge.feedback.export.export_feedback` made: the dataset and its counts."""
    return FeedbackExportPublic(
        dataset=public_dataset(exported["dataset"]),
        rows=exported["rows"],
        feedback=exported["feedback"],
        by_source=exported["by_source"],
    )
