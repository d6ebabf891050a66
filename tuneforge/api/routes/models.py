"""`/v1/models`: base models known to tuneforge and the fine-tuned models it made."""

from __future__ import annotations

import math
import time
from typing import Annotated

from fastapi import APIRouter, Query

from tuneforge.api.deps import ModelCacheDep, SettingsDep, StoreDep, UsageMeterDep
from tuneforge.api.errors import error_responses
from tuneforge.api.schemas.models import (
    ModelDeleted,
    ModelPublic,
    ModelsPublic,
    listed_models,
)
from tuneforge.api.schemas.monitoring import UsagePublic
from tuneforge.errors import ModelNotFoundError
from tuneforge.monitoring.usage import usage_report, window_seconds
from tuneforge.registry.models import resolve_model
from tuneforge.registry.service import delete_fine_tuned_model, resolve_reference
from tuneforge.training.spec import cache_folder_of, hub_id_of

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("")
def list_models(store: StoreDep) -> ModelsPublic:
    """Each model once: a base model used by its Hub id and by its Hugging Face cache folder
    name (`models--org--name`) is listed under its Hub id."""
    return ModelsPublic(data=listed_models(store.list_models()))


# Before get_model: its path parameter would take `…/usage` as part of a model id.
@router.get("/{model_id:path}/usage", responses=error_responses(400, 404))
def get_model_usage(
    store: StoreDep,
    settings: SettingsDep,
    meter: UsageMeterDep,
    model_id: str,
    window: Annotated[
        str, Query(max_length=16, description="How far back: 15m, 1h, 24h, 7d or seconds.")
    ] = "24h",
) -> UsagePublic:
    """Requests, errors, tokens and latency percentiles (ms) of a served model over the last
    `window`: in total, per version and endpoint, and as a series of `step_seconds` steps.
    `model_id` is a model id (`ft:…`), a registered model's name (all its versions), or
    `NAME@alias` / `NAME@vN` (the version it names now)."""
    seconds = window_seconds(window)
    registered = model_id if store.get_registered_model(model_id) is not None else None
    models: list[str] = []
    if registered is None:
        if "@" in model_id:
            models = [resolve_reference(store, model_id)]
        else:
            resolve_model(store, settings, model_id)  # ModelNotFoundError for unknown names
            models = [model_id]
    meter.flush()  # what this process counted since its last flush
    until = time.time()
    since = math.floor((until - seconds) / 60) * 60  # whole minutes, as they are stored
    rows = store.usage_rows(models=models, registered=registered, since=since, until=until)
    report = usage_report(rows, since=since, until=until)
    return UsagePublic(model=model_id, registered_model=registered, **report)


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
