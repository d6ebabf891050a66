"""`tuneforge train`: a job spec run on this machine, without a server."""

from __future__ import annotations

import contextlib
import copy
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from tuneforge.cli.console import (
    console,
    err_console,
    fail,
    print_api_error,
    print_field_errors,
    print_problems,
)
from tuneforge.cli.options import read_yaml
from tuneforge.cli.service import local_store
from tuneforge.jobs.status import TERMINAL, JobStatus

if TYPE_CHECKING:
    from tuneforge.config import Settings
    from tuneforge.db.store import Store
    from tuneforge.jobs.watch import Poll
    from tuneforge.jobs.worker import Worker

# The spec's fields that name files: paths here, relative to the YAML's folder.
FILE_FIELDS = ("training_file", "training_files", "validation_file")


def train(
    config: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            help="YAML job spec; its files are paths relative to the YAML's folder.",
        ),
    ],
) -> None:
    """Run a job spec on this machine, without a server, and show its progress.

    The files are validated, the job is recorded in the local database (TUNEFORGE_HOME) and a
    worker runs it here. Ctrl-C cancels it. Exits 0 only if the job succeeded."""
    from pydantic import ValidationError

    from tuneforge.api.errors import field_path
    from tuneforge.config import get_settings
    from tuneforge.errors import InvalidStateError, TuneforgeError
    from tuneforge.jobs.service import create_job as queue_job
    from tuneforge.jobs.watch import watch_job as follow
    from tuneforge.jobs.worker import Worker
    from tuneforge.training.spec import JobCreate

    raw = read_yaml(config)
    try:
        # Checked before the files are read, so a typo costs no time; again with file ids.
        JobCreate.model_validate(raw)
    except ValidationError as exc:
        err_console.print(
            f"[bold red]Error:[/] {escape(str(config))} is not a valid job "
            f"spec ({exc.error_count()} invalid field(s)):",
            soft_wrap=True,
        )
        print_field_errors(
            [{"param": field_path(e["loc"]), "message": e["msg"]} for e in exc.errors()]
        )
        raise typer.Exit(1) from None

    settings = get_settings()
    store = local_store(settings)
    try:
        spec = JobCreate.model_validate(_ingest_files(store, settings, raw, config.parent))
        job_id = queue_job(store, settings, spec)["id"]
    except TuneforgeError as exc:
        print_api_error(exc.to_dict())
        raise typer.Exit(1) from None
    console.print(f"Job {job_id} queued in {settings.home}", soft_wrap=True)

    worker_errors: list[BaseException] = []
    thread = threading.Thread(
        target=_work_until_ended,
        args=(Worker(store, settings), job_id, worker_errors),
        name="tuneforge-worker",
        daemon=True,
    )
    thread.start()

    def cancel() -> None:
        err_console.print("Cancelling; waiting for the job to stop ...")
        with contextlib.suppress(InvalidStateError):  # it has ended meanwhile
            store.request_cancel(job_id)

    job = follow(_store_poll(store, job_id, worker_errors), console, on_interrupt=cancel)
    thread.join(timeout=60)
    if job["status"] == JobStatus.FAILED:
        err_console.print(f"Job log: {settings.jobs_dir / job_id / 'process.log'}", soft_wrap=True)
    if job["status"] != JobStatus.SUCCEEDED:
        raise typer.Exit(1)
    console.print(f"Saved in: {settings.models_dir / job_id}", soft_wrap=True)


def _ingest_files(
    store: Store, settings: Settings, raw: dict[str, Any], folder: Path
) -> dict[str, Any]:
    """Validate and store every file the spec names; the spec with file ids for paths.
    Reports the problems of every invalid file, then exits 1, before any job exists."""
    from tuneforge.datasets.ingest import ingest_file

    def ingest(param: str, value: Any) -> str | None:
        if not isinstance(value, str):
            fail(f"{param}: expected a file path, got {value!r}.")
        path = (folder / value).expanduser()
        if not path.is_file():
            fail(f"{param}: no such file: {path}")
        with path.open("rb") as f:
            row = ingest_file(store, settings, path.name, f)
        report = row["report"]
        if report["valid"]:
            console.print(
                f"{escape(param)}: {escape(path.name)} -> {row['id']} ({report['layout']}, "
                f"{report['statistics']['rows']} rows)",
                soft_wrap=True,
            )
            return row["id"]
        err_console.print(
            f"[bold red]{escape(param)}: {escape(str(path))} is not valid training data:[/]",
            soft_wrap=True,
        )
        print_problems(report["problems"], report["problem_count"])
        return None

    spec = copy.deepcopy(raw)
    ids: list[str | None] = []
    for name in FILE_FIELDS:
        value = raw.get(name)
        if value is None:
            continue
        if name == "training_files":
            spec[name] = [ingest(f"{name}[{i}]", v) for i, v in enumerate(value)]
            ids.extend(spec[name])
        else:
            spec[name] = ingest(name, value)
            ids.append(spec[name])
    if None in ids:
        raise typer.Exit(1)
    return spec


def _work_until_ended(worker: Worker, job_id: str, errors: list[BaseException]) -> None:
    """Run our job (and only ours) until it has ended."""
    try:
        while worker.store.require_job(job_id)["status"] not in TERMINAL:
            if not worker.run_once(job_id):
                worker.stop.wait(worker.settings.poll_seconds)
    except BaseException as exc:  # reported by the poll, which the main thread runs
        errors.append(exc)


def _store_poll(store: Store, job_id: str, worker_errors: list[BaseException]) -> Poll:
    """Job and new message events from the local database."""
    from tuneforge.api.schemas.fine_tuning import public_event, public_job

    seen = 0

    def poll() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        nonlocal seen
        if worker_errors:
            fail(f"The worker stopped: {worker_errors[0]!r}")
        job = public_job(store.require_job(job_id)).model_dump(mode="json")
        fresh: list[dict[str, Any]] = []
        while True:
            rows, has_more = store.list_events(
                job_id, after=seen, limit=500, type="message", newest_first=False
            )
            fresh.extend(public_event(r).model_dump(mode="json") for r in rows)
            seen = rows[-1]["id"] if rows else seen
            if not has_more:
                return job, fresh

    return poll
