"""`StudyDriver`: coordinates running studies; Optuna decides, the job engine trains.

Each pass over a study it holds (a claim in the `studies` row that runs out, so another
driver takes over when this one stops) the driver:
1. reports every new evaluation of a running trial's job to Optuna (`trial.report`) and asks
   the pruner; a pruned trial's job is cancelled, with an event saying why;
2. tells Optuna how each ended trial job ended (its objective value, or failed/cancelled);
3. starts new trials (`study.ask` -> a normal fine-tuning job) while fewer than `parallelism`
   are unfinished and fewer than `n_trials` exist;
4. once every trial has ended: the best trial, parameter importances, the best model's
   registry alias and promotion gate, and the study ends.

Everything it knows lives in the database (the trials table and Optuna's journal), so a driver
that restarts, here or in another process, continues the study where it was.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from tuneforge.config import Settings
from tuneforge.db.records import Trial
from tuneforge.db.store import Row, Store
from tuneforge.errors import InvalidStateError, TuneforgeError
from tuneforge.jobs.service import create_job
from tuneforge.jobs.status import TERMINAL, JobStatus
from tuneforge.studies.service import best_trial
from tuneforge.studies.spec import PrunerSpec, Range, SamplerSpec, StudyCreate, apply_params
from tuneforge.training.kinds import KINDS, better_by

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)


class StudyDriver:
    """Drives every running study it can claim, until `stop` is set."""

    def __init__(self, store: Store, settings: Settings, driver_id: str | None = None):
        self.store = store
        self.settings = settings
        self.driver_id = driver_id or f"{socket.gethostname()}-{os.getpid()}-studies"
        self.stop = threading.Event()
        # Optuna study objects by study id: their samplers keep state between passes.
        self._studies: dict[str, optuna.Study] = {}

    def run_forever(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    self.run_once()
                except Exception:  # a database hiccup must not end the driver
                    log.exception("study driver error")
                self.stop.wait(max(self.settings.poll_seconds, 1.0))
        finally:
            with contextlib.suppress(Exception):
                self.store.release_studies(self.driver_id)

    def run_once(self) -> None:
        """One pass over every study this driver holds."""
        for study_id in self.store.claim_studies(
            self.driver_id, self.settings.stalled_after_seconds
        ):
            try:
                self.advance(study_id)
            except Exception:
                log.exception("study %s: pass failed; next pass retries", study_id)

    def advance(self, study_id: str) -> None:
        row = self.store.require_study(study_id)
        if row["status"] != "running":
            self._studies.pop(study_id, None)
            return
        spec = StudyCreate.model_validate(row["spec"])
        study = self._optuna_study(row, spec)
        if row["cancel_requested"]:
            self._cancel(study, row)
            return
        for trial in self.store.list_trials(study_id):
            if trial["state"] == "running":
                self._follow(study, spec, trial)
        self._fail_orphans(study)
        trials = self.store.list_trials(study_id)
        unfinished = sum(1 for t in trials if t["state"] == "running")
        while len(trials) < spec.n_trials and unfinished < spec.parallelism:
            self._start_trial(study, row, spec)
            trials = self.store.list_trials(study_id)
            unfinished = sum(1 for t in trials if t["state"] == "running")
        if len(trials) >= spec.n_trials and unfinished == 0:
            self._finish(study, row, spec, trials)

    # -- one study -------------------------------------------------------------------------

    def _optuna_study(self, row: Row, spec: StudyCreate) -> optuna.Study:
        import optuna

        from tuneforge.studies.journal import study_storage

        cached = self._studies.get(row["id"])
        if cached is not None:
            return cached
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        started = len(self.store.list_trials(row["id"]))
        # A restarted driver draws from a seed moved on by the trials already run, so that it
        # does not propose the first trials' values again.
        study = optuna.create_study(
            storage=study_storage(self.store, row["id"]),
            study_name=row["id"],
            direction=spec.objective.resolved_direction,
            sampler=_sampler(spec.sampler, started),
            pruner=_pruner(spec.pruner),
            load_if_exists=True,
        )
        self._studies[row["id"]] = study
        return study

    def _start_trial(self, study: optuna.Study, row: Row, spec: StudyCreate) -> None:
        from optuna.trial import TrialState

        trial = study.ask(_distributions(spec.search_space))
        params = dict(trial.params)
        record = {
            "study_id": row["id"],
            "number": trial.number,
            "trial_id": trial._trial_id,
            "params": params,
            "created_at": time.time(),
            "last_event": 0,
        }
        metadata = dict(spec.job.metadata or {})
        metadata.update(study=row["id"], trial=str(trial.number))
        try:
            job_spec = apply_params(spec.job, params).model_copy(
                update={"metadata": metadata, "promote": None}
            )
            job = create_job(self.store, self.settings, job_spec)
        except (TuneforgeError, ValidationError, ValueError) as exc:
            message = exc.message if isinstance(exc, TuneforgeError) else str(exc)
            log.warning("study %s trial %s: %s", row["id"], trial.number, message)
            study.tell(trial.number, state=TrialState.FAIL)
            self.store.insert_trial(
                dict(record, state="failed", finished_at=time.time(), error={"message": message})
            )
            return
        self.store.insert_trial(dict(record, job_id=job["id"], state="running"))
        self.store.add_event(
            job["id"],
            f"Trial {trial.number} of study {row['name']} ({row['id']}): "
            + ", ".join(f"{k}={v}" for k, v in params.items())
            + ".",
            data={"study": row["id"], "trial": trial.number, "params": params},
        )

    def _follow(self, study: optuna.Study, spec: StudyCreate, trial: Row) -> None:
        """Report the trial job's new evaluations; prune it, or record how it ended."""
        import optuna
        from optuna.trial import TrialState

        job = self.store.get_job(trial["job_id"])
        if job is None:  # deleted under us
            study.tell(trial["number"], state=TrialState.FAIL)
            self.store.update_trial(
                trial["study_id"], trial["number"], state="failed", finished_at=time.time()
            )
            return
        key = f"eval_{spec.objective.name}"
        intermediate = dict(trial["intermediate"] or {})
        new: dict[int, float] = {}
        last_event = trial["last_event"]
        while True:
            events, more = self.store.list_events(
                job["id"], after=last_event, limit=500, type="metrics", newest_first=False
            )
            for event in events:
                last_event = event["id"]
                data = event["data"] or {}
                step, value = data.get("step"), data.get(key)
                # Step 0 is the base model, the same for every trial: nothing to rank by.
                if isinstance(step, int) and step > 0 and isinstance(value, int | float):
                    new[step] = float(value)
            if not more:
                break
        handle = optuna.trial.Trial(study, trial["trial_id"])
        for step in sorted(new):
            if str(step) not in intermediate:
                handle.report(new[step], step)
                intermediate[str(step)] = new[step]
        self.store.update_trial(
            trial["study_id"], trial["number"], last_event=last_event, intermediate=intermediate
        )
        status = JobStatus(job["status"])
        if status in TERMINAL:
            self._settle(study, spec, trial, job)
        elif new and handle.should_prune():
            self._prune(study, spec, trial, job, intermediate)

    def _prune(
        self,
        study: optuna.Study,
        spec: StudyCreate,
        trial: Row,
        job: Row,
        intermediate: dict[str, float],
    ) -> None:
        from optuna.trial import TrialState

        step = max(int(s) for s in intermediate)
        value = intermediate[str(step)]
        self.store.add_event(
            job["id"],
            f"Pruned by study {trial['study_id']}: eval_{spec.objective.name}={value:.4g} at "
            f"step {step} trails the other trials ({spec.pruner.type} pruner); stopping.",
            level="warn",
            data={"pruned": True, "study": trial["study_id"], "trial": trial["number"],
                  "step": step, "value": value},
        )
        with contextlib.suppress(InvalidStateError):
            self.store.request_cancel(job["id"])
        study.tell(trial["number"], state=TrialState.PRUNED)
        self.store.update_trial(
            trial["study_id"], trial["number"], state="pruned", value=value,
            finished_at=time.time(),
        )

    def _settle(self, study: optuna.Study, spec: StudyCreate, trial: Row, job: Row) -> None:
        from optuna.trial import TrialState

        status = JobStatus(job["status"])
        value = objective_value(job, spec.objective.name)
        if status is JobStatus.SUCCEEDED and value is not None:
            study.tell(trial["number"], value)
            state = "complete"
        else:
            study.tell(trial["number"], state=TrialState.FAIL)
            state = "cancelled" if status is JobStatus.CANCELLED else "failed"
            if status is JobStatus.SUCCEEDED:
                self.store.add_event(
                    job["id"],
                    f"Study {trial['study_id']}: the job has no {spec.objective.name} to rank "
                    "it by (no validation data?); trial counted as failed.",
                    level="warn",
                )
        self.store.update_trial(
            trial["study_id"], trial["number"], state=state, value=value,
            finished_at=time.time(),
        )

    def _fail_orphans(self, study: optuna.Study) -> None:
        """Trials Optuna handed out that have no row: the driver stopped in between."""
        from optuna.trial import TrialState

        known = {t["number"] for t in self.store.list_trials(study.study_name)}
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen.number not in known:
                study.tell(frozen.number, state=TrialState.FAIL)

    def _cancel(self, study: optuna.Study, row: Row) -> None:
        from optuna.trial import TrialState

        for trial in self.store.list_trials(row["id"]):
            if trial["state"] != "running":
                continue
            if trial["job_id"]:
                with contextlib.suppress(InvalidStateError):
                    self.store.request_cancel(trial["job_id"])
            with contextlib.suppress(Exception):
                study.tell(trial["number"], state=TrialState.FAIL)
            self.store.update_trial(
                row["id"], trial["number"], state="cancelled", finished_at=time.time()
            )
        self.store.finish_study(row["id"], self.driver_id, "cancelled")
        self._studies.pop(row["id"], None)

    def _finish(
        self, study: optuna.Study, row: Row, spec: StudyCreate, trials: list[Trial]
    ) -> None:
        result: dict[str, Any] = {}
        result["param_importances"], result["param_importances_note"] = _importances(study)
        best = best_trial(row, trials)
        status, error = "succeeded", None
        if best is None:
            status = "failed"
            error = {"code": "no_completed_trial", "message": "No trial completed."}
        else:
            job = self.store.require_job(best["job_id"])
            registered = (job.get("result") or {}).get("registered_model")
            if registered:
                name, version = registered["name"], int(registered["version"])
                result["registered_model"] = {"name": name, "version": version,
                                              "alias": spec.best_alias}
                if spec.best_alias:
                    self.store.set_alias(name, spec.best_alias, version)
                if spec.promote is not None:
                    result["promotion"] = self._promote(spec, job, name, version)
        self.store.finish_study(row["id"], self.driver_id, status, result=result, error=error)
        self._studies.pop(row["id"], None)

    def _promote(self, spec: StudyCreate, job: Row, name: str, version: int) -> dict[str, Any]:
        """The jobs' promotion gate for the best version, against the version the alias
        points at (or the base model), by their metrics on the same validation split."""
        assert spec.promote is not None
        gate = spec.promote
        evaluation = (job.get("result") or {}).get("evaluation") or {}
        metric = gate.metric or evaluation.get("primary_metric") or spec.objective.name
        decision: dict[str, Any] = {"alias": gate.alias, "metric": metric,
                                    "min_delta": gate.min_delta, "promote": False}
        new = (evaluation.get("fine_tuned_model") or {}).get(metric)
        current = self.store.alias_version(name, gate.alias)
        if current is not None:
            other: Row = self.store.get_version(name, current) or {}
            old = ((other.get("evaluation") or {}).get("fine_tuned_model") or {}).get(metric)
            against = f"{name} version {current}"
        else:
            old = (evaluation.get("base_model") or {}).get(metric)
            against = "the base model"
        if not isinstance(new, int | float) or not isinstance(old, int | float):
            decision["reason"] = f"no {metric} to compare with {against}"
            return decision
        gain = better_by(KINDS[spec.job.method.type], metric, float(new), float(old))
        decision.update(new=new, old=old, against=against, against_version=current, gain=gain,
                        promote=gain >= gate.min_delta)
        if decision["promote"]:
            self.store.set_alias(name, gate.alias, version)
        return decision


