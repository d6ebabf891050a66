"""The answers of `/v1/studies`: a hyperparameter search, its trials and the best one."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tuneforge.api.schemas.base import Public
from tuneforge.db.store import Row, Store
from tuneforge.jobs.status import JobStatus
from tuneforge.studies.service import TRIAL_STATES, best_trial
from tuneforge.studies.spec import StudyCreate


class StudyObjective(Public):
    metric: str
    direction: Literal["maximize", "minimize"]


class TrialPublic(Public):
    number: int
    job_id: str | None
    state: Literal["running", "complete", "pruned", "failed", "cancelled"]
    job_status: JobStatus | None
    params: dict[str, Any] = Field(..., description="The searched values it ran with.")
    value: float | None = Field(..., description="Its objective value, once complete.")
    intermediate_values: dict[str, int | float] = Field(
        ..., description="The objective reported at each step (as text), in step order."
    )
    last_step: int | None
    fine_tuned_model: str | None
    error: dict[str, Any] | None


class BestTrial(Public):
    number: int
    value: float
    params: dict[str, Any]
    job_id: str | None
    fine_tuned_model: str | None


class StudyPublic(Public):
    id: str
    object: Literal["study"] = "study"
    name: str
    status: Literal["running", "succeeded", "failed", "cancelled"]
    created_at: int
    finished_at: int | None
    cancel_requested: bool
    objective: StudyObjective
    n_trials: int
    parallelism: int
    search_space: dict[str, Any]
    pruner: dict[str, Any]
    sampler: dict[str, Any]
    job: dict[str, Any] = Field(..., description="The job every trial runs, as stored.")
    metadata: dict[str, str] | None
    trial_counts: dict[str, int] = Field(..., description="Trials by state.")
    trials: list[TrialPublic]
    best_trial: BestTrial | None
    param_importances: dict[str, float] | None = Field(
        ..., description="Once ended: how much each parameter mattered."
    )
    param_importances_note: str | None
    registered_model: dict[str, Any] | None = Field(
        ..., description="The registry version of the best trial's model."
    )
    promotion: dict[str, Any] | None
    error: dict[str, Any] | None


class StudiesPublic(Public):
    object: Literal["list"] = "list"
    data: list[StudyPublic]
    has_more: bool


class StudyPromotionPublic(Public):
    object: Literal["study.promotion"] = "study.promotion"
    name: str
    version: int
    alias: str


def public_study(store: Store, study: Row) -> StudyPublic:
    """The study with its trials table, the best trial so far, and (once ended) parameter
    importances and the registered best model."""
    spec = study["spec"]
    trials = store.list_trials(study["id"])
    jobs: dict[str, Row | None] = {
        t["job_id"]: store.get_job(t["job_id"]) for t in trials if t["job_id"]
    }
    rows = []
    for t in trials:
        job: Row = jobs.get(t["job_id"]) or {}
        intermediate = t["intermediate"] or {}
        rows.append(
            TrialPublic(
                number=t["number"],
                job_id=t["job_id"],
                state=t["state"],
                job_status=job.get("status"),
                params=t["params"],
                value=t["value"],
                intermediate_values={
                    str(k): v for k, v in sorted(intermediate.items(), key=lambda kv: int(kv[0]))
                },
                last_step=max((int(s) for s in intermediate), default=None),
                fine_tuned_model=job.get("fine_tuned_model"),
                error=t["error"] or (job.get("error") if t["state"] == "failed" else None),
            )
        )
    best = best_trial(study, trials)
    result = study.get("result") or {}
    return StudyPublic(
        id=study["id"],
        name=study["name"],
        status=study["status"],
        created_at=int(study["created_at"]),
        finished_at=int(study["finished_at"]) if study.get("finished_at") else None,
        cancel_requested=bool(study.get("cancel_requested")),
        objective=StudyObjective(
            metric=spec["objective"]["metric"],
            direction=StudyCreate.model_validate(spec).objective.resolved_direction,
        ),
        n_trials=spec["n_trials"],
        parallelism=spec["parallelism"],
        search_space=spec["search_space"],
        pruner=spec["pruner"],
        sampler=spec["sampler"],
        job=spec["job"],
        metadata=spec.get("metadata"),
        trial_counts={s: sum(1 for t in trials if t["state"] == s) for s in TRIAL_STATES},
        trials=rows,
        best_trial=(
            BestTrial(
                number=best["number"],
                value=best["value"],
                params=best["params"],
                job_id=best["job_id"],
                fine_tuned_model=(jobs.get(best["job_id"]) or {}).get("fine_tuned_model"),
            )
            if best
            else None
        ),
        param_importances=result.get("param_importances"),
        param_importances_note=result.get("param_importances_note"),
        registered_model=result.get("registered_model"),
        promotion=result.get("promotion"),
        error=study.get("error"),
    )
