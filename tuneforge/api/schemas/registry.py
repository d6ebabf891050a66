"""The answers of `/v1/registered_models` and `/v1/model_versions`: named models, their
versions and aliases, and comparisons of versions."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tuneforge.api.schemas.base import Public
from tuneforge.db.store import Row, Store
from tuneforge.registry.service import aliases_by_version


class ModelVersionPublic(Public):
    object: Literal["model.version"] = "model.version"
    id: str
    name: str
    version: int
    model: str = Field(..., description="The fine-tuned model it serves as (ft:...).")
    kind: str
    job_id: str | None
    base_model: str | None
    created_at: int
    aliases: list[str] = Field(..., description="The aliases that point at it.")
    description: str | None
    tags: list[str]
    metrics: dict[str, Any] = Field(..., description="The job's last training metrics.")
    evaluation: dict[str, Any] | None = Field(
        ..., description="The base and the fine-tuned model on the validation split."
    )
    data_files: list[dict[str, Any]] | None = Field(
        ..., description="The data it was trained on: id, filename, sha256, bytes."
    )
    library_versions: dict[str, str] | None
    artefacts: list[dict[str, Any]] | None = Field(
        ..., description="Its files: path, bytes, sha256."
    )
    spec: dict[str, Any] | None = Field(..., description="The full training spec.")


class ModelVersionsPublic(Public):
    object: Literal["list"] = "list"
    data: list[ModelVersionPublic]


class RegisteredModelPublic(Public):
    object: Literal["registered_model"] = "registered_model"
    name: str
    kind: str
    description: str | None
    tags: list[str]
    created_at: int
    updated_at: int
    aliases: dict[str, int] = Field(..., description="Each alias and the version it points at.")
    versions: int = Field(..., description="How many versions it has.")
    latest_version: ModelVersionPublic | None


class RegisteredModelsPublic(Public):
    object: Literal["list"] = "list"
    data: list[RegisteredModelPublic]


class ModelVersionDeleted(Public):
    object: Literal["model.version.deleted"] = "model.version.deleted"
    name: str
    version: int
    deleted: bool


class ModelAliasPublic(Public):
    object: Literal["model.alias"] = "model.alias"
    name: str
    alias: str
    version: int


class ModelComparisonPublic(Public):
    object: Literal["model.comparison"] = "model.comparison"
    name: str
    versions: list[int]
    metrics: dict[str, list[float | None]] = Field(
        ..., description="Each validation metric of the fine-tuned models, version by version."
    )
    base_model_metrics: dict[str, list[Any]] = Field(
        ..., description="The same metrics of each version's base model."
    )
    spec_differences: dict[str, list[Any]] = Field(
        ..., description="The spec fields (dotted) in which the versions differ."
    )


def public_version(row: Row, aliases: list[str]) -> ModelVersionPublic:
    return ModelVersionPublic(
        id=row["id"],
        name=row["name"],
        version=row["version"],
        model=row["model_id"],
        kind=row["kind"],
        job_id=row["job_id"],
        base_model=row["base_model"],
        created_at=int(row["created_at"]),
        aliases=aliases,
        description=row["description"],
        tags=row["tags"] or [],
        metrics=row["metrics"] or {},
        evaluation=row["evaluation"],
        data_files=row["data_files"],
        library_versions=row["library_versions"],
        artefacts=row["artefacts"],
        spec=row["spec"],
    )


def version_with_aliases(store: Store, row: Row) -> ModelVersionPublic:
    """The version with the aliases that point at it, as the store has them now."""
    return public_version(row, aliases_by_version(store, row["name"]).get(row["version"], []))


def public_registered_model(store: Store, row: Row) -> RegisteredModelPublic:
    """A registered model with its aliases and latest version."""
    versions = store.list_versions(row["name"])
    return RegisteredModelPublic(
        name=row["name"],
        kind=row["kind"],
        description=row["description"],
        tags=row["tags"] or [],
        created_at=int(row["created_at"]),
        updated_at=int(row["updated_at"]),
        aliases={a["alias"]: a["version"] for a in store.aliases(row["name"])},
        versions=len(versions),
        latest_version=version_with_aliases(store, versions[0]) if versions else None,
    )
