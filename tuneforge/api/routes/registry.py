"""`/v1/registered_models`: named models, their versions, aliases, comparison and search."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from tuneforge.api.deps import SettingsDep, StoreDep
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


def _changes(update: RegistryUpdate) -> dict[str, Any]:
    return update.model_dump(exclude_unset=True)


@router.get("/v1/registered_models")
def list_registered_models(store: StoreDep) -> dict[str, Any]:
    data = [service.registered_view(store, r) for r in store.list_registered_models()]
    return {"object": "list", "data": data}


@router.get("/v1/model_versions")
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
) -> dict[str, Any]:
    """Versions by name (substring), kind, base model, tag, alias and metric thresholds
    (on the version's validation metrics)."""
    data = service.search_versions(
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
    return {"object": "list", "data": data}


@router.get("/v1/registered_models/{name}")
def get_registered_model(store: StoreDep, name: str) -> dict[str, Any]:
    return service.registered_view(store, service.require_registered(store, name))


@router.patch("/v1/registered_models/{name}")
def update_registered_model(store: StoreDep, name: str, update: RegistryUpdate) -> dict[str, Any]:
    service.require_registered(store, name)
    store.update_registered_model(name, **_changes(update))
    return service.registered_view(store, service.require_registered(store, name))


@router.get("/v1/registered_models/{name}/versions")
def list_versions(store: StoreDep, name: str) -> dict[str, Any]:
    service.require_registered(store, name)
    data = [service.version_view(store, r) for r in store.list_versions(name)]
    return {"object": "list", "data": data}


@router.get("/v1/registered_models/{name}/versions/{version}")
def get_version(store: StoreDep, name: str, version: int) -> dict[str, Any]:
    return service.version_view(store, service.require_version(store, name, version))


@router.patch("/v1/registered_models/{name}/versions/{version}")
def update_version(
    store: StoreDep, name: str, version: int, update: RegistryUpdate
) -> dict[str, Any]:
    service.require_version(store, name, version)
    store.update_version(name, version, **_changes(update))
    return service.version_view(store, service.require_version(store, name, version))


@router.delete("/v1/registered_models/{name}/versions/{version}")
def delete_version(
    store: StoreDep, settings: SettingsDep, name: str, version: int
) -> dict[str, Any]:
    """Refused with 409 while an alias points at the version."""
    service.delete_version(store, settings, name, version)
    return {"object": "model.version.deleted", "name": name, "version": version, "deleted": True}


@router.put("/v1/registered_models/{name}/aliases/{alias}")
def set_alias(store: StoreDep, name: str, alias: str, update: AliasUpdate) -> dict[str, Any]:
    """Point an alias (`production`, `staging`, any name) at a version; moves it if set."""
    return service.set_alias(store, name, alias, update.version)


@router.delete("/v1/registered_models/{name}/aliases/{alias}", status_code=204)
def delete_alias(store: StoreDep, name: str, alias: str) -> Response:
    service.require_registered(store, name)
    if not store.delete_alias(name, alias):
        raise NotFoundError(f"{name} has no alias {alias!r}.", param="alias")
    return Response(status_code=204)


@router.get("/v1/registered_models/{name}/compare")
def compare(
    store: StoreDep, name: str, versions: Annotated[list[int], Query(min_length=2)]
) -> dict[str, Any]:
    """Two or more versions: metrics side by side, and the spec fields that differ."""
    return service.compare_versions(store, name, versions)
