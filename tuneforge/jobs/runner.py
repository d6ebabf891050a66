"""The job process: runs one claimed job until it ends, pauses or goes back to the queue.

Started by the worker as `python -m tuneforge.jobs.runner JOB_ID LEASE SETTINGS_JSON` in a
process of its own, so that a crash, a kill or the end of the job frees all of its memory (or
forked as if so started from a warm job process that has imported PRELOAD; see
tuneforge.jobs.forkserver).
Every change it makes to the job is fenced by LEASE: once another worker has taken the job
over, this process stops without touching it.

A distributed job (`num_processes` > 1) runs this module once per rank under `accelerate
launch`, with the worker's pid as a fourth argument. Every rank trains; rank 0 alone writes
to the database, checkpoints and the finished model.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tuneforge.config import Settings
from tuneforge.db.store import Row, Store
from tuneforge.deploy.run import run_deployment
from tuneforge.deploy.service import KIND as DEPLOYMENT
from tuneforge.errors import (
    DiskFullError,
    InvalidStateError,
    JobCancelledError,
    JobTimeoutError,
    LeaseLostError,
    OutOfMemoryError,
    TuneforgeError,
)
from tuneforge.evaluation.run import run_evaluation
from tuneforge.evaluation.service import KIND as EVALUATION
from tuneforge.export.run import run_export
from tuneforge.export.service import KIND as EXPORT
from tuneforge.imports.run import run_import
from tuneforge.imports.service import KIND as MODEL_IMPORT
from tuneforge.jobs.data import JobInputs, load_job_data
from tuneforge.jobs.fit import check_on_worker
from tuneforge.jobs.oom import is_out_of_memory, requeue_smaller
from tuneforge.jobs.publish import promotion_gate, publish
from tuneforge.jobs.reporting import JobReporter
from tuneforge.jobs.status import JobStatus, StopReason
from tuneforge.jobs.threads import thread_budget, use_thread_budget
from tuneforge.synthetic.endpoint_keys import forget_finished_keys
from tuneforge.synthetic.run import run_synthetic
from tuneforge.synthetic.service import KIND as SYNTHETIC
from tuneforge.training.base import RunContext
from tuneforge.training.checkpoints import discard_incomplete, newest_complete
from tuneforge.training.devices import (
    enable_fast_matmul,
    free_device_memory,
    job_device_environment,
    make_deterministic,
)
from tuneforge.training.kinds import KINDS
from tuneforge.training.spec import JobCreate

# What the kinds import as they start, beyond this module's own imports (the kinds' modules
# import their libraries only when they train): a warm job process imports it all once,
# before it forks jobs (tuneforge.jobs.forkserver).
PRELOAD = (
    "torch",
    "transformers",
    "transformers.trainer",
    "peft",
    "sentence_transformers",
    "datasets",
    "trl",
    "sklearn.metrics",
)
# Errors worth another attempt from the last checkpoint; the others would fail again (a full
# disk stays full: the job fails with disk_full at once, saying how much space is free).
RETRYABLE = frozenset({"out_of_memory", "internal"})
# Every `error.code` a failed job may carry, as the README lists them; any other code a
# library or service raises is recorded as `internal`, its own code kept in the message.
JOB_ERROR_CODES = frozenset(
    {
        "invalid_dataset",
        "invalid_request",
        "file_not_found",
        "model_not_found",
        "model_exists",
        "unsupported_architecture",
        "remote_code_refused",
        "unsafe_weights",
        "unsupported_file",
        "validation_error",
        "python_graders_disabled",
        "export_failed",
        "export_verification_failed",
        "deployment_failed",
        "timeout",
        "out_of_memory",
        "disk_full",
        "endpoint_error",
        "internal",
    }
)
# How libraries say that the disk is full when they do not raise OSError(ENOSPC): safetensors
# ("No space left on device (os error 28)"), older torch, SQLite.
DISK_FULL_SIGNS = (
    "no space left on device",
    "os error 28",
    "database or disk is full",
    "disk quota exceeded",
)
# torch's zip writer (torch.save: optimizer and RNG states) reports a short write only as
# "[enforce fail at inline_container.cc] … unexpected pos N vs M": a full disk when the
# disk it wrote to has (nearly) no space left.
SHORT_WRITE_SIGNS = ("inline_container.cc", "pytorchstreamwriter")
LOW_SPACE_BYTES = 1024**3


def fine_tuned_name(spec: JobCreate, job_id: str) -> str:
    """OpenAI's naming: `ft:BASE:SUFFIX:JOBID` (the base without its organisation)."""
    base = spec.model.split("@")[0].removeprefix("models--").split("/")[-1].split("--")[-1]
    return f"ft:{base}:{spec.suffix or 'tuneforge'}:{job_id.removeprefix('ftjob-')[:12]}"


