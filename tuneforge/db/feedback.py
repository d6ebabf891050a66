"""Users' ratings of a model's answers (tuneforge.feedback)."""

from __future__ import annotations

from sqlalchemy import select

from tuneforge.db import tables as t
from tuneforge.db.engine import Database, every, one, page
from tuneforge.db.records import Feedback, Row


class FeedbackStore(Database):
    """The `feedback` table."""

    def insert_feedback(self, row: Row) -> Row:
        with self._tx() as conn:
            conn.execute(t.feedback.insert().values(**row))
        return row

    def get_feedback(self, feedback_id: str) -> Feedback | None:
        with self._tx() as conn:
            found = conn.execute(select(t.feedback).where(t.feedback.c.id == feedback_id)).first()
        return one(Feedback, found)

    def list_feedback(
        self,
        *,
        model: str | None = None,
        registered_model: str | None = None,
        rating: str | None = None,
        since: float | None = None,
        until: float | None = None,
        after: str | None = None,
        limit: int | None = 100,
        oldest_first: bool = False,
    ) -> tuple[list[Feedback], bool]:
        """Feedback matching every filter given (`since` inclusive, `until` exclusive), newest
        first unless `oldest_first`; `after` is the id of the previous page's last row."""
        fb = t.feedback
        query = select(fb)
        if model:
            query = query.where(fb.c.model == model)
        if registered_model:
            query = query.where(fb.c.registered_model == registered_model)
        if rating:
            query = query.where(fb.c.rating == rating)
        if since is not None:
            query = query.where(fb.c.created_at >= since)
        if until is not None:
            query = query.where(fb.c.created_at < until)
        order = (
            (fb.c.created_at, fb.c.id) if oldest_first else (fb.c.created_at.desc(), fb.c.id.desc())
        )
        with self._tx() as conn:
            if after is not None:
                cursor = conn.execute(select(fb.c.created_at).where(fb.c.id == after)).first()
                if cursor is not None:
                    if oldest_first:
                        query = query.where(
                            (fb.c.created_at > cursor.created_at)
                            | ((fb.c.created_at == cursor.created_at) & (fb.c.id > after))
                        )
                    else:
                        query = query.where(
                            (fb.c.created_at < cursor.created_at)
                            | ((fb.c.created_at == cursor.created_at) & (fb.c.id < after))
                        )
            query = query.order_by(*order)
            if limit is not None:
                query = query.limit(limit + 1)
            rows = conn.execute(query).all()
        if limit is None:
            return every(Feedback, rows), False
        return page(Feedback, rows, limit)
