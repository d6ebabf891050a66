"""Search spaces: keys find their field in the job, and every reachable value is checked."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tuneforge.studies.spec import StudyCreate, apply_params, check_search_space, field_path

JOB = {"model": "org/m", "training_file": "file-1",
       "method": {"type": "embedding", "embedding": {"loss": "cosent"}}}
LLM = {"model": "org/llm", "training_file": "file-1", "method": {"type": "supervised"}}


def study(space: dict, job: dict = JOB, **extra) -> StudyCreate:
    return StudyCreate.model_validate({"job": job, "search_space": space,
                                       "objective": {"metric": "spearman_cosine"}, **extra})


def test_keys_find_their_fields() -> None:
    s = study({"learning_rate": {"low": 1e-5, "high": 1e-3, "log": True},
               "batch_size": [8, 16], "loss": ["cosent", "cosine"]})
    assert field_path(s.job, "learning_rate") == [
        "method", "embedding", "hyperparameters", "learning_rate"]
    assert field_path(s.job, "loss") == ["method", "embedding", "loss"]
    job = apply_params(s.job, {"learning_rate": 3e-4, "batch_size": 8, "loss": "cosine"})
    assert job.method.embedding.hyperparameters.learning_rate == 3e-4
    assert job.method.embedding.hyperparameters.batch_size == 8
    assert job.method.embedding.loss == "cosine"
    llm = study({"lora.r": {"low": 4, "high": 32}}, job=LLM)
    assert apply_params(llm.job, {"lora.r": 8}).method.supervised.lora.r == 8
    assert check_search_space(s) == [] and check_search_space(llm) == []
    assert s.objective.resolved_direction == "maximize"
    assert study({"n_epochs": [1]}).model_copy(update={"objective": {"metric": "loss"}})


def test_every_problem_is_reported_with_its_key() -> None:
    problems = check_search_space(study({"no_such_knob": [1, 2], "learning_rate": [1e-4]}))
    assert [p["param"] for p in problems] == ["search_space.no_such_knob"]
    problems = check_search_space(study({"batch_size": {"low": 0, "high": 8},
                                         "loss": ["cosent", "hinge"]}))
    assert [p["param"] for p in problems] == ["search_space.batch_size", "search_space.loss"]
    assert "'hinge'" in problems[1]["message"]


@pytest.mark.parametrize("space", [
    {"learning_rate": {"low": 1e-3, "high": 1e-5}},
    {"learning_rate": {"low": 0, "high": 1e-3, "log": True}},
    {"batch_size": []},
    {},
])
def test_bad_ranges_are_refused(space: dict) -> None:
    with pytest.raises(ValidationError):
        study(space)


def test_parallelism_is_at_most_the_trials() -> None:
    assert study({"n_epochs": [1, 2]}, n_trials=2, parallelism=8).parallelism == 2
