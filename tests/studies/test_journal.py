"""Optuna's storage in tuneforge's database: a study survives its process, on SQLite and
PostgreSQL, next to tuneforge's own migrations."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from tuneforge.db.store import Store
from tuneforge.studies.journal import study_storage


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    db = Store(url)
    db.create_schema()
    yield db
    db.dispose()


def add_study(store: Store, study_id: str) -> None:
    store.insert_study({"id": study_id, "name": study_id, "status": "running", "spec": {},
                        "created_at": time.time()})


def test_a_study_replays_from_the_database(store: Store) -> None:
    add_study(store, "study-a")
    add_study(store, "study-b")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=study_storage(store, "study-a"), study_name="study-a",
                                direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    space = {"x": optuna.distributions.FloatDistribution(-1, 1)}
    for _ in range(3):
        trial = study.ask(space)
        trial.report(trial.params["x"] / 2, 1)
        study.tell(trial, trial.params["x"])
    pruned = study.ask(space)
    pruned.report(-5.0, 1)
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    running = study.ask(space)

    # Another process (a fresh storage over the same rows) sees the same study.
    again = optuna.load_study(storage=study_storage(store, "study-a"), study_name="study-a")
    states = [t.state.name for t in again.trials]
    assert states == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED", "RUNNING"]
    assert again.best_value == max(t.params["x"] for t in study.trials[:3])
    assert again.trials[3].intermediate_values == {1: -5.0}
    # ... and may finish what the first one started.
    again.tell(running.number, 0.25)
    assert optuna.load_study(storage=study_storage(store, "study-a"),
                             study_name="study-a").trials[-1].value == 0.25
    # Each tuneforge study has a log of its own.
    assert optuna.get_all_study_names(study_storage(store, "study-b")) == []
    # tuneforge's migrations are untouched by Optuna's storage.
    store.create_schema()
