"""Uploaded data files."""

from __future__ import annotations

from sqlalchemy import select

from tuneforge.db import tables as t
from tuneforge.db.engine import Database, after_cursor, one, page
from tuneforge.db.records import File, Row
from tuneforge.jobs.status import TERMINAL


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

    def delete_file(self, file_id: str) -> bool:
        with self._tx() as conn:
            return conn.execute(t.files.delete().where(t.files.c.id == file_id)).rowcount == 1

    def files_in_use(self, file_id: str) -> list[str]:
        """Ids of unfinished jobs that train or validate on this file, or import it."""
        with self._tx() as conn:
            rows = conn.execute(
                select(t.jobs.c.id, t.jobs.c.spec).where(
                    t.jobs.c.status.not_in([s.value for s in TERMINAL])
                )
            ).all()
        return [
            r.id
            for r in rows
            if file_id in r.spec.get("training_files", [])
            or file_id == r.spec.get("validation_file")
            or file_id == r.spec.get("file")  # a model import's GGUF
        ]
