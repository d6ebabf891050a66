"""Training statistics: how many jobs of each kind ended how, how long they ran and how long
they waited for a worker.

| figure               | over                          | measured as                          |
|----------------------|-------------------------------|--------------------------------------|
| `by_status`          | every job                     | jobs per status                      |
| `success_rate`       | succeeded and failed jobs     | succeeded / (succeeded + failed);    |
|                      |                               | a cancelled job is the user's choice |
| `duration_seconds`   | succeeded and failed jobs     | seconds running, over all attempts   |
|                      |                               | (a paused job's pause not counted)   |
| `queue_wait_seconds` | jobs that started             | first start - creation               |

Percentiles are exact (nearest rank) over the jobs' values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from tuneforge.jobs.status import JobStatus

ENDED = (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value)


def training_statistics(jobs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The figures of the table above, in total and per kind, of `jobs` (rows with kind,
    status, created_at, started_at, finished_at, run_seconds)."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    every: list[dict[str, Any]] = []
    for job in jobs:
        by_kind.setdefault(job["kind"], []).append(job)
        every.append(job)
    return {
        "object": "statistics",
        "totals": _figures(every),
        "by_kind": {kind: _figures(rows) for kind, rows in sorted(by_kind.items())},
    }


def duration_of(job: dict[str, Any]) -> float | None:
    """Seconds an ended job ran: its running seconds over all attempts, or from its start to
    its end for a job that has none recorded."""
    if job["status"] not in ENDED:
        return None
    if job["run_seconds"]:
        return float(job["run_seconds"])
    if job["started_at"] is not None and job["finished_at"] is not None:
        return max(0.0, job["finished_at"] - job["started_at"])
    return None


def _figures(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    for job in jobs:
        statuses[job["status"]] = statuses.get(job["status"], 0) + 1
    succeeded = statuses.get(JobStatus.SUCCEEDED.value, 0)
    failed = statuses.get(JobStatus.FAILED.value, 0)
    durations = [d for d in map(duration_of, jobs) if d is not None]
    waits = [
        max(0.0, job["started_at"] - job["created_at"])
        for job in jobs
        if job["started_at"] is not None
    ]
    return {
        "total": len(jobs),
        "by_status": dict(sorted(statuses.items())),
        "success_rate": round(succeeded / (succeeded + failed), 6) if succeeded + failed else None,
        "duration_seconds": _spread(durations),
        "queue_wait_seconds": _spread(waits),
    }


def _spread(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "mean": None, "p50": None, "p95": None, "max": None}
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "mean": round(sum(ordered) / len(ordered), 3),
        "p50": round(nearest_rank(ordered, 0.50), 3),
        "p95": round(nearest_rank(ordered, 0.95), 3),
        "max": round(ordered[-1], 3),
    }


def nearest_rank(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted values by the nearest-rank method."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
