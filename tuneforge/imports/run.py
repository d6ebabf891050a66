"""The job process's side of a model import: convert or copy the source into the model's
folder (written aside, renamed into place), then record the model with its provenance and end
the job, in one fenced transaction."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from tuneforge.config import Settings
from tuneforge.db.store import Row, Store
from tuneforge.errors import ModelExistsError
from tuneforge.imports.convert import import_model
from tuneforge.imports.service import import_path, imported_folder
from tuneforge.jobs.reporting import JobReporter
from tuneforge.jobs.status import JobStatus


def run_import(store: Store, settings: Settings, job: Row, reporter: JobReporter) -> None:
    spec = job["spec"]
    name = spec["name"]
    # A path is checked again: the import roots may have changed since the request.
    source = Path(spec["path"]) if spec["file"] else import_path(settings, spec["path"])
    target = imported_folder(settings, name)
    if target.exists() and store.get_model(name) is None:
        shutil.rmtree(target)  # left by a run that crashed between its rename and its commit
    started = time.monotonic()
    provenance = import_model(source, target, label=spec["label"], note=reporter.note)
    seconds = round(time.monotonic() - started, 1)
    relative = target.resolve().relative_to(settings.home.resolve()).as_posix()
    try:
        with store.fenced(job["id"], reporter.lease) as conn:
            if store.get_model(name, conn=conn) is not None:
                raise ModelExistsError(
                    f"A model named {name!r} appeared while the import ran.", param="name"
                )
            store.upsert_model(
                {
                    "id": name,
                    "kind": "base",
                    "owned_by": "user",
                    "created_at": time.time(),
                    "base_model": None,
                    "job_id": job["id"],
                    "path": relative,
                    "provenance": provenance,
                },
                conn=conn,
            )
            store.transition(
                job["id"],
                JobStatus.SUCCEEDED,
                f"Imported {spec['label']} as {name} in {seconds} s.",
                expected={JobStatus.RUNNING},
                lease=reporter.lease,
                conn=conn,
                fine_tuned_model=name,
                result={"model": name, "path": relative, "seconds": seconds, **provenance},
                data={"model": name, "seconds": seconds},
            )
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
