"""`/v1/models`: base models known to tuneforge and the fine-tuned models it made."""

from __future__ import annotations

from fastapi import APIRouter

from tuneforge.api.deps import SettingsDep, StoreDep
from tuneforge.api.errors import error_responses
from tuneforge.api.schemas.models import (
    ModelDeleted,
    ModelPublic,
    ModelsPublic,
    listed_models,
)
from tuneforge.errors import ModelNotFoundError
from tuneforge.registry.service import delete_fine_tuned_model
from tuneforge.training.spec import cache_folder_of, hub_id_of

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("")
def list_models(store: StoreDep) -> ModelsPublic:
    """Each model once: a base model used by its Hub id and by its Hugging Face cache folder
    name (`models--org--name`) is listed under its Hub id."""
    return ModelsPublic(data=listed_models(store.list_models()))


@router.get("/{model_id:path}", responses=error_responses(404))
def get_model(store: StoreDep, model_id: str) -> ModelPublic:
    """A model by its id; a base model also by its Hugging Face cache folder name."""
    row = (
        store.get_model(model_id)
        or store.get_model(hub_id_of(model_id))
        or store.get_model(cache_folder_of(model_id))
    )
    if row is None:
        raise ModelNotFoundError(f"No model named {model_id!r}.", param="model")
    return listed_models([row])[0]


@router.delete("/{model_id:path}", responses=error_responses(400, 404, 409))
def delete_model(store: StoreDep, settings: SettingsDep, model_id: str) -> ModelDeleted:
    """Delete a fine-tuned model with its files and its registry version (OpenAI's model
    deletion); refused for base models and for a version an alias points at."""
    delete_fine_tuned_model(store, settings, model_id)
    return ModelDeleted(id=model_id)
