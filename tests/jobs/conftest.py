"""Stores on SQLite and PostgreSQL, and small helpers to fill them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tuneforge.db.store import Store, new_id
from tuneforge.jobs.status import JobStatus


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    db = Store(url)
    db.create_schema()
    yield db
    db.dispose()


def add_job(store: Store, status: JobStatus = JobStatus.QUEUED, created_at: float | None = None
            ) -> str:
    job_id = new_id("ftjob")
    store.insert_job({"id": job_id, "kind": "embedding", "model": "m", "status": status.value,
                      "spec": {"training_files": ["file-a"], "validation_file": None},
                      "created_at": created_at or time.time()}, "created")
    return job_id


def messages(store: Store, job_id: str) -> list[str]:
    events, _ = store.list_events(job_id, limit=100, newest_first=False)
    return [e["message"] for e in events]