def see_own_devices(spec: dict[str, Any]) -> None:
    """Before anything touches CUDA: this job's process sees the devices it was given (its
    `devices`, else the first), among those its worker sees (see
    `devices.cuda_visible_devices_for`)."""
    os.environ.update(job_device_environment(spec, os.environ.get("CUDA_VISIBLE_DEVICES")))


def pick_device(requested: str, reporter: JobReporter) -> str:
    import torch

    has_cuda = torch.cuda.is_available()
    if requested == "cuda" and not has_cuda:
        reporter.warn(
            "device_unavailable",
            "The job asked for device cuda, but the worker that runs it has no CUDA device: "
            "it trains on the CPU (much slower). Leave device at auto, or run a worker on a "
            "machine with a CUDA GPU (`tuneforge worker --devices cuda`).",
            requested="cuda",
            used="cpu",
        )
        return "cpu"
    if requested == "auto":
        return "cuda" if has_cuda else "cpu"
    return requested


def run_job(
    store: Store,
    settings: Settings,
    job_id: str,
    lease: int,
    *,
    rank: int = 0,
    worker_pid: int | None = None,
) -> None:
    """Run a job this process holds under `lease` until it succeeds, fails, is cancelled,
    pauses, or goes back to the queue because its worker is shutting down. In a distributed
    job, ranks other than 0 train alongside and leave the job's state to rank 0."""
    job = store.require_job(job_id)
    training = job["kind"] in KINDS
    timeout = JobCreate.model_validate(job["spec"]).timeout_seconds if training else None
    deadline = job["claimed_at"] + timeout - job["run_seconds"] if timeout else None
    reporter = JobReporter(
        store, settings, job_id, lease, deadline=deadline, rank=rank, worker_pid=worker_pid
    )
    signal.signal(signal.SIGTERM, lambda *_: reporter.request_shutdown())
    use_thread_budget(thread_budget(settings, int(job["spec"].get("num_processes", 1))))
    work_dir = settings.jobs_dir / job_id
    work_dir.mkdir(parents=True, exist_ok=True)
    if rank != 0:
        # A failure here ends this process with an error: the launcher then stops the other
        # ranks and the worker retries or fails the job as after any crash. Out of memory on
        # this rank is settled here, as rank 0 would (rank 0 then finds its lease gone).
        try:
            _train(store, settings, job, reporter)
        except LeaseLostError:
            pass
        except Exception as exc:
            if is_out_of_memory(exc):
                with contextlib.suppress(LeaseLostError, InvalidStateError):
                    _fail(store, job_id, lease, _classify(exc, settings, work_dir, rank))
            raise
        return
    try:
        if worker_pid is None:  # alone (a launcher gave a distributed job's ranks theirs)
            see_own_devices(job["spec"])
        reporter.start_resources()  # after the devices are set: it may start CUDA
        RUNS[job["kind"]](store, settings, job, reporter)
    except LeaseLostError:
        return  # superseded: the job belongs to another process now
    except JobCancelledError:
        store.transition(
            job_id, JobStatus.CANCELLED, "Job cancelled.", expected={JobStatus.RUNNING}, lease=lease
        )
    except TuneforgeError as exc:
        _fail(store, job_id, lease, exc)
    except Exception as exc:  # the last line of defence: every failure ends the run
        _fail(store, job_id, lease, _classify(exc, settings, work_dir))
    finally:
        reporter.stop_resources()  # after a job that ended: no event (it no longer runs)
        if job["kind"] == SYNTHETIC:
            forget_finished_keys(store, settings)  # an ended job's endpoint key goes


