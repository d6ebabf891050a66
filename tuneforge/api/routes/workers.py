"""`/v1/workers`: the workers sharing this database, their limits and current jobs."""

from __future__ import annotations

import time

from fastapi import APIRouter

from tuneforge.api.deps import SettingsDep, StoreDep
from tuneforge.api.schemas.workers import WorkersPublic, public_worker

router = APIRouter(prefix="/v1/workers", tags=["system"])


@router.get("")
def list_workers(store: StoreDep, settings: SettingsDep) -> WorkersPublic:
    """Workers seen by the database, newest first; `alive` while their heartbeat is fresh."""
    now = time.time()
    data = [
        public_worker(w, now=now, stalled_after=settings.stalled_after_seconds)
        for w in store.list_workers()
    ]
    return WorkersPublic(data=data, queued=store.count_jobs().get("queued", 0))
