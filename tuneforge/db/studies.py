"""Hyperparameter studies (tuneforge.studies): the study, its trials (each one a job), and
the log of Optuna's JournalStorage for the study."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, select

from tuneforge.db import tables as t
from tuneforge.db.engine import Database, after_cursor, every, one, page
from tuneforge.db.records import Row, Study, Trial
from tuneforge.errors import InvalidStateError, StudyNotFoundError


class StudyStore(Database):
    """The `studies`, `study_trials` and `study_journal` tables."""

    def insert_study(self, row: Row) -> Study:
        with self._tx() as conn:
            conn.execute(t.studies.insert().values(cancel_requested=False, **row))
        return self.require_study(row["id"])

    def get_study(self, study_id: str) -> Study | None:
        with self._tx() as conn:
            found = conn.execute(select(t.studies).where(t.studies.c.id == study_id)).first()
        return one(Study, found)

    def require_study(self, study_id: str) -> Study:
        study = self.get_study(study_id)
        if study is None:
            raise StudyNotFoundError(f"No study with id {study_id!r}.", param="id")
        return study

    def list_studies(
        self, *, after: str | None = None, limit: int = 20, status: str | None = None
    ) -> tuple[list[Study], bool]:
        query = select(t.studies)
        if status:
            query = query.where(t.studies.c.status == status)
        with self._tx() as conn:
            query = after_cursor(conn, query, t.studies, after)
            rows = conn.execute(
                query.order_by(t.studies.c.created_at.desc(), t.studies.c.id.desc()).limit(
                    limit + 1
                )
            ).all()
        return page(Study, rows, limit)

    def claim_studies(self, driver_id: str, hold_seconds: float) -> list[str]:
        """Running studies this driver now coordinates: those it held, nobody held, or whose
        driver's claim ran out (it stopped or vanished), each claimed for `hold_seconds`."""
        now = time.time()
        claimed = []
        with self._tx() as conn:
            ids = conn.execute(
                select(t.studies.c.id).where(t.studies.c.status == "running")
            ).scalars()
            for study_id in list(ids):
                changed = conn.execute(
                    t.studies.update()
                    .where(
                        t.studies.c.id == study_id,
                        t.studies.c.status == "running",
                        (t.studies.c.driver_id.is_(None))
                        | (t.studies.c.driver_id == driver_id)
                        | (t.studies.c.driver_until < now),
                    )
                    .values(driver_id=driver_id, driver_until=now + hold_seconds)
                ).rowcount
                if changed:
                    claimed.append(study_id)
        return claimed

    def release_studies(self, driver_id: str) -> None:
        with self._tx() as conn:
            conn.execute(
                t.studies.update()
                .where(t.studies.c.driver_id == driver_id)
                .values(driver_id=None, driver_until=None)
            )

    def request_study_cancel(self, study_id: str) -> Study:
        """Flag a running study for its driver to cancel (with its trial jobs)."""
        with self._tx() as conn:
            changed = conn.execute(
                t.studies.update()
                .where(t.studies.c.id == study_id, t.studies.c.status == "running")
                .values(cancel_requested=True)
            ).rowcount
        study = self.require_study(study_id)
        if not changed:
            raise InvalidStateError(f"Study {study_id} is {study.status}; it cannot be cancelled.")
        return study

    def finish_study(self, study_id: str, driver_id: str, status: str, **fields: Any) -> bool:
        """End a running study held by `driver_id`; False if it was not (any more)."""
        with self._tx() as conn:
            return bool(
                conn.execute(
                    t.studies.update()
                    .where(
                        t.studies.c.id == study_id,
                        t.studies.c.status == "running",
                        t.studies.c.driver_id == driver_id,
                    )
                    .values(
                        status=status,
                        finished_at=time.time(),
                        driver_id=None,
                        driver_until=None,
                        **fields,
                    )
                ).rowcount
            )

    def update_study_result(self, study_id: str, result: Row) -> None:
        with self._tx() as conn:
            conn.execute(t.studies.update().where(t.studies.c.id == study_id).values(result=result))

    # -- trials ------------------------------------------------------------------------------

    def insert_trial(self, row: Row) -> None:
        with self._tx() as conn:
            conn.execute(t.study_trials.insert().values(**row))

    def update_trial(self, study_id: str, number: int, **fields: Any) -> None:
        with self._tx() as conn:
            conn.execute(
                t.study_trials.update()
                .where(t.study_trials.c.study_id == study_id, t.study_trials.c.number == number)
                .values(**fields)
            )

    def list_trials(self, study_id: str) -> list[Trial]:
        with self._tx() as conn:
            rows = conn.execute(
                select(t.study_trials)
                .where(t.study_trials.c.study_id == study_id)
                .order_by(t.study_trials.c.number)
            ).all()
        return every(Trial, rows)

    # -- Optuna's journal (tuneforge.studies.journal) ----------------------------------------

    def read_study_journal(self, study_id: str, from_seq: int) -> list[Row]:
        """Optuna journal entries of a study, from `from_seq` on, in order."""
        with self._tx() as conn:
            rows = conn.execute(
                select(t.study_journal.c.entry)
                .where(t.study_journal.c.study_id == study_id, t.study_journal.c.seq >= from_seq)
                .order_by(t.study_journal.c.seq)
            ).scalars()
            return list(rows)

    def append_study_journal(self, study_id: str, entries: list[Row]) -> None:
        """Append entries after the study's last one, in one transaction."""
        with self._tx() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(
                    select(t.studies.c.id).where(t.studies.c.id == study_id).with_for_update()
                )
            last = conn.execute(
                select(func.max(t.study_journal.c.seq)).where(
                    t.study_journal.c.study_id == study_id
                )
            ).scalar()
            start = 0 if last is None else int(last) + 1
            if entries:
                conn.execute(
                    t.study_journal.insert(),
                    [
                        {"study_id": study_id, "seq": start + i, "entry": entry}
                        for i, entry in enumerate(entries)
                    ],
                )
