"""The fault campaign of issue 22 against a real `tuneforge serve`, on SQLite and PostgreSQL:

1. races: `--races` times, a job's creation and its file's deletion at the same moment;
   counts who won, answers >= 500, and jobs whose file is gone afterwards (must be 0);
2. kill -9: `--trials` times, `--uploads` concurrent uploads of 64 KiB, the server killed -9
   up to 3 s after the first upload reached files/ (so that some uploads are still arriving,
   some being checked, some recorded), restarted (its start-up sweep runs before it
   answers); counts orphans in files/ (must be 0), files listed and whole, absent ones, and
   runs SQLite's integrity_check (or a consistency check on PostgreSQL) after every trial;
3. queue bound: `--creations` concurrent job creations against a bound of `--bound` queued
   jobs per key; accepted must equal the bound.

    python bench/faults.py [--database-url postgresql+psycopg://...] [--races 100] ...

The PostgreSQL run takes a fresh schema in the given database and drops it afterwards.
Prints the figures and writes bench/results/faults-<database>-<time>.json; exit code 1 when a
figure misses its target.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fault_campaign import (  # noqa: E402
    NO_WORKER,
    kill_during_uploads,
    queue_bound,
    race_create_delete,
)
from tests.offline_models import MINILM, build_hf_cache  # noqa: E402
from tests.server import TEST_ENV, Server  # noqa: E402


def fresh_schema(url: str) -> tuple[str, str]:
    import sqlalchemy

    schema = f"faults_{uuid.uuid4().hex[:10]}"
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    engine.dispose()
    sep = "&" if "?" in url else "?"
    return schema, f"{url}{sep}options=-csearch_path%3D{schema}"


def drop_schema(url: str, schema: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    engine.dispose()


def campaign(args: argparse.Namespace, work: Path) -> dict[str, object]:
    figures: dict[str, object] = {}
    schemas: list[str] = []

    def database() -> str | None:
        if not args.database_url:
            return None
        schema, url = fresh_schema(args.database_url)
        schemas.append(schema)
        return url

    for part in ("races", "bound", "kill"):
        (work / part).mkdir()
    try:
        server = Server(work / "races" / "tuneforge-data", database(), args=NO_WORKER)
        started = time.monotonic()
        try:
            races = race_create_delete(server, MINILM, work / "races", args.races)
        finally:
            server.stop()
        figures["races"] = {**asdict(races), "seconds": round(time.monotonic() - started, 1)}
        figures["races"].pop("outcomes")  # type: ignore[union-attr]
        print(
            f"races: {races.races}, job won {races.job_won}, delete won {races.delete_won}, "
            f"both won {races.both_won}, answers >= 500: {races.server_errors}, "
            f"jobs on missing files: {races.jobs_on_missing_files}",
            flush=True,
        )

        # The rate limit's burst (120) would answer some of them first.
        env = {
            **TEST_ENV,
            "TUNEFORGE_MAX_QUEUED_JOBS_PER_KEY": str(args.bound),
            "TUNEFORGE_RATE_LIMIT_BURST": str(2 * args.creations),
        }
        server = Server(work / "bound" / "tuneforge-data", database(), args=NO_WORKER, env=env)
        try:
            accepted = queue_bound(server, MINILM, work / "bound", args.creations)
        finally:
            server.stop()
        figures["queue_bound"] = {
            "bound": args.bound,
            "creations": args.creations,
            "accepted": accepted,
        }
        print(
            f"queue bound {args.bound}: {accepted} of {args.creations} concurrent creations "
            "accepted",
            flush=True,
        )

        started = time.monotonic()
        kills = kill_during_uploads(
            work / "kill" / "tuneforge-data",
            database(),
            work / "kill",
            trials=args.trials,
            uploads=args.uploads,
        )
        figures["kill_9"] = {**asdict(kills), "seconds": round(time.monotonic() - started, 1)}
        print(
            f"kill -9: {kills.trials} trials x {args.uploads} uploads: {kills.listed_whole} "
            f"listed and whole, {kills.absent} absent, {kills.broken} broken, "
            f"{kills.orphans} orphans after the restart ({kills.swept} removed by its sweep); "
            "integrity "
            f"{sum(i == 'ok' for i in kills.integrity)}/{kills.trials} ok",
            flush=True,
        )
    finally:
        for schema in schemas:
            assert args.database_url
            drop_schema(args.database_url, schema)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="PostgreSQL (default: SQLite in a temp folder)")
    parser.add_argument("--races", type=int, default=100)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--bound", type=int, default=100)
    parser.add_argument("--creations", type=int, default=150)
    args = parser.parse_args()
    hf_home = Path(tempfile.mkdtemp(prefix="faults-hf-"))
    build_hf_cache(hf_home)
    import os

    os.environ.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
        figures = campaign(args, Path(tmp))
    db = "postgresql" if args.database_url else "sqlite"
    out = ROOT / "bench" / "results" / f"faults-{db}-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {"database": db, "args": vars(args) | {"database_url": None}, **figures}, indent=2
        )
    )
    print(f"wrote {out.relative_to(ROOT)}")
    races, kills, bound = figures["races"], figures["kill_9"], figures["queue_bound"]
    missed = (
        races["both_won"]
        or races["server_errors"]  # type: ignore[index]
        or races["jobs_on_missing_files"]
        or kills["orphans"]  # type: ignore[index]
        or kills["broken"]  # type: ignore[index]
        or any(i != "ok" for i in kills["integrity"])  # type: ignore[index]
        or bound["accepted"] != bound["bound"]
    )  # type: ignore[index]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
