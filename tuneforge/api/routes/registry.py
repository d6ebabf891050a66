"""`/v1/registered_models`: named models, their versions, aliases, comparison and search."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from tuneforge.api.deps import ModelCacheDep, SettingsDep, StoreDep
from tuneforge.api.errors import error_responses
from tuneforge.api.schemas.registry import (
    ModelAliasPublic,
    ModelComparisonPublic,
    ModelVersionDeleted,
    ModelVersionPublic,
    ModelVersionsPublic,
    RegisteredModelPublic,
    RegisteredModelsPublic,
    public_registered_model,
    public_version,
    version_with_aliases,
)
from tuneforge.errors import NotFoundError
from tuneforge.registry import service

router = APIRouter(tags=["registry"])


class RegistryUpdate(BaseModel):
    """Description and tags of a registered model or a version."""

    model_config = ConfigDict(extra="forbid")
    description: str | None = Field(None, max_length=4000)
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        None, max_length=32
    )


class AliasUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(..., ge=1, description="The version the alias points at.")
    force: bool = Field(
        False,
        description="Move the alias even to a version that scored below its base model "
        "(refused with 409 otherwise).",
    )


def _changes(update: RegistryUpdate) -> dict[str, Any]:
    return update.model_dump(exclude_unset=True)


@router.get("/v1/registered_models")
def list_registered_models(store: StoreDep) -> RegisteredModelsPublic:
    data = [public_registered_model(store, r) for r in store.list_registered_models()]
    return RegisteredModelsPublic(data=data)


@router.get("/v1/model_versions", responses=error_responses(400))
def search_model_versions(
    store: StoreDep,
    name: str | None = None,
    kind: str | None = None,
    base_model: str | None = None,
    tag: str | None = None,
    alias: str | None = None,
    metric: str | None = None,
    min_value: float | None = None,
    max_value: float | None = None,
) -> ModelVersionsPublic:
    """Versions by name (substring), kind, base model, tag, alias and metric thresholds
    (on the version's validation metrics)."""
    found = service.search_versions(
        store,
        name=name,
        kind=kind,
        base_model=base_model,
        tag=tag,
        alias=alias,
        metric=metric,
        min_value=min_value,
        max_value=max_value,
    )
    return ModelVersionsPublic(data=[public_version(row, aliases) for row, aliases in found])


@router.get("/v1/registered_models/{name}", responses=error_responses(404))
def get_registered_model(store: StoreDep, name: str) -> RegisteredModelPublic:
    return public_registered_model(store, service.require_registered(store, name))


@router.patch("/v1/registered_models/{name}", responses=error_responses(404))
def update_registered_model(
    store: StoreDep, name: str, update: RegistryUpdate
) -> RegisteredModelPublic:
    service.require_registered(store, name)
    store.update_registered_model(name, **_changes(update))
    return public_registered_model(store, service.require_registered(store, name))


@router.get("/v1/registered_models/{name}/versions", responses=error_responses(404))
def list_versions(store: StoreDep, name: str) -> ModelVersionsPublic:
    service.require_registered(store, name)
    return ModelVersionsPublic(
        data=[version_with_aliases(store, r) for r in store.list_versions(name)]
    )


@router.get("/v1/registered_models/{name}/versions/{version}", responses=error_responses(404))
def get_version(store: StoreDep, name: str, version: int) -> ModelVersionPublic:
    return version_with_aliases(store, service.require_version(store, name, version))


@router.patch("/v1/registered_models/{name}/versions/{version}", responses=error_responses(404))
def update_version(
    store: StoreDep, name: str, version: int, update: RegistryUpdate
) -> ModelVersionPublic:
    service.require_version(store, name, version)
    store.update_version(name, version, **_changes(update))
    return version_with_aliases(store, service.require_version(store, name, version))


@router.delete(
    "/v1/registered_models/{name}/versions/{version}", responses=error_responses(404, 409)
)
def delete_version(
    store: StoreDep, settings: SettingsDep, cache: ModelCacheDep, name: str, version: int
) -> ModelVersionDeleted:
    """Refused with 409 while an alias points at the version. The version leaves the
    serving cache at once."""
    cache.evict(str(service.delete_version(store, settings, name, version)))
    return ModelVersionDeleted(name=name, version=version, deleted=True)


@router.put(
    "/v1/registered_models/{name}/aliases/{alias}", responses=error_responses(400, 404, 409)
)
def set_alias(store: StoreDep, name: str, alias: str, update: AliasUpdate) -> ModelAliasPublic:
    """Point an alias (`production`, `staging`, any name) at a version; moves it if set.
    A version worse than its base model (`evaluation.worse_than_base`) needs `force`."""
    service.set_alias(store, name, alias, update.version, update.force)
    return ModelAliasPublic(name=name, alias=alias, version=update.version)


@router.delete(
    "/v1/registered_models/{name}/aliases/{alias}",
    status_code=204,
    response_class=Response,
    responses=error_responses(404),
)
def delete_alias(store: StoreDep, name: str, alias: str) -> Response:
    service.require_registered(store, name)
    if not store.delete_alias(name, alias):
        raise NotFoundError(f"{name} has no alias {alias!r}.", param="alias")
    return Response(status_code=204)


@router.get("/v1/registered_models/{name}/compare", responses=error_responses(400, 404))
def compare(
    store: StoreDep, name: str, versions: Annotated[list[int], Query(min_length=2)]
) -> ModelComparisonPublic:
    """Two or more versions: metrics side by side, and the spec fields that differ."""
    return ModelComparisonPublic(**service.compare_versions(store, name, versions))
