"""Typed dependencies shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tuneforge.api.event_watch import EventWatcher
from tuneforge.config import Settings
from tuneforge.db.store import Store
from tuneforge.serving.cache import ModelCache


def get_store(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_model_cache(request: Request) -> ModelCache:
    return request.app.state.model_cache  # type: ignore[no-any-return]


def get_event_watcher(request: Request) -> EventWatcher:
    return request.app.state.event_watcher  # type: ignore[no-any-return]


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ModelCacheDep = Annotated[ModelCache, Depends(get_model_cache)]
EventWatcherDep = Annotated[EventWatcher, Depends(get_event_watcher)]
