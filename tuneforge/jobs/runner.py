"""The job process: runs one claimed job from start to its final status.

Started by the worker as `python -m tuneforge.jobs.runner JOB_ID SETTINGS_JSON` in a process
of its own, so that a crash, a kill or the end of the job frees all of its memory.
"""

from __future__ import annotations

import errno
import sys
import time
from pathlib import Path

from tuneforge.config import Settings
from tuneforge.datasets.splits import load_job_data
from tuneforge.db.store import Store
from tuneforge.errors import (
    DiskFullError,
    JobCancelledError,
    JobTimeoutError,
    OutOfMemoryError,
    TuneforgeError,
)
from tuneforge.jobs.reporting import JobReporter
from tuneforge.jobs.status import JobStatus
from tuneforge.training.models import refuse_remote_code, resolve_model
from tuneforge.training.spec import JobCreate


def fine_tuned_name(spec: JobCreate, job_id: str) -> str:
    """OpenAI's naming: `ft:BASE:SUFFIX:JOBID` (the base without its organisation)."""
    base = spec.model.removeprefix("models--").split("/")[-1].split("--")[-1]
    return f"ft:{base}:{spec.suffix or 'tuneforge'}:{job_id.removeprefix('ftjob-')[:12]}"


def pick_device(requested: str, reporter: JobReporter) -> str:
    import torch

    has_cuda = torch.cuda.is_available()
    if requested == "cuda" and not has_cuda:
        reporter.note(
            "CUDA was requested but this worker has no CUDA device; training on CPU.",
            level="warning",
        )
        return "cpu"
    if requested == "auto":
        return "cuda" if has_cuda else "cpu"
    return requested


def run_job(store: Store, settings: Settings, job_id: str) -> None:
    """Run a job that is `running` and ends it as succeeded, failed or cancelled."""
    job = store.require_job(job_id)
    spec = JobCreate.model_validate(job["spec"])
    deadline = job["started_at"] + spec.timeout_seconds if spec.timeout_seconds else None
    reporter = JobReporter(store, settings, job_id, deadline=deadline)
    work_dir = settings.jobs_dir / job_id
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        _train(store, settings, job_id, spec, reporter, work_dir)
    except JobCancelledError:
        store.transition(
            job_id, JobStatus.CANCELLED, "Job cancelled.", expected={JobStatus.RUNNING}
        )
    except TuneforgeError as exc:
        _fail(store, job_id, exc)
    except Exception as exc:  # the last line of defence: every failure ends the job
        _fail(store, job_id, _classify(exc))


def _train(
    store: Store,
    settings: Settings,
    job_id: str,
    spec: JobCreate,
    reporter: JobReporter,
    work_dir: Path,
) -> None:
    from tuneforge.training.embedding import train_embedding

    assert spec.seed is not None
    data = load_job_data(store, settings, spec, spec.seed)
    reporter.note(
        f"Data: {len(data.train_rows)} training and {len(data.eval_rows)} validation rows "
        f"({data.layout}, validation from {data.validation_source}).",
        data={
            "train_rows": len(data.train_rows),
            "eval_rows": len(data.eval_rows),
            "layout": data.layout,
            "validation_source": data.validation_source,
        },
    )
    source = resolve_model(store, settings, spec.model)
    if source.is_local:
        refuse_remote_code(Path(source.location))
    device = pick_device(spec.device, reporter)
    name = fine_tuned_name(spec, job_id)
    output_dir = settings.models_dir / job_id
    reporter.note(f"Training {spec.model} on {device} with loss {spec.method.embedding.loss}.")
    result = train_embedding(
        model_location=source.location,
        params=spec.method.embedding,
        layout=data.layout,
        train_rows=data.train_rows,
        eval_rows=data.eval_rows,
        seed=spec.seed,
        device=device,
        work_dir=work_dir,
        output_dir=output_dir,
        reporter=reporter,
    )
    if result.stopped_early:
        if reporter.stop_reason() == "timeout":
            raise JobTimeoutError(
                f"The job ran longer than timeout_seconds={spec.timeout_seconds}.",
                param="timeout_seconds",
            )
        raise JobCancelledError("Cancelled.")
    evaluation = {
        "primary_metric": result.primary_metric,
        "base_model": result.baseline,
        "fine_tuned_model": result.evaluation,
        "delta": {
            k: result.evaluation[k] - result.baseline[k]
            for k in result.evaluation
            if k in result.baseline
        },
    }
    store.upsert_model(
        {
            "id": name,
            "kind": "fine-tuned",
            "owned_by": "user",
            "created_at": time.time(),
            "base_model": spec.model,
            "job_id": job_id,
            "path": str(output_dir.resolve().relative_to(settings.home.resolve())),
        }
    )
    summary = ""
    if result.primary_metric and result.primary_metric in result.evaluation:
        key = result.primary_metric
        summary = (
            f" {key}: {result.baseline.get(key, float('nan')):.4f} (base) -> "
            f"{result.evaluation[key]:.4f}."
        )
    store.transition(
        job_id,
        JobStatus.SUCCEEDED,
        f"Job succeeded; model saved as {name}.{summary}",
        expected={JobStatus.RUNNING},
        fine_tuned_model=name,
        result={
            "train_loss": result.train_loss,
            "steps": result.steps,
            "evaluation": evaluation,
            "model_path": str(output_dir.name),
        },
        data={"fine_tuned_model": name},
    )


def _fail(store: Store, job_id: str, exc: TuneforgeError) -> None:
    store.transition(
        job_id,
        JobStatus.FAILED,
        f"Job failed: {exc.message}",
        expected={JobStatus.RUNNING},
        level="error",
        error={"code": exc.code, "message": exc.message, "param": exc.param},
    )


def _classify(exc: Exception) -> TuneforgeError:
    """Map library exceptions to errors a user can act on."""
    text = f"{type(exc).__name__}: {exc}"
    if type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower():
        return OutOfMemoryError(
            f"{text}. Try a smaller batch_size or max_seq_length.", param="batch_size"
        )
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return DiskFullError(f"{text}. Free space in the data folder.")
    return TuneforgeError(text)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    job_id, settings_json = args
    settings = Settings.model_validate_json(settings_json)
    store = Store(settings.db_url)
    try:
        run_job(store, settings, job_id)
    finally:
        store.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
