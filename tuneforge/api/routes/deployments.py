"""`/v1/deployments`: registered model versions taken to an Ollama server, a Hugging Face Hub
repository or tuneforge's own endpoints, health-checked before they count as live, and rolled
back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from tuneforge.api.deps import PageCursorDep, SettingsDep, StoreDep
from tuneforge.api.errors import error_responses
from tuneforge.api.schemas.deployments import (
    DeploymentPublic,
    DeploymentsPublic,
    public_deployment,
)
from tuneforge.deploy.service import (
    KIND,
    DeploymentCreate,
    create_deployment,
    create_rollback,
    require_deployment,
)

router = APIRouter(prefix="/v1/deployments", tags=["deployments"])


@router.post("", responses=error_responses(400, 404))
async def create(
    store: StoreDep, settings: SettingsDep, request: DeploymentCreate
) -> DeploymentPublic:
    """Queue a deployment. Its events are at `/v1/fine_tuning/jobs/{id}/events` like a job's."""
    return public_deployment(
        await run_in_threadpool(create_deployment, store, settings, request)
    )


@router.get("")
def list_deployments(
    store: StoreDep,
    after: PageCursorDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> DeploymentsPublic:
    rows, has_more = store.list_jobs(after=after, limit=limit, kind=KIND)
    return DeploymentsPublic(data=[public_deployment(r) for r in rows], has_more=has_more)


@router.get("/{deployment_id}", responses=error_responses(404))
def get_deployment(store: StoreDep, deployment_id: str) -> DeploymentPublic:
    return public_deployment(require_deployment(store, deployment_id))


@router.post("/{deployment_id}/rollback", responses=error_responses(400, 404, 409))
async def rollback(
    store: StoreDep, settings: SettingsDep, deployment_id: str
) -> DeploymentPublic:
    """Deploy again, to this deployment's target, the version that was live there before the
    live one (409 when there is none). The rollback is a deployment of its own, with a health
    check."""
    return public_deployment(
        await run_in_threadpool(create_rollback, store, settings, deployment_id)
    )


@router.post("/{deployment_id}/cancel", responses=error_responses(404, 409))
def cancel(store: StoreDep, deployment_id: str) -> DeploymentPublic:
    require_deployment(store, deployment_id)
    return public_deployment(store.request_cancel(deployment_id))
