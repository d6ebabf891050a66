"""What every part of the store shares: the engine (SQLite or PostgreSQL), one transaction
per call, reading rows into records, and the newest-first page cursor."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy
from sqlalchemy import Connection, Engine, Table, create_engine, event, select
from sqlalchemy.pool import NullPool

from tuneforge.db.migrate import migrate
from tuneforge.db.records import Record

R = TypeVar("R", bound=Record)
# A row as SQLAlchemy returns it, of any number of columns.
SqlRow = sqlalchemy.Row[*tuple[Any, ...]]


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" below decide when transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # IMMEDIATE takes the write lock up front: API, worker and job processes write the
        # same file, and a deferred transaction that upgrades to a write can fail at once.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Database:
    """An engine and its transactions. Each resource's class (tuneforge.db.files, .jobs, …)
    adds its SQL to this; tuneforge.db.store.Store is all of them together."""

    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine = _sqlite_engine(url)
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)

    def create_schema(self) -> None:
        """Apply the migrations (see tuneforge.db.migrate)."""
        migrate(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn


def one(record: type[R], row: SqlRow | None) -> R | None:
    """A row read as `record`, or None for no row."""
    return None if row is None else record(row._mapping)


def every(record: type[R], rows: Iterable[SqlRow]) -> list[R]:
    """Rows read as `record`."""
    return [record(row._mapping) for row in rows]


def page(record: type[R], rows: Sequence[SqlRow], limit: int) -> tuple[list[R], bool]:
    """A page of a listing read `limit + 1` rows deep: its first `limit` rows as `record`, and
    whether more follow."""
    return every(record, rows[:limit]), len(rows) > limit


def after_cursor(conn: Connection, query: Any, table: Table, after: str | None) -> Any:
    """Restrict a newest-first listing to the rows that come after the row `after`."""
    if not after:
        return query
    anchor = conn.execute(select(table.c.created_at).where(table.c.id == after)).scalar()
    if anchor is None:
        return query.where(False)
    return query.where(
        (table.c.created_at < anchor) | ((table.c.created_at == anchor) & (table.c.id < after))
    )
