"""The fault campaign of issue 22, against a real `tuneforge serve` (tests/server.py): races of
a job's creation with its file's deletion, kill -9 during concurrent uploads, and the
per-key queue bound under concurrent creations. The tests run each a few times;
bench/faults.py runs the full campaign on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy

from tests.server import Server
from tuneforge.datasets.sweep import GRACE_SECONDS

# A server whose jobs stay queued: no worker claims them.
NO_WORKER = ("--no-worker",)
# A deletion starts up to this much later than its job's creation (which reads the file
# first), so that each side wins some of the races.
DELETE_JITTER = 0.2
# The kill comes this many seconds at most after the first upload reached files/.
KILL_WITHIN = 3.0


def pairs_file(folder: Path, rows: int = 12, seed: int = 0) -> Path:
    """A small, valid embedding file of (anchor, positive) pairs; `seed` makes it unique."""
    path = folder / f"pairs-{seed}.jsonl"
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(rows):
            n = rng.randrange(10**6)
            f.write(
                json.dumps({"anchor": f"question {i} about {n}", "positive": f"answer {i} on {n}"})
                + "\n"
            )
    return path


def pairs_body(size: int, seed: int) -> bytes:
    """About `size` bytes of valid (anchor, positive) lines, unique to `seed`."""
    line = json.dumps({"anchor": f"q{seed} " + "a" * 60, "positive": "b" * 60}) + "\n"
    return line.encode() * max(2, size // len(line))


def job_request(model_id: str, file_id: str) -> dict[str, Any]:
    return {
        "model": model_id,
        "training_file": file_id,
        "method": {"type": "embedding", "embedding": {"loss": "mnrl"}},
    }


def all_at_once(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """Run `calls` on threads released together."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], httpx.Response]) -> httpx.Response:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


@dataclass
class RaceResult:
    races: int = 0
    job_won: int = 0
    delete_won: int = 0
    both_won: int = 0
    server_errors: int = 0
    jobs_on_missing_files: int = 0
    outcomes: list[tuple[int, int]] = field(default_factory=list)


def race_create_delete(server: Server, model_id: str, folder: Path, races: int) -> RaceResult:
    """Upload a file, then create a job on it and delete it at the same moment, `races`
    times. Exactly one must win each time; afterwards no job names a file that is gone."""
    result = RaceResult()
    rng = random.Random(races)
    with (
        httpx.Client(base_url=server.url, timeout=60) as create,
        httpx.Client(base_url=server.url, timeout=60) as delete,
    ):
        for i in range(races):
            file_id = server.upload(pairs_file(folder, seed=i))["id"]
            wait = rng.uniform(0, DELETE_JITTER)
            made, deleted = all_at_once(
                [
                    lambda f=file_id: create.post(
                        "/v1/fine_tuning/jobs", json=job_request(model_id, f)
                    ),
                    lambda f=file_id, w=wait: _later(w, lambda: delete.delete(f"/v1/files/{f}")),
                ]
            )
            result.races += 1
            result.outcomes.append((made.status_code, deleted.status_code))
            result.server_errors += (made.status_code >= 500) + (deleted.status_code >= 500)
            if made.status_code == 200 and deleted.status_code == 200:
                result.both_won += 1
            elif made.status_code == 200:
                result.job_won += 1
            elif deleted.status_code == 200:
                result.delete_won += 1
    result.jobs_on_missing_files = jobs_on_missing_files(server)
    return result


def _later(seconds: float, call: Callable[[], httpx.Response]) -> httpx.Response:
    time.sleep(seconds)
    return call()


def jobs_on_missing_files(server: Server) -> int:
    """Jobs whose training file has no row or is not on disk."""
    missing = 0
    after = None
    while True:
        page = server.client.get(
            "/v1/fine_tuning/jobs", params={"limit": 100, **({"after": after} if after else {})}
        ).json()
        for job in page["data"]:
            file_id = job["training_file"]
            gone = server.client.get(f"/v1/files/{file_id}").status_code == 404
            missing += gone or not (server.home / "files" / file_id).is_file()
        if not page["has_more"]:
            return missing
        after = page["data"][-1]["id"]


def queue_bound(server: Server, model_id: str, folder: Path, creations: int) -> int:
    """How many of `creations` concurrent job creations were accepted (each answer is 200 or
    429 queue_full with a `Retry-After`)."""
    file_id = server.upload(pairs_file(folder, seed=10**6))["id"]
    clients = [httpx.Client(base_url=server.url, timeout=120) for _ in range(creations)]
    try:
        answers = all_at_once(
            [
                (lambda c=c: c.post("/v1/fine_tuning/jobs", json=job_request(model_id, file_id)))
                for c in clients
            ]
        )
    finally:
        for c in clients:
            c.close()
    codes = {a.status_code for a in answers}
    assert codes <= {200, 429}, [a.text for a in answers if a.status_code not in (200, 429)]
    refused = [a for a in answers if a.status_code == 429]
    assert all(a.json()["error"]["code"] == "queue_full" for a in refused)
    # Refused early or in the insert, a full queue says when to ask again.
    assert all(a.headers.get("retry-after") == "30" for a in refused)
    return sum(a.status_code == 200 for a in answers)


