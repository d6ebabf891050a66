"""What the store reads back: one small read-only record per table (`Job`, `File`,
`ModelVersion`, …), as procrastinate's `jobs.py` keeps its `Job` apart from the SQL.

A record is a `dict` of its row's columns that cannot be changed, and whose columns also read
as attributes: `job.status` is `job["status"]`. Being a dict, it goes wherever the store's
rows went before (`row["id"]`, `.get()`, `dict(row)`, `{**row}`, JSON, pydantic, a parameter
typed `Row`); `dict(row)` is a copy to change. Each record declares its columns with their
types, so that mypy checks the attributes read.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, NoReturn

# A row to write: column names to values (what insert_job, insert_file … take).
Row = dict[str, Any]


def new_id(prefix: str) -> str:
    """A fresh id in OpenAI's style: `prefix-` and 32 hex digits."""
    return f"{prefix}-{uuid.uuid4().hex}"


def uuid_form(record_id: str) -> str | None:
    """The UUID form of an id `prefix-<32 hex>` (what seed-000 clients send and read:
    `file-0b30b284f7fe...` is `0b30b284-f7fe-...`); None for an id of another shape."""
    _, sep, hex_part = record_id.rpartition("-")
    if not sep or len(hex_part) != 32:
        return None
    try:
        return str(uuid.UUID(hex=hex_part))
    except ValueError:
        return None


class Record(dict[str, Any]):
    """A row as read: a read-only dict whose columns read as attributes too."""

    if not TYPE_CHECKING:  # mypy reads the columns each record declares instead

        def __getattr__(self, name: str) -> Any:
            try:
                return self[name]
            except KeyError:
                raise AttributeError(f"{type(self).__name__} has no column {name!r}") from None

        def __setattr__(self, name: str, value: Any) -> NoReturn:
            raise AttributeError(f"A {type(self).__name__} is read-only; change a copy: dict(row).")

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(f"A {type(self).__name__} is read-only; change a copy: dict(row).")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self) -> tuple[type[Record], tuple[dict[str, Any]]]:
        # copy and pickle rebuild a dict subclass item by item, which a read-only one refuses
        return type(self), (dict(self),)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)})"


class File(Record):
    """An uploaded data file and its validation report."""

    id: str
    filename: str
    purpose: str
    bytes: int
    sha256: str
    format: str
    created_at: float
    report: dict[str, Any]  # see tuneforge.datasets.validation


class Feedback(Record):
    """A user's rating of one answer of a model."""

    id: str
    model: str  # as given: ft:…, NAME@alias, a base model
    registered_model: str | None
    messages: list[dict[str, Any]]
    output: str
    rating: str  # up, down or edited
    corrected: str | None
    metadata: dict[str, Any] | None
    created_at: float


class Job(Record):
    """A job of any kind (fine-tuning, evaluation, export, synthetic data) in the queue."""

    id: str
    kind: str
    model: str
    status: str  # a tuneforge.jobs.status.JobStatus value
    spec: dict[str, Any]
    created_at: float
    started_at: float | None
    finished_at: float | None
    fine_tuned_model: str | None
    error: dict[str, Any] | None
    progress: dict[str, Any] | None
    metrics: dict[str, Any] | None
    result: dict[str, Any] | None
    worker_id: str | None
    heartbeat_at: float | None
    cancel_requested: bool
    attempts: int
    lease: int
    failures: int
    max_attempts: int
    pause_requested: bool
    device: str
    claimed_at: float | None
    run_seconds: float
    warnings: list[dict[str, Any]] | None


class JobControls(Record):
    """What a running job's process polls: its requests, status and lease."""

    status: str
    lease: int
    cancel_requested: bool
    pause_requested: bool


class Event(Record):
    """One entry of a job's log."""

    id: int
    job_id: str
    created_at: float
    level: str
    type: str  # message or metrics
    message: str
    data: dict[str, Any] | None


class Checkpoint(Record):
    """A checkpoint a job wrote."""

    id: str
    job_id: str
    step: int
    epoch: float | None
    created_at: float
    path: str
    metrics: dict[str, Any] | None


class Worker(Record):
    """A worker process, running or stopped."""

    id: str
    hostname: str
    pid: int
    kinds: list[str] | None
    devices: list[str] | None
    started_at: float
    heartbeat_at: float
    job_id: str | None
    stopped_at: float | None


class JobNode(Record):
    """One machine of a run of a multi-machine job."""

    job_id: str
    lease: int
    node_rank: int
    machines: int
    worker_id: str
    hostname: str
    address: str | None
    port: int | None
    token: str | None
    state: str  # joined, running, done, failed or leaving
    joined_at: float
    heartbeat_at: float
    exit_code: int | None


class RendezvousOpening(JobNode):
    """Node 0 of a run that still misses machines, with what a worker needs to decide to
    join it."""

    kind: str
    device: str
    spec: dict[str, Any]
    created_at: float  # the job's
    joined: int  # machines in so far


class Model(Record):
    """A model the API serves: a base model or a fine-tuned one (ft:…)."""

    id: str
    kind: str  # base or fine-tuned
    owned_by: str
    created_at: float
    base_model: str | None
    job_id: str | None
    path: str | None
    provenance: dict[str, Any] | None  # imported models: where from (see tuneforge.imports)


class RegisteredModel(Record):
    """A name in the registry, with versions 1..N."""

    name: str
    kind: str
    description: str | None
    tags: list[str] | None
    created_at: float
    updated_at: float


class ModelVersion(Record):
    """One version of a registered model and how it was made."""

    id: str
    name: str
    version: int
    model_id: str  # the Model it serves as (ft:…)
    job_id: str | None
    kind: str
    base_model: str | None
    spec: dict[str, Any] | None
    data_files: list[dict[str, Any]] | None
    library_versions: dict[str, Any] | None
    metrics: dict[str, Any] | None
    evaluation: dict[str, Any] | None
    artefacts: list[dict[str, Any]] | None
    path: str
    description: str | None
    tags: list[str] | None
    created_at: float


class ModelAlias(Record):
    """An alias of a registered model, pointing at one of its versions."""

    name: str
    alias: str
    version: int
    updated_at: float


class ApiKey(Record):
    """An API key as listed: never with the hash of its secret."""

    id: str
    name: str
    scope: str  # read or admin
    prefix: str
    created_at: float
    revoked_at: float | None


class AuditLogEntry(Record):
    """One write through the API."""

    id: int
    created_at: float
    actor: str
    method: str
    path: str
    status: int
    resource_id: str | None
    client: str | None


class Study(Record):
    """A hyperparameter study."""

    id: str
    name: str
    status: str  # running, succeeded, failed or cancelled
    spec: dict[str, Any]  # tuneforge.studies.spec.StudyCreate, as stored
    created_at: float
    finished_at: float | None
    cancel_requested: bool
    driver_id: str | None
    driver_until: float | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None


class Trial(Record):
    """One trial of a study: a job with Optuna's parameters."""

    study_id: str
    number: int
    trial_id: int
    job_id: str | None
    state: str  # running, complete, pruned, failed or cancelled
    params: dict[str, Any]
    value: float | None
    last_event: int
    intermediate: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: float
    finished_at: float | None
