"""Typed dependencies shared by the routes."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Query, Request, UploadFile

from tuneforge.api.event_watch import EventWatcher
from tuneforge.config import Settings
from tuneforge.db.store import Store
from tuneforge.errors import InvalidRequestError
from tuneforge.monitoring.usage import UsageMeter
from tuneforge.serving.cache import ModelCache


def get_store(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_model_cache(request: Request) -> ModelCache:
    return request.app.state.model_cache  # type: ignore[no-any-return]


def get_event_watcher(request: Request) -> EventWatcher:
    return request.app.state.event_watcher  # type: ignore[no-any-return]


def get_usage_meter(request: Request) -> UsageMeter:
    return request.app.state.usage_meter  # type: ignore[no-any-return]


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ModelCacheDep = Annotated[ModelCache, Depends(get_model_cache)]
EventWatcherDep = Annotated[EventWatcher, Depends(get_event_watcher)]
UsageMeterDep = Annotated[UsageMeter, Depends(get_usage_meter)]


# Every id tuneforge makes: a prefix, a dash and 32 hex digits (tuneforge.db.records.new_id).
ID_SHAPE = re.compile(r"[a-z]+-[0-9a-f]{32}")
# An event id is `ftevent-N`: N is a row number, below 2**63 as our clients may count.
EVENT_ID = re.compile(r"ftevent-([0-9]{1,19})")
MAX_ROW_ID = 2**63 - 1
def page_cursor(
    after: Annotated[
        str | None, Query(description="The id of the previous page's last item.")
    ] = None,
) -> str | None:
    """A listing's `after`, checked before it reaches SQL: an id of tuneforge's shape (one
    that names nothing gives an empty page), else 400."""
    if not after:
        return None
    if not ID_SHAPE.fullmatch(after):
        raise InvalidRequestError(
            f"after: {after[:100]!r} is not an id (a prefix, '-', 32 hex digits, as the listing's "
            "`id`s are).",
            param="after",
        )
    return after


def event_number(event_id: str | None, param: str) -> int | None:
    """The row number of an event id `ftevent-N`, checked before it reaches SQL (N below
    2**63: event ids are 64-bit); None for no id, InvalidRequestError for any other text."""
    if event_id is None or event_id == "":
        return None
    match = EVENT_ID.fullmatch(event_id)
    if match is None or int(match.group(1)) > MAX_ROW_ID:
        raise InvalidRequestError(
            f"{param}: {event_id[:100]!r} is not an event id (ftevent-N, N below 2**63).",
            param=param,
        )
    return int(match.group(1))


PageCursorDep = Annotated[str | None, Depends(page_cursor)]


def checked_upload(file: UploadFile) -> UploadFile:
    """The request's `file` part. A NUL in its name is refused before a byte is stored: the
    name is kept as the file's label, and PostgreSQL stores no NUL."""
    if "\x00" in (file.filename or ""):
        raise InvalidRequestError(
            "The file's name holds a NUL character; send the name without it.", param="file"
        )
    return file


UploadDep = Annotated[UploadFile, Depends(checked_upload)]
