"""A job's metadata is filtered in SQL (table job_metadata, migration 0011), on SQLite and
PostgreSQL; jobs from before the migration take their pairs from their spec."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

from tuneforge.db.migrate import MIGRATIONS
from tuneforge.db.store import Store


def add(store: Store, job_id: str, created_at: float, metadata: dict[str, str] | None) -> None:
    store.insert_job(
        {
            "id": job_id,
            "kind": "supervised",
            "model": "m",
            "status": "queued",
            "spec": {"metadata": metadata} if metadata is not None else {},
            "created_at": created_at,
        },
        "Created.",
    )


def ids(store: Store, **filters: object) -> list[str]:
    rows, _ = store.list_jobs(limit=100, **filters)  # type: ignore[arg-type]
    return [r["id"] for r in rows]


def test_listings_filter_on_metadata_in_the_database(store: Store) -> None:
    add(store, "ftjob-a", 1.0, {"team": "support", "run": "1"})
    add(store, "ftjob-b", 2.0, {"team": "support", "run": "2"})
    add(store, "ftjob-c", 3.0, {"team": "sales"})
    add(store, "ftjob-d", 4.0, None)
    assert ids(store, metadata={"team": "support"}) == ["ftjob-b", "ftjob-a"]
    assert ids(store, metadata={"team": "support", "run": "2"}) == ["ftjob-b"]
    assert ids(store, metadata={"team": "nobody"}) == []
    assert ids(store, metadata={}) == ["ftjob-d"]
    assert ids(store) == ["ftjob-d", "ftjob-c", "ftjob-b", "ftjob-a"]
    # Pages of filtered jobs, as of any listing.
    first, more = store.list_jobs(limit=1, metadata={"team": "support"})
    assert [r["id"] for r in first] == ["ftjob-b"] and more
    rest, more = store.list_jobs(after="ftjob-b", limit=1, metadata={"team": "support"})
    assert [r["id"] for r in rest] == ["ftjob-a"] and not more


def test_jobs_from_before_the_migration_are_found_by_their_metadata(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0010")
        conn.exec_driver_sql(
            "INSERT INTO jobs (id, kind, model, status, spec, created_at, cancel_requested, "
            "attempts) VALUES ('ftjob-old', 'supervised', 'm', 'succeeded', "
            """'{"metadata": {"team": "support"}}', 1.0, 0, 0)"""
        )
    engine.dispose()
    store = Store(url)
    store.create_schema()
    assert ids(store, metadata={"team": "support"}) == ["ftjob-old"]
    assert ids(store, metadata={}) == []
    store.dispose()
