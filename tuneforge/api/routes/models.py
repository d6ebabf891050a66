"""`/v1/models`: base models known to tuneforge and the fine-tuned models it made."""

from __future__ import annotations

from fastapi import APIRouter

from tuneforge.api.deps import ModelCacheDep, SettingsDep, StoreDep
from tuneforge.api.errors import error_responses
from tuneforge.api.schemas.models import ModelDeleted, ModelPublic, ModelsPublic, public_model
from tuneforge.errors import ModelNotFoundError
from tuneforge.registry.service import delete_fine_tuned_model

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


@router.delete("/{model_id:path}", responses=error_responses(400, 404, 409))
def delete_model(
    store: StoreDep, settings: SettingsDep, cache: ModelCacheDep, model_id: str
) -> ModelDeleted:
    """Delete a fine-tuned model with its files and its registry version (OpenAI's model
    deletion); refused for base models and for a version an alias points at. The model
    leaves the serving cache at once (its memory with it)."""
    folder = delete_fine_tuned_model(store, settings, model_id)
    if folder is not None:
        cache.evict(str(folder))
    return ModelDeleted(id=model_id)
