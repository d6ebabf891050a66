"""`POST /v1/deployments`: checked at once, then run by a worker as a job of kind
`deployment` (its events are the job's events).

A deployment names a registered version (`name@v3`, `name@alias`, or its `ft:` id) and a
target. Rollback is a deployment too: the target's previous live version, deployed again."""

from __future__ import annotations

import os
import time
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tuneforge.config import Settings
from tuneforge.db.store import Row, Store, new_id
from tuneforge.errors import InvalidRequestError, InvalidStateError, JobNotFoundError
from tuneforge.jobs.status import JobStatus
from tuneforge.registry.models import resolve_model
from tuneforge.registry.service import require_version, resolve_reference
from tuneforge.serving.loading import DESCRIPTIONS, model_kind
from tuneforge.training.spec import ALIAS_NAME, MODEL_NAME

KIND = "deployment"
# An Ollama model name: a name with an optional namespace and tag (`team/model:tag`).
_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}"
OLLAMA_NAME = rf"^{_PART}(/{_PART})?(:[A-Za-z0-9._-]{{1,80}})?$"


class OllamaTarget(BaseModel):
    """An Ollama server: the GGUF export and its Modelfile become a model there."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["ollama"]
    url: str = Field(..., max_length=2000, description="The server, e.g. http://host:11434.")
    name: str | None = Field(
        None, pattern=OLLAMA_NAME, description="The model's name there (default: the "
        "registered name)."
    )
    quantization: str = Field("q4_k_m", description="The GGUF type, as for exports.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an http:// or https:// address of an Ollama server")
        return value.rstrip("/")


class LocalTarget(BaseModel):
    """tuneforge's own endpoints: `name@alias` moves to the version once it passes."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["local"]
    alias: str = Field("production", max_length=64)

    @field_validator("alias")
    @classmethod
    def _alias(cls, value: str) -> str:
        if not ALIAS_NAME.match(value):
            raise ValueError("an alias has letters, digits, '_' and '-', starting with a letter")
        return value


_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
HUB_REPO = rf"^{_REPO_PART}/{_REPO_PART}$"


class HuggingFaceTarget(BaseModel):
    """A repository on the Hugging Face Hub (or a compatible hub): the version's folder with
    its model card becomes a commit there. The token is the server's HF_TOKEN, never part of
    a request."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["huggingface"]
    repo_id: str = Field(..., pattern=HUB_REPO, max_length=200, description="org/name.")
    endpoint: str | None = Field(
        None, max_length=2000, description="The hub (default: HF_ENDPOINT, else the Hub)."
    )
    private: bool = Field(True, description="Visibility when the repository is created.")
    revision: str = Field("main", pattern=r"^[A-Za-z0-9._/-]{1,200}$", description="Branch.")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("endpoint must be an http:// or https:// address of a hub")
        return value.rstrip("/")


class HealthCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompts: int = Field(3, ge=1, le=20, description="Validation prompts asked.")
    max_tokens: int = Field(24, ge=1, le=256, description="Tokens generated per prompt.")
    min_agreement: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="ollama: the least share of the verified export's answer (characters "
        "from the start) that the target's greedy answers must reproduce.",
    )


class DeploymentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(..., max_length=255, description="name@vN, name@alias or an ft: id.")
    target: Annotated[
        OllamaTarget | LocalTarget | HuggingFaceTarget, Field(discriminator="type")
    ]
    health_check: HealthCheck = Field(default_factory=HealthCheck)
    rollback_on_failure: bool = Field(
        True, description="Restore what was live when the health check fails."
    )
    metadata: dict[str, str] | None = None

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        if not MODEL_NAME.match(value):
            raise ValueError(f"{value!r} is not a model id")
        return value


def default_hub_endpoint() -> str:
    """HF_ENDPOINT, as huggingface_hub reads it, else the Hub."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def target_key(spec: dict[str, Any]) -> str:
    """What two deployments share when they deploy to the same place."""
    target = spec["target"]
    if target["type"] == "ollama":
        return f"ollama {target['url']} {spec['ollama_name']}"
    if target["type"] == "huggingface":
        return f"huggingface {spec['hub_endpoint']} {target['repo_id']}"
    return f"local {spec['name']}@{target['alias']}"


def resolve_version(store: Store, model: str) -> Row:
    """The registry version `model` names (name@vN, name@alias, or its ft: id)."""
    model_id = resolve_reference(store, model) if "@" in model else model
    version = store.version_of_model(model_id)
    if version is None:
        raise InvalidRequestError(
            f"{model} is not a registered model version; deployments take one "
            "(name@v1, name@alias or its ft: id).",
            param="model",
        )
    return require_version(store, version.name, version.version)