def _train(store: Store, settings: Settings, job: Row, reporter: JobReporter) -> None:
    """Train a job of one of the training kinds, then publish its model (rank 0)."""
    spec = JobCreate.model_validate(job["spec"])
    job_id, lease = job["id"], reporter.lease
    assert spec.seed is not None
    work_dir = settings.jobs_dir / job_id
    checkpoints = work_dir / "checkpoints"
    main = reporter.is_main
    discarded = discard_incomplete(checkpoints) if main else []
    if discarded:
        reporter.note(
            f"Removed incomplete checkpoint data from an earlier run: {', '.join(discarded)}.",
            level="warn",
        )
    resume_from = newest_complete(checkpoints)
    if resume_from is not None:
        step = resume_from.name.removeprefix("checkpoint-")
        reporter.note(
            f"Resuming from the checkpoint at step {step}.",
            data={"resume_step": int(step), "run": job["attempts"]},
        )
    inputs = JobInputs(store, settings, spec)
    data = load_job_data(inputs, spec.seed)
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
    # A local model is checked for code of its own and pickled weights as it resolves (once:
    # the LLM kinds have resolved it to read the files with its tokenizer).
    source = inputs.model
    device = pick_device(spec.device, reporter)
    if main and resume_from is None:
        # On the device that runs it: its estimate, and no start without room on the disk.
        check_on_worker(job.get("estimate"), spec, data, source.location, settings, reporter)
    name = fine_tuned_name(spec, job_id)
    # Written aside and moved into place only when complete (see below).
    staging = settings.models_dir / f".staging-{job_id}-{lease}"
    if main:
        shutil.rmtree(staging, ignore_errors=True)
    kind = KINDS[spec.method.type]
    reporter.note(f"Training {spec.model} ({spec.method.type}) on {device}.")
    enable_fast_matmul()
    make_deterministic(getattr(spec.method, spec.method.type).hyperparameters.deterministic)
    result = kind.run(
        RunContext(
            spec=spec,
            data=data,
            model_location=source.location,
            device=device,
            seed=spec.seed,
            work_dir=work_dir,
            output_dir=staging,
            reporter=reporter,
            resume_from=resume_from,
            rank=reporter.rank,
            world_size=spec.world_size(),
            store=store,
            settings=settings,
        )
    )
    if not main:
        return
    reporter.stop_resources()  # the last sample, with the training's peaks
    if result.stopped_early:
        _stop(store, job_id, spec, reporter, result.steps)
        return
    free_device_memory()  # the trainer is gone: the gate's models load into its memory
    gate = promotion_gate(store, settings, spec, result, kind, data, device, staging)
    publish(store, settings, job, spec, reporter, staging, result, name, gate, kind)
    shutil.rmtree(work_dir / "checkpoints", ignore_errors=True)


def _evaluate(store: Store, settings: Settings, job: Row, reporter: JobReporter) -> None:
    device = pick_device(job["spec"].get("device", "auto"), reporter)
    run_evaluation(store, settings, job, reporter, device)


def _synthesize(store: Store, settings: Settings, job: Row, reporter: JobReporter) -> None:
    device = pick_device(job["spec"].get("device", "auto"), reporter)
    run_synthetic(store, settings, job, reporter, device)


# What the job process runs for each kind of job (`job["kind"]`): a service's run, or for
# every training kind (`training.kinds.KINDS`, by `method.type`), training.
RUNS: dict[str, Callable[[Store, Settings, Row, JobReporter], None]] = {
    EXPORT: run_export,
    DEPLOYMENT: run_deployment,
    MODEL_IMPORT: run_import,
    EVALUATION: _evaluate,
    SYNTHETIC: _synthesize,
    **dict.fromkeys(KINDS, _train),
}


