"""Optuna's storage for a study, kept in tuneforge's database.

Optuna's JournalStorage keeps a study as a log of operations and rebuilds it by replaying the
log; `StudyJournal` keeps that log in the `study_journal` table (one log per tuneforge study),
so a study survives restarts and can be driven from any process that reaches the database.
Optuna's RDBStorage is not used: its tables would share `alembic_version` with tuneforge's
migrations, and each would take the other's revision for its own.
"""

from __future__ import annotations

from typing import Any

from optuna.storages.journal import BaseJournalBackend, JournalStorage

from tuneforge.db.store import Store


class StudyJournal(BaseJournalBackend):
    """The operation log of one study's Optuna storage, in the `study_journal` table."""

    def __init__(self, store: Store, study_id: str):
        self.store = store
        self.study_id = study_id

    def read_logs(self, log_number_from: int) -> list[dict[str, Any]]:
        return self.store.read_study_journal(self.study_id, log_number_from)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        self.store.append_study_journal(self.study_id, logs)


def study_storage(store: Store, study_id: str) -> JournalStorage:
    """The Optuna storage of a tuneforge study."""
    return JournalStorage(StudyJournal(store, study_id))
