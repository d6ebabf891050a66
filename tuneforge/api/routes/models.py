"""`/v1/models`: base models known to tuneforge and the fine-tuned models it made."""

from __future__ import annotations

from fastapi import APIRouter

from tuneforge.api.deps import StoreDep
from tuneforge.api.errors import error_responses
from tuneforge.api.schemas.models import ModelPublic, ModelsPublic, public_model
from tuneforge.errors import ModelNotFoundError

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("")
def list_models(store: StoreDep) -> ModelsPublic:
    return ModelsPublic(data=[public_model(r) for r in store.list_models()])


@router.get("/{model_id:path}", responses=error_responses(404))
def get_model(store: StoreDep, model_id: str) -> ModelPublic:
    row = store.get_model(model_id)
    if row is None:
        raise ModelNotFoundError(f"No model named {model_id!r}.", param="model")
    return public_model(row)
