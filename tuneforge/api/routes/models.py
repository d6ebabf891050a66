"""`/v1/models`: base models known to tuneforge and the fine-tuned models it made."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from tuneforge.api.deps import StoreDep
from tuneforge.errors import ModelNotFoundError

router = APIRouter(prefix="/v1/models", tags=["models"])


def public_model(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "model",
        "created": int(row["created_at"]),
        "owned_by": row["owned_by"],
        "kind": row["kind"],
        "base_model": row.get("base_model"),
        "job_id": row.get("job_id"),
    }


@router.get("")
def list_models(store: StoreDep) -> dict[str, Any]:
    return {"object": "list", "data": [public_model(r) for r in store.list_models()]}


@router.get("/{model_id:path}")
def get_model(store: StoreDep, model_id: str) -> dict[str, Any]:
    row = store.get_model(model_id)
    if row is None:
        raise ModelNotFoundError(f"No model named {model_id!r}.", param="model")
    return public_model(row)
