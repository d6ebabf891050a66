"""Uploaded data files, and the lock that serialises a file's deletion with the creation of
a job that names it: exactly one of the two wins."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import Connection, select

from tuneforge.db import tables as t
from tuneforge.db.engine import Database, after_cursor, one, page
from tuneforge.db.records import File, Row
from tuneforge.errors import FileNotFoundInStoreError, InvalidRequestError
from tuneforge.jobs.status import TERMINAL


def files_of(spec: Mapping[str, Any]) -> set[str]:
    """The uploaded files a job's spec names: training and validation files, an evaluation's
    data file, a model import's GGUF."""
    named = set(spec.get("training_files") or [])
    named.update(spec.get(key) for key in ("validation_file", "file_id", "file"))
    named.discard(None)
    return {str(file_id) for file_id in named}


def lock_files(conn: Connection, file_ids: Collection[str], *, shared: bool) -> set[str]:
    """Which of `file_ids` have a row, those rows locked until commit: `shared` for a job
    that names them (many may at once), exclusive for a deletion. PostgreSQL locks the rows;
    SQLite's BEGIN IMMEDIATE (tuneforge.db.engine) already holds the whole database."""
    if not file_ids:
        return set()
    query = select(t.files.c.id).where(t.files.c.id.in_(sorted(file_ids)))
    if conn.dialect.name != "sqlite":
        query = query.with_for_update(read=shared)
    return set(conn.execute(query).scalars())


def jobs_using(conn: Connection, file_id: str) -> list[str]:
    """Ids of unfinished jobs whose spec names the file (see `files_of`)."""
    rows = conn.execute(
        select(t.jobs.c.id, t.jobs.c.spec).where(
            t.jobs.c.status.not_in([s.value for s in TERMINAL])
        )
    ).all()
    return sorted(r.id for r in rows if file_id in files_of(r.spec))


class FileStore(Database):
    """The `files` table."""

    def insert_file(self, row: Row) -> Row:
        with self._tx() as conn:
            conn.execute(t.files.insert().values(**row))
        return row

    def get_file(self, file_id: str) -> File | None:
        with self._tx() as conn:
            found = conn.execute(select(t.files).where(t.files.c.id == file_id)).first()
        return one(File, found)

    def list_files(
        self, *, purpose: str | None = None, after: str | None = None, limit: int = 100
    ) -> tuple[list[File], bool]:
        query = select(t.files)
        if purpose:
            query = query.where(t.files.c.purpose == purpose)
        with self._tx() as conn:
            query = after_cursor(conn, query, t.files, after)
            rows = conn.execute(
                query.order_by(t.files.c.created_at.desc(), t.files.c.id.desc()).limit(limit + 1)
            ).all()
        return page(File, rows, limit)

    def file_ids(self) -> set[str]:
        """Every stored file's id (what the start-up sweep keeps)."""
        with self._tx() as conn:
            return set(conn.execute(select(t.files.c.id)).scalars())

    def delete_unused_file(self, file_id: str) -> None:
        """Delete a file's row unless an unfinished job names it, in one transaction with the
        row locked: a job created at the same moment either commits first (and this refuses)
        or finds the row gone. FileNotFoundInStoreError, or InvalidRequestError naming the
        jobs."""
        with self._tx() as conn:
            if not lock_files(conn, [file_id], shared=False):
                raise FileNotFoundInStoreError(f"No file with id {file_id!r}.", param="file_id")
            users = jobs_using(conn, file_id)
            if users:
                raise InvalidRequestError(
                    f"File {file_id} is used by unfinished jobs: {', '.join(users)}.",
                    param="file_id",
                )
            conn.execute(t.files.delete().where(t.files.c.id == file_id))

    def files_in_use(self, file_id: str) -> list[str]:
        """Ids of unfinished jobs that train, validate or evaluate on this file, or import
        it."""
        with self._tx() as conn:
            return jobs_using(conn, file_id)
