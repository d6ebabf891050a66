"""Creating, cancelling and promoting studies: what the REST API and the CLI share.

The search itself runs in a `StudyDriver` (tuneforge.studies.driver) beside the workers.
"""

from __future__ import annotations

import time

from tuneforge.config import Settings
from tuneforge.db.records import Trial
from tuneforge.db.store import Row, Store, new_id
from tuneforge.errors import InvalidRequestError, InvalidStateError
from tuneforge.jobs.data import JobInputs, load_job_data
from tuneforge.registry.versions import registry_name
from tuneforge.studies.spec import StudyCreate, check_search_space
from tuneforge.training.llm import check_quantization

# A trial's state in the study (Optuna's, plus why a trial did not complete).
TRIAL_STATES = ("running", "complete", "pruned", "failed", "cancelled")


def create_study(store: Store, settings: Settings, request: StudyCreate) -> Row:
    """Check the job and the search space as a job would be checked, then record the study;
    a driver starts its trials. Nothing is written unless every check passes."""
    problems = check_search_space(request)
    if problems:
        raise InvalidRequestError(
            "; ".join(f"{p['param']}: {p['message']}" for p in problems),
            param=problems[0]["param"],
            details=problems,
        )
    job = request.job
    check_quantization(job)
    inputs = JobInputs(store, settings, job)
    load_job_data(inputs, job.seed or 0)
    _ = inputs.model  # it must exist and be safe to load (the LLM kinds have resolved it)
    # One seed for every trial: the trials differ by the searched values alone.
    seed = job.seed if job.seed is not None else int(time.time() * 1000) % (2**31 - 1)
    sampler_seed = request.sampler.seed if request.sampler.seed is not None else seed
    stored = request.model_copy(
        update={
            "job": job.model_copy(update={"seed": seed}),
            "sampler": request.sampler.model_copy(update={"seed": sampler_seed}),
        }
    )
    study_id = new_id("study")
    return store.insert_study(
        {
            "id": study_id,
            "name": request.name or study_id.removeprefix("study-")[:12],
            "status": "running",
            "spec": stored.model_dump(mode="json"),
            "created_at": time.time(),
        }
    )


def best_trial(study: Row, trials: list[Trial]) -> Trial | None:
    """The completed trial with the best value, or None."""
    spec = StudyCreate.model_validate(study["spec"])
    done = [t for t in trials if t["state"] == "complete" and t["value"] is not None]
    if not done:
        return None
    sign = -1.0 if spec.objective.resolved_direction == "minimize" else 1.0
    return max(done, key=lambda t: (sign * t["value"], -t["number"]))


def best_version(store: Store, study: Row) -> tuple[str, int]:
    """The registry name and version of the study's best trial's model."""
    best = best_trial(study, store.list_trials(study["id"]))
    if best is None:
        raise InvalidStateError(f"Study {study['id']} has no completed trial yet.")
    job = store.require_job(best["job_id"])
    registered = (job.get("result") or {}).get("registered_model")
    if not registered:
        raise InvalidStateError(f"The best trial's job {job['id']} registered no model.")
    return str(registered["name"]), int(registered["version"])


def promote_study(store: Store, study_id: str, alias: str) -> tuple[str, int]:
    """Point `alias` at the best trial's model version; returns its registry name and
    version."""
    study = store.require_study(study_id)
    name, version = best_version(store, study)
    store.set_alias(name, alias, version)
    return name, version


def study_registry_name(spec: StudyCreate) -> str:
    return registry_name(spec.job)
