"""The API key of a synthetic-data job's endpoint, kept out of the database.

Two ways to give one (`endpoint` of `POST /v1/synthetic-data`):

- `api_key_env`: the name of an environment variable of the worker that runs the job. Only
  the name is stored; the worker's job process reads the value when it starts.
- `api_key`: the key itself. The job's stored request holds `***` in its place; the key is
  written to `secrets/<job id>.key` in the data folder (mode 0600, folder 0700), read by the
  job process, and deleted once the job has ended (succeeded, failed or cancelled).
"""

from __future__ import annotations

import os
from pathlib import Path

from tuneforge.config import Settings
from tuneforge.db.store import Store
from tuneforge.errors import InvalidRequestError
from tuneforge.jobs.status import JobStatus

# What the stored request shows in place of an inline key.
REDACTED = "***"
FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


def secrets_dir(settings: Settings) -> Path:
    return settings.home / "secrets"


def key_path(settings: Settings, job_id: str) -> Path:
    return secrets_dir(settings) / f"{job_id}.key"


def keep_key(settings: Settings, job_id: str, key: str) -> None:
    """Write a job's inline key, readable by the service's user only."""
    folder = secrets_dir(settings)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    # Created with 0600 from the start: the key is never readable by others, not even briefly.
    fd = os.open(key_path(settings, job_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(key)


def endpoint_key(settings: Settings, job_id: str, endpoint: dict[str, str | None]) -> str | None:
    """The key to send for a job (None: none was given); InvalidRequestError when it cannot be
    found, naming where it was looked for."""
    if endpoint.get("api_key_env"):
        name = str(endpoint["api_key_env"])
        value = os.environ.get(name)
        if not value:
            raise InvalidRequestError(
                f"endpoint.api_key_env: the environment variable {name} is not set for the "
                "worker that runs this job; set it where the worker (`tuneforge serve` or "
                "`tuneforge worker`) starts.",
                param="endpoint.api_key_env",
            )
        return value
    if endpoint.get("api_key"):
        try:
            return key_path(settings, job_id).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InvalidRequestError(
                "endpoint.api_key: the job's key is no longer kept; create the job again, or "
                "give the key as api_key_env.",
                param="endpoint.api_key",
            ) from None
    return None


def forget_finished_keys(store: Store, settings: Settings) -> list[str]:
    """Delete the kept keys of jobs that have ended (or no longer exist); returns their ids."""
    folder = secrets_dir(settings)
    if not folder.is_dir():
        return []
    forgotten = []
    for path in folder.glob("*.key"):
        job = store.get_job(path.stem)
        if job is None or JobStatus(job["status"]) in FINISHED:
            path.unlink(missing_ok=True)
            forgotten.append(path.stem)
    return forgotten
