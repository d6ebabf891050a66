"""Settings: the one place where tuneforge reads its environment."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tuneforge.defaults import DEFAULT_HOST, DEFAULT_PORT  # noqa: F401 (re-exported)


class Settings(BaseSettings):
    """Configuration, from `TUNEFORGE_*` environment variables (and `DATABASE_URL`)."""

    model_config = SettingsConfigDict(
        env_prefix="TUNEFORGE_", extra="ignore", populate_by_name=True
    )

    home: Path = Field(
        Path("tuneforge-data"),
        description="Data folder: database (embedded default), uploaded files, models, logs.",
    )
    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("TUNEFORGE_DATABASE_URL", "DATABASE_URL"),
        description="SQLAlchemy URL; default: SQLite at HOME/tuneforge.db.",
    )
    host: str = Field(DEFAULT_HOST, description="Address `tuneforge serve` binds to.")
    port: int = Field(DEFAULT_PORT, description="Port `tuneforge serve` listens on.")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host header values accepted besides localhost, 127.0.0.1, [::1] and the "
        "bound address (DNS rebinding); `*` accepts any. JSON list or comma-separated.",
    )
    rate_limit_per_minute: float = Field(
        600.0,
        gt=0,
        description="Requests per minute to the expensive endpoints (creating jobs, exports, "
        "evaluations; inference) per API key, or per client address while the API is open.",
    )
    rate_limit_burst: int = Field(
        120,
        ge=1,
        description="How many of those requests may come at once before the rate applies.",
    )
    max_queued_jobs_per_key: int = Field(
        100,
        ge=1,
        description="Jobs (of any kind) one API key (or the open API) may have waiting to run.",
    )
    max_upload_bytes: int = Field(
        512 * 1024 * 1024,
        description="Largest accepted upload; larger ones get 413 while streaming.",
    )
    max_model_upload_bytes: int = Field(
        64 * 1024**3,
        description="Largest accepted upload of purpose `model` (a GGUF file to import).",
    )
    body_idle_seconds: float = Field(
        30.0,
        gt=0,
        description="A request body that sends no bytes for this long is answered 408 (a "
        "Content-Length larger than the body sent would otherwise hold the request open).",
    )
    import_roots: list[Path] = Field(
        default_factory=list,
        description="Folders on this machine from which `POST /v1/model_imports` may import a "
        "GGUF file or model folder by path (default: HOME/imports). Paths outside are refused.",
    )
    min_rows: int = Field(2, ge=1, description="Fewest rows a training file may have.")
    model_dirs: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Folders searched for base models by name (plain or `models--org--name`): "
        "a model named org/name is the folder DIR/org/name. JSON list, or separated by "
        "`:` as PATH is.",
    )
    stats_tokenizer: str = Field(
        "sentence-transformers/all-MiniLM-L6-v2",
        description="Model whose tokenizer counts tokens in dataset statistics (if available).",
    )
    serving_memory_mb: int = Field(
        4096,
        ge=0,
        description="Memory for the models that /v1/embeddings, /v1/rerank, "
        "/v1/chat/completions and /v1/completions keep loaded (their parameters' bytes, in "
        "MiB): the least recently used are unloaded to stay within it; a larger model still "
        "loads, alone.",
    )
    heartbeat_seconds: float = Field(
        2.0, gt=0, description="How often a worker marks its job alive."
    )
    stalled_after_seconds: float = Field(
        60.0, gt=0, description="A running job without heartbeat for this long is requeued."
    )
    cancel_grace_seconds: float = Field(
        15.0, ge=0, description="How long a cancelled job may take to stop before it is killed."
    )
    shutdown_grace_seconds: float = Field(
        60.0,
        ge=0,
        description="On shutdown, how long a job may take to write its checkpoint before it "
        "is killed (it then continues from the one before).",
    )
    poll_seconds: float = Field(0.5, gt=0, description="How often an idle worker looks for work.")
    resource_sample_seconds: float = Field(
        10.0,
        gt=0,
        description="How often a job's process records its CPU, memory and GPU memory (a "
        "metrics event; see tuneforge.monitoring.resources).",
    )
    worker_address: str | None = Field(
        None,
        max_length=255,
        description="Address at which workers on other machines reach this one, when a "
        "multi-machine job this worker claims meets here (default: the address of the "
        "interface this machine's outgoing traffic leaves by).",
    )
    runner_module: str = Field(
        "tuneforge.jobs.runner",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$",
        description="Module a worker runs each job with (`python -m MODULE JOB_ID LEASE "
        "SETTINGS`); tests swap in a quick one.",
    )
    warm_start: bool = Field(
        True,
        description="Fork single-process jobs from a warm job process that has imported the "
        "training libraries once (saves seconds per job; it holds their memory meanwhile).",
    )
    check_fit: bool = Field(
        True,
        description="Refuse a training job whose estimate (memory per device, disk) does not "
        "fit this machine's device or the data folder's free space (false: create it anyway).",
    )
    job_slots: int = Field(
        1,
        ge=1,
        le=1024,
        description="Jobs that run at once on this machine (its workers): each job process "
        "gets an equal share of the cores as its thread budget.",
    )
    serving_threads: int = Field(
        0,
        ge=0,
        le=4096,
        description="Cores kept for the serving endpoints on this machine, left out of the "
        "jobs' thread budgets.",
    )
    job_threads: int | None = Field(
        None,
        ge=1,
        le=4096,
        validation_alias=AliasChoices("TUNEFORGE_JOB_THREADS", "OMP_NUM_THREADS"),
        description="Threads of each job process (torch's intra-op threads), instead of its "
        "share of the cores; OMP_NUM_THREADS counts too.",
    )

    python_graders: bool = Field(
        False,
        description="Run python graders (code sent with a request, run in a confined process; "
        "see SECURITY.md). Off: they are refused with 403.",
    )
    python_grader_seconds: float = Field(
        30.0, gt=0, le=600, description="Wall-clock limit of one python grader call."
    )
    python_grader_cpu_seconds: int = Field(
        30, ge=1, le=600, description="CPU-time limit of one python grader call."
    )
    python_grader_memory_mb: int = Field(
        2048, ge=64, description="Address-space limit of a python grader's process (MiB)."
    )
    grader_embedding_model: str = Field(
        "sentence-transformers/all-MiniLM-L6-v2",
        description="The embedding model of text_similarity graders with the cosine metric.",
    )

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _host_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [h.strip() for h in text.split(",") if h.strip()]
        return value

    @field_validator("model_dirs", mode="before")
    @classmethod
    def _path_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [p for p in text.split(os.pathsep) if p.strip()]
        return value

    @field_validator("home", "model_dirs", "import_roots")
    @classmethod
    def _absolute(cls, value: Path | list[Path]) -> Path | list[Path]:
        # Job processes and workers may run elsewhere: paths must not depend on their cwd.
        if isinstance(value, list):
            return [p.expanduser().resolve() for p in value]
        return value.expanduser().resolve()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'tuneforge.db'}"

    @property
    def files_dir(self) -> Path:
        return self.home / "files"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def jobs_dir(self) -> Path:
        return self.home / "jobs"

    @property
    def import_dirs(self) -> list[Path]:
        """The folders models may be imported from by path (`import_roots`, or HOME/imports)."""
        return self.import_roots or [self.home / "imports"]

    def ensure_dirs(self) -> None:
        for path in (self.home, self.files_dir, self.models_dir, self.jobs_dir):
            path.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
