"""`/v1/datasets`: the validation report and statistics of an uploaded file (same id)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from tuneforge.api.deps import StoreDep
from tuneforge.datasets.ingest import public_file, require_file

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


def public_dataset(row: dict[str, Any]) -> dict[str, Any]:
    report = row["report"]
    return {
        "id": row["id"],
        "object": "dataset",
        "file": public_file(row),
        "created_at": int(row["created_at"]),
        **report,
    }


@router.get("")
def list_datasets(store: StoreDep) -> dict[str, Any]:
    rows, has_more = store.list_files(limit=1000)
    return {"object": "list", "data": [public_dataset(r) for r in rows], "has_more": has_more}


@router.get("/{dataset_id}")
def get_dataset(store: StoreDep, dataset_id: str) -> dict[str, Any]:
    """Validation report: every problem (first 100 listed, all counted by code) and stats."""
    return public_dataset(require_file(store, dataset_id, "dataset_id"))
