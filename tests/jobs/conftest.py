"""Stores on SQLite and PostgreSQL, and small helpers to fill them."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
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


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[Path, int], Path]]:
    """Mount a tmpfs of `mib` MiB at a folder; unmounted afterwards."""
    mounted: list[Path] = []

    def mount(folder: Path, mib: int) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)
