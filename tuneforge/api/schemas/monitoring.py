"""The answers of `/v1/models/{id}/usage` and `/v1/statistics` (tuneforge.monitoring)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tuneforge.api.schemas.base import Public


class LatencyPublic(Public):
    mean: float | None = Field(..., description="Milliseconds; null without requests.")
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None


class UsageFigures(Public):
    requests: int
    errors: int = Field(..., description="Requests that failed once their model was found.")
    error_rate: float | None = Field(..., description="errors / requests; null without any.")
    prompt_tokens: int
    completion_tokens: int
    latency_ms: LatencyPublic = Field(
        ...,
        description="From the request reaching its endpoint (body read) to its answer (a "
        "stream: to its last chunk); percentiles read from a histogram (linear within a "
        "bucket).",
    )


class UsageEntry(UsageFigures):
    model: str = Field(..., description="The model id the requests resolved to.")
    registered_model: str | None
    version: int | None
    endpoint: str


class UsagePoint(Public):
    start: float = Field(..., description="The step's start, UNIX seconds.")
    requests: int
    errors: int
    error_rate: float | None
    prompt_tokens: int
    completion_tokens: int
    p50_ms: float | None
    p95_ms: float | None


class UsagePublic(Public):
    object: Literal["model.usage"] = "model.usage"
    model: str = Field(..., description="As asked for.")
    registered_model: str | None = Field(
        ..., description="Set when `model` named a registered model: all its versions count."
    )
    since: float
    until: float
    step_seconds: int
    totals: UsageFigures
    data: list[UsageEntry] = Field(..., description="Per model version and endpoint.")
    series: list[UsagePoint] = Field(..., description="Steps with requests, oldest first.")


class SpreadPublic(Public):
    count: int
    mean: float | None = Field(..., description="Seconds; null when count is 0.")
    p50: float | None
    p95: float | None
    max: float | None


class JobFigures(Public):
    total: int
    by_status: dict[str, int]
    success_rate: float | None = Field(
        ..., description="succeeded / (succeeded + failed); null before any ended."
    )
    duration_seconds: SpreadPublic = Field(
        ..., description="Running seconds (all attempts) of the jobs that ended."
    )
    queue_wait_seconds: SpreadPublic = Field(
        ..., description="From creation to first start, of the jobs that started."
    )


class StatisticsPublic(Public):
    object: Literal["statistics"] = "statistics"
    since: float | None = Field(..., description="Jobs created since then; null: all.")
    totals: JobFigures
    by_kind: dict[str, JobFigures] = Field(..., description="Per job kind.")
