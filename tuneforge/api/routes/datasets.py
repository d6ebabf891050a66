"""`/v1/datasets`: the validation report and statistics of an uploaded file (same id)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from tuneforge.api.deps import ModelCacheDep, SettingsDep, StoreDep
from tuneforge.api.errors import error_responses
from tuneforge.api.schemas.datasets import (
    DatasetMiningPublic,
    DatasetPreparationPublic,
    DatasetPublic,
    DatasetRowsPublic,
    DatasetsPublic,
    public_dataset,
)
from tuneforge.datasets.ingest import file_path, require_dataset
from tuneforge.datasets.mining import MiningRequest, mine_dataset
from tuneforge.datasets.prepare import PrepareRequest, prepare_dataset
from tuneforge.datasets.preview import preview_rows
from tuneforge.serving.loading import served_model

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


@router.get("")
def list_datasets(store: StoreDep) -> DatasetsPublic:
    rows, has_more = store.list_files(purpose="fine-tune", limit=1000)
    return DatasetsPublic(data=[public_dataset(r) for r in rows], has_more=has_more)


@router.get("/{dataset_id}", responses=error_responses(404))
def get_dataset(store: StoreDep, dataset_id: str) -> DatasetPublic:
    """Validation report: every problem (first 100 listed, all counted by code) and stats."""
    return public_dataset(require_dataset(store, dataset_id, "dataset_id"))


@router.get("/{dataset_id}/rows", responses=error_responses(404))
async def get_rows(
    store: StoreDep,
    settings: SettingsDep,
    dataset_id: str,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
) -> DatasetRowsPublic:
    """A page of the file's records as read, each with its line (read-only preview)."""
    row = require_dataset(store, dataset_id, "dataset_id")
    page = await run_in_threadpool(
        preview_rows,
        file_path(settings, dataset_id),
        row["format"],
        row["report"],
        offset=offset,
        limit=limit,
    )
    return DatasetRowsPublic.model_validate(page)


@router.post("/{dataset_id}/prepare", responses=error_responses(400, 404))
async def prepare(
    store: StoreDep,
    settings: SettingsDep,
    dataset_id: str,
    request: PrepareRequest | None = None,
) -> DatasetPreparationPublic:
    """Clean, de-duplicate, filter, merge (`merge`) and split into new datasets; the report
    says what was removed and why (see tuneforge.datasets.prepare)."""
    done = await run_in_threadpool(
        prepare_dataset, store, settings, dataset_id, request or PrepareRequest()
    )
    return DatasetPreparationPublic(
        kind=done["kind"],
        train=public_dataset(done["train"]),
        validation=public_dataset(done["validation"]) if done["validation"] else None,
        report=done["report"],
    )


@router.post("/{dataset_id}/mine_negatives", responses=error_responses(400, 404))
async def mine_negatives(
    store: StoreDep,
    settings: SettingsDep,
    cache: ModelCacheDep,
    dataset_id: str,
    request: MiningRequest,
) -> DatasetMiningPublic:
    """Hard-negative mining: a pair dataset becomes a new triplet dataset, each negative a
    text the embedding `model` finds close to the anchor but not its positive; the report
    says how many were found and how hard they are (see tuneforge.datasets.mining)."""

    def load(name: str) -> object:
        return served_model(store, settings, cache, name, "embedding")

    done = await run_in_threadpool(mine_dataset, store, settings, dataset_id, request, load)
    return DatasetMiningPublic(dataset=public_dataset(done["dataset"]), report=done["report"])