def _stop(store: Store, job_id: str, spec: JobCreate, reporter: JobReporter, step: int) -> None:
    """End a run that stopped before its end, as its stop reason says."""
    reason = reporter.stop_reason()
    lease = reporter.lease
    # Progress rows are throttled: record the step the checkpoint was written at.
    progress = dict(store.require_job(job_id).get("progress") or {})
    total = progress.get("total_steps")
    progress.update(
        step=step, percent=round(100.0 * step / total, 2) if total else 0.0, eta_seconds=None
    )
    if reason == StopReason.PAUSED:
        store.transition(
            job_id,
            JobStatus.PAUSED,
            f"Job paused at step {step}; it continues from that checkpoint when resumed.",
            expected={JobStatus.RUNNING},
            lease=lease,
            pause_requested=False,
            worker_id=None,
            progress=progress,
            data={"step": step},
        )
    elif reason == StopReason.SHUTDOWN:
        store.transition(
            job_id,
            JobStatus.QUEUED,
            f"Worker shutting down; checkpoint at step {step} written, job queued again.",
            expected={JobStatus.RUNNING},
            lease=lease,
            level="warn",
            worker_id=None,
            progress=progress,
            data={"step": step},
        )
    elif reason == StopReason.TIMEOUT:
        raise JobTimeoutError(
            f"The job ran longer than timeout_seconds={spec.timeout_seconds}; "
            f"a checkpoint at step {step} was written.",
            param="timeout_seconds",
        )
    else:
        raise JobCancelledError("Cancelled.")


def _fail(store: Store, job_id: str, lease: int, exc: TuneforgeError) -> None:
    code, message = exc.code, exc.message
    if code not in JOB_ERROR_CODES:
        code, message = "internal", f"{exc.code}: {message}"
    error = {"code": code, "message": message, "param": exc.param}
    if code == "out_of_memory" and requeue_smaller(store, job_id, lease, message):
        return
    store.retry_or_fail(job_id, lease, error, retry=code in RETRYABLE)


def _classify(
    exc: Exception, settings: Settings, work_dir: Path, rank: int = 0
) -> TuneforgeError:
    """Map library exceptions to errors a user can act on."""
    text = f"{type(exc).__name__}: {exc}"
    if is_disk_full(exc, [settings.home, work_dir]):
        return DiskFullError(f"{text}. {space_note(settings, work_dir)}")
    if is_out_of_memory(exc):
        where = f" (on rank {rank})" if rank else ""
        return OutOfMemoryError(
            f"{text.splitlines()[0][:500]}{where}. Try a smaller batch_size or max_seq_length.",
            param="batch_size",
        )
    return TuneforgeError(text)


def is_disk_full(exc: BaseException, folders: Iterable[Path] = ()) -> bool:
    """Whether `exc`, or an exception it was raised from, says that a disk is full; a short
    write of torch's counts when one of `folders` (where the job writes) is low on space."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).lower()
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(sign in text for sign in DISK_FULL_SIGNS):
            return True
        if any(sign in text for sign in SHORT_WRITE_SIGNS) and any(
            shutil.disk_usage(folder).free < LOW_SPACE_BYTES for folder in folders
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def space_note(settings: Settings, work_dir: Path) -> str:
    """What a user needs to know to run the job again after a full disk: the space left
    where it writes (the data folder, or its jobs folder where that is a disk of its own),
    named relative to the data folder, and what the job had written there."""
    free, folder = min(
        (shutil.disk_usage(settings.home).free, f"{settings.home.name}/"),
        (shutil.disk_usage(work_dir).free, f"{settings.home.name}/jobs/{work_dir.name}/"),
    )
    written = sum(p.stat().st_size for p in work_dir.rglob("*") if p.is_file())
    return (
        f"{folder} has {free / 2**20:.1f} MiB free; the job had {written / 2**20:.1f} MiB of "
        "checkpoints there. It is not retried on a full disk: free space (a checkpoint holds "
        "the model and its optimizer state, about three times the model's size), then create "
        "the job again."
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    job_id, lease, settings_json, *launched = args
    settings = Settings.model_validate_json(settings_json)
    store = Store(settings.db_url)
    # Under a launcher: the worker's pid follows, and torch's launcher names our rank.
    worker_pid = int(launched[0]) if launched else None
    rank = int(os.environ.get("RANK", "0")) if launched else 0
    try:
        run_job(store, settings, job_id, int(lease), rank=rank, worker_pid=worker_pid)
    finally:
        store.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
