"""Table definitions (SQLAlchemy Core), portable between SQLite and PostgreSQL.

Times are UNIX seconds (float), as in OpenAI's API objects.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

files = Table(
    "files",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("filename", String(255), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("format", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    # The validation report with statistics; see tuneforge.datasets.validation.
    Column("report", JSON, nullable=False),
)

# Users' ratings of a model's answers (see tuneforge.feedback): exported into training data.
feedback = Table(
    "feedback",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("model", String(255), nullable=False),  # as given: ft:…, NAME@alias, a base model
    Column("registered_model", String(100)),  # the registry name it belongs to, if any
    Column("messages", JSON, nullable=False),  # the conversation up to the answer
    Column("output", Text, nullable=False),  # the model's answer
    Column("rating", String(16), nullable=False),  # up, down or edited
    Column("corrected", Text),  # edited: the user's version of the answer
    Column("metadata", JSON),
    Column("created_at", Float, nullable=False),
    Index("ix_feedback_registered_created", "registered_model", "created_at"),
    Index("ix_feedback_model_created", "model", "created_at"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("model", String(255), nullable=False),
    Column("status", String(32), nullable=False),
    # The validated job spec (tuneforge.training.spec.JobSpec), as stored.
    Column("spec", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("fine_tuned_model", String(255)),
    Column("error", JSON),
    Column("progress", JSON),
    Column("metrics", JSON),
    Column("result", JSON),
    Column("worker_id", String(128)),
    Column("heartbeat_at", Float),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    # Times a worker claimed the job (retries, resumes and requeues included).
    Column("attempts", Integer, nullable=False, default=0),
    # The fencing token: raised at every claim. A process may change the job only while the
    # job's lease is still the one it was started with.
    Column("lease", Integer, nullable=False, default=0, server_default="0"),
    # Runs that ended in a crash (killed, out of memory, lost worker); at max_attempts the job
    # fails instead of being retried.
    Column("failures", Integer, nullable=False, default=0, server_default="0"),
    Column("max_attempts", Integer, nullable=False, default=3, server_default="3"),
    Column("pause_requested", Boolean, nullable=False, default=False, server_default="0"),
    # The device the job asked for ("auto", "cpu", "cuda"): workers may take only some.
    Column("device", String(16), nullable=False, default="auto", server_default="auto"),
    Column("claimed_at", Float),
    # Seconds spent running over all attempts; timeout_seconds is measured against it.
    Column("run_seconds", Float, nullable=False, default=0.0, server_default="0"),
    # The API key's actor that created the job (the queue bound counts by it); null for the
    # jobs that workers create themselves and for jobs from before migration 0009.
    Column("created_by", String(128)),
    # What would train, but not as asked (codes and numbers; see jobs.warnings), shown at the
    # top of the job. Null for jobs from before migration 0012.
    Column("warnings", JSON),
    # What the job was estimated to need when it was created (tuneforge.jobs.estimate):
    # memory per device by part, time, disk; null where no estimate could be made.
    Column("estimate", JSON),
    Index("ix_jobs_status_created", "status", "created_at"),
    Index("ix_jobs_created_by_status", "created_by", "status"),
)

# A job's `metadata` (OpenAI's key-value pairs, also in its spec), one row a pair: listings
# filter on it in SQL (migration 0011).
job_metadata = Table(
    "job_metadata",
    metadata,
    Column("job_id", String(64), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("value", String(512), nullable=False),
    Index("ix_job_metadata_key_value", "key", "value"),
)

# Row numbers of the tables that grow without end: 64 bits everywhere (SQLite's INTEGER
# PRIMARY KEY already is, and must stay INTEGER to number rows itself).
ROW_NUMBER = BigInteger().with_variant(Integer, "sqlite")

events = Table(
    "events",
    metadata,
    Column("id", ROW_NUMBER, primary_key=True, autoincrement=True),
    Column("job_id", String(64), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("level", String(8), nullable=False),
    Column("type", String(16), nullable=False),
    Column("message", Text, nullable=False),
    Column("data", JSON),
    Index("ix_events_job", "job_id", "id"),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("job_id", String(64), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("step", Integer, nullable=False),
    Column("epoch", Float),
    Column("created_at", Float, nullable=False),
    Column("path", Text, nullable=False),
    Column("metrics", JSON),
    Index("ix_checkpoints_job", "job_id", "step"),
)

models = Table(
    "models",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("kind", String(32), nullable=False),  # "base" or "fine-tuned"
    Column("owned_by", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("base_model", String(255)),
    Column("job_id", String(64)),
    # Relative to the data folder for fine-tuned and imported models; the resolved source
    # for the other base models.
    Column("path", Text),
    # Imported base models: the file or folder they came from (tuneforge.imports.convert).
    Column("provenance", JSON),
)

workers = Table(
    "workers",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("hostname", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("kinds", JSON),  # job kinds it takes; null: all
    Column("devices", JSON),  # devices it takes jobs for; null: all
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("job_id", String(64)),  # the job it runs now
    Column("stopped_at", Float),
)

# The machines of one run (`lease`) of a multi-machine job: node 0 is the worker that claimed
# it and hosts the rendezvous (address, port); the others joined. `token` is written into the
# job's folder by node 0: a worker that cannot read it does not share the data folder.
job_nodes = Table(
    "job_nodes",
    metadata,
    Column("job_id", String(64), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("lease", Integer, primary_key=True),
    Column("node_rank", Integer, primary_key=True),
    Column("machines", Integer, nullable=False),
    Column("worker_id", String(128), nullable=False),
    Column("hostname", String(255), nullable=False),
    Column("address", String(255)),
    Column("port", Integer),
    Column("token", String(64)),
    # joined -> running -> done | failed; leaving: its worker shuts down (the job checkpoints)
    Column("state", String(16), nullable=False),
    Column("joined_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("exit_code", Integer),
)

# The registry: named models, their versions 1..N, and aliases pointing at one version each.
registered_models = Table(
    "registered_models",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("description", Text),
    Column("tags", JSON),  # list of strings
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column(
        "name",
        String(100),
        ForeignKey("registered_models.name", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("version", Integer, nullable=False),
    Column("model_id", String(255), nullable=False),  # the models row (ft:...) it serves as
    Column("job_id", String(64)),
    Column("kind", String(32), nullable=False),
    Column("base_model", String(255)),
    Column("spec", JSON),  # the full training spec
    Column("data_files", JSON),  # [{id, filename, sha256, bytes}]
    Column("library_versions", JSON),
    Column("metrics", JSON),  # the job's last training metrics
    Column("evaluation", JSON),  # base vs fine-tuned on the validation split
    Column("artefacts", JSON),  # [{path, bytes, sha256}]
    Column("path", Text, nullable=False),  # relative to the data folder
    Column("description", Text),
    Column("tags", JSON),
    Column("created_at", Float, nullable=False),
    Index("ux_model_versions_name_version", "name", "version", unique=True),
)

model_aliases = Table(
    "model_aliases",
    metadata,
    Column(
        "name",
        String(100),
        ForeignKey("registered_models.name", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("alias", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# API keys: only a SHA-256 of the secret is kept; `prefix` (the secret's first characters)
# lets an operator tell keys apart in `tuneforge keys list`.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("scope", String(16), nullable=False),  # "read" or "admin"
    Column("prefix", String(16), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
)

# Every write through the API: who (a key id, or "local" while the API is open), what, when.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", ROW_NUMBER, primary_key=True, autoincrement=True),
    Column("created_at", Float, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("method", String(8), nullable=False),
    Column("path", Text, nullable=False),
    Column("status", Integer, nullable=False),
    Column("resource_id", String(255)),  # the id the write created or named, when known
    Column("client", String(64)),  # the client's address
    Index("ix_audit_log_actor_resource", "actor", "resource_id"),
)

# Hyperparameter studies (tuneforge.studies): the study, its trials (each one a job), and the
# log of Optuna's JournalStorage for the study (Optuna's RDBStorage would share the
# alembic_version table with ours, so its log is kept here instead).
studies = Table(
    "studies",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("status", String(32), nullable=False),  # running, succeeded, failed, cancelled
    Column("spec", JSON, nullable=False),  # tuneforge.studies.spec.StudyCreate, as stored
    Column("created_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("cancel_requested", Boolean, nullable=False, default=False, server_default="0"),
    # The driver that coordinates the study, and until when its claim holds.
    Column("driver_id", String(128)),
    Column("driver_until", Float),
    Column("result", JSON),  # best trial, parameter importances, registered version
    Column("error", JSON),
    Index("ix_studies_status_created", "status", "created_at"),
)

study_trials = Table(
    "study_trials",
    metadata,
    Column("study_id", String(64), ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True),
    Column("number", Integer, primary_key=True),  # Optuna's trial number
    Column("trial_id", Integer, nullable=False),  # Optuna's trial id
    Column("job_id", String(64)),
    Column("state", String(16), nullable=False),  # running, complete, pruned, failed, cancelled
    Column("params", JSON, nullable=False),
    Column("value", Float),
    # The newest metrics event of the job already reported to Optuna.
    Column("last_event", Integer, nullable=False, default=0, server_default="0"),
    Column("intermediate", JSON),  # {step: value} as reported
    Column("error", JSON),  # why the trial could not start
    Column("created_at", Float, nullable=False),
    Column("finished_at", Float),
)

study_journal = Table(
    "study_journal",
    metadata,
    Column("study_id", String(64), ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("entry", JSON, nullable=False),
)

# Served requests per minute, model and endpoint (tuneforge.monitoring.usage): what the API
# counted in memory, added in at each flush. `latency_buckets` counts requests per bound of
# LATENCY_BOUNDS_MS (and one more above the last), from which percentiles are read.
model_usage = Table(
    "model_usage",
    metadata,
    Column("minute", Float, primary_key=True),  # the bucket's start, UNIX seconds
    Column("model", String(255), primary_key=True),  # as resolved: ft:…, an imported model
    Column("endpoint", String(64), primary_key=True),  # /v1/embeddings, /v1/completions, …
    Column("registered_model", String(100)),  # the registry name of `model`, if any
    Column("version", Integer),  # its version there
    Column("requests", Integer, nullable=False),
    Column("errors", Integer, nullable=False),
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
    Column("latency_ms_sum", Float, nullable=False),
    Column("latency_ms_max", Float, nullable=False),
    Column("latency_buckets", JSON, nullable=False),
    Index("ix_model_usage_registered_minute", "registered_model", "minute"),
    Index("ix_model_usage_model_minute", "model", "minute"),
)
