"""Hostile requests against a real `tuneforge serve`, by the thousand, on SQLite and on
PostgreSQL: how many answers of each status, how many 5xx, how many errors outside our error
shape, and how many files left in the data folder that no row names.

The requests are tests/api/hostile_requests.py's (every operation of the OpenAPI document;
hostile ids, cursors, query values, Last-Event-ID headers, JSON bodies and uploads). The
server runs without a worker, so no request that happens to queue a job trains.

    python bench/fuzz_requests.py [--requests 5000] [--database-url postgresql+psycopg://...]

With `--database-url` the same run follows on a fresh schema of that PostgreSQL database
(dropped afterwards). Results: a table on stdout and bench/results/fuzz-requests-<time>.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.* and tuneforge when run as `python bench/...`

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402

from tests.api.hostile_requests import (  # noqa: E402
    Request,
    cancelled_job,
    operations,
    orphans,
    problems,
    requests,
    vocabulary,
)
from tests.offline_models import MINILM, build_hf_cache  # noqa: E402
from tests.server import Server  # noqa: E402

ENV = {
    "TUNEFORGE_RATE_LIMIT_PER_MINUTE": "1000000",
    "TUNEFORGE_RATE_LIMIT_BURST": "1000000",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}
# Triplets for one real embedding job, cancelled while it waits.
SAMPLE = "".join(
    json.dumps({"question": f"question {i}", "positive": f"answer {i}", "negative": f"other {i}"})
    + "\n"
    for i in range(40)
).encode()


@contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """A fresh schema in `url`'s database, dropped afterwards."""
    import sqlalchemy

    schema = f"tf_fuzz_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


def fuzz(database: str, database_url: str | None, count: int, rng_seed: int) -> dict[str, Any]:
    """`count` hostile requests against a fresh server; what they were answered."""
    with tempfile.TemporaryDirectory(prefix="tuneforge-fuzz-") as tmp:
        home = Path(tmp) / "data"
        server = Server(home, database_url=database_url, args=("--no-worker",), env=ENV)
        try:
            sample = Path(tmp) / "sample.jsonl"
            sample.write_bytes(SAMPLE)
            file_id = server.upload(sample)["id"]
            known = [file_id, cancelled_job(server.client, file_id, MINILM), "ftevent-1"]
            document = server.client.get("/openapi.json").json()
            ops = operations(document)
            statuses: collections.Counter[int] = collections.Counter()
            failures: list[str] = []
            started = time.monotonic()

            @seed(rng_seed)
            @settings(
                max_examples=count,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(request=requests(ops, vocabulary(document), known))
            def call(request: Request) -> None:
                response = request.send(server.client)
                statuses[response.status_code if response else 0] += 1
                failures.extend(
                    f"{request.method} {request.url[:160]}: {p}" for p in problems(response)
                )

            call()
            seconds = time.monotonic() - started
            left = orphans(home, server.client)
            alive = server.client.get("/health").status_code == 200
        finally:
            server.stop()
    return {
        "database": database,
        "operations": len(ops),
        "requests": sum(statuses.values()),
        "seconds": round(seconds, 1),
        "statuses": dict(sorted(statuses.items())),
        "5xx": sum(n for s, n in statuses.items() if s >= 500),
        "dropped": statuses.get(0, 0),
        "failures": failures,
        "orphans": left,
        "alive_after": alive,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--database-url", help="PostgreSQL, for a second run on it")
    parser.add_argument("--seed", type=int, default=22)
    args = parser.parse_args()
    os.environ.update(ENV)
    # all-MiniLM-L6-v2 offline, for the one job (never trained: the server runs no worker).
    hub = Path(tempfile.mkdtemp(prefix="tuneforge-fuzz-hf-"))
    os.environ["HF_HOME"] = str(build_hf_cache(hub))
    try:
        runs = [fuzz("sqlite", None, args.requests, args.seed)]
        if args.database_url:
            with postgres_schema(args.database_url) as url:
                runs.append(fuzz("postgresql", url, args.requests, args.seed))
    finally:
        shutil.rmtree(hub, ignore_errors=True)
    print(
        "| database | operations | requests | seconds | answers by status | 5xx | dropped | "
        "not in our shape | orphans |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        shape = sum(1 for f in run["failures"] if "not in our error shape" in f)
        by_status = ", ".join(f"{s or 'dropped'}: {n}" for s, n in run["statuses"].items())
        print(
            f"| {run['database']} | {run['operations']} | {run['requests']} | "
            f"{run['seconds']} | {by_status} | {run['5xx']} | {run['dropped']} | {shape} | "
            f"{len(run['orphans'])} |"
        )
        for failure in run["failures"][:30]:
            print(f"  {run['database']}: {failure}")
    out = ROOT / "bench" / "results" / f"fuzz-requests-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(runs, indent=1))
    bad = any(r["failures"] or r["orphans"] or not r["alive_after"] for r in runs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