def create_deployment(
    store: Store, settings: Settings, request: DeploymentCreate, rollback_of: str | None = None
) -> Row:
    """Check the version exists and suits the target, then queue the deployment; nothing is
    queued unless every check passes."""
    version = resolve_version(store, request.model)
    spec = request.model_dump(mode="json")
    spec.update(name=version["name"], version=version["version"], model_id=version["model_id"])
    spec["rollback_of"] = rollback_of
    if request.target.type == "ollama":
        _check_gguf_exportable(store, settings, version, request.target)
        spec["ollama_name"] = request.target.name or _ollama_name(version["name"])
    if request.target.type == "huggingface":
        spec["hub_endpoint"] = request.target.endpoint or default_hub_endpoint()
    spec["target_key"] = target_key(spec)
    job_id = new_id("deploy")
    store.insert_job(
        {
            "id": job_id,
            "kind": KIND,
            "model": version["model_id"],
            "status": JobStatus.VALIDATING_FILES.value,
            "spec": spec,
            "created_at": time.time(),
            "device": "cpu",
            "max_attempts": 1,
        },
        "Deployment accepted.",
    )
    what = "Rollback" if rollback_of else "Deployment"
    return store.transition(
        job_id,
        JobStatus.QUEUED,
        f"{what} of {version['name']} v{version['version']} to {spec['target_key']} queued.",
    )


def _ollama_name(name: str) -> str:
    return name.lower()[:80]


def _check_gguf_exportable(
    store: Store, settings: Settings, version: Row, target: OllamaTarget
) -> None:
    from pathlib import Path

    from tuneforge.export.gguf_convert import gguf_architecture
    from tuneforge.export.service import GGUF_TYPES, base_config_folder

    if target.quantization not in GGUF_TYPES:
        raise InvalidRequestError(
            f"quantization {target.quantization!r} is not one of {', '.join(GGUF_TYPES)}",
            param="target.quantization",
        )
    folder = Path(resolve_model(store, settings, version["model_id"]).location)
    found = model_kind(folder) if folder.is_dir() else None
    if found != "causal_lm":
        what = DESCRIPTIONS.get(found or "", "not a model tuneforge can export")
        raise InvalidRequestError(
            f"{version['name']} v{version['version']} is {what}; Ollama serves causal "
            "language models as GGUF.",
            param="target",
        )
    config_folder = base_config_folder(folder)
    if config_folder is not None:
        gguf_architecture(config_folder)  # raises the reason it cannot become GGUF


def require_deployment(store: Store, deployment_id: str) -> Row:
    job = store.get_job(deployment_id)
    if job is None or job["kind"] != KIND:
        raise JobNotFoundError(f"No deployment with id {deployment_id!r}.", param="id")
    return job


def deployments_to(store: Store, key: str) -> list[Row]:
    """Every deployment to the target `key`, newest first."""
    found: list[Row] = []
    after = None
    while True:
        rows, more = store.list_jobs(after=after, limit=100, kind=KIND)
        found += [r for r in rows if r["spec"].get("target_key") == key]
        if not more or not rows:
            return found
        after = rows[-1]["id"]


def live_and_previous(store: Store, key: str) -> tuple[Row | None, Row | None]:
    """The deployment live on the target `key` (the latest that succeeded) and the one live
    before it with another version."""
    done = [r for r in deployments_to(store, key) if r["status"] == JobStatus.SUCCEEDED.value]
    done.sort(key=lambda r: r.get("finished_at") or 0, reverse=True)
    if not done:
        return None, None
    live = done[0]
    for row in done[1:]:
        if row["spec"]["version"] != live["spec"]["version"]:
            return live, row
    return live, None


def create_rollback(store: Store, settings: Settings, deployment_id: str) -> Row:
    """Deploy again the version that was live on the deployment's target before the live
    one; 409 when there is none."""
    job = require_deployment(store, deployment_id)
    spec = job["spec"]
    live, previous = live_and_previous(store, spec["target_key"])
    if live is None or previous is None:
        raise InvalidStateError(
            f"Nothing to roll back to on {spec['target_key']}: no earlier version was live "
            "there through tuneforge.",
            param="id",
        )
    request = DeploymentCreate.model_validate(
        {
            "model": previous["spec"]["model_id"],
            "target": previous["spec"]["target"],
            "health_check": spec["health_check"],
            "rollback_on_failure": spec["rollback_on_failure"],
            "metadata": spec.get("metadata"),
        }
    )
    return create_deployment(store, settings, request, rollback_of=live["id"])
