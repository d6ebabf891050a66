"""Creating and cancelling jobs: what the REST API, the seed-000 adapter and the CLI share."""

from __future__ import annotations

import logging
import random
import shutil
import time
from typing import Any

from tuneforge.config import Settings
from tuneforge.db.files import files_of
from tuneforge.db.store import Row, Store, new_id
from tuneforge.errors import JobNotFoundError
from tuneforge.evaluation.graded import check_grader, check_references, prompt_rows
from tuneforge.jobs.data import JobInputs, load_job_data
from tuneforge.jobs.estimate import gib
from tuneforge.jobs.fit import check_fit, estimate_job
from tuneforge.jobs.method_choice import check_matryoshka, settle_loss, settle_method
from tuneforge.jobs.status import SERVICE_KINDS, JobStatus
from tuneforge.jobs.warnings import job_warnings
from tuneforge.training.base import JobData
from tuneforge.training.devices import check_strategy
from tuneforge.training.integrations import check_integrations
from tuneforge.training.llm import check_quantization
from tuneforge.training.spec import JobCreate, hub_id_of

log = logging.getLogger(__name__)


def create_job(store: Store, settings: Settings, request: JobCreate) -> Row:
    """Check the request against the files and the model, then queue the job.

    Nothing is written unless every check passes: a bad request leaves no job behind."""
    request, method_note = settle_method(store, request)
    check_integrations(request)
    # 4-bit/8-bit loading needs a CUDA GPU: refused here (422), not found out by the worker.
    check_quantization(request)
    # deepspeed is an extra: refused here with the install command, not by the launcher.
    check_strategy(request.distributed.strategy if request.distributed else None)
    inputs = JobInputs(store, settings, request)
    seed = request.seed if request.seed is not None else random.randrange(2**31 - 1)
    data = load_job_data(inputs, seed)
    layout = data.layout
    if request.promote is not None and request.promote.grader is not None:
        kind = request.method.type
        param = "promote.grader"
        grader = check_grader(store, settings, request.promote.grader, kind, param)
        check_references(grader, prompt_rows(kind, data.eval_rows), param)
    source = inputs.model  # resolved once: the LLM kinds have read the files with its tokenizer
    request, loss_note = settle_loss(request, layout)
    check_matryoshka(request, source.location)
    warnings = job_warnings(request, data, source.location if source.is_local else None)
    # Memory, time and disk, before anything is written: a job that cannot fit is refused.
    estimate, estimate_note = job_estimate(request, data, source.location, settings)
    spec = request.model_copy(
        update={
            "seed": seed,
            "training_files": request.all_training_files(),
            "training_file": request.all_training_files()[0],
        }
    )
    # A base model is listed once, by its Hub id, also when named by its cache folder.
    base_id = hub_id_of(request.model)
    if store.get_model(request.model) is None and store.get_model(base_id) is None:
        store.upsert_model(
            {
                "id": base_id,
                "kind": "base",
                "owned_by": "system",
                "created_at": time.time(),
                "base_model": None,
                "job_id": None,
                "path": source.hub_id or source.location,
            }
        )
    job_id = new_id("ftjob")
    stored_spec = spec.model_dump(mode="json")
    # The files are checked again, locked, in the insert: a file deleted since it was read
    # above fails the creation (404), never the job later.
    store.insert_job(
        {
            "id": job_id,
            "kind": spec.method.type,
            "model": spec.model,
            "status": JobStatus.VALIDATING_FILES.value,
            "spec": stored_spec,
            "created_at": time.time(),
            "device": spec.device,
            "max_attempts": spec.max_attempts,
            "warnings": warnings,
            "estimate": estimate,
        },
        "Validating training file(s).",
        files=files_of(stored_spec),
    )
    if method_note:
        store.add_event(job_id, method_note, data={"method": spec.method.type})
    for found in warnings:
        numbers = {"warning": found["code"], **found["data"]}
        store.add_event(job_id, found["message"], level="warn", data=numbers)
    if loss_note:
        store.add_event(job_id, loss_note, data={"loss": spec.method.embedding.loss})  # type: ignore[union-attr]
    return store.transition(
        job_id,
        JobStatus.QUEUED,
        # One event: a worker's "Job started" may follow the moment this commits.
        f"Files validated ({layout} rows). {estimate_note.rstrip('.')}; job queued.",
        expected={JobStatus.VALIDATING_FILES},
        data={"layout": layout, "estimate": estimate},
    )


def job_estimate(
    spec: JobCreate, data: JobData, location: str, settings: Settings
) -> tuple[dict[str, Any] | None, str]:
    """(the job's estimate as stored, an event's words): refused with 400 when it does not
    fit this machine's device or disk (unless `check_fit` is off). A model whose shape cannot
    be read (an architecture the installed transformers lacks) gets no estimate, and says so."""
    try:
        found, cap, shape, setup = estimate_job(spec, data, location, settings)
    except Exception as exc:  # an estimate must never stop a job that would run
        log.warning("no estimate for %s: %s", spec.model, exc, exc_info=True)
        return None, f"No memory estimate: {type(exc).__name__}: {exc}"
    if settings.check_fit:
        check_fit(spec, found, cap, shape, setup, settings)
    stored = {
        **found.to_dict(),
        "device_name": cap.name or None,
        "free_bytes": cap.free_bytes,
        "checked": settings.check_fit,
    }
    where = cap.name or cap.device.upper()
    minutes = found.seconds / 60
    note = (
        f"Estimate on {where}: {gib(found.peak_bytes)} peak memory per device "
        f"({gib(cap.free_bytes)} free), {gib(found.disk_bytes)} of disk, about "
        f"{minutes:.0f} min of training."
        if minutes >= 1
        else f"Estimate on {where}: {gib(found.peak_bytes)} peak memory per device "
        f"({gib(cap.free_bytes)} free), {gib(found.disk_bytes)} of disk, under a minute of "
        "training."
    )
    return stored, note


def require_fine_tuning_job(store: Store, job_id: str) -> Row:
    """A fine-tuning job (not an evaluation or export, which have their own endpoints)."""
    job = store.require_job(job_id)
    if job["kind"] in SERVICE_KINDS:
        raise JobNotFoundError(
            f"No fine-tuning job with id {job_id!r} (it is an {job['kind']}).", param="id"
        )
    return job


def delete_job(store: Store, settings: Settings, job_id: str) -> dict[str, list[str]]:
    """Delete a finished fine-tuning job: its row, events and checkpoint rows, and its files
    in the data folder (checkpoints and logs under `jobs/<id>`, staging folders a crash left
    under `models/`). What it registered stays: the fine-tuned model, its files and its
    registry version are the registry's to delete. 409 for a job that has not finished.
    Returns the data-folder paths removed and the models kept."""
    require_fine_tuning_job(store, job_id)
    store.delete_finished_job(job_id)
    kept = sorted(m["id"] for m in store.list_models() if m.get("job_id") == job_id)
    candidates = [settings.jobs_dir / job_id, *settings.models_dir.glob(f".staging-{job_id}-*")]
    if not kept:
        candidates.append(settings.models_dir / job_id)  # a model deleted, its folder left
    removed = []
    for path in candidates:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path.relative_to(settings.home)))
    return {"removed": removed, "kept_models": kept}
