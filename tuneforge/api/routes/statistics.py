"""`/v1/statistics`: training statistics (tuneforge.monitoring.statistics)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query

from tuneforge.api.deps import StoreDep
from tuneforge.api.errors import error_responses
from tuneforge.api.schemas.monitoring import StatisticsPublic
from tuneforge.monitoring.statistics import training_statistics
from tuneforge.monitoring.usage import window_seconds

router = APIRouter(prefix="/v1/statistics", tags=["system"])


@router.get("", responses=error_responses(400))
def get_statistics(
    store: StoreDep,
    window: Annotated[
        str | None,
        Query(max_length=16, description="Only jobs created this far back: 24h, 7d, … (all)."),
    ] = None,
) -> StatisticsPublic:
    """Jobs in total and per kind: counts by status, success rate (succeeded over succeeded
    and failed), running time (mean, p50, p95, max seconds of the jobs that ended) and queue
    wait (creation to first start)."""
    since = time.time() - window_seconds(window) if window else None
    return StatisticsPublic(since=since, **training_statistics(store.job_times(since)))
