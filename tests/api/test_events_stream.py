"""The event stream under reconnects, and the embedded SQLite database under write load."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import ROOT, Server
from tests.jobs.conftest import add_job
from tuneforge.db.store import Store
from tuneforge.jobs.status import JobStatus

pytestmark = pytest.mark.slow


def read_some(server: Server, job_id: str, last_id: str | None, most: int
              ) -> tuple[list[str], bool]:
    """Event ids from the stream, at most `most` before hanging up; True once it ended."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    ids: list[str] = []
    with server.client.stream("GET", f"/v1/fine_tuning/jobs/{job_id}/events/stream",
                              headers=headers) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("event: end"):
                return ids, True
            if line.startswith("id: "):
                ids.append(line[4:])
                if len(ids) >= most:
                    return ids, False  # hang up mid-stream
    raise AssertionError("the stream closed without its end event")


def test_a_client_that_reconnects_misses_no_event_and_sees_none_twice(
        server: Server, german_triplets: Path, model_id: str) -> None:
    file_id = server.upload(german_triplets)["id"]
    job = server.client.post("/v1/fine_tuning/jobs", json={
        "model": model_id, "training_file": file_id, "seed": 3,
        "method": {"type": "embedding", "embedding": {"hyperparameters": {
            "n_epochs": 2, "batch_size": 16, "logging_steps": 1}}}}).json()
    seen: list[str] = []
    reconnects = 0
    while True:
        ids, ended = read_some(server, job["id"], seen[-1] if seen else None, most=4)
        seen.extend(ids)
        if ended:
            break
        reconnects += 1
    final = server.client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()
    assert final["status"] == "succeeded", final["error"]
    listed = server.client.get(f"/v1/fine_tuning/jobs/{job['id']}/events",
                               params={"limit": 1000}).json()["data"]
    every = [e["id"] for e in reversed(listed)]
    assert reconnects >= 3 and len(every) > 12
    assert seen == every  # all of them, in order, none twice


WRITER = """
import sys
from tuneforge.db.store import Store
store = Store(sys.argv[1])
for i in range(int(sys.argv[3])):
    store.add_event(sys.argv[2], f"load {i}", type="metrics", data={"step": i})
store.dispose()
"""


def test_sqlite_under_concurrent_writes_never_reports_locked(
        server: Server, tmp_path: Path) -> None:
    url = f"sqlite:///{server.home / 'tuneforge.db'}"
    store = Store(url)
    job_id = add_job(store, JobStatus.SUCCEEDED)
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, url, job_id, "300"],
                                cwd=str(ROOT), stderr=subprocess.PIPE) for _ in range(4)]
    statuses: list[int] = []
    sample = tmp_path / "rows.jsonl"
    sample.write_text("".join(json.dumps({"anchor": f"q{i}", "positive": f"p{i}"}) + "\n"
                              for i in range(20)))

    def api_load() -> None:
        for _ in range(40):
            statuses.append(server.client.get(f"/v1/fine_tuning/jobs/{job_id}/events",
                                              params={"limit": 50}).status_code)
            with sample.open("rb") as f:
                statuses.append(server.client.post(
                    "/v1/files", files={"file": ("rows.jsonl", f)},
                    data={"purpose": "fine-tune"}).status_code)
            statuses.append(server.client.post(
                f"/v1/fine_tuning/jobs/{job_id}/cancel").status_code)

    readers = [threading.Thread(target=api_load) for _ in range(2)]
    for thread in readers:
        thread.start()
    errors = [w.communicate(timeout=300)[1].decode() for w in writers]
    for thread in readers:
        thread.join()
    assert [w.returncode for w in writers] == [0, 0, 0, 0], errors
    # Uploads and reads succeed; cancelling a finished job is a clean 409, never a 500.
    assert set(statuses) <= {200, 409} and statuses.count(200) == 160, set(statuses)
    events, _ = store.list_events(job_id, limit=2000, type="metrics")
    assert len(events) == 1200
    log = Path(server.log.name).read_text(errors="replace")
    assert "database is locked" not in log
    store.dispose()
