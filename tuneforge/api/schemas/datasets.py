"""The answers of `/v1/datasets`: an uploaded file's validation report and statistics, a page
of its rows, and what preparing it made."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import MISSING, ConfigDict, Field

from tuneforge.api.schemas.base import Public
from tuneforge.api.schemas.files import FilePublic, public_file
from tuneforge.db.store import Row


class DatasetProblem(Public):
    line: int | None = Field(..., description="The line (JSONL, CSV) or row (Parquet).")
    column: str | None
    code: str
    message: str


class DatasetPublic(Public):
    """The file and its validation report (tuneforge.datasets), report fields at the top."""

    # The stored report's fields are passed through as they were written.
    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["dataset"] = "dataset"
    file: FilePublic
    created_at: int
    valid: bool
    format: str
    layout: str | None = Field(..., description="The columns' layout, e.g. pair-score.")
    columns: list[str]
    has_header: bool
    problem_count: int
    problems_by_code: dict[str, int]
    problems: list[DatasetProblem] = Field(..., description="The first 100, by line.")
    statistics: dict[str, Any]
    kind: str | MISSING = Field(MISSING, description="The training kind its columns name.")
    source_columns: dict[str, str] | MISSING = Field(
        MISSING, description="Classification: the file's column for each canonical one."
    )
    preparation: dict[str, Any] | MISSING = Field(
        MISSING, description="Made by /prepare: what was removed and why."
    )
    mining: dict[str, Any] | MISSING = Field(
        MISSING, description="Made by /mine_negatives: the hard negatives found, how hard."
    )
    synthetic: dict[str, Any] | MISSING = Field(
        MISSING, description="Made by /v1/synthetic-data: how it was generated and filtered."
    )
    feedback_export: dict[str, Any] | MISSING = Field(
        MISSING, description="Made by /v1/feedback/export: which feedback, and from where."
    )


class DatasetsPublic(Public):
    object: Literal["list"] = "list"
    data: list[DatasetPublic]
    has_more: bool


class DatasetRow(Public):
    line: int = Field(..., description="The record's line (JSONL, CSV) or row (Parquet).")
    values: dict[str, Any]


class DatasetRowsPublic(Public):
    """A page of a file's records as its reader sees them (tuneforge.datasets.preview)."""

    object: Literal["list"] = "list"
    columns: list[str]
    total: int
    offset: int
    data: list[DatasetRow]
    has_more: bool


class DatasetPreparationPublic(Public):
    object: Literal["dataset.preparation"] = "dataset.preparation"
    kind: str
    train: DatasetPublic
    validation: DatasetPublic | None
    report: dict[str, Any] = Field(..., description="What was removed and why; the split.")


class DatasetMiningPublic(Public):
    object: Literal["dataset.mining"] = "dataset.mining"
    dataset: DatasetPublic = Field(..., description="The new triplet dataset.")
    report: dict[str, Any] = Field(
        ..., description="Negatives found, rows without one, similarities and ranks."
    )


def public_dataset(row: Row) -> DatasetPublic:
    return DatasetPublic.model_validate(
        {
            "id": row["id"],
            "object": "dataset",
            "file": public_file(row),
            "created_at": int(row["created_at"]),
            **row["report"],
        }
    )
