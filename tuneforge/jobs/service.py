"""Creating and cancelling jobs: what the REST API, the seed-000 adapter and the CLI share."""

from __future__ import annotations

import random
import time

from tuneforge.config import Settings
from tuneforge.db.files import files_of
from tuneforge.db.store import Row, Store, new_id
from tuneforge.errors import JobNotFoundError
from tuneforge.jobs.data import JobInputs, load_job_data
from tuneforge.jobs.method_choice import settle_method
from tuneforge.jobs.status import SERVICE_KINDS, JobStatus
from tuneforge.training.devices import check_strategy
from tuneforge.training.integrations import check_integrations
from tuneforge.training.llm import check_quantization
from tuneforge.training.spec import JobCreate


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
    layout = load_job_data(inputs, request.seed or 0).layout
    source = inputs.model  # resolved once: the LLM kinds have read the files with its tokenizer
    spec = request.model_copy(
        update={
            "seed": request.seed if request.seed is not None else random.randrange(2**31 - 1),
            "training_files": request.all_training_files(),
            "training_file": request.all_training_files()[0],
        }
    )
    if store.get_model(request.model) is None:
        store.upsert_model(
            {
                "id": request.model,
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
        },
        "Validating training file(s).",
        files=files_of(stored_spec),
    )
    if method_note:
        store.add_event(job_id, method_note, data={"method": spec.method.type})
    return store.transition(
        job_id,
        JobStatus.QUEUED,
        f"Files validated ({layout} rows); job queued.",
        expected={JobStatus.VALIDATING_FILES},
        data={"layout": layout},
    )


def require_fine_tuning_job(store: Store, job_id: str) -> Row:
    """A fine-tuning job (not an evaluation or export, which have their own endpoints)."""
    job = store.require_job(job_id)
    if job["kind"] in SERVICE_KINDS:
        raise JobNotFoundError(
            f"No fine-tuning job with id {job_id!r} (it is an {job['kind']}).", param="id"
        )
    return job
