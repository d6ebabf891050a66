"""The start-up sweep of the data folder (issue 22), with real servers: orphans made by hand
go at a restart and nothing a row refers to does; a kill -9 during concurrent uploads leaves
every file whole and listed, or absent, after the restart."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import pytest

from tests.fault_campaign import NO_WORKER, kill_during_uploads, pairs_file
from tests.server import Server
from tuneforge.config import Settings
from tuneforge.datasets.sweep import GRACE_SECONDS
from tuneforge.db import tables
from tuneforge.db.store import Store, new_id
from tuneforge.jobs.status import JobStatus

pytestmark = pytest.mark.slow


def _old(*paths: Path) -> None:
    """As if left by a crash a minute ago."""
    then = time.time() - 60
    for path in paths:
        os.utime(path, (then, then))


def _running_job(home: Path, lease: int) -> str:
    store = Store(Settings(home=home).db_url)
    job_id = new_id("ftjob")
    store.insert_job(
        {
            "id": job_id,
            "kind": "embedding",
            "model": "m",
            "status": JobStatus.RUNNING.value,
            "spec": {},
            "created_at": time.time(),
        },
        "running elsewhere",
    )
    with store.engine.begin() as conn:  # as a claim under `lease` leaves it
        conn.execute(tables.jobs.update().where(tables.jobs.c.id == job_id).values(lease=lease))
    store.dispose()
    return job_id


def test_a_restart_removes_orphans_and_nothing_a_row_refers_to(tmp_path: Path) -> None:
    home = tmp_path / "tuneforge-data"
    server = Server(home, args=NO_WORKER)
    kept_file = server.upload(pairs_file(tmp_path))["id"]
    server.stop()
    files, models = home / "files", home / "models"
    # The file, what is kept beside it, and what uploads never write (not the sweep's).
    kept = [files / kept_file, files / f"{kept_file}.idx", files / "notes.txt"]
    kept[1].write_bytes(b"index")
    job_id = _running_job(home, lease=3)
    kept.append(models / f".staging-{job_id}-3")  # its run writes there now
    orphans = [
        files / "file-lost1",
        files / "file-lost2.part",
        files / "file-lost3.idx",
        models / f".staging-{job_id}-2",  # an earlier run of the same job
        models / ".staging-ftjob-gone-1",
        home / "exports" / ".staging-exportjob-x-1",
        models / "imported" / ".staging-mymodel-0a1b2c3d",
    ]
    for path in kept[1:] + orphans:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.name.startswith(".staging"):
            path.mkdir()
            (path / "model.safetensors").write_bytes(b"x" * 100)
        elif not path.exists():
            path.write_bytes(b"partial")
    held = files / "file-uploading.part"  # another process is writing it
    held.write_bytes(b"half")
    young = files / "file-young.part"  # written just now: judged after the grace period
    young.write_bytes(b"new")
    _old(*kept, *orphans, held)
    written = time.time()
    with held.open("rb") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        server = Server(home, args=NO_WORKER)
        try:
            for path in orphans:
                assert not path.exists(), path
            for path in [*kept, held]:
                assert path.exists(), path
            if time.time() - written < GRACE_SECONDS:
                # The start-up sweep ran within the grace period of the young part (on a
                # loaded machine the server may take longer to start, and then it may go).
                assert young.exists(), young
            assert server.client.get(f"/v1/files/{kept_file}").status_code == 200
            deadline = time.monotonic() + GRACE_SECONDS + 10
            while young.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not young.exists()
            assert held.exists() and all(p.exists() for p in kept)
        finally:
            server.stop()
    log = "".join(p.read_text() for p in tmp_path.glob("server-*.log"))
    assert "file-lost2.part, which no database row refers to" in log


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_kill_9_during_uploads_leaves_files_whole_and_listed_or_absent(
    tmp_path: Path, request: pytest.FixtureRequest, database: str
) -> None:
    url = None if database == "sqlite" else request.getfixturevalue("postgres_url")
    result = kill_during_uploads(tmp_path / "tuneforge-data", url, tmp_path, trials=1, uploads=10)
    assert result.orphans == 0
    assert result.broken == 0
    assert result.listed_whole + result.absent == 10
    assert result.integrity == ["ok"]