@dataclass
class KillResult:
    trials: int = 0
    uploads_started: int = 0
    listed_whole: int = 0
    absent: int = 0
    orphans: int = 0
    swept: int = 0
    broken: int = 0
    integrity: list[str] = field(default_factory=list)


def kill_during_uploads(
    home: Path,
    database_url: str | None,
    folder: Path,
    trials: int,
    uploads: int,
    size: int = 64 * 1024,
) -> KillResult:
    """`trials` times: start a server, start `uploads` concurrent uploads, kill -9 the server
    mid-way, start it again and let its start-up sweep run. Every upload is then listed with
    its whole content, or absent; nothing in files/ lacks a row."""
    result = KillResult()
    bodies = {i: pairs_body(size, seed=i) for i in range(uploads)}
    sums = {hashlib.sha256(b).hexdigest(): i for i, b in bodies.items()}
    for trial in range(trials):
        server = Server(home, database_url, args=NO_WORKER)
        # A server in use: its first upload has loaded the statistics' tokenizer.
        warm = server.upload(pairs_file(folder, seed=-1 - trial))["id"]
        server.client.delete(f"/v1/files/{warm}").raise_for_status()
        threads = [
            threading.Thread(target=_upload, args=(server.url, bodies[i]), daemon=True)
            for i in range(uploads)
        ]
        for t in threads:
            t.start()
        _first_file_stored(home / "files")  # the bad moment: uploads are being stored
        # Some uploads are still arriving, some being checked, some recorded.
        time.sleep(random.Random(trial).uniform(0.0, KILL_WITHIN))
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        server.client.close()
        for t in threads:
            t.join(timeout=30)
        result.uploads_started += uploads
        result.trials += 1
        time.sleep(GRACE_SECONDS + 0.5)  # a restart after a crash: nothing left is young
        server = Server(home, database_url, args=NO_WORKER)  # swept before it answers
        try:
            result.integrity.append(integrity(home, database_url))
            listed = {f["id"] for f in server.client.get("/v1/files").json()["data"]}
            stored = stored_sums(home, database_url)
            result.broken += len(listed ^ set(stored))  # listed and recorded alike
            # A stored file's row index (`file-….idx`) is its own.
            on_disk = {p.name.removesuffix(".idx") for p in (home / "files").iterdir()}
            result.orphans += len(on_disk - set(stored))
            for file_id, sha256 in stored.items():
                path = home / "files" / file_id
                whole = (
                    path.is_file()
                    and sha256 in sums
                    and hashlib.sha256(path.read_bytes()).hexdigest() == sha256
                )
                result.broken += not whole
                result.listed_whole += whole
            # Clean up for the next trial through the API, as a user would.
            for file_id in listed:
                server.client.delete(f"/v1/files/{file_id}")
        finally:
            server.stop()
        # What the start-up sweep removed: the orphans the kill left.
        log = Path(server.log.name).read_text(errors="replace")
        result.swept += log.count("which no database row refers to")
    result.absent = result.uploads_started - result.listed_whole
    return result


def _first_file_stored(files: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not any(files.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.005)


def _upload(url: str, body: bytes) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the server is killed under it
        httpx.post(
            f"{url}/v1/files",
            files={"file": ("cut.jsonl", body)},
            data={"purpose": "fine-tune"},
            timeout=30,
        )


def stored_sums(home: Path, database_url: str | None) -> dict[str, str]:
    """{file id: sha256} as the database records them."""
    engine = sqlalchemy.create_engine(database_url or f"sqlite:///{home / 'tuneforge.db'}")
    try:
        with engine.connect() as conn:
            return dict(conn.exec_driver_sql("SELECT id, sha256 FROM files").all())
    finally:
        engine.dispose()


def integrity(home: Path, database_url: str | None) -> str:
    """SQLite's integrity_check; on PostgreSQL, a consistency check of its own: every
    event and checkpoint belongs to a job, and every job's files exist."""
    if not database_url:
        with sqlite3.connect(home / "tuneforge.db") as conn:
            return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as conn:
            loose = conn.exec_driver_sql(
                "SELECT count(*) FROM events e LEFT JOIN jobs j ON j.id = e.job_id "
                "WHERE j.id IS NULL"
            ).scalar()
            conn.exec_driver_sql("SELECT count(*) FROM files").scalar()
    finally:
        engine.dispose()
    return "ok" if loose == 0 else f"{loose} events without a job"
