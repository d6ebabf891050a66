"""Job creation against a real server, concurrently (issue 22): a job's creation and its
file's deletion serialise (exactly one wins, and no job names a deleted file), and the
per-key queue bound holds exactly under concurrent creations. On SQLite and PostgreSQL;
bench/faults.py runs the same with the issue's full counts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fault_campaign import NO_WORKER, queue_bound, race_create_delete
from tests.server import TEST_ENV, Server

RACES = 8
BOUND = 5
CREATIONS = 16


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    return None if request.param == "sqlite" else request.getfixturevalue("postgres_url")


@pytest.fixture
def server(tmp_path: Path, database_url: str | None, offline_hub: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "tuneforge-data", database_url, args=NO_WORKER)
    yield srv
    srv.stop()


@pytest.fixture
def bounded_server(tmp_path: Path, database_url: str | None, offline_hub: Path) -> Iterator[Server]:
    env = {**TEST_ENV, "TUNEFORGE_MAX_QUEUED_JOBS_PER_KEY": str(BOUND)}
    srv = Server(tmp_path / "tuneforge-data", database_url, args=NO_WORKER, env=env)
    yield srv
    srv.stop()


def test_creating_a_job_and_deleting_its_file_at_once_one_wins(
    server: Server, model_id: str, tmp_path: Path
) -> None:
    result = race_create_delete(server, model_id, tmp_path, RACES)
    assert result.server_errors == 0, result.outcomes
    assert result.both_won == 0, result.outcomes
    assert result.job_won + result.delete_won == RACES, result.outcomes
    assert result.jobs_on_missing_files == 0
    # The loser's answer says why: 404 for a job on a deleted file, 400 for a file in use.
    assert {o for o in result.outcomes} <= {(200, 400), (404, 200)}, result.outcomes
    # Jobs that won keep their files: deleting them now is refused.
    for job in server.client.get("/v1/fine_tuning/jobs").json()["data"]:
        refused = server.client.delete(f"/v1/files/{job['training_file']}")
        assert refused.status_code == 400, refused.text


def test_the_queue_bound_is_exact_under_concurrent_creations(
    bounded_server: Server, model_id: str, tmp_path: Path
) -> None:
    server = bounded_server
    assert queue_bound(server, model_id, tmp_path, CREATIONS) == BOUND
    queued = server.client.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]
    assert len(queued) == BOUND
    # A job that leaves the queue makes room for exactly one more.
    server.client.post(f"/v1/fine_tuning/jobs/{queued[0]['id']}/cancel").raise_for_status()
    assert queue_bound(server, model_id, tmp_path, 4) == 1