def objective_value(job: Row, metric: str) -> float | None:
    """A finished trial job's value of `metric`: its final evaluation's, else its last
    logged eval_<metric>."""
    evaluation = (job.get("result") or {}).get("evaluation") or {}
    latest = job.get("metrics") or {}
    found = [
        (evaluation.get("fine_tuned_model") or {}).get(metric),
        latest.get(f"eval_{metric}"),
        latest.get(metric),
    ]
    for value in found:
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
    return None


def _distributions(space: dict[str, list[Any] | Range]) -> dict[str, Any]:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    found: dict[str, Any] = {}
    for key, values in space.items():
        if isinstance(values, list):
            found[key] = CategoricalDistribution(values)
        elif values.is_int:
            found[key] = IntDistribution(
                int(values.low), int(values.high), log=values.log, step=int(values.step or 1)
            )
        else:
            found[key] = FloatDistribution(
                float(values.low), float(values.high), log=values.log, step=values.step
            )
    return found


def _sampler(spec: SamplerSpec, started: int) -> Any:
    import optuna

    seed = None if spec.seed is None else spec.seed + started
    if spec.type == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(spec: PrunerSpec) -> Any:
    import optuna

    match spec.type:
        case "median":
            return optuna.pruners.MedianPruner(
                n_startup_trials=spec.n_startup_trials, n_warmup_steps=spec.n_warmup_steps
            )
        case "percentile":
            return optuna.pruners.PercentilePruner(
                spec.percentile,
                n_startup_trials=spec.n_startup_trials,
                n_warmup_steps=spec.n_warmup_steps,
            )
        case "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner()
        case "hyperband":
            return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def _importances(study: optuna.Study) -> tuple[dict[str, float] | None, str | None]:
    """Optuna's parameter importances (fANOVA), or why there are none."""
    import optuna
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return None, f"{len(complete)} trial(s) completed; importances need at least 2."
    if len({t.value for t in complete}) < 2:
        return None, "every completed trial reached the same value."
    try:
        found = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as exc:
        return None, f"importances could not be computed: {exc}"
    return {k: round(float(v), 6) for k, v in found.items()}, None
