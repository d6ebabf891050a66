"""Hostile requests (tests/api/hostile_requests.py) against one real server on SQLite, across
every operation of its OpenAPI document: no answer is a 5xx, every error is in our shape, and
no file is left in the data folder that no file row names. The server runs no worker, so no
request that happens to queue a job starts training. bench/fuzz_requests.py sends thousands
of them, on PostgreSQL too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from tests.api.hostile_requests import (
    Request,
    cancelled_job,
    operations,
    orphans,
    problems,
    requests,
    vocabulary,
)
from tests.conftest import Server

pytestmark = pytest.mark.slow

# Enough for every operation to be called a few times in about 20 s on a shared core.
EXAMPLES = 400
FUZZ_ENV = {"TUNEFORGE_RATE_LIMIT_PER_MINUTE": "1000000", "TUNEFORGE_RATE_LIMIT_BURST": "1000000"}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    home = tmp_path_factory.mktemp("fuzz") / "data"
    server = Server(home, args=("--no-worker",), env=FUZZ_ENV)
    try:
        yield server, home
    finally:
        server.stop()


def test_hostile_requests_get_4xx_in_our_shape_and_leave_no_orphan(
        fuzzed: tuple[Server, Path], german_triplets: Path, model_id: str) -> None:
    server, home = fuzzed
    document = server.client.get("/openapi.json").json()
    ops = operations(document)
    assert len(ops) >= 60
    file_id = server.upload(german_triplets)["id"]
    known = [file_id, cancelled_job(server.client, file_id, model_id), "ftevent-1"]
    failures: list[str] = []
    sent = 0

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(request=requests(ops, vocabulary(document), known))
    def call(request: Request) -> None:
        nonlocal sent
        response = request.send(server.client)
        sent += 1
        failures.extend(f"{request.method} {request.url[:200]}: {p}" for p in problems(response))

    call()
    assert sent >= EXAMPLES // 2
    assert failures == []
    assert orphans(home, server.client) == []
    assert server.client.get("/health").status_code == 200
